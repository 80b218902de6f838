"""inverted_residual: the MobileNetV2 block, expand 1x1 -> act -> depthwise kxk -> act -> project 1x1 (+ input), fused
so that the expanded (wide) intermediates never go to memory."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._act import activation_grad, apply_activation, conv_backward
from cnnkernels.ops._checks import (MAX_WINDOW_PARAM, _shape, as_output, check_bias, check_input, check_like,
                                    check_pointwise, empty_output, parse_activation)
from cnnkernels.ops._precision import run_in_fp32

OP = "inverted_residual"


def _check(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
           activation):
    check_input(OP, input)
    N, C, H, W = input.shape
    if expand_weight is not None:
        hidden = check_pointwise(OP, input, expand_weight, "expand_weight", C)
        check_bias(OP, input, expand_bias, hidden, "expand_bias")
    else:
        if expand_bias is not None:
            raise ValueError(f"cnnkernels.{OP}: expand_bias must be None when expand_weight is None")
        hidden = C
    if stride <= 0:
        raise ValueError(f"cnnkernels.{OP}: stride must be positive, got {stride}")
    if stride > MAX_WINDOW_PARAM:
        raise ValueError(f"cnnkernels.{OP}: stride must be at most {MAX_WINDOW_PARAM}, got {stride}")
    check_like(OP, input, dw_weight, "dw_weight")
    if dw_weight.dim() != 4 or dw_weight.shape[0] != hidden or dw_weight.shape[1] != 1 \
            or dw_weight.shape[2] % 2 != 1 or dw_weight.shape[3] % 2 != 1:
        raise ValueError(f"cnnkernels.{OP}: dw_weight must have shape [{hidden}, 1, kH, kW] with odd kH and kW, got "
                         f"shape {_shape(dw_weight)}")
    check_bias(OP, input, dw_bias, hidden, "dw_bias", required=True)
    Cout = check_pointwise(OP, input, project_weight, "project_weight", hidden)
    check_bias(OP, input, project_bias, Cout, "project_bias", required=True)
    if residual and (stride != 1 or Cout != C):
        raise ValueError(f"cnnkernels.{OP}: residual=True needs stride 1 and as many output as input channels, got "
                         f"stride {stride}, {C} -> {Cout} channels")
    parse_activation(OP, "activation", activation)
    return N, Cout, (H - 1) // stride + 1, (W - 1) // stride + 1


def _dw_padding(dw_weight):
    return [dw_weight.shape[2] // 2, dw_weight.shape[3] // 2]


def _expand(input, expand_weight, expand_bias, activation):
    """act(conv1x1(input)), or input itself when the block has no expansion."""
    if expand_weight is None:
        return input
    return apply_activation(F.conv2d(input, expand_weight, expand_bias), activation)


def _depthwise(h, dw_weight, dw_bias, stride, activation):
    y = F.conv2d(h, dw_weight, dw_bias, stride, _dw_padding(dw_weight), 1, h.shape[1])
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
    _check(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
           activation)
    y = run_in_fp32(inverted_residual_reference, input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight,
                    project_bias, stride, residual, activation)
    return as_output(input, y)


register_reference_where_missing(OP, _fallback)


@torch.library.register_fake("cnnkernels::inverted_residual")
def _fake(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
          activation):
    shape = _check(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride,
                   residual, activation)
    return empty_output(input, shape)


def _setup_context(ctx, inputs, output):
    (input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride, residual,
     activation) = inputs
    ctx.save_for_backward(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight)
    ctx.conf = (stride, residual, activation)


def _backward(ctx, grad):
    input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight = ctx.saved_tensors
    stride, residual, activation = ctx.conf
    need = ctx.needs_input_grad
    expand = expand_weight is not None
    need_e = need[0] or need[1] or need[2]          # gradient flowing into the expanded tensor
    need_d = need_e or need[3] or need[4]           # ... into the depthwise output
    # Recompute the two intermediates from the saved inputs (the fused kernel never stores them).
    e = _expand(input, expand_weight, expand_bias, activation)
    d = _depthwise(e, dw_weight, dw_bias, stride, activation)
    gd, gpw, gpb = conv_backward(grad, d, project_weight, True, [1, 1], [0, 0], [1, 1], 1, (need_d, need[5], need[6]))
    gx = gew = geb = gdw = gdb = None
    if need_d:
        gd = activation_grad(gd, d, activation)
        ge, gdw, gdb = conv_backward(gd, e, dw_weight, True, [stride, stride], _dw_padding(dw_weight), [1, 1],
                                     e.shape[1], (need_e, need[3], need[4]))
        if expand and need_e:
            ge = activation_grad(ge, e, activation)
            gx, gew, geb = conv_backward(ge, input, expand_weight, expand_bias is not None, [1, 1], [0, 0], [1, 1],
                                         1, (need[0], need[1], need[2]))
        elif need[0]:
            gx = ge
    if residual and need[0]:
        gx = grad if gx is None else gx + grad
    return gx, gew, geb, gdw, gdb, gpw, gpb, None, None, None


torch.library.register_autograd("cnnkernels::inverted_residual", _backward, setup_context=_setup_context)


def inverted_residual(input: torch.Tensor, expand_weight: Optional[torch.Tensor],
                      expand_bias: Optional[torch.Tensor], dw_weight: torch.Tensor, dw_bias: torch.Tensor,
                      project_weight: torch.Tensor, project_bias: torch.Tensor, stride: int = 1,
                      residual: bool = False, activation: str = "relu6") -> torch.Tensor:
    """conv1x1(act(dwconv(act(conv1x1(input, expand_weight, expand_bias)))), project_weight, project_bias) (+ input
    when residual), the depthwise conv [hidden, 1, k, k] (odd k) padded to 'same' and strided by `stride`. With
    expand_weight None the block starts at the depthwise conv (MobileNetV2's expansion factor 1)."""
    return call("inverted_residual", _fallback, input, expand_weight, expand_bias, dw_weight, dw_bias,
                project_weight, project_bias, stride, residual, activation)
