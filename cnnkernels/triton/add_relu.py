"""cnnkernels::add_relu_triton: relu(input + residual) as one elementwise Triton kernel."""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnkernels.ops._checks import check_add_relu, output_memory_format
from cnnkernels.triton._common import autotune_configs, check_device, register_like_main_op, schema, up

OP = "add_relu"

_CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 4096}, num_warps=8),
]


@triton.autotune(configs=autotune_configs(_CONFIGS), key=["numel"])
@triton.jit
def _add_relu_kernel(X, R, Y, numel, F64: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = up(tl.load(X + offs, mask=mask, other=0.0), F64)
    r = up(tl.load(R + offs, mask=mask, other=0.0), F64)
    s = x + r
    y = tl.where(s < 0, 0.0, s)
    tl.store(Y + offs, y.to(Y.dtype.element_ty), mask=mask)


@triton_op("cnnkernels::add_relu_triton", mutates_args=(), schema=schema(OP))
def add_relu_triton(input: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
    check_add_relu(input, residual)
    check_device(OP, input)
    # Both operands dense in the output's layout: then one flat index addresses the same element in all three.
    fmt = output_memory_format(input)
    x = input.contiguous(memory_format=fmt)
    r = residual.contiguous(memory_format=fmt)
    out = torch.empty_like(x)
    numel = out.numel()
    if numel == 0:
        return out

    def grid(meta):
        return (triton.cdiv(numel, meta["BLOCK"]),)

    wrap_triton(_add_relu_kernel)[grid](x, r, out, numel, F64=input.dtype == torch.float64)
    return out


register_like_main_op(OP)
