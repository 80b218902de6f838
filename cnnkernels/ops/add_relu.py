"""add_relu(input, residual) = relu(input + residual): the residual join of ResNet blocks."""

from __future__ import annotations

import torch

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._checks import as_output, check_add_relu, empty_output
from cnnkernels.ops._precision import run_in_fp32
from cnnkernels.ops._register import register_op_hooks


def add_relu_reference(input: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    return torch.relu(input + residual)


def _fallback(input, residual):
    check_add_relu(input, residual)
    return as_output(input, run_in_fp32(add_relu_reference, input, residual))


register_reference_where_missing("add_relu", _fallback)


def _fake(input, residual):
    check_add_relu(input, residual)
    return empty_output(input, input.shape)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _backward(ctx, grad):
    (out,) = ctx.saved_tensors
    g = grad * (out > 0).to(grad.dtype)
    return g, g


register_op_hooks("add_relu", fake=_fake, backward=_backward, setup_context=_setup_context)


def add_relu(input: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    """relu(input + residual) in one pass; any shape, output in the input's memory format."""
    return call("add_relu", _fallback, input, residual)
