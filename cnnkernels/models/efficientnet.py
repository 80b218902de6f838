"""EfficientNet B0-B7 (Tan & Le 2019) with torchvision's layout and state_dict, and the compound scaling rule.

The network is B0's seven MBConv stages (Table 1 of the paper) scaled by a width multiplier (channels, rounded by
torchvision's _make_divisible(c * width, 8)) and a depth multiplier (layers per stage, ceil(n * depth)); every
block is a cnnkernels.nn.MBConv (one mbconv call in eval mode), with stochastic depth rising linearly from 0 to
`stochastic_depth_prob` over the blocks, as in torchvision.

Compound scaling (section 3.3 of the paper): for a coefficient phi, depth d = alpha**phi, width w = beta**phi and
resolution r = gamma**phi (times B0's 224 px), with the grid-searched alpha = 1.2, beta = 1.1, gamma = 1.15.
The published B1-B7 (the paper's checkpoints, the official code's `efficientnet_params`, torchvision) do not follow
that formula: their multipliers were chosen by hand. `compound_scaling(phi)` computes the formula,
`compound_scaling(phi, published=True)` returns the published row (an integer phi in 0..7), and
`efficientnet(phi, ..., published=False)` builds either. After torchvision's rounding (channels
_make_divisible(c * w, 8), layers ceil(n * d)):

    phi  published w / d / px / dropout   formula w / d / px    formula's network vs B<phi>
    0    1.0 / 1.0 / 224 / 0.2            1.0 / 1.0 / 224       identical
    1    1.0 / 1.1 / 240 / 0.2            1.1 / 1.2 / 258       same depths, wider: exactly B2's network
    2    1.1 / 1.2 / 260 / 0.3            1.21 / 1.44 / 296     26 blocks, not 23: exactly B3's network
    3    1.2 / 1.4 / 300 / 0.3            1.331 / 1.728 / 341   31 blocks, not 26; 5 of 7 stage widths differ
    4    1.4 / 1.8 / 380 / 0.4            1.464 / 2.074 / 392   39 blocks, not 32; 3 of 7 stage widths differ
    5    1.6 / 2.2 / 456 / 0.4            1.611 / 2.488 / 451   42 blocks, not 39; 2 of 7 stage widths differ
    6    1.8 / 2.6 / 528 / 0.5            1.772 / 2.986 / 518   48 blocks, not 45; the last stage 568, not 576
    7    2.0 / 3.1 / 600 / 0.5            1.949 / 3.583 / 596   61 blocks, not 55; 4 of 7 stage widths differ

So the formula reproduces B0 only; B1-B7 lag it by about one step of phi. The published dropout has no formula:
the formula path keeps B0's 0.2 unless `dropout` is given. torchvision's B5-B7 use BatchNorm eps 1e-3 and momentum
0.01 (their weights come from the TensorFlow checkpoints), B0-B4 PyTorch's defaults; the published path mirrors
that, the formula path uses PyTorch's defaults unless `norm_layer` is given. The resolution is recorded
(`model.resolution`, `model.scaling`), not enforced: the network takes any input size.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from cnnkernels.models._registry import register_model
from cnnkernels.models._utils import _make_divisible
from cnnkernels.nn import ConvBNAct, MBConv

__all__ = ["EfficientNet", "EfficientNetScaling", "compound_scaling", "efficientnet", "efficientnet_b0",
           "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "efficientnet_b5",
           "efficientnet_b6", "efficientnet_b7"]

# B0's stages: (expand ratio, kernel, stride, input channels, output channels, layers), the paper's Table 1.
B0_STAGES: Tuple[Tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

BASE_RESOLUTION = 224
ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15

# The published B0-B7: (width, depth, resolution, dropout), as the official code's efficientnet_params and
# torchvision (whose B2 weights' preprocessing crops 288 px, not the paper's 260; the table keeps the paper's).
PUBLISHED = (
    (1.0, 1.0, 224, 0.2),
    (1.0, 1.1, 240, 0.2),
    (1.1, 1.2, 260, 0.3),
    (1.2, 1.4, 300, 0.3),
    (1.4, 1.8, 380, 0.4),
    (1.6, 2.2, 456, 0.4),
    (1.8, 2.6, 528, 0.5),
    (2.0, 3.1, 600, 0.5),
)
# torchvision's B5-B7 normalise with TensorFlow's BatchNorm settings (their weights come from the TF checkpoints).
_TF_NORM = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)


class EfficientNetScaling(NamedTuple):
    """What compound_scaling() returns: the multipliers, the input resolution in pixels and the classifier dropout."""
    phi: float
    width_mult: float
    depth_mult: float
    resolution: int
    dropout: float
    published: bool


def compound_scaling(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA, *,
                     published: bool = False) -> EfficientNetScaling:
    """depth alpha**phi, width beta**phi, resolution round(224 * gamma**phi), dropout 0.2 (B0's); or with
    published=True the published B`phi` row (phi an integer in 0..7; alpha, beta and gamma are then unused). See
    the module docstring for where the two differ."""
    if published:
        if isinstance(phi, bool) or int(phi) != phi or not 0 <= phi <= 7:
            raise ValueError(f"compound_scaling: published=True needs an integer phi in 0..7 (B0-B7), got {phi!r}")
        width, depth, resolution, dropout = PUBLISHED[int(phi)]
        return EfficientNetScaling(int(phi), width, depth, resolution, dropout, True)
    if not phi >= 0:
        raise ValueError(f"compound_scaling: phi must be >= 0, got {phi!r}")
    return EfficientNetScaling(phi, beta ** phi, alpha ** phi, int(round(BASE_RESOLUTION * gamma ** phi)), 0.2, False)


def stage_layout(width_mult: float, depth_mult: float,
                 stages: Sequence[Tuple[int, int, int, int, int, int]] = B0_STAGES) -> List[Tuple[int, ...]]:
    """The scaled stages, rounded as torchvision rounds them: (expand ratio, kernel, stride, input channels, output
    channels, layers)."""
    return [(t, k, s, _make_divisible(cin * width_mult, 8), _make_divisible(cout * width_mult, 8),
             int(math.ceil(n * depth_mult))) for t, k, s, cin, cout, n in stages]


class EfficientNet(nn.Module):
    """torchvision's EfficientNet (B-series): `features` (stem ConvBNAct, one nn.Sequential of MBConv per stage,
    1x1 head ConvBNAct to 4x the last stage's width), `avgpool`, `classifier` (Dropout, Linear). `resolution` records
    the input size the scaling is meant for (not enforced: any input size works)."""

    def __init__(self, width_mult: float = 1.0, depth_mult: float = 1.0, dropout: float = 0.2,
                 stochastic_depth_prob: float = 0.2, num_classes: int = 1000,
                 norm_layer: Optional[Callable[..., nn.Module]] = None, in_channels: int = 3,
                 last_channel: Optional[int] = None, resolution: int = BASE_RESOLUTION,
                 stages: Sequence[Tuple[int, int, int, int, int, int]] = B0_STAGES) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self.width_mult, self.depth_mult, self.resolution = width_mult, depth_mult, resolution
        layout = stage_layout(width_mult, depth_mult, stages)
        layers: List[nn.Module] = [ConvBNAct(in_channels, layout[0][3], kernel_size=3, stride=2,
                                             norm_layer=norm_layer, activation_layer=nn.SiLU)]
        total = sum(n for *_, n in layout)
        block_id = 0
        for t, k, s, cin, cout, n in layout:
            stage: List[nn.Module] = []
            for i in range(n):
                c = cin if i == 0 else cout
                stage.append(MBConv(c, cout, _make_divisible(c * t, 8), k, s if i == 0 else 1,
                                    squeeze_channels=max(1, c // 4), activation_layer=nn.SiLU,
                                    se_activation_layer=partial(nn.SiLU, inplace=True), se_gate_layer=nn.Sigmoid,
                                    norm_layer=norm_layer,
                                    stochastic_depth_prob=stochastic_depth_prob * block_id / total))
                block_id += 1
            layers.append(nn.Sequential(*stage))
        last_in = layout[-1][4]
        last_out = last_channel if last_channel is not None else 4 * last_in
        layers.append(ConvBNAct(last_in, last_out, kernel_size=1, norm_layer=norm_layer, activation_layer=nn.SiLU))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(p=dropout, inplace=True), nn.Linear(last_out, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                r = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -r, r)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


def efficientnet(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA, *,
                 published: bool = False, **kwargs) -> EfficientNet:
    """EfficientNet scaled by compound coefficient `phi` (see compound_scaling()); the model's `scaling` attribute
    holds the EfficientNetScaling and `resolution` its input size. published=True builds the published B`phi`
    (identical to efficientnet_b`phi`()). kwargs go to EfficientNet (num_classes, dropout, stochastic_depth_prob,
    norm_layer, in_channels, ...) and override the scaling's dropout and norm."""
    scaling = compound_scaling(phi, alpha, beta, gamma, published=published)
    kwargs.setdefault("dropout", scaling.dropout)
    if published and phi >= 5:
        kwargs.setdefault("norm_layer", _TF_NORM)
    model = EfficientNet(scaling.width_mult, scaling.depth_mult, resolution=scaling.resolution, **kwargs)
    model.scaling = scaling
    return model


def _doc(phi: int) -> str:
    width, depth, resolution, dropout = PUBLISHED[phi]
    norm = "BatchNorm eps 1e-3, momentum 0.01" if phi >= 5 else "BatchNorm defaults"
    return (f"EfficientNet-B{phi} (torchvision's layout): width {width}, depth {depth}, {resolution} px, dropout "
            f"{dropout}, {norm}; kwargs: num_classes=1000, dropout, stochastic_depth_prob=0.2, norm_layer, "
            f"in_channels=3.")


def _published(phi: int):
    def build(**kwargs) -> EfficientNet:
        return efficientnet(phi, published=True, **kwargs)
    build.__name__ = build.__qualname__ = f"efficientnet_b{phi}"
    build.__doc__ = _doc(phi)
    return register_model(build)


efficientnet_b0 = _published(0)
efficientnet_b1 = _published(1)
efficientnet_b2 = _published(2)
efficientnet_b3 = _published(3)
efficientnet_b4 = _published(4)
efficientnet_b5 = _published(5)
efficientnet_b6 = _published(6)
efficientnet_b7 = _published(7)
