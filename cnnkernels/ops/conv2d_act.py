"""conv2d_act = act(conv2d(input, weight, bias) + residual): a convolution with its epilogue fused."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad, apply_activation
from cnnkernels.ops._conv_backward import conv_backward
from cnnkernels.ops._checks import as_output, check_conv2d_act, empty_output, pair
from cnnkernels.ops._precision import run_in_fp32
from cnnkernels.ops._register import register_op_hooks

OP = "conv2d_act"


def conv2d_act_reference(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                         residual: Optional[torch.Tensor] = None, stride: Sequence[int] = (1, 1),
                         padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1,
                         activation: str = "none") -> torch.Tensor:
    y = F.conv2d(input, weight, bias, tuple(stride), tuple(padding), tuple(dilation), groups)
    if residual is not None:
        y = y + residual
    return apply_activation(y, activation)


def _fallback(input, weight, bias, residual, stride, padding, dilation, groups, activation):
    check_conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, activation)
    y = run_in_fp32(conv2d_act_reference, input, weight, bias, residual, stride, padding, dilation, groups, activation)
    return as_output(input, y)


register_reference_where_missing(OP, _fallback)


def _fake(input, weight, bias, residual, stride, padding, dilation, groups, activation):
    g = check_conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, activation)
    return empty_output(input, (g.N, g.Cout, g.Ho, g.Wo))


def _setup_context(ctx, inputs, output):
    input, weight, bias, residual, stride, padding, dilation, groups, activation = inputs
    ctx.save_for_backward(input, weight, bias, residual, output)
    ctx.conf = (stride, padding, dilation, groups, activation)


def _backward(ctx, grad):
    input, weight, bias, residual, out = ctx.saved_tensors
    stride, padding, dilation, groups, activation = ctx.conf
    has_bias, has_res = bias is not None, residual is not None

    def pre():
        return conv2d_act_reference(input, weight, bias, residual, stride, padding, dilation, groups, "none")

    g = activation_grad(grad, out, activation, pre)
    gi, gw, gb = conv_backward(g, input, weight, has_bias, stride, padding, dilation, groups,
                               (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2]))
    return gi, gw, gb, (g if has_res else None), None, None, None, None, None


register_op_hooks("conv2d_act", fake=_fake, backward=_backward, setup_context=_setup_context)


def conv2d_act(input: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
               residual: Optional[torch.Tensor] = None, stride: Sequence[int] = (1, 1),
               padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), groups: int = 1,
               activation: str = "none") -> torch.Tensor:
    """act(conv2d(input, weight, bias) + residual) with bias, residual add and activation fused into the conv."""
    return call("conv2d_act", _fallback, input, weight, bias, residual, pair(stride), pair(padding),
                pair(dilation), groups, activation)
