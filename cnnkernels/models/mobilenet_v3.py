"""MobileNet v3 Large and Small (Howard et al. 2019) with torchvision's layout and state_dict (Tables 1 and 2 of the
paper, torchvision's `width_mult`, `reduced_tail` and `dilated` options). Every bottleneck is a cnnkernels.nn.MBConv
without stochastic depth (one mbconv call in eval mode: ReLU or hardswish, squeeze-and-excitation with ReLU and a
hardsigmoid gate where the table has it); the `dilated=True` tail runs its plain submodules (the op has no
dilation). BatchNorm eps 1e-3, momentum 0.01 as in torchvision."""

from __future__ import annotations

from functools import partial
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from cnnkernels.models._registry import register_model
from cnnkernels.models._utils import _make_divisible
from cnnkernels.models.mobilenet import _init
from cnnkernels.nn import ConvBNAct, MBConv

__all__ = ["MobileNetV3", "mobilenet_v3_large", "mobilenet_v3_small"]

# (input channels, kernel, expanded channels, output channels, squeeze-and-excitation, activation, stride, dilated):
# the paper's Tables 1 and 2; "dilated" rows take torchvision's `dilated` and `reduced_tail` options.
Row = Tuple[int, int, int, int, bool, str, int, bool]
LARGE: Tuple[Row, ...] = (
    (16, 3, 16, 16, False, "RE", 1, False),
    (16, 3, 64, 24, False, "RE", 2, False),
    (24, 3, 72, 24, False, "RE", 1, False),
    (24, 5, 72, 40, True, "RE", 2, False),
    (40, 5, 120, 40, True, "RE", 1, False),
    (40, 5, 120, 40, True, "RE", 1, False),
    (40, 3, 240, 80, False, "HS", 2, False),
    (80, 3, 200, 80, False, "HS", 1, False),
    (80, 3, 184, 80, False, "HS", 1, False),
    (80, 3, 184, 80, False, "HS", 1, False),
    (80, 3, 480, 112, True, "HS", 1, False),
    (112, 3, 672, 112, True, "HS", 1, False),
    (112, 5, 672, 160, True, "HS", 2, True),
    (160, 5, 960, 160, True, "HS", 1, True),
    (160, 5, 960, 160, True, "HS", 1, True),
)
SMALL: Tuple[Row, ...] = (
    (16, 3, 16, 16, True, "RE", 2, False),
    (16, 3, 72, 24, False, "RE", 2, False),
    (24, 3, 88, 24, False, "RE", 1, False),
    (24, 5, 96, 40, True, "HS", 2, False),
    (40, 5, 240, 40, True, "HS", 1, False),
    (40, 5, 240, 40, True, "HS", 1, False),
    (40, 5, 120, 48, True, "HS", 1, False),
    (48, 5, 144, 48, True, "HS", 1, False),
    (48, 5, 288, 96, True, "HS", 2, True),
    (96, 5, 576, 96, True, "HS", 1, True),
    (96, 5, 576, 96, True, "HS", 1, True),
)


class MobileNetV3(nn.Module):
    """torchvision's MobileNetV3: `features` (stem ConvBNAct with hardswish, the bottlenecks, 1x1 ConvBNAct to 6x the
    last width), `avgpool`, `classifier` (Linear, Hardswish, Dropout, Linear).

    reduced_tail halves the channels of the last stage (the first row with `dilated` and after) and the
    penultimate layer; dilated gives that stage's depthwise convs dilation 2 instead of the stride (as torchvision,
    for segmentation backbones)."""

    def __init__(self, setting: Sequence[Row], last_channel: int, num_classes: int = 1000,
                 width_mult: float = 1.0, reduced_tail: bool = False, dilated: bool = False,
                 norm_layer: Optional[Callable[..., nn.Module]] = None, dropout: float = 0.2,
                 in_channels: int = 3) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)

        def adjust(c: int) -> int:
            return _make_divisible(c * width_mult, 8)

        layers: List[nn.Module] = [ConvBNAct(in_channels, adjust(setting[0][0]), kernel_size=3, stride=2,
                                             norm_layer=norm_layer, activation_layer=nn.Hardswish)]
        in_tail = False
        for cin, k, exp, cout, se, act, stride, tail in setting:
            out_div = 2 if reduced_tail and tail else 1
            # the first tail row halves only its output; its input and expansion are still the full-width stage's
            in_div = out_div if in_tail else 1
            cin, exp, cout = adjust(cin // in_div), adjust(exp // in_div), adjust(cout // out_div)
            in_tail = in_tail or tail
            layers.append(MBConv(cin, cout, exp, k, stride,
                                 squeeze_channels=_make_divisible(exp // 4, 8) if se else None,
                                 activation_layer=nn.Hardswish if act == "HS" else nn.ReLU,
                                 se_activation_layer=nn.ReLU, se_gate_layer=nn.Hardsigmoid, norm_layer=norm_layer,
                                 stochastic_depth_prob=None, dilation=2 if dilated and tail else 1))
        last_in = layers[-1].out_channels
        last_out = 6 * last_in
        layers.append(ConvBNAct(last_in, last_out, kernel_size=1, norm_layer=norm_layer,
                                activation_layer=nn.Hardswish))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        last_channel = adjust(last_channel // (2 if reduced_tail else 1))
        self.classifier = nn.Sequential(nn.Linear(last_out, last_channel), nn.Hardswish(inplace=True),
                                        nn.Dropout(p=dropout, inplace=True), nn.Linear(last_channel, num_classes))
        _init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


@register_model
def mobilenet_v3_large(**kwargs) -> MobileNetV3:
    """MobileNet v3 Large (torchvision's layout); kwargs: num_classes=1000, width_mult=1.0, reduced_tail=False,
    dilated=False, norm_layer, dropout=0.2, in_channels=3."""
    return MobileNetV3(LARGE, 1280, **kwargs)


@register_model
def mobilenet_v3_small(**kwargs) -> MobileNetV3:
    """MobileNet v3 Small (torchvision's layout); kwargs as mobilenet_v3_large's."""
    return MobileNetV3(SMALL, 1024, **kwargs)
