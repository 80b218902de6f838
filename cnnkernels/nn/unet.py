"""U-Net's blocks (Ronneberger et al. 2015, with padding 1 so that a level keeps its size): UNetDown, a contracting
level (optional 2x2 max pool, then two 3x3 conv [+ norm] + activation), and UNetUp, an expanding level (2x2 stride-2
transposed conv, concatenation `[skip, up]`, then two 3x3 conv [+ norm] + activation).

Eval mode: UNetDown runs its two convs as two conv2d_act calls, norm folded; UNetUp runs the transposed conv, the
concatenation and its first conv as one up_concat_conv call and its second conv as one conv2d_act. No torchvision
equivalent exists, so the state_dict keys are this module's own plain names (`pool`, `up`, `conv1`, `norm1`, `conv2`,
`norm2`; `act` holds no parameters)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor, nn

from cnnkernels.nn._fold import FoldCacheMixin, activation_name, conv_is_fusable, fold_conv_bn, is_foldable_norm, \
    _FUSION
from cnnkernels.nn.fused import conv_act
from cnnkernels.ops.up_concat_conv import up_concat_conv

__all__ = ["UNetDown", "UNetUp"]


def _is_same_3x3(conv: nn.Conv2d) -> bool:
    """3x3, stride 1, padding 1, dilation 1, not grouped: U-Net's size-keeping conv, and the one up_concat_conv applies
    after the concatenation."""
    return (tuple(conv.kernel_size) == (3, 3) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (1, 1)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1)


def _is_up_2x2(up: nn.Module) -> bool:
    """The transposed conv up_concat_conv applies: nn.ConvTranspose2d, kernel 2, stride 2, no padding."""
    return (type(up) is nn.ConvTranspose2d and tuple(up.kernel_size) == (2, 2) and tuple(up.stride) == (2, 2)
            and tuple(up.padding) == (0, 0) and tuple(up.output_padding) == (0, 0) and tuple(up.dilation) == (1, 1)
            and up.groups == 1 and up.padding_mode == "zeros")


class _DoubleConv(FoldCacheMixin, nn.Module):
    """conv1 -> norm1 -> act -> conv2 -> norm2 -> act, both convs 3x3 with padding 1 (bias only without a norm); the
    part both U-Net blocks share. norm_layer None puts nn.Identity in the norms' places."""

    CONV_BN_PAIRS = (("conv1", "norm1"), ("conv2", "norm2"))

    def __init__(self, in_channels: int, out_channels: int, norm_layer: Optional[Callable[..., nn.Module]],
                 activation_layer: Callable[..., nn.Module]) -> None:
        super().__init__()
        bias = norm_layer is None
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)
        self.norm1 = nn.Identity() if norm_layer is None else norm_layer(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias)
        self.norm2 = nn.Identity() if norm_layer is None else norm_layer(out_channels)
        self.act = activation_layer(inplace=True)
        self.out_channels = out_channels

    def _fold_convs(self):
        """((w1, b1), (w2, b2), activation) with the norms folded, or None when the ops cannot run them."""
        act = activation_name(self.act)
        if act is None or not all(conv_is_fusable(c) and _is_same_3x3(c) for c in (self.conv1, self.conv2)) \
                or not (is_foldable_norm(self.norm1) and is_foldable_norm(self.norm2)):
            return None
        return fold_conv_bn(self.conv1, self.norm1), fold_conv_bn(self.conv2, self.norm2), act

    def _second(self, x: Tensor) -> Tensor:
        return self.act(self.norm2(self.conv2(x)))


class UNetDown(_DoubleConv):
    """A contracting level of U-Net: 2x2 max pool (stride 2; `pool=False`: none, the first level), then two 3x3 convs
    (padding 1) each followed by `norm_layer` (None: no norm, the convs get biases) and `activation_layer`. Output:
    (N, out_channels, H/2, W/2) (H, W without the pool). Eval mode: two conv2d_act calls, norms folded."""

    FUSED_DESCRIPTION = "2x conv2d_act"

    def __init__(self, in_channels: int, out_channels: int, pool: bool = True,
                 norm_layer: Optional[Callable[..., nn.Module]] = None,
                 activation_layer: Callable[..., nn.Module] = nn.ReLU) -> None:
        super().__init__(in_channels, out_channels, norm_layer, activation_layer)
        self.pool = nn.MaxPool2d(2, 2) if pool else nn.Identity()

    def _compute_fold(self):
        return self._fold_convs()

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(x)
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                (w1, b1), (w2, b2), act = f
                return conv_act(conv_act(x, self.conv1, w1, b1, act), self.conv2, w2, b2, act)
        return self._second(self.act(self.norm1(self.conv1(x))))


class UNetUp(_DoubleConv):
    """An expanding level of U-Net: `up`, a 2x2 stride-2 transposed conv from in_channels to up_channels (default
    out_channels: the paper halves the width here), then `torch.cat([skip, up], 1)` with the contracting path's
    skip_channels-channel output at twice the input's size, then two 3x3 convs (padding 1) each followed by
    `norm_layer` (None: none, the convs get biases) and `activation_layer`. forward(x, skip): x (N, in_channels, H, W),
    skip (N, skip_channels, 2H, 2W) -> (N, out_channels, 2H, 2W).

    Eval mode: one up_concat_conv call (transposed conv, concatenation, first conv, norm folded, activation) and one
    conv2d_act."""

    FUSED_DESCRIPTION = "up_concat_conv + conv2d_act"

    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, up_channels: Optional[int] = None,
                 norm_layer: Optional[Callable[..., nn.Module]] = None,
                 activation_layer: Callable[..., nn.Module] = nn.ReLU) -> None:
        if up_channels is None:
            up_channels = out_channels
        super().__init__(skip_channels + up_channels, out_channels, norm_layer, activation_layer)
        self.up = nn.ConvTranspose2d(in_channels, up_channels, kernel_size=2, stride=2)
        self.skip_channels = skip_channels

    def _compute_fold(self):
        f = self._fold_convs()
        if f is None or not _is_up_2x2(self.up) or self.conv1.in_channels != self.skip_channels + \
                self.up.out_channels:
            return None
        return self.up.weight, self.up.bias, f

    def _check(self, x: Tensor, skip: Tensor) -> None:
        if not isinstance(skip, Tensor) or skip.dim() != 4:
            raise TypeError(f"UNetUp: `skip` must be a 4-D tensor (N, {self.skip_channels}, 2H, 2W), got "
                            f"{type(skip).__name__ if not isinstance(skip, Tensor) else tuple(skip.shape)}")
        if x.dim() != 4:
            raise ValueError(f"UNetUp: `x` must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
        want = (x.shape[0], self.skip_channels, 2 * x.shape[2], 2 * x.shape[3])
        if tuple(skip.shape) != want:
            raise ValueError(f"UNetUp: `skip` must have shape (N, skip_channels, 2H, 2W) = {want} for `x` of shape "
                             f"{tuple(x.shape)}, got {tuple(skip.shape)}")

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        self._check(x, skip)
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                up_w, up_b, ((w1, b1), (w2, b2), act) = f
                return conv_act(up_concat_conv(x, skip, up_w, up_b, w1, b1, act), self.conv2, w2, b2, act)
        x = torch.cat([skip, self.up(x)], 1)
        return self._second(self.act(self.norm1(self.conv1(x))))
