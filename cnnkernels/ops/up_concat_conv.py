"""up_concat_conv = act(conv3x3(cat([skip, conv_transpose2x2(input)], 1))): the up-path step of a U-Net decoder, the 2x2
stride-2 transposed convolution of the deep features, the concatenation with the encoder's skip tensor and the 3x3
convolution that follows, fused so that neither the upsampled nor the concatenated tensor goes to memory."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad, apply_activation
from cnnkernels.ops._conv_backward import conv_backward
from cnnkernels.ops._checks import as_output, check_up_concat_conv, empty_output
from cnnkernels.ops._precision import run_in_fp32
from cnnkernels.ops._register import register_op_hooks

OP = "up_concat_conv"


def _upsample(input, up_weight, up_bias):
    return F.conv_transpose2d(input, up_weight, up_bias, stride=2)


def _concat(input, skip, up_weight, up_bias):
    """The tensor the 3x3 conv reads, cat([skip, up]): the reference's building block, recomputed in backward."""
    return torch.cat([skip, _upsample(input, up_weight, up_bias)], dim=1)


def up_concat_conv_reference(input: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor,
                             up_bias: Optional[torch.Tensor], weight: torch.Tensor,
                             bias: Optional[torch.Tensor] = None, activation: str = "none") -> torch.Tensor:
    return apply_activation(F.conv2d(_concat(input, skip, up_weight, up_bias), weight, bias, padding=1), activation)


def _fallback(input, skip, up_weight, up_bias, weight, bias, activation):
    check_up_concat_conv(input, skip, up_weight, up_bias, weight, bias, activation)
    y = run_in_fp32(up_concat_conv_reference, input, skip, up_weight, up_bias, weight, bias, activation)
    return as_output(input, y)


register_reference_where_missing(OP, _fallback)


def _fake(input, skip, up_weight, up_bias, weight, bias, activation):
    return empty_output(input, check_up_concat_conv(input, skip, up_weight, up_bias, weight, bias, activation))


def _setup_context(ctx, inputs, output):
    input, skip, up_weight, up_bias, weight, bias, activation = inputs
    ctx.save_for_backward(input, skip, up_weight, up_bias, weight, bias, output)
    ctx.activation = activation


def _backward(ctx, grad):
    input, skip, up_weight, up_bias, weight, bias, out = ctx.saved_tensors
    need = ctx.needs_input_grad
    need_up = need[0] or need[2] or need[3]
    # The concatenation is recomputed, not saved: it is the large intermediate the fusion avoids writing.
    cat = _concat(input, skip, up_weight, up_bias)
    g = activation_grad(grad, out, ctx.activation, lambda: F.conv2d(cat, weight, bias, padding=1))
    gcat, gw, gb = conv_backward(g, cat, weight, bias is not None, [1, 1], [1, 1], [1, 1], 1,
                                 (need[1] or need_up, need[4], need[5]))
    gskip = gx = gupw = gupb = None
    if gcat is not None:
        c_skip = skip.shape[1]
        gskip = gcat[:, :c_skip] if need[1] else None
        if need_up:
            gx, gupw, gupb = conv_backward(gcat[:, c_skip:], input, up_weight, up_bias is not None, [2, 2], [0, 0],
                                           [1, 1], 1, (need[0], need[2], need[3]), transposed=True)
    return gx, gskip, gupw, gupb, gw, gb, None


register_op_hooks(OP, fake=_fake, backward=_backward, setup_context=_setup_context)


def up_concat_conv(input: torch.Tensor, skip: torch.Tensor, up_weight: torch.Tensor, up_bias: Optional[torch.Tensor],
                   weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                   activation: str = "none") -> torch.Tensor:
    """act(conv2d(cat([skip, conv_transpose2d(input, up_weight, up_bias, stride=2)], 1), weight, bias, padding=1)) in
    one pass. input [N, C_in, H, W], skip [N, C_skip, 2H, 2W], up_weight [C_in, C_up, 2, 2] (nn.ConvTranspose2d's
    layout), weight [C_out, C_skip + C_up, 3, 3]; the output is [N, C_out, 2H, 2W]."""
    return call(OP, _fallback, input, skip, up_weight, up_bias, weight, bias, activation)
