"""MobileNet's blocks: v1's DepthwiseSeparableConv2d (one dwsep_conv2d call) and v2's InvertedResidual (torchvision's
attributes and state_dict; one inverted_residual call)."""

from __future__ import annotations

from typing import Callable, List, Optional

from torch import Tensor, nn

from cnnkernels import ops
from cnnkernels.nn._fold import (ConvUnit, FoldCacheMixin, conv_is_fusable, conv_unit, fold_conv_bn,
                                 is_batchnorm, is_foldable_norm, _FUSION)
from cnnkernels.nn.fused import ConvBNAct, IntOr2, bias_or_zeros, is_1x1, is_same_odd

__all__ = ["DepthwiseSeparableConv2d", "InvertedResidual"]


def dwsep_fold(du: ConvUnit, pu: ConvUnit):
    """((dw weight, dw bias), dw activation, (pw weight, pw bias), pw activation) for dwsep_conv2d, BatchNorm folded,
    from a depthwise and a pointwise unit; None when they are not that."""
    c = du.conv.in_channels
    if not (du.conv.groups == c and du.conv.out_channels == c and is_1x1(pu.conv)):
        return None
    return fold_conv_bn(du.conv, du.norm), du.act, fold_conv_bn(pu.conv, pu.norm), pu.act


class DepthwiseSeparableConv2d(FoldCacheMixin, nn.Module):
    """MobileNet v1's layer: depthwise KxK conv -> norm -> act, then pointwise 1x1 conv -> norm -> act, as two
    ConvBNAct children `depthwise` and `pointwise`. Eval mode: one dwsep_conv2d call (the depthwise activation
    never goes to memory)."""

    FUSED_DESCRIPTION = "dwsep_conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOr2 = 3, stride: IntOr2 = 1,
                 padding: Optional[IntOr2] = None, dilation: IntOr2 = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
                 activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels,
                                   norm_layer=norm_layer, activation_layer=activation_layer, dilation=dilation)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, norm_layer=norm_layer,
                                   activation_layer=activation_layer)
        self.out_channels = out_channels

    def _compute_fold(self):
        du, pu = conv_unit(self.depthwise), conv_unit(self.pointwise)
        return None if du is None or pu is None else dwsep_fold(du, pu)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                (dw, db), dact, (pw, pb), pact = f
                c = self.depthwise[0]
                return ops.dwsep_conv2d(x, dw, db, pw, pb, c.stride, c.padding, c.dilation, dact, pact)
        return self.pointwise(self.depthwise(x))


class InvertedResidual(FoldCacheMixin, nn.Module):
    """torchvision's MobileNetV2 InvertedResidual (same constructor, attributes and state_dict: `conv` is
    [ConvBNAct expand (when expand_ratio != 1), ConvBNAct depthwise, Conv2d project, norm]). Eval mode: one
    inverted_residual call (the expanded activation never goes to memory; the residual is added in its epilogue)."""

    FUSED_DESCRIPTION = "inverted_residual"

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        self.stride = stride
        if stride not in [1, 2]:
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = self.stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden_dim, kernel_size=1, norm_layer=norm_layer,
                                    activation_layer=nn.ReLU6))
        layers.extend([
            ConvBNAct(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, norm_layer=norm_layer,
                      activation_layer=nn.ReLU6),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            norm_layer(oup),
        ])
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def _compute_fold(self):
        layers = list(self.conv)
        if len(layers) == 4:
            eu = conv_unit(layers[0])
            if eu is None or not is_1x1(eu.conv):
                return None
            layers = layers[1:]
        elif len(layers) == 3:
            eu = None
        else:
            return None
        du = conv_unit(layers[0])
        proj, pnorm = layers[1], layers[2]
        if du is None or not conv_is_fusable(proj) or not is_1x1(proj) or not (is_batchnorm(pnorm) or
                                                                                  type(pnorm) is nn.Identity):
            return None
        if not is_foldable_norm(pnorm):
            return None
        dc = du.conv
        hidden = dc.in_channels
        s = tuple(dc.stride)
        if not (dc.groups == hidden and dc.out_channels == hidden and is_same_odd(dc) and s[0] == s[1]):
            return None
        act = du.act
        if eu is not None and eu.act != act:
            return None
        if self.use_res_connect and (s[0] != 1 or proj.out_channels != (eu.conv.in_channels if eu else hidden)):
            return None
        ew, eb = fold_conv_bn(eu.conv, eu.norm) if eu is not None else (None, None)
        dw, db = fold_conv_bn(dc, du.norm)
        pw, pb = fold_conv_bn(proj, pnorm)
        return ew, eb, dw, bias_or_zeros(dw, db), pw, bias_or_zeros(pw, pb), s[0], act

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                ew, eb, dw, db, pw, pb, stride, act = f
                return ops.inverted_residual(x, ew, eb, dw, db, pw, pb, stride, bool(self.use_res_connect), act)
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)
