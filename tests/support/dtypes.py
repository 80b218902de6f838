"""The dtype ids and per-dtype tolerances of every test module: one table each, the CUDA and Triton tables derived
from the CPU one where those kernels round differently."""

from __future__ import annotations

import torch

# Test ids of the dtypes (parametrize ids "...-fp32", fuzz reports).
DTYPE_IDS = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.float64: "fp64"}

# Output of the op in `dtype` vs the fp32 reference on the same (already rounded) inputs. The compiled kernels and the
# fallback (cnnkernels/ops/_precision.py) compute in fp32 and round once on store, so what separates them from the
# reference is the fp32 summation order plus, for 16-bit outputs, that one rounding. Measured over every sample on the
# DEFAULT, AVX2 and AVX-512 builds (worst |out - ref|): fp32 3.8e-6 (outputs up to ~20, reductions up to 400 terms);
# fp16 within 4.9e-4 relative (half an ulp, u = 2**-11); bf16 within 3.9e-3 relative (u = 2**-8). The bounds: fp32
# about 5x the measured error; fp16/bf16 one and a half ulps (a summation-order difference can move a value across a
# rounding boundary: one ulp), plus an atol for outputs near zero, where the fp32 difference is larger than their ulp.
# fp64 on CPU runs ATen's float64 ops on both sides: it is checked against support/oracle.py instead (same bound).
TOLERANCES = {
    torch.float32: dict(atol=2e-5, rtol=2e-5),
    torch.float16: dict(atol=5e-5, rtol=1.5e-3),
    torch.bfloat16: dict(atol=5e-5, rtol=1.2e-2),
    torch.float64: dict(atol=1e-10, rtol=1e-10),
}

# The CUDA kernels (tests/cuda_kernels/: the emulated runs on CPU and the GPU runs) vs the fp64 reference of the rounded
# inputs, outputs of magnitude ~1-5. Looser than TOLERANCES because, unlike the CPU kernels, they keep some fused
# intermediates in the dtype (the depthwise tile, inception's reductions: one more rounding each for fp16/bf16) and
# sum in tile / tensor-core fragment order (WMMA for fp16/bf16); fp32 and fp16 share their bounds with the Triton
# kernels and were not re-measured when TOLERANCES was tightened to the CPU kernels' error. fp64 as TOLERANCES.
CUDA_TOLERANCES = {
    **TOLERANCES,
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=1e-2, rtol=1e-2),
    torch.bfloat16: dict(atol=8e-2, rtol=4e-2),
}

# The Triton kernels (tests/triton_ops/: the interpreter on CPU and the GPU runs) vs the fp32 reference on the same
# (already rounded) inputs. They accumulate in fp32 and round the intermediates the unfused ops would store (up to two
# for inverted_residual) to `dtype`: the CUDA bounds, except bf16, where the interpreter truncates fp32 -> bf16 instead
# of rounding to nearest, so allow about twice the GPU error.
TRITON_TOLERANCES = {
    **CUDA_TOLERANCES,
    torch.bfloat16: dict(atol=1.5e-1, rtol=5e-2),
}
