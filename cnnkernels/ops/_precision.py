"""The precision the pure-PyTorch fallback computes fp16/bf16 in."""

from __future__ import annotations

from typing import Callable

import torch

NARROW_DTYPES = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype an op computes `dtype` inputs in when it does not round to 16 bits at all (the box ops): float32 for
    fp16/bf16, the dtype itself otherwise."""
    return torch.float32 if dtype in NARROW_DTYPES else dtype


# Upcast because the compiled kernels compute 16-bit inputs in fp32 and round once on store, whereas torch's own
# fp16/bf16 convolutions round every stage and differ by CPU (oneDNN's AVX512-BF16/AMX path can even lose NaN/Inf).
def run_in_fp32(reference: Callable[..., torch.Tensor], *args) -> torch.Tensor:
    """reference(*args) on fp32 copies of the tensor arguments when the input (args[0]) is fp16 or bf16, the result
    rounded once back to the input's dtype; for fp32 and fp64 reference(*args) itself, without copies. Run it after
    the op's checks: they make every tensor argument the input's dtype (mixed dtypes are rejected, never cast)."""
    dtype = args[0].dtype
    if dtype not in NARROW_DTYPES:
        return reference(*args)
    wide = tuple(a.float() if isinstance(a, torch.Tensor) else a for a in args)
    return reference(*wide).to(dtype)
