"""dwsep_conv2d = pw_act(conv1x1(dw_act(depthwise_conv2d(input)))): a depthwise-separable convolution (MobileNetV1
block) with both convolutions, their biases and activations fused."""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad, apply_activation
from cnnkernels.ops._conv_backward import conv_backward
from cnnkernels.ops._checks import as_output, check_dwsep_conv2d, empty_output, pair
from cnnkernels.ops._precision import run_in_fp32
from cnnkernels.ops._register import register_op_hooks

OP = "dwsep_conv2d"


def _depthwise_linear(input, dw_weight, dw_bias, stride, padding, dilation):
    return F.conv2d(input, dw_weight, dw_bias, tuple(stride), tuple(padding), tuple(dilation), input.shape[1])


def _depthwise(input, dw_weight, dw_bias, stride, padding, dilation, dw_activation):
    """The first stage, dw_act(depthwise conv): the reference's building block, also recomputed in backward."""
    return apply_activation(_depthwise_linear(input, dw_weight, dw_bias, stride, padding, dilation), dw_activation)


def dwsep_conv2d_reference(input: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
                           pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor] = None,
                           stride: Sequence[int] = (1, 1), padding: Sequence[int] = (0, 0),
                           dilation: Sequence[int] = (1, 1), dw_activation: str = "none",
                           pw_activation: str = "none") -> torch.Tensor:
    h = _depthwise(input, dw_weight, dw_bias, stride, padding, dilation, dw_activation)
    return apply_activation(F.conv2d(h, pw_weight, pw_bias), pw_activation)


def _fallback(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation, pw_activation):
    check_dwsep_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation,
                       pw_activation)
    y = run_in_fp32(dwsep_conv2d_reference, input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation,
                    dw_activation, pw_activation)
    return as_output(input, y)


register_reference_where_missing(OP, _fallback)


def _fake(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation, pw_activation):
    shape = check_dwsep_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation,
                               pw_activation)
    return empty_output(input, shape)


def _setup_context(ctx, inputs, output):
    input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation, pw_activation = inputs
    ctx.save_for_backward(input, dw_weight, dw_bias, pw_weight, pw_bias, output)
    ctx.conf = (stride, padding, dilation, dw_activation, pw_activation)


def _backward(ctx, grad):
    input, dw_weight, dw_bias, pw_weight, pw_bias, out = ctx.saved_tensors
    stride, padding, dilation, dw_activation, pw_activation = ctx.conf
    need = ctx.needs_input_grad
    need_dw = need[0] or need[1] or need[2]
    # Recompute the depthwise stage (not saved: it is the large intermediate the fusion avoids writing).
    z = _depthwise_linear(input, dw_weight, dw_bias, stride, padding, dilation)
    h = apply_activation(z, dw_activation)
    g = activation_grad(grad, out, pw_activation, lambda: F.conv2d(h, pw_weight, pw_bias))
    gh, gpw, gpb = conv_backward(g, h, pw_weight, pw_bias is not None, [1, 1], [0, 0], [1, 1], 1,
                                 (need_dw, need[3], need[4]))
    gx = gdw = gdb = None
    if need_dw:
        gh = activation_grad(gh, h, dw_activation, lambda: z)
        gx, gdw, gdb = conv_backward(gh, input, dw_weight, dw_bias is not None, stride, padding, dilation,
                                     input.shape[1], (need[0], need[1], need[2]))
    return gx, gdw, gdb, gpw, gpb, None, None, None, None, None


register_op_hooks("dwsep_conv2d", fake=_fake, backward=_backward, setup_context=_setup_context)


def dwsep_conv2d(input: torch.Tensor, dw_weight: torch.Tensor, dw_bias: Optional[torch.Tensor],
                 pw_weight: torch.Tensor, pw_bias: Optional[torch.Tensor] = None, stride: Sequence[int] = (1, 1),
                 padding: Sequence[int] = (0, 0), dilation: Sequence[int] = (1, 1), dw_activation: str = "none",
                 pw_activation: str = "none") -> torch.Tensor:
    """pw_act(conv1x1(dw_act(conv2d(input, dw_weight, dw_bias, groups=C)), pw_weight, pw_bias)) in one pass: the
    depthwise output never goes to memory. dw_weight is [C, 1, kH, kW], pw_weight [C_out, C, 1, 1]."""
    return call("dwsep_conv2d", _fallback, input, dw_weight, dw_bias, pw_weight, pw_bias, pair(stride),
                pair(padding), pair(dilation), dw_activation, pw_activation)
