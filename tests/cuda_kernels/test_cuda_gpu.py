"""The CUDA kernels on a GPU: every op x dtype x memory format against the fp64 reference, streams and devices,
gradcheck (fp64), opcheck, torch.compile(fullgraph=True) and 64-bit indexing.

Skipped without a CUDA device: the CUDA kernels are compiled in CI but only run on a GPU machine (their code is also
exercised on the CPU through the emulation, tests/cuda_kernels/test_cuda_emulated.py).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import cnnkernels  # noqa: F401  (loads the libraries)
from cnnkernels import _library
from support.cuda_cases import (BOX_CASES, BOX_THRESHOLDS, CASES, DTYPES, FORMATS, GRAD_CASES,
                                assert_close_to_reference, box_set, cast, empty_batch, reference)
from support.dtypes import CUDA_TOLERANCES as TOLERANCES
from support.dtypes import DTYPE_IDS

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(),
                       reason="no CUDA device; CUDA kernels are compiled in CI but only run on a GPU machine"),
    pytest.mark.skipif(not _library.STATE.cuda,
                       reason=f"the compiled CUDA kernels are not loaded ({_library.STATE.cuda_reason})"),
]

ALL_CASES = [(op, cid) for op, cases in CASES.items() for cid, _ in cases]


def op(name):
    return getattr(torch.ops.cnnkernels, name)


def python_registrations(name):
    """cnnkernels/ops/<name>.py registered the op's fake kernel and autograd (importing cnnkernels does it)."""
    dump = torch._C._dispatch_dump(f"cnnkernels::{name}")
    assert "Autograd" in dump and "Meta:" in dump, \
        f"no fake kernel / autograd registered for cnnkernels.{name} (cnnkernels/ops/{name}.py)"


def _cuda(args, dtype=torch.float32, fmt=torch.contiguous_format):
    return cast(args, dtype, device="cuda", fmt=fmt)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("name,case", ALL_CASES, ids=[f"{o}-{c}" for o, c in ALL_CASES])
def test_matches_reference(name, case, dtype, fmt):
    args = _cuda(dict(CASES[name])[case], dtype, FORMATS[fmt])
    y = op(name)(*args)
    assert y.device.type == "cuda"
    assert_close_to_reference(name, y, args, dtype)


@pytest.mark.parametrize("name", list(CASES))
def test_empty_batch(name):
    args = empty_batch(name, _cuda(CASES[name][0][1]))
    y = op(name)(*args)
    assert y.shape == reference(name, args).shape and y.numel() == 0


@pytest.mark.parametrize("name", list(CASES))
def test_noncontiguous_input(name):
    args = list(_cuda(CASES[name][0][1]))
    wide = torch.zeros(*args[0].shape[:3], 2 * args[0].shape[3], device=args[0].device)
    wide[..., ::2] = args[0]
    args[0] = wide[..., ::2]
    assert not args[0].is_contiguous()
    assert_close_to_reference(name, op(name)(*args), args, torch.float32)


@pytest.mark.parametrize("name", list(CASES))
def test_cuda_graph_capture(name):
    """The kernels launch on the current stream: a launch on another stream would make the capture fail."""
    args = _cuda(CASES[name][-1][1])
    want = op(name)(*args)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture
        op(name)(*args)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y = op(name)(*args)
    graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(y, want, rtol=0, atol=0)


def _frozen_case(name):
    args = _cuda(CASES[name][-1][1], torch.float16)
    _library.weight_cache_clear()
    _library.weight_cache_freeze([a for a in args[1:] if isinstance(a, torch.Tensor)])
    return args


@pytest.mark.parametrize("name", list(CASES))
def test_frozen_weights_cached_across_streams(name):
    """Frozen CUDA weights are packed once (the packing stream is synchronised) and read from any stream after."""
    args = _frozen_case(name)
    try:
        want = op(name)(*args)
        n = _library.weight_cache_size()
        assert n > 0 or name == "add_relu"
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            y = op(name)(*args)
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        assert _library.weight_cache_size() == n
        torch.testing.assert_close(y, want, rtol=0, atol=0)
        _library.weight_cache_clear()  # evicts entries the side stream used: its use was recorded
        torch.testing.assert_close(op(name)(*args), want, rtol=0, atol=0)
    finally:
        _library.weight_cache_clear()


@pytest.mark.parametrize("name", list(CASES))
def test_graph_capture_bypasses_the_cache(name):
    args = _frozen_case(name)
    try:
        want = op(name)(*args)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            y = op(name)(*args)
        _library.weight_cache_clear()  # nothing the graph reads may belong to the cache
        torch.cuda.empty_cache()
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(y, want, rtol=0, atol=0)
        assert _library.weight_cache_size() == 0
    finally:
        _library.weight_cache_clear()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
@pytest.mark.parametrize("name", list(CASES))
def test_inputs_on_another_device(name):
    args = cast(CASES[name][0][1], torch.float32, device="cuda:1")
    with torch.cuda.device(0):
        y = op(name)(*args)
    assert y.device == torch.device("cuda:1")
    assert_close_to_reference(name, y, args, torch.float32)


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_gradcheck(name):
    python_registrations(name)
    args = list(_cuda(GRAD_CASES[name], torch.float64))
    idx = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    for i in idx:
        args[i] = args[i].detach().requires_grad_()

    def f(*tensors):
        full = list(args)
        for i, t in zip(idx, tensors):
            full[i] = t
        return op(name)(*full)

    assert torch.autograd.gradcheck(f, [args[i] for i in idx], eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", list(GRAD_CASES))
def test_opcheck(name):
    python_registrations(name)
    args = list(_cuda(GRAD_CASES[name], torch.float32))
    args[0] = args[0].requires_grad_()
    torch.library.opcheck(op(name).default, tuple(args))


class _Net(torch.nn.Module):
    """A small network through every op (NHWC activations): stem conv, depthwise-separable, inverted residual,
    mbconv (with squeeze-and-excitation), inception, residual join."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(7)

        def p(*shape, scale=0.2):
            return torch.nn.Parameter(torch.randn(*shape, generator=g) * scale, requires_grad=False)

        self.stem_w, self.stem_b = p(16, 3, 3, 3), p(16)
        self.dw_w, self.dw_b, self.pw_w, self.pw_b = p(16, 1, 3, 3), p(16), p(24, 16, 1, 1), p(24)
        self.ew, self.eb, self.idw, self.idb, self.pj, self.pb = p(96, 24, 1, 1), p(96), p(96, 1, 3, 3), p(96), \
            p(24, 96, 1, 1), p(24)
        mb = [p(48, 24, 1, 1), p(48), p(48, 1, 5, 5), p(48), p(6, 48, 1, 1), p(6), p(48, 6, 1, 1), p(48),
              p(24, 48, 1, 1), p(24)]
        for i, t in enumerate(mb):
            self.register_parameter(f"mb{i}", t)
        inc = [p(8, 24, 1, 1), p(8), p(6, 24, 1, 1), p(6), p(8, 6, 3, 3), p(8), p(4, 24, 1, 1), p(4),
               p(4, 4, 5, 5), p(4), p(4, 24, 1, 1), p(4)]
        for i, t in enumerate(inc):
            self.register_parameter(f"inc{i}", t)

    def forward(self, x):
        x = torch.ops.cnnkernels.conv2d_act(x, self.stem_w, self.stem_b, None, [2, 2], [1, 1], [1, 1], 1, "relu")
        x = torch.ops.cnnkernels.dwsep_conv2d(x, self.dw_w, self.dw_b, self.pw_w, self.pw_b, [1, 1], [1, 1], [1, 1],
                                              "relu6", "none")
        x = torch.ops.cnnkernels.inverted_residual(x, self.ew, self.eb, self.idw, self.idb, self.pj, self.pb, 1, True,
                                                   "relu6")
        x = torch.ops.cnnkernels.mbconv(x, *[getattr(self, f"mb{i}") for i in range(10)], 1, True, "silu", "silu",
                                        "sigmoid")
        y = torch.ops.cnnkernels.inception_block(x, *[getattr(self, f"inc{i}") for i in range(12)])
        return torch.ops.cnnkernels.add_relu(y, x)


def test_torch_compile_fullgraph():
    for name in ("conv2d_act", "dwsep_conv2d", "inverted_residual", "mbconv", "inception_block", "add_relu"):
        python_registrations(name)
    net = _Net().cuda().eval()
    x = torch.randn(2, 3, 33, 30, device="cuda").contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        eager = net(x)
        compiled = torch.compile(net, fullgraph=True)(x)
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-5)


def _free_gib():
    return torch.cuda.mem_get_info()[0] / 2**30


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["depthwise", "gemm"])
def test_more_than_2_31_elements(kind):
    """Outputs with more than 2**31 elements: offsets past the int32 range, checked on the last rows."""
    if _free_gib() < 24:
        pytest.skip("needs 24 GiB of free GPU memory")
    if kind == "depthwise":  # direct depthwise kernel: 256 x 3000 x 3000 = 2.3e9 elements
        C, H, W, Cout, k, groups = 256, 3000, 3000, 256, 3, 256
    else:  # implicit GEMM (1x1): 64 x 6000 x 6000 = 2.3e9 output elements
        C, H, W, Cout, k, groups = 16, 6000, 6000, 64, 1, 1
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(1, C, H, W, device="cuda", dtype=torch.float16, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(Cout, C // groups, k, k, device="cuda", dtype=torch.float16, generator=g) * 0.1
    b = torch.randn(Cout, device="cuda", dtype=torch.float16, generator=g)
    y = op("conv2d_act")(x, w, b, None, [1, 1], [k // 2, k // 2], [1, 1], groups, "relu")
    assert y.numel() > 2**31
    crop = x[:, :, H - 16:]
    want = torch.relu(F.conv2d(crop.float(), w.float(), b.float(), 1, k // 2, 1, groups))
    # crop row 0 saw the crop's artificial top padding; the rest, up to the last output row, must match
    torch.testing.assert_close(y[:, :, H - 15:].float(), want[:, :, 1:], **TOLERANCES[torch.float16])


# ---- detection ops: the CUDA kernels give the CPU op's results exactly (tests/cuda_kernels/test_cuda_emulated.py runs
# the same code emulated, against torchvision too) ---------------------------------------------------------------------

def _exact_on_cuda(got, want):
    assert got.device.type == "cuda" and got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("case", list(BOX_CASES))
def test_box_ops_equal_the_cpu_op(case, dtype):
    boxes, scores, idxs = BOX_CASES[case]
    b, s = boxes.to(dtype), scores.to(dtype)
    other = b.flip(0)[: max(len(b) - 7, 1)]
    _exact_on_cuda(op("box_iou")(b.cuda(), other.cuda()), op("box_iou")(b, other))
    for thr in BOX_THRESHOLDS:
        _exact_on_cuda(op("nms")(b.cuda(), s.cuda(), thr), op("nms")(b, s, thr))
    _exact_on_cuda(op("batched_nms")(b.cuda(), s.cuda(), idxs.cuda(), 0.5), op("batched_nms")(b, s, idxs, 0.5))


def test_batched_nms_per_class_equals_the_cpu_op():
    # Above 100,000 coordinates both run nms per class. Distinct scores: the final (unstable) score sort then has one
    # order on every device.
    boxes, _, idxs = box_set(88, 25_001, offset=-60.0, classes=97)
    boxes = boxes.float()
    scores = torch.randperm(len(boxes), generator=torch.Generator().manual_seed(0)).float()
    want = op("batched_nms")(boxes, scores, idxs, 0.5)
    _exact_on_cuda(op("batched_nms")(boxes.cuda(), scores.cuda(), idxs.cuda(), 0.5), want)
