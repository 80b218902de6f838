"""Multiply-accumulate (MAC) counts of the cnnkernels ops, from the shapes of their arguments, and their registration
with torch.utils.flop_counter so that FlopCounterMode counts the fused ops too (it counts 2 FLOPs per MAC).

The convention is the one of the papers and torchvision's model table, and of FlopCounterMode's own formula for
aten.convolution: a convolution costs output elements x kernel volume x input channels per group (padding taps
included); biases, activations, residual adds and pooling cost nothing. So a fused op counts exactly what its
decomposed reference counts under FlopCounterMode, and a model costs the same fused or not.

This module needs only torch and the op schemas (torch.ops.cnnkernels.*): cnnkernels.ops imports it, so `import
cnnkernels` registers the formulas; cnnkernels.cost calls register_flop_formulas() again before counting, to pick up
the Triton variants `<op>_triton` that exist only once cnnkernels.triton is imported. A new op
needs its entry in MAC_FORMULAS (tests/nn/test_cost.py checks that every op in ops.schema has one).
"""

from __future__ import annotations

from math import prod
from typing import Callable, Dict, List, Optional, Sequence

import torch
from torch.utils.flop_counter import flop_registry, register_flop_formula

from cnnkernels.ops._checks import pair

__all__ = ["MAC_FORMULAS", "conv_output_size", "op_macs", "register_flop_formulas"]

Shape = Sequence[int]


def conv_output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """One spatial output extent of a convolution (torch's formula, floor mode)."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _conv_macs(batch: int, out_hw: Shape, weight: Shape) -> int:
    # weight is [C_out, C_in / groups, kH, kW]: prod(weight) = C_out x kernel volume x input channels per group, so
    # this is output elements x kernel volume x input channels per group.
    return batch * prod(out_hw) * prod(weight)


def _out_hw(input: Shape, weight: Shape, stride, padding, dilation) -> List[int]:
    s, p, d = pair(stride), pair(padding), pair(dilation)
    return [conv_output_size(input[2 + i], weight[2 + i], s[i], p[i], d[i]) for i in range(2)]


# Each formula takes the op's arguments in schema order (tensors as their shapes, optional ones possibly None) and
# returns MACs. Parameter names are the schema's, so keyword calls bind as well.

def add_relu_macs(input: Shape, residual: Shape) -> int:
    return 0  # an add and a max: no multiplications


def conv2d_act_macs(input: Shape, weight: Shape, bias: Optional[Shape], residual: Optional[Shape], stride, padding,
                    dilation, groups: int, activation: str) -> int:
    return _conv_macs(input[0], _out_hw(input, weight, stride, padding, dilation), weight)


def dwsep_conv2d_macs(input: Shape, dw_weight: Shape, dw_bias: Optional[Shape], pw_weight: Shape,
                      pw_bias: Optional[Shape], stride, padding, dilation, dw_activation: str,
                      pw_activation: str) -> int:
    hw = _out_hw(input, dw_weight, stride, padding, dilation)
    # The depthwise conv (dw_weight [C, 1, kH, kW]) and the 1x1 pointwise conv both run at the output resolution.
    return _conv_macs(input[0], hw, dw_weight) + _conv_macs(input[0], hw, pw_weight)


def inverted_residual_macs(input: Shape, expand_weight: Optional[Shape], expand_bias: Optional[Shape],
                           dw_weight: Shape, dw_bias: Shape, project_weight: Shape, project_bias: Shape, stride: int,
                           residual: bool, activation: str) -> int:
    n, hw_in = input[0], list(input[2:])
    # The depthwise conv is 'same'-padded (odd kernel, padding k // 2) and strided; expand runs at the input's
    # resolution, project at the output's.
    hw = _out_hw(input, dw_weight, stride, [dw_weight[2] // 2, dw_weight[3] // 2], 1)
    expand = _conv_macs(n, hw_in, expand_weight) if expand_weight is not None else 0
    return expand + _conv_macs(n, hw, dw_weight) + _conv_macs(n, hw, project_weight)


def mbconv_macs(input: Shape, expand_weight: Optional[Shape], expand_bias: Optional[Shape], dw_weight: Shape,
                dw_bias: Shape, se_reduce_weight: Optional[Shape], se_reduce_bias: Optional[Shape],
                se_expand_weight: Optional[Shape], se_expand_bias: Optional[Shape], project_weight: Shape,
                project_bias: Shape, stride: int, residual: bool, activation: str, se_activation: str,
                se_gate: str) -> int:
    macs = inverted_residual_macs(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                                  stride, residual, activation)
    # The SE stage's two 1x1 convs run on the pooled 1x1 map (torchvision's _ops counts them the same way); the
    # pooling and the channel scaling are not multiply-accumulates of a conv.
    if se_reduce_weight is not None:
        macs += _conv_macs(input[0], [1, 1], se_reduce_weight) + _conv_macs(input[0], [1, 1], se_expand_weight)
    return macs


def inception_block_macs(input: Shape, w1: Shape, b1: Shape, w2_reduce: Shape, b2_reduce: Shape, w2: Shape,
                         b2: Shape, w3_reduce: Shape, b3_reduce: Shape, w3: Shape, b3: Shape, w4: Shape,
                         b4: Shape) -> int:
    # Every conv is stride 1 and 'same'-padded, so all run at the input's H x W; the 3x3 max pool costs nothing.
    n, hw = input[0], list(input[2:])
    return sum(_conv_macs(n, hw, w) for w in (w1, w2_reduce, w2, w3_reduce, w3, w4))


def no_conv_macs(*args, **kwargs) -> int:
    # detection ops (box_iou, nms, batched_nms, yolo_postprocess): comparisons and a few products per box pair
    return 0


def up_concat_conv_macs(input: Shape, skip: Shape, up_weight: Shape, up_bias: Optional[Shape], weight: Shape,
                        bias: Optional[Shape], activation: str) -> int:
    n, hw_up = input[0], [2 * input[2], 2 * input[3]]
    # FlopCounterMode's transposed-conv formula: every input pixel meets every tap of up_weight [C_in, C_up, 2, 2]
    # (stride 2 = kernel 2, so each upsampled pixel is one tap's product); then the 'same' 3x3 conv at 2H x 2W.
    return _conv_macs(n, input[2:], up_weight) + _conv_macs(n, hw_up, weight)


MAC_FORMULAS: Dict[str, Callable[..., int]] = {
    "add_relu": add_relu_macs,
    "conv2d_act": conv2d_act_macs,
    "dwsep_conv2d": dwsep_conv2d_macs,
    "inverted_residual": inverted_residual_macs,
    "inception_block": inception_block_macs,
    "mbconv": mbconv_macs,
    "box_iou": no_conv_macs,
    "nms": no_conv_macs,
    "batched_nms": no_conv_macs,
    "yolo_postprocess": no_conv_macs,
    "up_concat_conv": up_concat_conv_macs,
}


def _shape(v):
    return v.shape if isinstance(v, torch.Tensor) else v


def op_macs(op: str, *args, **kwargs) -> int:
    """MACs of one call torch.ops.cnnkernels.<op>(*args, **kwargs) (tensors or their shapes), without running it."""
    try:
        formula = MAC_FORMULAS[op]
    except KeyError:
        raise ValueError(f"cnnkernels: no MAC formula for op {op!r}; known: {', '.join(sorted(MAC_FORMULAS))}") \
            from None
    return int(formula(*(_shape(a) for a in args), **{k: _shape(v) for k, v in kwargs.items()}))


def _flop_formula(macs: Callable[..., int]) -> Callable[..., int]:
    # FlopCounterMode calls formulas with the shapes of the arguments plus out_shape=; the formulas above derive the
    # output size themselves, so it is not needed. FLOPs = 2 x MACs, as in FlopCounterMode's conv and matmul formulas.
    def flops(*args, out_shape=None, **kwargs) -> int:
        return 2 * int(macs(*args, **kwargs))
    flops.__name__ = macs.__name__.replace("_macs", "_flop")
    return flops


def _defined(name: str) -> bool:
    return hasattr(torch.ops.cnnkernels, name)


def register_flop_formulas() -> List[str]:
    """Registers the FLOP formula of every cnnkernels op, and of its Triton variant `<op>_triton` where that op
    exists now, with torch.utils.flop_counter (FlopCounterMode copies the registry when it is constructed, so this
    must run before). Idempotent; returns the names registered by this call."""
    done = []
    for op, macs in MAC_FORMULAS.items():
        for name in (op, f"{op}_triton"):
            if not _defined(name):
                continue
            packet = getattr(torch.ops.cnnkernels, name)
            if packet in flop_registry:
                continue
            register_flop_formula(packet)(_flop_formula(macs))
            done.append(name)
    return done


register_flop_formulas()
