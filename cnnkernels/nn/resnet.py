"""ResNet's blocks with torchvision's constructors, attributes and state_dicts: BasicBlock, Bottleneck (v1.5), the
option-A ZeroPadShortcut, conv3x3 / conv1x1."""

from __future__ import annotations

from typing import Callable, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from cnnkernels.nn._fold import FoldCacheMixin, conv_is_fusable, conv_unit, fold_conv_bn, is_foldable_norm, _FUSION
from cnnkernels.nn.fused import conv_act

__all__ = ["ZeroPadShortcut", "BasicBlock", "Bottleneck", "conv3x3", "conv1x1"]


class ZeroPadShortcut(nn.Module):
    """The parameter-free ResNet shortcut (option A of He et al. 2015): spatial subsampling by `stride` (the pixels a
    strided 1x1 conv would read) and zero channels appended up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ZeroPadShortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.out_channels != self.in_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                     bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _fold_shortcut(downsample: Optional[nn.Module]):
    """None (identity), ('conv', conv, w, b) for a [Conv2d, norm] projection, or ('module',) to call it as it is."""
    if downsample is None:
        return None
    u = conv_unit(downsample)
    if u is not None and u.act == "none":
        w, b = fold_conv_bn(u.conv, u.norm)
        return ("conv", u.conv, w, b)
    return ("module",)


class _ResidualBlock(FoldCacheMixin, nn.Module):
    def _shortcut(self, x: Tensor, ds) -> Tensor:
        if ds is None:
            return x
        if ds[0] == "conv":
            return conv_act(x, ds[1], ds[2], ds[3], "none")
        return self.downsample(x)


class BasicBlock(_ResidualBlock):
    """torchvision's ResNet BasicBlock (same constructor, attributes and state_dict). Eval mode: two conv2d_act
    calls, the second adding the shortcut and applying ReLU in its epilogue; a [conv1x1, BN] downsample is folded
    too."""

    expansion: int = 1
    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))
    FUSED_DESCRIPTION = "2x conv2d_act, shortcut add + ReLU in the epilogue"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def _compute_fold(self):
        if not (type(self.relu) is nn.ReLU and conv_is_fusable(self.conv1) and conv_is_fusable(self.conv2)
                and is_foldable_norm(self.bn1) and is_foldable_norm(self.bn2)):
            return None
        return fold_conv_bn(self.conv1, self.bn1), fold_conv_bn(self.conv2, self.bn2), \
            _fold_shortcut(self.downsample)

    def _run_folded(self, x: Tensor, f) -> Tensor:
        (w1, b1), (w2, b2), ds = f
        out = conv_act(x, self.conv1, w1, b1, "relu")
        return conv_act(out, self.conv2, w2, b2, "relu", residual=self._shortcut(x, ds))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return self._run_folded(x, f)
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(_ResidualBlock):
    """torchvision's ResNet (v1.5) Bottleneck: stride on the 3x3 conv. Eval mode: three conv2d_act calls, the last
    adding the shortcut and applying ReLU in its epilogue."""

    expansion: int = 4
    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
    FUSED_DESCRIPTION = "3x conv2d_act, shortcut add + ReLU in the epilogue"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def _compute_fold(self):
        convs = (self.conv1, self.conv2, self.conv3)
        norms = (self.bn1, self.bn2, self.bn3)
        if not (type(self.relu) is nn.ReLU and all(conv_is_fusable(c) for c in convs)
                and all(is_foldable_norm(n) for n in norms)):
            return None
        return tuple(fold_conv_bn(c, n) for c, n in zip(convs, norms)) + (_fold_shortcut(self.downsample),)

    def _run_folded(self, x: Tensor, f) -> Tensor:
        (w1, b1), (w2, b2), (w3, b3), ds = f
        out = conv_act(x, self.conv1, w1, b1, "relu")
        out = conv_act(out, self.conv2, w2, b2, "relu")
        return conv_act(out, self.conv3, w3, b3, "relu", residual=self._shortcut(x, ds))

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return self._run_folded(x, f)
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out
