"""The gradient of a convolution, shared by the autograd formulas of every op that contains one."""

from __future__ import annotations

import torch


def conv_backward(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, has_bias: bool, stride, padding,
                  dilation, groups: int, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of conv2d(input, weight, bias) for upstream `grad`."""
    mask = [bool(needs[0]), bool(needs[1]), bool(needs[2]) and has_bias]
    gi, gw, gb = torch.ops.aten.convolution_backward(
        grad, input, weight, [weight.shape[0]] if has_bias else None, list(stride), list(padding), list(dilation),
        False, [0, 0], groups, mask)
    return gi, gw, gb
