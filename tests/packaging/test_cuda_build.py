"""The built libcnnkernels_cuda.so registers a compiled CUDA kernel for every cnnkernels op (no GPU needed)."""

from __future__ import annotations

import pytest
import torch

import cnnkernels  # noqa: F401  (loads the libraries)
from cnnkernels import _library
from support.samples import generic_ops

# Ops registered by a shared wrapper rather than csrc/cuda/<op>.cpp.
CUDA_WRAPPER = {"box_iou": "boxes", "nms": "boxes", "batched_nms": "boxes"}

pytestmark = pytest.mark.skipif(not _library.CUDA_LIB.exists(),
                                reason="cnnkernels was built without CUDA kernels (no libcnnkernels_cuda.so)")


def test_cuda_library_loaded():
    assert _library.STATE.cuda, _library.STATE.cuda_reason
    assert _library.STATE.build_config["cuda"], _library.STATE.build_config


@pytest.mark.parametrize("op", generic_ops("cuda", _library.op_names()))
def test_registers_a_compiled_cuda_kernel(op):
    qualname = f"cnnkernels::{op}"
    assert torch._C._dispatch_has_kernel_for_dispatch_key(qualname, "CUDA")
    # The registration is the C++ one from csrc/cuda/<op>.cpp, not the Python reference fallback (torch/library.py).
    cuda = [line for line in torch._C._dispatch_dump(qualname).splitlines() if line.startswith("CUDA:")]
    assert len(cuda) == 1 and f"csrc/cuda/{CUDA_WRAPPER.get(op, op)}.cpp" in cuda[0], cuda
