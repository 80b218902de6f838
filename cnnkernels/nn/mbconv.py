"""The MBConv block of EfficientNet and MobileNet v3 (one mbconv call in eval mode), with the squeeze-and-excitation
and stochastic-depth modules it holds.

MBConv has the attributes and state_dict of both torchvision blocks: torchvision.models.efficientnet.MBConv (`block`
= [expand ConvBNAct (when the expanded width differs from the input's), depthwise ConvBNAct, SqueezeExcitation,
project ConvBNAct without activation], plus `stochastic_depth`) and torchvision.models.mobilenetv3.InvertedResidual
(the same `block`, SE optional, no `stochastic_depth`). SqueezeExcitation and StochasticDepth reimplement torchvision's (same attributes, state_dict and random draws) so that cnnkernels.nn
does not need torchvision; the fused path recognises torchvision's own instances too, which optimize() relies on.
"""

from __future__ import annotations

from functools import partial
from typing import Callable, List, Optional

import torch
from torch import Tensor, nn

from cnnkernels import ops
from cnnkernels._optional import is_instance_of
from cnnkernels.nn._fold import (ConvUnit, FoldCacheMixin, activation_name, conv_is_fusable, conv_unit,
                                 fold_conv_bn, gate_name, _FUSION)
from cnnkernels.nn.fused import ConvBNAct, bias_or_zeros, is_1x1, is_same_odd

__all__ = ["MBConv", "SqueezeExcitation", "StochasticDepth"]


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation: x * scale_activation(fc2(activation(fc1(avgpool(x))))), fc1/fc2 1x1 convs
    with bias (same constructor, attributes and state_dict)."""

    def __init__(self, input_channels: int, squeeze_channels: int,
                 activation: Callable[..., nn.Module] = nn.ReLU,
                 scale_activation: Callable[..., nn.Module] = nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = nn.Conv2d(squeeze_channels, input_channels, 1)
        self.activation = activation()
        self.scale_activation = scale_activation()

    def _scale(self, input: Tensor) -> Tensor:
        return self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(input)))))

    def forward(self, input: Tensor) -> Tensor:
        return self._scale(input) * input


class StochasticDepth(nn.Module):
    """torchvision.ops.StochasticDepth: in training mode zeroes the whole input ("batch") or each sample ("row") with
    probability p and scales the survivors by 1 / (1 - p). Draws exactly as torchvision does (one bernoulli_ on an
    empty tensor of the mask's shape), so the same seed drops the same samples."""

    def __init__(self, p: float, mode: str) -> None:
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"drop probability has to be between 0 and 1, but got {p}")
        if mode not in ("batch", "row"):
            raise ValueError(f"mode has to be either 'batch' or 'row', but got {mode}")
        self.p = p
        self.mode = mode

    def forward(self, input: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return input
        survival_rate = 1.0 - self.p
        size = [input.shape[0]] + [1] * (input.ndim - 1) if self.mode == "row" else [1] * input.ndim
        noise = torch.empty(size, dtype=input.dtype, device=input.device).bernoulli_(survival_rate)
        if survival_rate > 0.0:
            noise.div_(survival_rate)
        return input * noise

    def extra_repr(self) -> str:
        return f"p={self.p}, mode={self.mode}"


def _is_se(m: nn.Module) -> bool:
    # Exact types: a subclass may compute something else in forward().
    return type(m) is SqueezeExcitation or is_instance_of(m, "torchvision.ops.misc", "SqueezeExcitation")


def _is_identity_in_eval(m: Optional[nn.Module]) -> bool:
    if m is None:
        return True
    if type(m) is StochasticDepth or is_instance_of(m, "torchvision.ops.stochastic_depth", "StochasticDepth"):
        return not m.training or m.p == 0.0
    return False


def se_tensors(reduce: nn.Module, expand: nn.Module, activation: Optional[str], gate: Optional[str]):
    """(reduce weight, reduce bias, expand weight, expand bias, activation, gate) of a squeeze-and-excitation
    x * gate(expand(activation(reduce(mean over H, W of x)))) that mbconv can run (activation and gate as
    activation_name / gate_name give them), else None."""
    if activation is None or gate is None:
        return None
    if not (conv_is_fusable(reduce) and conv_is_fusable(expand) and is_1x1(reduce) and is_1x1(expand)
            and expand.in_channels == reduce.out_channels and expand.out_channels == reduce.in_channels):
        return None
    return (reduce.weight, bias_or_zeros(reduce.weight, reduce.bias), expand.weight,
            bias_or_zeros(expand.weight, expand.bias), activation, gate)


def _se_tensors(se: nn.Module):
    """se_tensors of a (torchvision or cnnkernels) SqueezeExcitation."""
    pool = se.avgpool
    if type(pool) is not nn.AdaptiveAvgPool2d or pool.output_size not in (1, (1, 1)):
        return None
    return se_tensors(se.fc1, se.fc2, activation_name(se.activation), gate_name(se.scale_activation))


def mbconv_fold(eu: Optional[ConvUnit], du: ConvUnit, se: Optional[tuple], pu: ConvUnit, residual: bool):
    """mbconv's arguments but the input and `residual`, with BatchNorm folded, for the expand (None: no expansion),
    depthwise and project units and the SE tensors (se_tensors; None: no SE) of a block whose output gets `+ input`
    when `residual`; None when the op cannot run them: kernel other than 3 or 5, dilation, different expand and
    depthwise activations, an activation after the project conv, widths that do not chain."""
    if pu.act != "none" or not is_1x1(pu.conv) or (eu is not None and (not is_1x1(eu.conv) or eu.act != du.act)):
        return None
    dc = du.conv
    hidden = dc.in_channels
    (kh, kw), (sh, sw) = dc.kernel_size, dc.stride
    if not (dc.groups == hidden and dc.out_channels == hidden and is_same_odd(dc) and kh == kw and kh in (3, 5)
            and sh == sw and sh in (1, 2) and pu.conv.in_channels == hidden
            and (eu is None or eu.conv.out_channels == hidden)):
        return None
    cin = eu.conv.in_channels if eu is not None else hidden
    if residual and (sh != 1 or pu.conv.out_channels != cin):
        return None
    if se is not None and se[0].shape[1] != hidden:
        return None
    ew, eb = fold_conv_bn(eu.conv, eu.norm) if eu is not None else (None, None)
    dw, db = fold_conv_bn(dc, du.norm)
    pw, pb = fold_conv_bn(pu.conv, pu.norm)
    sr_w, sr_b, se_w, se_b, se_act, gate = se if se is not None else (None, None, None, None, "none", "sigmoid")
    return (ew, eb, dw, bias_or_zeros(dw, db), sr_w, sr_b, se_w, se_b, pw, bias_or_zeros(pw, pb), sh, du.act,
            se_act, gate)


class MBConv(FoldCacheMixin, nn.Module):
    """EfficientNet's MBConv / MobileNet v3's InvertedResidual (torchvision's attributes and state_dict, see the module
    docstring): optional 1x1 expand to `expanded_channels` -> activation, depthwise kxk (stride, dilation) ->
    activation, optional squeeze-and-excitation to `squeeze_channels`, 1x1 project with norm and no activation,
    `+ input` when stride is 1 and the widths match (after stochastic depth in training mode when
    `stochastic_depth_prob` is a number; None leaves out the `stochastic_depth` child, MobileNet v3's layout).

    Eval mode: one mbconv call with BatchNorm folded into the expand, depthwise and project convs (the expanded
    activations never go to memory). Runs the plain submodules when the op cannot express the block: kernel other
    than 3 or 5, dilation (MobileNet v3's `dilated=True`), different expand and depthwise activations, an activation
    or gate the op lacks, a norm that does not fold."""

    FUSED_DESCRIPTION = "mbconv"

    def __init__(self, in_channels: int, out_channels: int, expanded_channels: int, kernel_size: int = 3,
                 stride: int = 1, squeeze_channels: Optional[int] = None,
                 activation_layer: Callable[..., nn.Module] = nn.SiLU,
                 se_activation_layer: Callable[..., nn.Module] = partial(nn.SiLU, inplace=True),
                 se_gate_layer: Callable[..., nn.Module] = nn.Sigmoid,
                 norm_layer: Optional[Callable[..., nn.Module]] = None,
                 stochastic_depth_prob: Optional[float] = 0.0, dilation: int = 1) -> None:
        super().__init__()
        if not 1 <= stride <= 2:
            raise ValueError("illegal stride value")
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: List[nn.Module] = []
        if expanded_channels != in_channels:
            layers.append(ConvBNAct(in_channels, expanded_channels, kernel_size=1, norm_layer=norm_layer,
                                    activation_layer=activation_layer))
        # torchvision's MobileNet v3 trades the stride for the dilation (its dilated=True tail)
        layers.append(ConvBNAct(expanded_channels, expanded_channels, kernel_size=kernel_size,
                                stride=1 if dilation > 1 else stride, dilation=dilation, groups=expanded_channels,
                                norm_layer=norm_layer, activation_layer=activation_layer))
        if squeeze_channels:
            layers.append(SqueezeExcitation(expanded_channels, squeeze_channels, activation=se_activation_layer,
                                            scale_activation=se_gate_layer))
        layers.append(ConvBNAct(expanded_channels, out_channels, kernel_size=1, norm_layer=norm_layer,
                                activation_layer=None))
        self.block = nn.Sequential(*layers)
        if stochastic_depth_prob is not None:
            self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = out_channels
        self._is_cn = stride > 1

    def _compute_fold(self):
        layers = list(self.block)
        if not 2 <= len(layers) <= 4 or not _is_identity_in_eval(self._modules.get("stochastic_depth")):
            return None
        pu = conv_unit(layers.pop())
        se = layers.pop() if layers and _is_se(layers[-1]) else None
        if pu is None or not 1 <= len(layers) <= 2:
            return None
        du = conv_unit(layers[-1])
        eu = conv_unit(layers[0]) if len(layers) == 2 else None
        if du is None or (len(layers) == 2 and eu is None):
            return None
        se_part = None
        if se is not None:
            se_part = _se_tensors(se)
            if se_part is None:
                return None
        return mbconv_fold(eu, du, se_part, pu, self.use_res_connect)

    def _run_folded(self, input: Tensor, f) -> Tensor:
        return ops.mbconv(input, *f[:10], f[10], bool(self.use_res_connect), *f[11:])

    def forward(self, input: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return self._run_folded(input, f)
        result = self.block(input)
        if self.use_res_connect:
            sd = self._modules.get("stochastic_depth")  # absent in MobileNet v3's layout
            if sd is not None:
                result = sd(result)
            result += input
        return result
