"""The gradient of a convolution, shared by the autograd formulas of every op that contains one."""

from __future__ import annotations

import torch


def conv_backward(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, has_bias: bool, stride, padding,
                  dilation, groups: int, needs=(True, True, True), transposed: bool = False):
    """(grad_input, grad_weight, grad_bias) of conv2d(input, weight, bias) for upstream `grad`, or with `transposed`
    of conv_transpose2d(input, weight, bias) (weight [C_in, C_out / groups, kH, kW], no output padding)."""
    mask = [bool(needs[0]), bool(needs[1]), bool(needs[2]) and has_bias]
    bias_sizes = [weight.shape[1] * groups if transposed else weight.shape[0]] if has_bias else None
    gi, gw, gb = torch.ops.aten.convolution_backward(
        grad, input, weight, bias_sizes, list(stride), list(padding), list(dilation), transposed, [0, 0], groups, mask)
    return gi, gw, gb
