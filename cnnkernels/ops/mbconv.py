"""mbconv: EfficientNet's and MobileNet v3's block, expand 1x1 -> act -> depthwise kxk -> act -> squeeze-and-excitation
gate -> project 1x1 (+ input), fused so that the expanded (wide) intermediates never go to memory when they fit the
cache (see the README's "mbconv" section for what the CPU kernel keeps where).

The squeeze-and-excitation (SE) stage is optional: all four SE tensors, or none. It averages the depthwise output d
over the image, s = se_gate(conv1x1(se_activation(conv1x1(mean(d), se_reduce_weight, se_reduce_bias)),
se_expand_weight, se_expand_bias)), and scales d's channels by s before the projection. EfficientNet uses
se_activation = activation = "silu" and se_gate = "sigmoid"; MobileNet v3 uses se_activation = "relu" and
se_gate = "hardsigmoid" whatever the block's activation. The schema names se_activation explicitly instead of
deriving it from se_gate, so a block from another family (timm's, say) is not forced into either convention."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad, apply_activation, apply_gate, gate_grad
from cnnkernels.ops._checks import as_output, check_mbconv, empty_output, same_padding
from cnnkernels.ops._conv_backward import conv_backward
from cnnkernels.ops.inverted_residual import backward_from_depthwise, recompute
from cnnkernels.ops._precision import run_in_fp32
from cnnkernels.ops._register import register_op_hooks

OP = "mbconv"


def _se_logits(d, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, se_activation):
    """(mean, reduce pre-activation, reduce output, gate pre-activation) of the SE stage on the depthwise output d."""
    m = d.mean((2, 3), keepdim=True)
    zr = F.conv2d(m, se_reduce_weight, se_reduce_bias)
    r = apply_activation(zr, se_activation)
    return m, zr, r, F.conv2d(r, se_expand_weight, se_expand_bias)


def mbconv_reference(input: torch.Tensor, expand_weight: Optional[torch.Tensor], expand_bias: Optional[torch.Tensor],
                     dw_weight: torch.Tensor, dw_bias: torch.Tensor, se_reduce_weight: Optional[torch.Tensor],
                     se_reduce_bias: Optional[torch.Tensor], se_expand_weight: Optional[torch.Tensor],
                     se_expand_bias: Optional[torch.Tensor], project_weight: torch.Tensor,
                     project_bias: torch.Tensor, stride: int = 1, residual: bool = False, activation: str = "silu",
                     se_activation: str = "silu", se_gate: str = "sigmoid") -> torch.Tensor:
    h = input
    if expand_weight is not None:
        h = apply_activation(F.conv2d(h, expand_weight, expand_bias), activation)
    h = apply_activation(F.conv2d(h, dw_weight, dw_bias, stride, same_padding(dw_weight), 1, h.shape[1]), activation)
    if se_reduce_weight is not None:
        zg = _se_logits(h, se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias, se_activation)[3]
        h = h * apply_gate(zg, se_gate)
    y = F.conv2d(h, project_weight, project_bias)
    return y + input if residual else y


def _fallback(*args):
    check_mbconv(*args)
    return as_output(args[0], run_in_fp32(mbconv_reference, *args))


register_reference_where_missing(OP, _fallback)


def _fake(*args):
    return empty_output(args[0], check_mbconv(*args))


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs[:11])
    ctx.conf = tuple(inputs[11:])


def _backward(ctx, grad):
    (input, expand_weight, expand_bias, dw_weight, dw_bias, se_rw, se_rb, se_ew, se_eb, project_weight,
     project_bias) = ctx.saved_tensors
    stride, residual, activation, se_activation, se_gate = ctx.conf
    need = ctx.needs_input_grad
    se = se_rw is not None
    need_d = any(need[:9])  # gradient flowing into the depthwise output (the SE tensors' goes through it too)
    r = recompute(input, expand_weight, expand_bias, dw_weight, dw_bias, stride, activation)
    d = h = r.d
    if se:
        m, zr, s, zg = _se_logits(d, se_rw, se_rb, se_ew, se_eb, se_activation)
        gate = apply_gate(zg, se_gate)
        h = d * gate
    gh, gpw, gpb = conv_backward(grad, h, project_weight, True, [1, 1], [0, 0], [1, 1], 1,
                                 (need_d, need[9], need[10]))
    gx = gew = geb = gdw = gdb = grw = grb = gsw = gsb = None
    if need_d:
        gd = gh
        if se:
            gd = gh * gate
            gzg = gate_grad((gh * d).sum((2, 3), keepdim=True), zg, se_gate)
            gs, gsw, gsb = conv_backward(gzg, s, se_ew, True, [1, 1], [0, 0], [1, 1], 1, (True, need[7], need[8]))
            gzr = activation_grad(gs, s, se_activation, lambda: zr)
            gm, grw, grb = conv_backward(gzr, m, se_rw, True, [1, 1], [0, 0], [1, 1], 1, (True, need[5], need[6]))
            gd = gd + gm / (d.shape[2] * d.shape[3])
        gx, gew, geb, gdw, gdb = backward_from_depthwise(gd, r, input, expand_weight, expand_bias, dw_weight, stride,
                                                         activation, need[:5])
    if residual and need[0]:
        gx = grad if gx is None else gx + grad
    return gx, gew, geb, gdw, gdb, grw, grb, gsw, gsb, gpw, gpb, None, None, None, None, None


register_op_hooks(OP, fake=_fake, backward=_backward, setup_context=_setup_context)


def mbconv(input: torch.Tensor, expand_weight: Optional[torch.Tensor], expand_bias: Optional[torch.Tensor],
           dw_weight: torch.Tensor, dw_bias: torch.Tensor, se_reduce_weight: Optional[torch.Tensor],
           se_reduce_bias: Optional[torch.Tensor], se_expand_weight: Optional[torch.Tensor],
           se_expand_bias: Optional[torch.Tensor], project_weight: torch.Tensor, project_bias: torch.Tensor,
           stride: int = 1, residual: bool = False,
           activation: str = "silu", se_activation: str = "silu", se_gate: str = "sigmoid") -> torch.Tensor:
    """conv1x1(se(act(dwconv(act(conv1x1(input, expand_weight, expand_bias))))), project_weight, project_bias)
    (+ input when residual). dw_weight is [hidden, 1, k, k] with k 3 or 5, 'same'-padded, stride 1 or 2;
    expand_weight None starts the block at the depthwise conv; the SE tensors are se_reduce_weight [S, hidden, 1, 1],
    se_reduce_bias [S], se_expand_weight [hidden, S, 1, 1], se_expand_bias [hidden], or all None (no SE)."""
    return call(OP, _fallback, input, expand_weight, expand_bias, dw_weight, dw_bias, se_reduce_weight,
                se_reduce_bias, se_expand_weight, se_expand_bias, project_weight, project_bias, stride, residual,
                activation, se_activation, se_gate)
