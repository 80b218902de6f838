"""inverted_residual: the MobileNetV2 block, expand 1x1 -> act -> depthwise kxk -> act -> project 1x1 (+ input), fused
so that the expanded (wide) intermediates never go to memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad, apply_activation
from cnnkernels.ops._conv_backward import conv_backward
from cnnkernels.ops._checks import as_output, check_inverted_residual, empty_output, same_padding
from cnnkernels.ops._precision import run_in_fp32
from cnnkernels.ops._register import register_op_hooks

OP = "inverted_residual"


def _expand(input, expand_weight, expand_bias, activation):
    """act(conv1x1(input)), or input itself when the block has no expansion."""
    if expand_weight is None:
        return input
    return apply_activation(F.conv2d(input, expand_weight, expand_bias), activation)


def _depthwise(h, dw_weight, dw_bias, stride, activation):
    y = F.conv2d(h, dw_weight, dw_bias, stride, same_padding(dw_weight), 1, h.shape[1])
    return apply_activation(y, activation)


def inverted_residual_reference(input: torch.Tensor, expand_weight: Optional[torch.Tensor],
                                expand_bias: Optional[torch.Tensor], dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                                project_weight: torch.Tensor, project_bias: torch.Tensor, stride: int = 1,
                                residual: bool = False, activation: str = "relu6") -> torch.Tensor:
    h = _expand(input, expand_weight, expand_bias, activation)
    h = _depthwise(h, dw_weight, dw_bias, stride, activation)
    y = F.conv2d(h, project_weight, project_bias)
    return y + input if residual else y


def _fallback(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
              activation):
    check_inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride,
                            residual, activation)
    y = run_in_fp32(inverted_residual_reference, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                    project_bias, stride, residual, activation)
    return as_output(input, y)


register_reference_where_missing(OP, _fallback)


def _fake(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
          activation):
    shape = check_inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                                    stride, residual, activation)
    return empty_output(input, shape)


def _setup_context(ctx, inputs, output):
    (input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
     activation) = inputs
    ctx.save_for_backward(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight)
    ctx.conf = (stride, residual, activation)


@dataclass
class Recomputed:
    """The intermediates of expand -> depthwise, recomputed in backward from the saved inputs (the fused kernels never
    store them): pre-activations ze, zd and outputs e, d (ze None and e the input without an expansion stage)."""
    ze: Optional[torch.Tensor]
    e: torch.Tensor
    zd: torch.Tensor
    d: torch.Tensor


def recompute(input, expand_weight, expand_bias, dw_weight, dw_bias, stride, activation) -> Recomputed:
    ze = F.conv2d(input, expand_weight, expand_bias) if expand_weight is not None else None
    e = apply_activation(ze, activation) if ze is not None else input
    zd = F.conv2d(e, dw_weight, dw_bias, stride, same_padding(dw_weight), 1, e.shape[1])
    return Recomputed(ze, e, zd, apply_activation(zd, activation))


def backward_from_depthwise(gd, r: Recomputed, input, expand_weight, expand_bias, dw_weight, stride, activation,
                            need):
    """(grad input, expand_weight, expand_bias, dw_weight, dw_bias) from gd, the gradient of the depthwise output
    r.d; `need` flags those five. The block's other users of the input (a residual) add theirs."""
    gd = activation_grad(gd, r.d, activation, lambda: r.zd)
    need_e = need[0] or need[1] or need[2]
    ge, gdw, gdb = conv_backward(gd, r.e, dw_weight, True, [stride, stride], same_padding(dw_weight), [1, 1],
                                 r.e.shape[1], (need_e, need[3], need[4]))
    if r.ze is None:
        return ge if need[0] else None, None, None, gdw, gdb
    gx = gew = geb = None
    if need_e:
        ge = activation_grad(ge, r.e, activation, lambda: r.ze)
        gx, gew, geb = conv_backward(ge, input, expand_weight, expand_bias is not None, [1, 1], [0, 0], [1, 1], 1,
                                     (need[0], need[1], need[2]))
    return gx, gew, geb, gdw, gdb


def _backward(ctx, grad):
    input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight = ctx.saved_tensors
    stride, residual, activation = ctx.conf
    need = ctx.needs_input_grad
    r = recompute(input, expand_weight, expand_bias, dw_weight, dw_bias, stride, activation)
    gd, gpw, gpb = conv_backward(grad, r.d, project_weight, True, [1, 1], [0, 0], [1, 1], 1,
                                 (any(need[:5]), need[5], need[6]))
    gx = gew = geb = gdw = gdb = None
    if any(need[:5]):
        gx, gew, geb, gdw, gdb = backward_from_depthwise(gd, r, input, expand_weight, expand_bias, dw_weight, stride,
                                                         activation, need[:5])
    if residual and need[0]:
        gx = grad if gx is None else gx + grad
    return gx, gew, geb, gdw, gdb, gpw, gpb, None, None, None


register_op_hooks("inverted_residual", fake=_fake, backward=_backward, setup_context=_setup_context)


def inverted_residual(input: torch.Tensor, expand_weight: Optional[torch.Tensor],
                      expand_bias: Optional[torch.Tensor], dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                      project_weight: torch.Tensor, project_bias: torch.Tensor, stride: int = 1,
                      residual: bool = False, activation: str = "relu6") -> torch.Tensor:
    """conv1x1(act(dwconv(act(conv1x1(input, expand_weight, expand_bias)))), project_weight, project_bias) (+ input
    when residual), the depthwise conv [hidden, 1, k, k] (odd k) padded to 'same' and strided by `stride`. With
    expand_weight None the block starts at the depthwise conv (MobileNetV2's expansion factor 1)."""
    return call("inverted_residual", _fallback, input, expand_weight, expand_bias, dw_weight, dw_bias,
                project_weight, project_bias, stride, residual, activation)
