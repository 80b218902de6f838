"""The CPU kernels' packed-weight cache must never serve stale weights, nor keep freed weights alive."""

import gc

import pytest
import torch

import cnnkernels
from cnnkernels import _library as L

pytestmark = pytest.mark.skipif(not L.STATE.cpu, reason="the compiled CPU library is not loaded")

ops = torch.ops.cnnkernels


def _conv(x, w):
    return ops.conv2d_act(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, "none")


def _dw(x, w):
    return ops.conv2d_act(x, w, None, None, [1, 1], [1, 1], [1, 1], x.shape[1], "none")


@pytest.mark.parametrize("fn,wshape", [(_conv, (9, 5, 3, 3)), (_dw, (5, 1, 3, 3))], ids=["dense", "depthwise"])
def test_writes_that_bump_no_version_are_seen(fn, wshape):
    x = torch.randn(1, 5, 6, 7).contiguous(memory_format=torch.channels_last)
    w = torch.randn(wshape)
    fn(x, w)
    v = w._version
    w.data.mul_(-2.0)  # through .data: the version counter of `w` does not move
    assert w._version == v
    torch.testing.assert_close(fn(x, w), fn(x, w.clone()))
    w.numpy()[0, 0, 0, 0] += 1.0  # through a numpy view: no version bump either
    torch.testing.assert_close(fn(x, w), fn(x, w.clone()))


def test_reused_buffer_with_new_contents():
    # What a compiled graph does when it reuses one buffer for successive computed weights.
    x = torch.randn(2, 4, 5, 5).contiguous(memory_format=torch.channels_last)
    buf = torch.empty(6, 4, 3, 3)
    for _ in range(3):
        new = torch.randn(6, 4, 3, 3)
        torch.Tensor.copy_(buf.data, new)
        torch.testing.assert_close(_conv(x, buf), torch.nn.functional.conv2d(x, new, padding=1), atol=1e-4, rtol=1e-4)


def test_freed_weights_are_not_kept():
    L.weight_cache_clear()
    x = torch.randn(1, 8, 4, 4).contiguous(memory_format=torch.channels_last)
    for _ in range(20):
        _conv(x, torch.randn(16, 8, 3, 3))
        gc.collect()
    # Entries of freed weights are dropped at the next miss: at most the last one remains.
    assert L.weight_cache_size() <= 1
    keep = [torch.randn(16, 8, 3, 3) for _ in range(5)]
    for w in keep:
        _conv(x, w)
    assert L.weight_cache_size() >= 5
