"""MobileNet v1 (Howard et al. 2017) and MobileNet v2 (Sandler et al. 2018).

v2 is torchvision's MobileNetV2 (same state_dict, `width_mult` with torchvision's _make_divisible rounding), built
from the fused ConvBNAct and InvertedResidual.

v1 is the paper's Table 1: a 3x3/s2 conv to 32 channels, then 13 depthwise-separable layers (each depthwise 3x3 +
BN + ReLU and pointwise 1x1 + BN + ReLU, one dwsep_conv2d call in eval mode), global average pool, and a fully
connected classifier. Channels are scaled by `width_mult` (alpha) with the same _make_divisible(c * alpha, 8)
rounding as v2 (identical to int(c * alpha) for the paper's alphas 1, 0.75, 0.5, 0.25). The last depthwise layer
has stride 1 (the paper's table says s2 but its output stays 7x7, as in every reference implementation).
Parameters at width 1.0, 1000 classes: 4,231,976 (4.2M as the paper says): conv weights and the FC layer 4,210,088,
BatchNorm gamma/beta 21,888 (plus 21,888 running mean/var buffers). Width 0.75: 2,585,560; 0.5: 1,331,592;
0.25: 470,072.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor, nn

from cnnkernels.models._registry import register_model
from cnnkernels.models._utils import _make_divisible
from cnnkernels.nn import ConvBNAct, DepthwiseSeparableConv2d, InvertedResidual

__all__ = ["MobileNetV1", "MobileNetV2", "mobilenet_v1", "mobilenet_v2"]


def _init(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


# (output channels, stride) of the 13 depthwise-separable layers of MobileNet v1, Table 1.
V1_LAYERS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
             (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]


class MobileNetV1(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0, in_channels: int = 3,
                 dropout: float = 0.0, round_nearest: int = 8,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        c = _make_divisible(32 * width_mult, round_nearest)
        layers: List[nn.Module] = [ConvBNAct(in_channels, c, 3, stride=2, norm_layer=norm_layer)]
        for out, stride in V1_LAYERS:
            out = _make_divisible(out * width_mult, round_nearest)
            layers.append(DepthwiseSeparableConv2d(c, out, 3, stride, norm_layer=norm_layer))
            c = out
        self.features = nn.Sequential(*layers)
        self.last_channel = c
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(c, num_classes))
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0,
                 inverted_residual_setting: Optional[List[List[int]]] = None, round_nearest: int = 8,
                 block: Optional[Callable[..., nn.Module]] = None,
                 norm_layer: Optional[Callable[..., nn.Module]] = None, dropout: float = 0.2,
                 in_channels: int = 3) -> None:
        super().__init__()
        if block is None:
            block = InvertedResidual
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        input_channel = 32
        last_channel = 1280
        if inverted_residual_setting is None:
            inverted_residual_setting = [
                [1, 16, 1, 1],
                [6, 24, 2, 2],
                [6, 32, 3, 2],
                [6, 64, 4, 2],
                [6, 96, 3, 1],
                [6, 160, 3, 2],
                [6, 320, 1, 1],
            ]
        if len(inverted_residual_setting) == 0 or len(inverted_residual_setting[0]) != 4:
            raise ValueError("inverted_residual_setting should be non-empty or a 4-element list, got "
                             f"{inverted_residual_setting}")
        input_channel = _make_divisible(input_channel * width_mult, round_nearest)
        self.last_channel = _make_divisible(last_channel * max(1.0, width_mult), round_nearest)
        features: List[nn.Module] = [
            ConvBNAct(in_channels, input_channel, stride=2, norm_layer=norm_layer, activation_layer=nn.ReLU6)]
        for t, c, n, s in inverted_residual_setting:
            output_channel = _make_divisible(c * width_mult, round_nearest)
            for i in range(n):
                stride = s if i == 0 else 1
                features.append(block(input_channel, output_channel, stride, expand_ratio=t, norm_layer=norm_layer))
                input_channel = output_channel
        features.append(ConvBNAct(input_channel, self.last_channel, kernel_size=1, norm_layer=norm_layer,
                                  activation_layer=nn.ReLU6))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout), nn.Linear(self.last_channel, num_classes))
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = nn.functional.adaptive_avg_pool2d(x, (1, 1))
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model
def mobilenet_v1(**kwargs) -> MobileNetV1:
    """MobileNet v1 (13 depthwise-separable layers); kwargs: num_classes=1000, width_mult=1.0, in_channels=3,
    dropout=0.0, round_nearest=8, norm_layer."""
    return MobileNetV1(**kwargs)


@register_model
def mobilenet_v2(**kwargs) -> MobileNetV2:
    """MobileNet v2 (torchvision's layout); kwargs: num_classes=1000, width_mult=1.0, inverted_residual_setting,
    round_nearest=8, block, norm_layer, dropout=0.2, in_channels=3."""
    return MobileNetV2(**kwargs)
