"""Pieces shared by the Triton ops: interpreter detection, activation/accumulation helpers used inside the kernels,
dot-precision selection, and the registration of each Triton op's fake kernel and autograd from its main op module."""

from __future__ import annotations

import os
from typing import Dict, List

import torch
import triton
import triton.language as tl

from cnnkernels._library import SCHEMAS
from cnnkernels.ops._act import ACTIVATIONS, GATES
from cnnkernels.ops._register import apply_op_hooks, op_hooks

# Whether this process runs Triton kernels in the interpreter. `triton.jit` makes that choice when a kernel is
# decorated (at import of these modules), from TRITON_INTERPRET; record the value seen then, not the current one.
INTERPRET: bool = os.environ.get("TRITON_INTERPRET", "0") == "1"

# The constexpr codes `activate` and `gate` branch on: the position in the ops' own lists (the validation has already
# rejected any other name).
ACTIVATION_CODES: Dict[str, int] = {name: code for code, name in enumerate(ACTIVATIONS)}
GATE_CODES: Dict[str, int] = {name: code for code, name in enumerate(GATES)}
_RELU = tl.constexpr(ACTIVATION_CODES["relu"])
_RELU6 = tl.constexpr(ACTIVATION_CODES["relu6"])
_SILU = tl.constexpr(ACTIVATION_CODES["silu"])
_HARDSWISH = tl.constexpr(ACTIVATION_CODES["hardswish"])
_SIGMOID = tl.constexpr(GATE_CODES["sigmoid"])

# Dot modes (constexpr DOT in the kernels): how a tile product is computed. The accumulator is always fp32 (fp64 for
# fp64 inputs).
DOT_HALF = 0        # fp16/bf16 operands on tensor cores
DOT_IEEE = 1        # fp32 operands, exact fp32 products
DOT_TF32 = 2        # fp32 operands rounded to tf32 (only when torch.backends.cuda.matmul.allow_tf32 is set)
DOT_F64 = 3         # fp64 operands


def autotune_configs(configs: List[triton.Config]) -> List[triton.Config]:
    """The interpreter cannot time kernels: give it only the first config (the autotuner then skips benchmarking
    and the autotune wrapper itself still runs); GPUs get the whole set."""
    return configs[:1] if INTERPRET else configs


def schema(op: str) -> str:
    """The schema of the main op `op` without its name: the Triton op has exactly the same signature."""
    return SCHEMAS[op][len(op):]


def check_device(op: str, t: torch.Tensor) -> None:
    """The Triton ops run on CUDA tensors, and on CPU tensors only in the interpreter."""
    if t.device.type == "cpu" and not INTERPRET:
        raise RuntimeError(f"cnnkernels.{op}_triton: CPU tensors run only in the Triton interpreter (set "
                           f"TRITON_INTERPRET=1 before triton is imported); use torch.ops.cnnkernels.{op} for CPU "
                           f"tensors")


def dot_mode(dtype: torch.dtype) -> int:
    if dtype == torch.float64:
        return DOT_F64
    if dtype == torch.float32:
        return DOT_TF32 if (torch.backends.cuda.matmul.allow_tf32 and not INTERPRET) else DOT_IEEE
    if dtype == torch.bfloat16 and INTERPRET:
        return DOT_IEEE     # the interpreter has no bf16 arithmetic: bf16 tiles are multiplied in fp32
    return DOT_HALF


def register_like_main_op(op: str) -> None:
    """Gives `cnnkernels::<op>_triton` the main op's fake kernel and autograd formulas (same signature, same
    validation, same backward)."""
    apply_op_hooks(f"cnnkernels::{op}_triton", op_hooks(op))


# ----------------------------------------------------------------------------------------------------------------
# Device helpers (inlined into the kernels)


@triton.jit
def up(x, F64: tl.constexpr):
    """Widen to the accumulation type: fp32, or fp64 for fp64 inputs (all elementwise math happens there; the
    interpreter has no bf16 arithmetic)."""
    if F64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def acc_zeros(BM: tl.constexpr, BN: tl.constexpr, F64: tl.constexpr):
    if F64:
        return tl.zeros([BM, BN], dtype=tl.float64)
    else:
        return tl.zeros([BM, BN], dtype=tl.float32)


@triton.jit
def _relu6(x):
    # compare-and-select rather than min/max, so that NaN passes through as in torch
    return tl.where(x < 0, 0.0, tl.where(x > 6, 6.0, x))


@triton.jit
def _sigmoid(x):
    # written out (not tl.sigmoid) so that fp64 inputs stay in fp64
    return 1.0 / (1.0 + tl.exp(-x))


@triton.jit
def activate(x, ACT: tl.constexpr):
    """ACTIVATIONS[ACT] of x (already widened by `up`), NaN passing through as in torch."""
    if ACT == _RELU:
        x = tl.where(x < 0, 0.0, x)
    elif ACT == _RELU6:
        x = _relu6(x)
    elif ACT == _SILU:
        x = x * _sigmoid(x)
    elif ACT == _HARDSWISH:
        x = x * _relu6(x + 3.0) / 6.0
    return x


@triton.jit
def gate(x, GATE: tl.constexpr):
    """GATES[GATE] of x (already widened by `up`): sigmoid, or hardsigmoid = relu6(x + 3) / 6."""
    if GATE == _SIGMOID:
        return _sigmoid(x)
    else:
        return _relu6(x + 3.0) / 6.0


@triton.jit
def round_to(x, Y, F64: tl.constexpr):
    """Round x to the element type of pointer Y and widen it back: an intermediate the unfused ops would store."""
    return up(x.to(Y.dtype.element_ty), F64)


@triton.jit
def mma(a, b, acc, Y, DOT: tl.constexpr):
    """acc + a @ b with the operands converted for the dot mode (Y: a pointer of the input's element type)."""
    if DOT == 0:
        return tl.dot(a.to(Y.dtype.element_ty), b.to(Y.dtype.element_ty), acc)
    elif DOT == 1:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    elif DOT == 2:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="tf32")
    else:
        return tl.dot(a.to(tl.float64), b.to(tl.float64), acc, input_precision="ieee")
