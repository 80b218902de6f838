"""Thread safety: the ops called from many Python threads at once, torch.set_num_threads changing between and during
calls, and the CPU weight cache under concurrent use and in-place weight updates.

Every multi-threaded test runs its threads as daemons and waits with a deadline, so a deadlock fails the test (and
lets pytest exit) instead of hanging CI. The kernels are deterministic (the parallel split never changes the order in
which an output element is summed), so outputs are compared bit for bit with serial calls.
"""

from __future__ import annotations

import threading
import time

import pytest
import torch
import torch.nn.functional as F

from cnnkernels import _library
from support.helpers import needs_cache, op
from support.samples import OPS, sample_inputs
from support.tiny_net import TinyNet

N_THREADS = 8
TIMEOUT = 180  # seconds for a whole multi-threaded test body; far above its normal run time on a busy 2-core box


def run_in_threads(fn, n: int = N_THREADS, timeout: float = TIMEOUT) -> list:
    """Runs fn(i) for i < n in n daemon threads released together; returns their results, re-raises the first
    exception, fails if any thread is still running after `timeout` seconds (a deadlock)."""
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def body(i):
        try:
            barrier.wait(timeout)
            results[i] = fn(i)
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append((i, e))

    threads = [threading.Thread(target=body, args=(i,), daemon=True, name=f"cnnkernels-test-{i}") for i in range(n)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"{len(alive)} of {n} threads still running after {timeout} s (deadlock?): {alive}"
    if errors:
        i, e = errors[0]
        raise AssertionError(f"thread {i} failed: {type(e).__name__}: {e}") from e
    return results


def run_with_deadline(fn, timeout: float = TIMEOUT):
    """fn() in one daemon thread, failing (not hanging) if it does not return within `timeout` seconds."""
    return run_in_threads(lambda i: fn(), n=1, timeout=timeout)[0]


def _samples(op_name, dtypes=(torch.float32, torch.bfloat16)):
    return [(label, args) for dtype in dtypes for label, args in sample_inputs(op_name, dtype)]


def _pairs(out, want):
    """(output, expected) tensor pairs of an op's result, output by output for ops returning several
    (yolo_postprocess)."""
    return zip(out, want) if isinstance(want, tuple) else ((out, want),)


def _equal(out, want) -> bool:
    return all(torch.equal(o, w) for o, w in _pairs(out, want))


# ------------------------------------------------------------------------------------------------- the ops

@pytest.mark.parametrize("op_name", OPS)
def test_same_op_from_many_threads(op_name):
    samples = _samples(op_name)
    serial = [op(op_name)(*args) for _, args in samples]

    def worker(i):
        for rep in range(3):
            for k in range(len(samples)):
                j = (k + i + rep) % len(samples)  # threads start at different samples: different shapes at once
                out = op(op_name)(*samples[j][1])
                for o, s in _pairs(out, serial[j]):
                    assert torch.equal(o, s), f"{samples[j][0]}: differs from the serial call"
                    assert o.stride() == s.stride()
        return True

    assert all(run_in_threads(worker))


def test_module_with_all_ops_from_many_threads():
    torch.manual_seed(0)
    net = TinyNet()
    xs = [torch.randn(2, 3, 15, 13).contiguous(memory_format=torch.channels_last) for _ in range(N_THREADS)]
    with torch.no_grad():
        serial = [net(x) for x in xs]

    def worker(i):
        with torch.no_grad():
            for rep in range(5):
                j = (i + rep) % N_THREADS
                assert torch.equal(net(xs[j]), serial[j]), f"input {j} differs from the serial forward"
        return True

    assert all(run_in_threads(worker))


def test_module_backward_from_many_threads():
    # autograd through every op's backward formula, concurrently; gradients equal the serial ones
    torch.manual_seed(1)
    net = TinyNet()
    xs = [torch.randn(1, 3, 9, 11) for _ in range(4)]

    def grads(x):
        x = x.clone().requires_grad_()
        out = net(x)
        return torch.autograd.grad(out.square().sum(), [x] + list(net.parameters()))

    serial = [grads(x) for x in xs]

    def worker(i):
        for rep in range(2):
            j = (i + rep) % len(xs)
            for g, s in zip(grads(xs[j]), serial[j]):
                torch.testing.assert_close(g, s, atol=1e-5, rtol=1e-5)
        return True

    assert all(run_in_threads(worker, n=4))


# ------------------------------------------------------------------------------------------ set_num_threads


def test_set_num_threads_between_calls(restore_num_threads):
    cases = [(name, args) for name in OPS for _, args in _samples(name, (torch.float32,))[:3]]
    serial = [op(name)(*args) for name, args in cases]

    def body():
        for n in (1, 3, 2, 4, 1, 2):
            torch.set_num_threads(n)
            for (name, args), want in zip(cases, serial):
                assert _equal(op(name)(*args), want), f"{name} with {n} threads"
        return True

    # in the main thread's settings, but under a deadline
    assert run_with_deadline(body)


def test_set_num_threads_while_other_threads_compute(restore_num_threads):
    cases = [(name, args) for name in OPS for _, args in _samples(name, (torch.float32,))[:2]]
    serial = [op(name)(*args) for name, args in cases]
    stop = threading.Event()

    def worker(i):
        if i == 0:  # keeps changing the thread count while the others compute
            k = 0
            while not stop.is_set():
                torch.set_num_threads(1 + k % 4)
                k += 1
                time.sleep(0.001)
            return True
        for rep in range(4):
            for (name, args), want in zip(cases, serial):
                torch.set_num_threads(1 + (i + rep) % 3)
                assert _equal(op(name)(*args), want), f"{name} in thread {i}"
        if i == 1:
            stop.set()
        return True

    try:
        assert all(run_in_threads(worker, n=5))
    finally:
        stop.set()


# ------------------------------------------------------------------------------------------- the weight cache

def _conv(x, w, groups=1):
    return op("conv2d_act")(x, w, None, None, [1, 1], [1, 1], [1, 1], groups, "none")


@needs_cache
def test_weight_cache_distinct_and_shared_weights_from_many_threads(empty_cache):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 16, 7, 7, generator=g).contiguous(memory_format=torch.channels_last)
    shared = torch.randn(24, 16, 3, 3, generator=g)
    shared_dw = torch.randn(16, 1, 3, 3, generator=g)
    own = [torch.randn(8 + i, 16, 3, 3, generator=g) for i in range(N_THREADS)]
    want_shared, want_dw = F.conv2d(x, shared, padding=1), F.conv2d(x, shared_dw, padding=1, groups=16)
    want_own = [F.conv2d(x, w, padding=1) for w in own]

    def worker(i):
        for _ in range(20):
            torch.testing.assert_close(_conv(x, shared), want_shared, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(_conv(x, own[i]), want_own[i], atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(_conv(x, shared_dw, groups=16), want_dw, atol=1e-4, rtol=1e-4)
        return True

    assert all(run_in_threads(worker))
    assert _library.weight_cache_size() == N_THREADS + 2  # one entry per weight, however many threads packed it


@needs_cache
def test_weight_cache_eviction_from_many_threads(empty_cache):
    # Together the threads create more weights than the cache holds: entries are evicted while other threads
    # insert and look up; every output stays right and the cache stays bounded.
    x = torch.randn(1, 4, 3, 3).contiguous(memory_format=torch.channels_last)
    capacity = _library.weight_cache_capacity()
    per_thread = (capacity + 200) // N_THREADS + 1

    def worker(i):
        g = torch.Generator().manual_seed(i)
        keep = torch.randn(3, 4, 3, 3, generator=g)  # used all along: evicted or not, it stays right
        want_keep = F.conv2d(x, keep, padding=1)
        for k in range(per_thread):
            w = torch.randn(2, 4, 3, 3, generator=g)
            torch.testing.assert_close(_conv(x, w), F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
            if k % 50 == 0:
                torch.testing.assert_close(_conv(x, keep), want_keep, atol=1e-4, rtol=1e-4)
        return True

    assert all(run_in_threads(worker))
    assert _library.weight_cache_size() <= capacity


def _update_kinds():
    """In-place updates a user makes to a weight w (a Parameter), all of which bump its version counter."""
    def sgd(w, new):
        opt = torch.optim.SGD([w], lr=1.0)
        w.grad = w.detach() - new  # w - lr * grad = new
        opt.step()
        w.grad = None

    def load_state_dict(w, new):
        m = torch.nn.Module()
        m.w = w
        m.load_state_dict({"w": new})

    def no_grad_copy(w, new):
        with torch.no_grad():
            w.copy_(new)

    def view_write(w, new):  # through a view, which shares the version counter
        with torch.no_grad():
            w.view(-1)[:].copy_(new.view(-1))

    def detach_write(w, new):  # detach() shares the version counter too
        w.detach().copy_(new)

    return {"sgd": sgd, "load_state_dict": load_state_dict, "no_grad_copy": no_grad_copy, "view_write": view_write,
            "detach_write": detach_write}


UPDATES = _update_kinds()


def _weight_users():
    """Calls that pack a given weight through the cache: op, the weight's shape, and fn(w) -> (out, reference)."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 8, 6, 6, generator=g).contiguous(memory_format=torch.channels_last)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    ir = dict(expand_weight=r(24, 8, 1, 1), expand_bias=r(24), dw_weight=r(24, 1, 3, 3), dw_bias=r(24),
              project_weight=r(8, 24, 1, 1), project_bias=r(8))
    se = (r(6), r(24, 6, 1, 1), r(24))  # mbconv's SE tensors after se_reduce_weight
    inc = [r(4, 8, 1, 1), r(4), r(3, 8, 1, 1), r(3), r(5, 3, 3, 3), r(5), r(2, 8, 1, 1), r(2), r(3, 2, 5, 5), r(3),
           r(2, 8, 1, 1), r(2)]

    def conv(w):
        return _conv(x, w), F.conv2d(x, w, padding=1)

    def depthwise(w):
        return _conv(x, w, groups=8), F.conv2d(x, w, padding=1, groups=8)

    def dwsep_pw(w):
        a = (x, r(8, 1, 3, 3), None, w, None, [1, 1], [1, 1], [1, 1], "relu", "none")
        return op("dwsep_conv2d")(*a), _ref("dwsep_conv2d", a)

    def ir_project(w):
        a = (x, ir["expand_weight"], ir["expand_bias"], ir["dw_weight"], ir["dw_bias"], w, ir["project_bias"], 1,
             True, "relu6")
        return op("inverted_residual")(*a), _ref("inverted_residual", a)

    def mbconv_se_reduce(w):
        a = (x, ir["expand_weight"], ir["expand_bias"], ir["dw_weight"], ir["dw_bias"], w, *se, ir["project_weight"],
             ir["project_bias"], 1, True, "silu", "silu", "sigmoid")
        return op("mbconv")(*a), _ref("mbconv", a)

    def inception_w3(w):
        a = (x, *inc[:8], w, *inc[9:])
        return op("inception_block")(*a), _ref("inception_block", a)

    up_skip, up_w3 = r(2, 3, 12, 12).contiguous(memory_format=torch.channels_last), r(7, 8, 3, 3)

    def up_concat_up_weight(w):  # packed per (p, q) tap, a cache entry kind of its own
        a = (x, up_skip, w, None, up_w3, None, "relu")
        return op("up_concat_conv")(*a), _ref("up_concat_conv", a)

    # small activations: the test's unit-variance weight then sums 7200 products of size ~0.01, not ~1, whose fp32
    # rounding in a different order would exceed its 1e-4 tolerance
    wide_skip = (r(2, 400, 12, 12) * 0.01).contiguous(memory_format=torch.channels_last)
    wide_up = r(8, 400, 2, 2) * 0.01

    def up_concat_split_weight(w):  # 800 channels: packed as two channel ranges of the one weight
        a = (x, wide_skip, wide_up, None, w, None, "none")
        return op("up_concat_conv")(*a), _ref("up_concat_conv", a)

    return {"conv2d_act": (conv, (16, 8, 3, 3)), "conv2d_act-depthwise": (depthwise, (8, 1, 3, 3)),
            "dwsep_conv2d-pw_weight": (dwsep_pw, (12, 8, 1, 1)),
            "inverted_residual-project_weight": (ir_project, (8, 24, 1, 1)),
            "mbconv-se_reduce_weight": (mbconv_se_reduce, (6, 24, 1, 1)),
            "inception_block-w3": (inception_w3, (3, 2, 5, 5)),
            "up_concat_conv-up_weight": (up_concat_up_weight, (8, 5, 2, 2)),
            "up_concat_conv-split_weight": (up_concat_split_weight, (3, 800, 3, 3))}


def _ref(op_name, args):
    import cnnkernels
    return getattr(cnnkernels, f"{op_name}_reference")(*args)


USERS = _weight_users()


@needs_cache
@pytest.mark.parametrize("update", list(UPDATES))
@pytest.mark.parametrize("user", list(USERS))
def test_weight_cache_follows_in_place_updates(empty_cache, user, update):
    call, shape = USERS[user]
    g = torch.Generator().manual_seed(5)
    w = torch.nn.Parameter(torch.randn(shape, generator=g))
    for step in range(3):
        with torch.no_grad():
            out, want = call(w)
        torch.testing.assert_close(out, want, atol=1e-4, rtol=1e-4, msg=f"step {step} after {update}")
        UPDATES[update](w, torch.randn(shape, generator=g))


@needs_cache
def test_weight_cache_in_place_updates_from_many_threads(empty_cache):
    # Each thread owns a weight it updates in place between its calls while the other threads insert and look up
    # their own: every call sees the latest update.
    x = torch.randn(1, 8, 5, 5).contiguous(memory_format=torch.channels_last)

    def worker(i):
        g = torch.Generator().manual_seed(100 + i)
        w = torch.randn(6, 8, 3, 3, generator=g)
        for k in range(40):
            torch.testing.assert_close(_conv(x, w), F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
            w.mul_(-1.0) if k % 2 else w.copy_(torch.randn(w.shape, generator=g))
        return True

    assert all(run_in_threads(worker))


@needs_cache
def test_weight_cache_sees_updates_to_inference_tensors(empty_cache):
    # Inference tensors have no version counter; the cache's data fingerprint still sees their in-place updates.
    x = torch.randn(1, 8, 5, 5)
    with torch.inference_mode():
        w = torch.randn(6, 8, 3, 3)
        torch.testing.assert_close(_conv(x, w), F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
        w.mul_(-2.0)
        torch.testing.assert_close(_conv(x, w), F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)


@needs_cache
def test_weight_cache_sees_writes_that_bypass_the_version_counter(empty_cache):
    # Writes through `w.data` (a tensor with its own counter) or a numpy view do not bump w's version; the fingerprint
    # of the data still changes, so the next call repacks.
    x = torch.randn(1, 8, 5, 5)
    w = torch.randn(6, 8, 3, 3)
    _conv(x, w)
    w.data.mul_(-1.0)
    torch.testing.assert_close(_conv(x, w), F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
    w.numpy()[:, :, 1, 1] += 3.0
    torch.testing.assert_close(_conv(x, w), F.conv2d(x, w, padding=1), atol=1e-4, rtol=1e-4)
