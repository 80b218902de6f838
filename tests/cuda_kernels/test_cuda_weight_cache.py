"""The CUDA ops' packed-weight cache (csrc/cuda/common.h: the CPU library's cache with Trust::FrozenOnly), run through
the host emulation: the wrappers, packings and cache calls are the CUDA build's own code, on CPU tensors.

What a GPU user relies on: unfrozen weights are packed on every call (so any write is seen and nothing is kept);
frozen weights are packed once and reused while their version counters stand still; a packing that reads several
weights (inception's fused 1x1 GEMM) is invalidated by a change to any of them; freed weights leave the cache.
"""

from __future__ import annotations

import gc

import pytest
import torch

from cnnkernels import _library as L

from support.cuda_cases import reference
from test_cuda_emulated import emu  # noqa: F401  (the module-scoped emulation build)


@pytest.fixture(autouse=True)
def _clean_cache():
    L.weight_cache_clear()
    yield
    L.weight_cache_clear()


def _conv_args(dtype=torch.float16, groups=1):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 8, 6, 5, generator=g).to(dtype)
    w = (torch.randn(16, 8 // groups, 3, 3, generator=g) / 8).to(dtype)
    b = torch.randn(16, generator=g).to(dtype)
    return [x, w, b, None, [1, 1], [1, 1], [1, 1], groups, "relu"]


def _check(emu, op, args):
    y = emu.op(op)(*args)
    torch.testing.assert_close(y.float(), reference(op, args).float(), rtol=2e-2, atol=2e-2)
    return y


@pytest.mark.parametrize("groups", [1, 2])
def test_unfrozen_weights_are_packed_per_call_and_not_kept(emu, groups):
    args = _conv_args(groups=groups)
    _check(emu, "conv2d_act", args)
    assert L.weight_cache_size() == 0
    args[1].data.mul_(-1.0)  # bypasses the version counter: only a per-call packing sees it
    args[2].data.add_(1.0)
    _check(emu, "conv2d_act", args)
    assert L.weight_cache_size() == 0


def test_frozen_weights_are_packed_once(emu):
    args = _conv_args()
    x, w, b = args[:3]
    assert L.weight_cache_freeze([w, b]) == 2
    y1 = _check(emu, "conv2d_act", args)
    assert L.weight_cache_size() == 2  # the packed weight and the fp32 bias
    # The documented trade of freezing: a write through .data moves no version counter and is not seen. That the old
    # result comes back proves the second call used the cached packing.
    w.data.mul_(-1.0)
    b.data.add_(1.0)
    torch.testing.assert_close(emu.op("conv2d_act")(*args), y1, rtol=0, atol=0)
    # In-place updates through the tensor itself (optimizers, load_state_dict) bump the counter and are seen.
    with torch.no_grad():
        w.mul_(0.5)
        b.sub_(0.25)
    _check(emu, "conv2d_act", args)
    assert L.weight_cache_size() == 2


def test_fp32_contiguous_bias_needs_no_packing(emu):
    args = _conv_args(torch.float32)
    L.weight_cache_freeze(args[1:3])
    _check(emu, "conv2d_act", args)
    assert L.weight_cache_size() == 1  # the weight only: the bias is used as it is


def _inception_args():
    g = torch.Generator().manual_seed(1)
    C, H, W = 6, 5, 4
    sizes = dict(c1=4, c2r=3, c2=5, c3r=2, c3=3, c4=2)

    def conv(cout, cin, k):
        return [(torch.randn(cout, cin, k, k, generator=g) / cin).half(), torch.randn(cout, generator=g).half()]

    x = torch.randn(2, C, H, W, generator=g).half()
    return [x, *conv(sizes["c1"], C, 1), *conv(sizes["c2r"], C, 1), *conv(sizes["c2"], sizes["c2r"], 3),
            *conv(sizes["c3r"], C, 1), *conv(sizes["c3"], sizes["c3r"], 5), *conv(sizes["c4"], C, 1)]


def test_a_packing_of_several_weights_sees_a_change_to_any(emu):
    args = _inception_args()
    L.weight_cache_freeze(args[1:])
    _check(emu, "inception_block", args)
    n = L.weight_cache_size()
    # w1, w2_reduce, w3_reduce share one packed GEMM weight and one bias vector; w2, w3, w4 and three biases have theirs
    assert n == 2 + 3 + 3
    _check(emu, "inception_block", args)
    assert L.weight_cache_size() == n
    for i in (3, 8):  # w2_reduce, then b3_reduce: each is one part of a concatenated packing
        with torch.no_grad():
            args[i].neg_()
        _check(emu, "inception_block", args)
    assert L.weight_cache_size() == n


def test_entries_of_freed_weights_are_dropped(emu):
    args = _conv_args()
    L.weight_cache_freeze(args[1:3])
    _check(emu, "conv2d_act", args)
    assert L.weight_cache_size() == 2
    del args
    gc.collect()
    assert L.weight_cache_size() == 0
