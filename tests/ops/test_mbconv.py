"""mbconv: what is particular to its CPU kernel (the generic grid, gradcheck, opcheck and the bad-input catalogue run
it with every other op). With an SE stage the kernel buffers one image's depthwise output between two passes, per
thread when there are at least as many images as threads and shared by the threads otherwise; without SE it runs the
inverted_residual pipeline."""

import pytest
import torch

import cnnkernels
from support.dtypes import TOLERANCES
from support.fuzz import num_threads
from support.helpers import assert_empty_batch
from support.samples import Maker
from support.valid_args import mbconv_args as args

OP = torch.ops.cnnkernels.mbconv


def _block(m: Maker, N, C, H, W, hidden, k, stride, squeeze, Cout, residual, layout="cl"):
    se = (m.weight(squeeze, hidden), m.bias(squeeze), m.weight(hidden, squeeze), m.bias(hidden)) if squeeze else \
        (None,) * 4
    return (m.input(N, C, H, W, layout), m.weight(hidden, C), m.bias(hidden), m.weight(hidden, 1, k), m.bias(hidden),
            *se, m.weight(Cout, hidden), m.bias(Cout), stride, residual)


def test_valid_args_are_valid():
    assert OP(*args()).shape == (2, 4, 5, 5)
    assert OP(*args(stride=2, residual=False)).shape == (2, 4, 3, 3)


def test_empty_batch():
    assert_empty_batch("mbconv", args(input=torch.randn(0, 4, 5, 5)))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("N", [1, 2, 5])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("H,W,hidden", [(40, 23, 96), (64, 64, 48)], ids=["channel_split", "row_split"])
def test_thread_splits(N, threads, dtype, H, W, hidden):
    # N >= threads gives each thread whole images; N < threads shares one image's buffer between the threads, whose
    # first pass splits a small map by hidden channels (40x23x96: 177 KB of expanded channels per thread at 2
    # threads) and a larger one by rows (64x64x48: 393 KB, over the 384 KB limit). Both maps make several depthwise
    # bands and projection bands per image.
    m = Maker(f"mbconv-threads-{N}-{dtype}-{H}", dtype, "cpu")
    a = _block(m, N, 16, H, W, hidden, 5, 1, 8, 16, True)
    with num_threads(threads):
        out = OP(*a, "silu", "silu", "sigmoid")
    want = cnnkernels.mbconv_reference(*[t.float() if isinstance(t, torch.Tensor) else t for t in a], "silu", "silu",
                                       "sigmoid")
    torch.testing.assert_close(out.float(), want, **TOLERANCES[dtype])


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("N", [1, 3])
def test_results_do_not_depend_on_the_split(N, threads):
    # Every pixel and every channel mean is computed in one order whatever the split (images, rows or channels): the
    # same bits as on one thread.
    m = Maker(f"mbconv-bits-{N}", torch.float32, "cpu")
    a = _block(m, N, 8, 17, 19, 48, 3, 2, 6, 24, False)
    with num_threads(1):
        one = OP(*a, "hardswish", "relu", "hardsigmoid")
    with num_threads(threads):
        assert torch.equal(OP(*a, "hardswish", "relu", "hardsigmoid"), one)


def test_without_se_is_the_inverted_residual():
    m = Maker("mbconv-no-se", torch.float32, "cpu")
    a = _block(m, 2, 12, 15, 15, 72, 5, 1, 0, 12, True)
    ir = (*a[:5], *a[9:11], a[11], a[12], "hardswish")
    assert torch.equal(OP(*a, "hardswish", "relu", "hardsigmoid"), torch.ops.cnnkernels.inverted_residual(*ir))


def test_se_gate_changes_the_output():
    # A gate of exactly 1 would hide a skipped SE stage: saturate the gate to 0 and the block outputs only its bias
    # (no residual), so the gate provably scales the projection's input.
    m = Maker("mbconv-gate0", torch.float32, "cpu")
    a = list(_block(m, 1, 6, 9, 9, 24, 3, 1, 4, 10, False))
    a[8] = torch.full((24,), -1e4)  # se_expand_bias: hardsigmoid(-1e4) = 0
    out = OP(*a, "relu", "relu", "hardsigmoid")
    torch.testing.assert_close(out, a[10].view(1, 10, 1, 1).expand_as(out))
