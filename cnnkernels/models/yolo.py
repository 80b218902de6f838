"""A YOLO-style single-shot detector (Redmon et al., YOLOv2's anchor grid) on a truncated MobileNet v2.

Backbone: MobileNet v2's stem and inverted-residual stages up to and including the stride-1 96-channel stage
(torchvision's table, channels scaled by `width_mult`), i.e. the stages through output stride 16: a 128 x 128 image
gives an 8 x 8 grid. Head: one more InvertedResidual, a 3x3 ConvBNAct and a 1x1 conv to A * (5 + C) channels, in the
layout cnnkernels.yolo_decode reads: for anchor a, channels a*(5+C) .. a*(5+C)+4+C are (tx, ty, tw, th, objectness,
class logits). Everything but that last conv is a cnnkernels.nn module, so eval mode runs the fused ops and
cnnkernels.optimize() converts the model.

The anchors ((A, 2) widths and heights in input pixels, e.g. from cnnkernels.train.detection.kmeans_anchors) are a
buffer: they travel with the state_dict, and decoding and target encoding read them from the model.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from cnnkernels.models.mobilenet import MobileNetV2
from cnnkernels.nn import ConvBNAct, InvertedResidual

__all__ = ["YOLODetector", "yolo_mobilenet_v2", "YOLO_BACKBONE_SETTING", "YOLO_STRIDE"]

# torchvision's MobileNet v2 table up to the last stage before stride 32: (expansion, channels, blocks, stride).
YOLO_BACKBONE_SETTING = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1]]
YOLO_STRIDE = 16
# Initial objectness probability: with ~200 anchor slots per image and a handful of objects, starting every slot near
# 0.5 would make the no-object loss swamp the first steps (RetinaNet's prior initialisation).
_OBJECTNESS_PRIOR = 0.01


class YOLODetector(nn.Module):
    """Backbone + grid head (see the module docstring). forward(x): (N, 3, H, W) with H and W multiples of
    `stride` -> raw head (N, A * (5 + num_classes), H / stride, W / stride).

    anchors: (A, 2) anchor widths and heights in input pixels (positive). num_classes: C >= 1. width_mult: MobileNet
    v2's channel multiplier. head_channels: width of the head's 3x3 conv."""

    def __init__(self, anchors: Union[Tensor, Sequence[Sequence[float]]], num_classes: int, *,
                 width_mult: float = 0.5, head_channels: int = 96, in_channels: int = 3) -> None:
        super().__init__()
        anchors = torch.as_tensor(anchors, dtype=torch.float32)
        if anchors.dim() != 2 or anchors.shape[1] != 2 or anchors.shape[0] < 1 \
                or not bool(torch.isfinite(anchors).all()) or not bool((anchors > 0).all()):
            raise ValueError(f"YOLODetector: anchors must be an (A, 2) tensor of positive finite widths and heights, "
                             f"A >= 1, got {tuple(anchors.shape)}")
        for name, v in (("num_classes", num_classes), ("head_channels", head_channels),
                        ("in_channels", in_channels)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"YOLODetector: {name} must be an int >= 1, got {v!r}")
        if isinstance(width_mult, bool) or not isinstance(width_mult, numbers.Real) or not width_mult > 0:
            raise ValueError(f"YOLODetector: width_mult must be a positive number, got {width_mult!r}")
        self.num_classes = int(num_classes)
        self.num_anchors = int(anchors.shape[0])
        self.stride = YOLO_STRIDE
        self.register_buffer("anchors", anchors.clone())
        # MobileNetV2 builds the stem and stages; its final 1x1 conv to 1280 channels (the classifier's) is dropped.
        mobilenet = MobileNetV2(width_mult=float(width_mult), inverted_residual_setting=YOLO_BACKBONE_SETTING,
                                in_channels=int(in_channels))
        self.backbone = mobilenet.features[:-1]
        c = self.backbone[-1].conv[-1].num_features
        outputs = self.num_anchors * (5 + self.num_classes)
        self.head = nn.Sequential(
            InvertedResidual(c, c, 1, expand_ratio=6),
            ConvBNAct(c, int(head_channels), 3, activation_layer=nn.ReLU6),
            nn.Conv2d(int(head_channels), outputs, 1),
        )
        pred = self.head[-1]
        nn.init.normal_(pred.weight, 0.0, 0.01)
        with torch.no_grad():
            bias = pred.bias.view(self.num_anchors, 5 + self.num_classes)
            bias.zero_()
            bias[:, 4] = math.log(_OBJECTNESS_PRIOR / (1 - _OBJECTNESS_PRIOR))

    def grid_size(self, image_size: Tuple[int, int]) -> Tuple[int, int]:
        """(S_h, S_w) of the head for an input of image_size (H, W), both multiples of the stride."""
        h, w = (int(v) for v in image_size)
        if h < self.stride or w < self.stride or h % self.stride or w % self.stride:
            raise ValueError(f"YOLODetector: image height and width must be positive multiples of the stride "
                             f"{self.stride}, got {h} x {w}")
        return h // self.stride, w // self.stride

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"YOLODetector: input must be (N, C, H, W), got shape {tuple(x.shape)}")
        self.grid_size(x.shape[-2:])
        return self.head(self.backbone(x))


def yolo_mobilenet_v2(anchors: Union[Tensor, Sequence[Sequence[float]]], num_classes: int, **kwargs) -> YOLODetector:
    """YOLODetector on MobileNet v2 (stride 16); kwargs: width_mult=0.5, head_channels=96, in_channels=3."""
    return YOLODetector(anchors, num_classes, **kwargs)
