"""No leaks: the process's resident memory stays flat over 10,000 calls of every op (small shapes, forward, and the
autograd formulas), and the CPU weight cache neither grows without bound nor keeps freed weights' memory when weights
are created and freed in a loop.

RSS comes from /proc/self/statm (Linux; skipped elsewhere). After a warm-up (allocator pools, thread-local scratch,
the weight cache) it may still move by allocator noise, hence a small fixed slack; a leak of even 100 bytes per call
would show as 1 MB over 10,000 calls. Under AddressSanitizer (tests/run_sanitized.sh) freed memory sits in ASan's
quarantine, so RSS says nothing and these tests skip.
"""

from __future__ import annotations

import gc
import os

import pytest
import torch

from cnnkernels import _library
from support.helpers import needs_cache, op, single_thread
from support.samples import generic_ops, sample_inputs

OPS = generic_ops("leaks")

MIB = 2 ** 20
CALLS = 10_000
WARMUP = 300
SLACK = 4 * MIB  # allowed RSS growth after warm-up, whatever the number of calls

pytestmark = [
    pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc/self/statm (Linux)"),
    pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                       reason="under AddressSanitizer freed memory is quarantined: RSS does not track leaks"),
]


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _small_sample(op_name, dtype=torch.float32):
    """The op's first sample: small shapes, so 10,000 calls take a few seconds."""
    return next(iter(sample_inputs(op_name, dtype)))[1]


def _growth(fn, calls: int, warmup: int = WARMUP) -> int:
    for _ in range(warmup):
        fn()
    gc.collect()
    before = rss()
    for _ in range(calls):
        fn()
    gc.collect()
    return rss() - before


@pytest.mark.parametrize("op_name", OPS)
def test_rss_flat_over_many_calls(op_name):
    args32, args16 = _small_sample(op_name), _small_sample(op_name, torch.bfloat16)
    f = op(op_name)

    def call():
        f(*args32)
        f(*args16)

    # One thread: the calls are what is measured, not 2-thread parallel regions waiting for a busy CPU; the per-thread
    # scratch of a second thread is bounded like the first one's.
    with single_thread():
        grew = _growth(call, CALLS // 2)
    assert grew <= SLACK, f"RSS grew by {grew / MIB:.1f} MiB over {CALLS} calls of {op_name}"


@pytest.mark.parametrize("op_name", generic_ops("leaks_autograd", OPS))
def test_rss_flat_with_autograd(op_name):
    args = tuple(a.detach().requires_grad_() if isinstance(a, torch.Tensor) else a
                 for a in _small_sample(op_name))
    f = op(op_name)

    def step():
        out = f(*args)
        torch.autograd.grad(out.sum(), [a for a in args if isinstance(a, torch.Tensor)])

    with single_thread():
        grew = _growth(step, 1000, warmup=100)
    assert grew <= SLACK, f"RSS grew by {grew / MIB:.1f} MiB over 1000 forward+backward calls of {op_name}"


def _conv(x, w):
    return op("conv2d_act")(x, w, None, None, [1, 1], [0, 0], [1, 1], 1, "none")


@needs_cache
def test_weight_cache_bounded_by_entries(empty_cache):
    # More distinct weights alive at once than the cache holds: it keeps its capacity (least recently used evicted).
    x = torch.randn(1, 4, 2, 2)
    capacity = _library.weight_cache_capacity()
    live = []
    for _ in range(capacity + 400):
        w = torch.randn(2, 4, 1, 1)
        _conv(x, w)
        live.append(w)
    assert _library.weight_cache_size() == capacity


@needs_cache
def test_weight_cache_forgets_freed_weights(empty_cache):
    # Weights created, used once and freed, 6000 times: the cache does not keep entries for dead weights.
    x = torch.randn(1, 16, 4, 4)
    with single_thread():
        for _ in range(6000):
            _conv(x, torch.randn(16, 16, 1, 1))
    assert _library.weight_cache_size() == 0


@needs_cache
def test_freed_weights_release_their_memory(empty_cache):
    # 16 MiB weights (+16 MiB packed copies) created, used and freed in a loop: their memory goes back to the allocator
    # each time instead of piling up in the cache (its entry bound alone would allow 32 GiB here).
    # glibc's heap settles after a dozen rounds of these sizes; from then on RSS must stay flat.
    x = torch.randn(1, 2048, 1, 1)
    with single_thread():
        for _ in range(20):  # warm-up
            _conv(x, torch.randn(2048, 2048, 1, 1))
        gc.collect()
        before = rss()
        for _ in range(30):
            _conv(x, torch.randn(2048, 2048, 1, 1))
        gc.collect()
        grew = rss() - before
    assert grew <= 2 * 32 * MIB, f"RSS grew by {grew / MIB:.0f} MiB over 30 freed 16 MiB weights"
    assert _library.weight_cache_size() == 0


@needs_cache
def test_rss_flat_when_weights_are_recreated(empty_cache):
    # A model rebuilt over and over (weights freed and allocated anew, other addresses each time): RSS stays flat.
    x = torch.randn(1, 32, 6, 6).contiguous(memory_format=torch.channels_last)

    def rebuild_and_run():
        w1, w2 = torch.randn(64, 32, 3, 3), torch.randn(64, 1, 3, 3)
        y = op("conv2d_act")(x, w1, None, None, [1, 1], [1, 1], [1, 1], 1, "relu")
        op("conv2d_act")(y, w2, None, None, [1, 1], [1, 1], [1, 1], 64, "relu")

    with single_thread():
        grew = _growth(rebuild_and_run, 3000, warmup=300)
    assert grew <= SLACK, f"RSS grew by {grew / MIB:.1f} MiB over 3000 rebuilt models"
    assert _library.weight_cache_size() == 0
