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


def _sign_flips():
    def neg_all(w):
        w.mul_(-1.0)

    def neg_data(w):
        w.data.neg_()

    def neg_pair(w):  # two values negated
        w.view(-1)[:2].neg_()

    def neg_every_other_lane(w):
        w.view(-1)[::16].neg_()

    def swap_channels(w):
        w[[0, 1]] = w[[1, 0]].clone()

    def swap_halves(w):
        f = w.view(-1)
        h = f.numel() // 2
        f[:] = torch.cat([f[h:], f[:h]]).clone()

    return {f.__name__: f for f in (neg_all, neg_data, neg_pair, neg_every_other_lane, swap_channels, swap_halves)}


SIGN_FLIPS = _sign_flips()


@pytest.mark.parametrize("change", list(SIGN_FLIPS))
@pytest.mark.parametrize("shape", [(16, 8, 3, 3), (64, 64, 3, 3), (1024, 1024, 1, 1)], ids=["small", "mid", "chunked"])
def test_structured_changes_are_seen(change, shape):
    # Sign flips and permutations keep every value's bits but move or flip them: a weak fingerprint misses them (one
    # did: negating an even number of floats per lane). `chunked` is fingerprinted in parallel chunks.
    x = torch.randn(1, shape[1], 5, 5).contiguous(memory_format=torch.channels_last)
    w = torch.randn(shape)
    pad = shape[2] // 2
    f = lambda: ops.conv2d_act(x, w, None, None, [1, 1], [pad, pad], [1, 1], 1, "none")  # noqa: E731
    f()
    with torch.no_grad():
        SIGN_FLIPS[change](w)
    torch.testing.assert_close(f(), torch.nn.functional.conv2d(x, w, padding=pad), atol=1e-3, rtol=1e-4)


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


# ------------------------------------------------------------------------------------------ frozen weights

def test_frozen_weight_sees_version_bumping_updates():
    L.weight_cache_clear()
    x = torch.randn(1, 5, 6, 7).contiguous(memory_format=torch.channels_last)
    w = torch.nn.Parameter(torch.randn(9, 5, 3, 3))
    assert L.weight_cache_freeze([w]) == 1
    with torch.no_grad():
        torch.testing.assert_close(_conv(x, w), _conv(x, w.detach().clone()))
        w.mul_(-2.0)  # in place: the version counter moves, the frozen entry is repacked
        torch.testing.assert_close(_conv(x, w), _conv(x, w.detach().clone()))
        torch.nn.Module.load_state_dict(_holder(w), {"w": torch.randn(9, 5, 3, 3)})
        torch.testing.assert_close(_conv(x, w), _conv(x, w.detach().clone()))
    L.weight_cache_clear()


def _holder(w):
    m = torch.nn.Module()
    m.w = w
    return m


def test_frozen_weight_trusts_the_version_counter():
    # The documented trade of freeze: a write through .data bypasses the version counter and is not seen until
    # weight_cache_clear(). This also proves the freeze reached the cache (an unfrozen weight would be repacked).
    L.weight_cache_clear()
    x = torch.randn(1, 5, 6, 7).contiguous(memory_format=torch.channels_last)
    w, other = torch.randn(9, 5, 3, 3), torch.randn(9, 5, 3, 3)
    L.weight_cache_freeze([w])
    before, before_other = _conv(x, w), _conv(x, other)
    w.data.mul_(-1.0)
    other.data.mul_(-1.0)
    torch.testing.assert_close(_conv(x, w), before)  # stale by design
    torch.testing.assert_close(_conv(x, other), -before_other, atol=1e-4, rtol=1e-4)  # unfrozen: seen
    L.weight_cache_clear()
    torch.testing.assert_close(_conv(x, w), -before, atol=1e-4, rtol=1e-4)


def test_frozen_hit_needs_the_verified_tensor():
    # Another tensor on a frozen weight's storage (w.data) has a version counter of its own: calls with it must not
    # vouch for writes made through w, or through it for writes through w.
    L.weight_cache_clear()
    x = torch.randn(1, 5, 6, 7).contiguous(memory_format=torch.channels_last)
    w = torch.nn.Parameter(torch.randn(9, 5, 3, 3))
    L.weight_cache_freeze([w])
    with torch.no_grad():
        _conv(x, w.data)
        _conv(x, w)
        w.mul_(-1.0)  # bumps w's counter, not that of a fresh w.data
        torch.testing.assert_close(_conv(x, w.data), _conv(x, w.detach().clone()))
        w.mul_(3.0)
        torch.testing.assert_close(_conv(x, w), _conv(x, w.detach().clone()))
    L.weight_cache_clear()


def test_frozen_storages_are_held_weakly():
    L.weight_cache_clear()
    ws = [torch.randn(4, 4, 1, 1) for _ in range(5)]
    L.weight_cache_freeze(ws)
    assert L.weight_cache_frozen_count() == 5
    del ws
    gc.collect()
    assert L.weight_cache_frozen_count() == 0


def test_optimize_freeze_matches_unfrozen():
    tv = pytest.importorskip("torchvision")
    from cnnkernels.testing import randomize_bn
    L.weight_cache_clear()
    torch.manual_seed(0)
    m = tv.models.resnet18().eval()
    randomize_bn(m)
    x = torch.randn(1, 3, 64, 64)
    frozen = cnnkernels.optimize(m, freeze=True)
    plain = cnnkernels.optimize(m)
    assert L.weight_cache_frozen_count() >= len(list(frozen.parameters()))
    with torch.inference_mode():
        want = m(x)
        torch.testing.assert_close(frozen(x), want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(plain(x), want, atol=1e-4, rtol=1e-4)
    # An optimizer-style in-place update of a frozen model's weight is still seen.
    with torch.no_grad():
        frozen.fc.weight.mul_(0.5)
        frozen.layer1[0].conv1.weight.mul_(-1.0)
        m.fc.weight.mul_(0.5)
        m.layer1[0].conv1.weight.mul_(-1.0)
    with torch.inference_mode():
        torch.testing.assert_close(frozen(x), m(x), atol=1e-4, rtol=1e-4)
    L.weight_cache_clear()


def test_optimize_freeze_fold_cache_sees_updates_and_refresh():
    """A frozen model's fused modules check only their tensors' version counters and data pointers: in-place updates,
    load_state_dict and a new `.data` are seen; a structural change is seen after refresh_folds()."""
    tv = pytest.importorskip("torchvision")
    from cnnkernels.testing import randomize_bn
    import cnnkernels.nn as cnn
    torch.manual_seed(0)
    m = randomize_bn(tv.models.mobilenet_v2(num_classes=10).eval())
    frozen = cnnkernels.optimize(m, freeze=True)
    x = torch.randn(1, 3, 40, 40)

    def expect_unfused():
        with torch.inference_mode(), cnn.fusion(False):
            return frozen(x)

    with torch.inference_mode():
        torch.testing.assert_close(frozen(x), m(x), atol=1e-4, rtol=1e-4)
    blk = frozen.features[3]
    assert blk.fold_frozen and not isinstance(m.features[3], cnn.FoldCacheMixin)  # the original is left alone
    folds = blk.fold_count
    with torch.inference_mode():
        frozen(x)
    assert blk.fold_count == folds  # nothing changed: no refold
    with torch.no_grad():
        blk.conv[0][0].weight.mul_(-0.5)  # in place: version counter
    with torch.inference_mode():
        torch.testing.assert_close(frozen(x), expect_unfused(), atol=1e-4, rtol=1e-4)
    assert blk.fold_count == folds + 1
    sd = {k: v * 1.5 if k.endswith("weight") else v for k, v in frozen.state_dict().items()}
    frozen.load_state_dict(sd)
    with torch.inference_mode():
        torch.testing.assert_close(frozen(x), expect_unfused(), atol=1e-4, rtol=1e-4)
    proj = blk.conv[2]
    proj.weight.data = proj.weight.data.flip(0).contiguous(memory_format=torch.channels_last)  # new data pointer
    with torch.inference_mode():
        torch.testing.assert_close(frozen(x), expect_unfused(), atol=1e-4, rtol=1e-4)
    # Structure: a replaced submodule is picked up by refresh_folds (frozen modules do not walk their scope per call).
    new = torch.nn.Conv2d(proj.in_channels, proj.out_channels, 1, bias=False).eval()
    blk.conv[2] = new.to(memory_format=torch.channels_last)
    assert cnn.refresh_folds(frozen) >= 1
    with torch.inference_mode():
        torch.testing.assert_close(frozen(x), expect_unfused(), atol=1e-4, rtol=1e-4)
