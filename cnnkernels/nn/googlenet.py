"""GoogLeNet's blocks with torchvision's attributes and state_dicts: BasicConv2d, the Inception module (one
inception_block call) and the auxiliary classifier."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkernels import ops
from cnnkernels.nn._fold import FoldCacheMixin, conv_is_fusable, conv_unit, fold_conv_bn, is_foldable_norm, _FUSION
from cnnkernels.nn.fused import bias_or_zeros, conv_act, is_1x1, is_same_odd
from cnnkernels.ops._checks import pair

__all__ = ["BasicConv2d", "InceptionBlock", "InceptionAux"]


class BasicConv2d(FoldCacheMixin, nn.Module):
    """GoogLeNet's conv (no bias) -> BatchNorm(eps=0.001) -> ReLU, attribute names `conv` and `bn` as torchvision's."""

    CONV_UNIT = ("conv", "bn", "relu")  # eval forward is exactly relu(bn(conv(x))): see cnnkernels.nn._fold.conv_unit
    CONV_BN_PAIRS = (("conv", "bn"),)
    FUSED_DESCRIPTION = "conv2d_act(relu)"

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def _compute_fold(self):
        if not conv_is_fusable(self.conv) or not is_foldable_norm(self.bn):
            return None
        return fold_conv_bn(self.conv, self.bn)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return conv_act(x, self.conv, f[0], f[1], "relu")
        x = self.conv(x)
        x = self.bn(x)
        return F.relu(x, inplace=True)


class InceptionBlock(FoldCacheMixin, nn.Module):
    """torchvision's GoogLeNet Inception module (same constructor, attributes and state_dict; like torchvision the
    "5x5" branch uses a 3x3 conv). Eval mode: one inception_block call writing every branch into its slice of the
    output (no concat)."""

    FUSED_DESCRIPTION = "inception_block"

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, conv_block: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if conv_block is None:
            conv_block = BasicConv2d
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(conv_block(in_channels, ch3x3red, kernel_size=1),
                                     conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(conv_block(in_channels, ch5x5red, kernel_size=1),
                                     conv_block(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     conv_block(in_channels, pool_proj, kernel_size=1))

    def _compute_fold(self):
        try:
            b2, b3, b4 = list(self.branch2), list(self.branch3), list(self.branch4)
        except TypeError:
            return None
        if len(b2) != 2 or len(b3) != 2 or len(b4) != 2:
            return None
        units = [conv_unit(m) for m in (self.branch1, b2[0], b2[1], b3[0], b3[1], b4[1])]
        if any(u is None or u.act != "relu" for u in units):
            return None
        u1, u2r, u2, u3r, u3, u4 = units
        if not all(is_1x1(u.conv) for u in (u1, u2r, u3r, u4)):
            return None
        for u in (u2, u3):
            if not (is_same_odd(u.conv) and tuple(u.conv.stride) == (1, 1) and u.conv.groups == 1):
                return None
        pool = b4[0]
        if not (type(pool) is nn.MaxPool2d and pair(pool.kernel_size) == (3, 3) and pair(pool.stride) == (1, 1)
                and pair(pool.padding) == (1, 1) and pair(pool.dilation) == (1, 1)):
            return None
        out = []
        for u in units:
            w, b = fold_conv_bn(u.conv, u.norm)
            out += [w, bias_or_zeros(w, b)]
        return tuple(out)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return ops.inception_block(x, *f)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class InceptionAux(nn.Module):
    """torchvision's GoogLeNet auxiliary classifier (same state_dict); its 1x1 conv is a fused BasicConv2d."""

    def __init__(self, in_channels: int, num_classes: int, conv_block: Optional[Callable[..., nn.Module]] = None,
                 dropout: float = 0.7) -> None:
        super().__init__()
        if conv_block is None:
            conv_block = BasicConv2d
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))
        x = self.conv(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x), inplace=True)
        x = self.dropout(x)
        return self.fc2(x)
