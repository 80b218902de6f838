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
    """d act(z)/dz * grad, from out = act(z) (torch's masks: relu passes where out > 0, relu6 where 0 < out < 6)."""
    if activation == "relu":
        return grad * (out > 0).to(grad.dtype)
    if activation == "relu6":
        return grad * ((out > 0) & (out < 6)).to(grad.dtype)
    return grad
