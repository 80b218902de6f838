"""Activations as the ops define them, and their gradients.

relu, relu6 and none have gradients that the activation's output determines, so backward passes need not keep or
recompute the pre-activation for them; silu and hardswish are not monotonic, so their gradients need the
pre-activation, which the caller recomputes only for them (`pre`)."""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

# Every activation an op accepts, in the order the error messages list them (csrc/common/checks.cpp has the same).
ACTIVATIONS = ("none", "relu", "relu6", "silu", "hardswish")
# The activations whose gradient needs the pre-activation.
NEEDS_PREACTIVATION = ("silu", "hardswish")
# The squeeze-and-excitation gates of mbconv.
GATES = ("sigmoid", "hardsigmoid")


def apply_activation(x: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "relu":
        return torch.relu(x)
    if activation == "relu6":
        return F.relu6(x)
    if activation == "silu":
        return F.silu(x)
    if activation == "hardswish":
        return F.hardswish(x)
    return x


def activation_grad(grad: torch.Tensor, out: torch.Tensor, activation: str,
                    pre: Optional[Callable[[], torch.Tensor]] = None) -> torch.Tensor:
    """d act(z)/dz * grad, from out = act(z) for relu/relu6 (torch's masks: relu passes where out > 0, relu6 where
    0 < out < 6) and from z = pre() for silu and hardswish (torch's formulas, boundaries included)."""
    if activation == "relu":
        return grad * (out > 0).to(grad.dtype)
    if activation == "relu6":
        return grad * ((out > 0) & (out < 6)).to(grad.dtype)
    if activation == "silu":
        z = pre()
        s = torch.sigmoid(z)
        return grad * (s * (1 + z * (1 - s)))
    if activation == "hardswish":
        z = pre()
        slope = torch.where(z < -3, torch.zeros_like(z), torch.where(z <= 3, z / 3 + 0.5, torch.ones_like(z)))
        return grad * slope
    return grad


def apply_gate(x: torch.Tensor, gate: str) -> torch.Tensor:
    return torch.sigmoid(x) if gate == "sigmoid" else F.hardsigmoid(x)


def gate_grad(grad: torch.Tensor, z: torch.Tensor, gate: str) -> torch.Tensor:
    """d gate(z)/dz * grad (torch's hardsigmoid_backward: slope 1/6 strictly inside (-3, 3), else 0)."""
    if gate == "sigmoid":
        s = torch.sigmoid(z)
        return grad * s * (1 - s)
    return grad * ((z > -3) & (z < 3)).to(grad.dtype) / 6
