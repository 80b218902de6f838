"""Activations as the ops define them, and their gradients expressed through the activation's output."""

from __future__ import annotations

import torch


def apply_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(x)
    if activation == "relu6":
        return torch.nn.functional.relu6(x)
    return x


def activation_grad(grad: torch.Tensor, out: torch.Tensor, activation: str) -> torch.Tensor:
    """d act(z)/dz * grad, from out = act(z) (same masks torch uses: relu passes where out > 0, relu6 where 0 < out < 6)."""
    if activation == "relu":
        return grad * (out > 0).to(grad.dtype)
    if activation == "relu6":
        return grad * ((out > 0) & (out < 6)).to(grad.dtype)
    return grad


def conv_backward(grad: torch.Tensor, input: torch.Tensor, weight: torch.Tensor, has_bias: bool, stride, padding,
                  dilation, groups: int, needs=(True, True, True)):
    """(grad_input, grad_weight, grad_bias) of conv2d(input, weight, bias) for upstream `grad`."""
    mask = [bool(needs[0]), bool(needs[1]), bool(needs[2]) and has_bias]
    gi, gw, gb = torch.ops.aten.convolution_backward(
        grad, input, weight, [weight.shape[0]] if has_bias else None, list(stride), list(padding), list(dilation),
        False, [0, 0], groups, mask)
    return gi, gw, gb
