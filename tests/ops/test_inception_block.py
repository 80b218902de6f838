"""inception_block(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4)."""

import pytest
import torch

from support.helpers import assert_empty_batch, assert_matches_reference, assert_op_error
from support.valid_args import inception_block_args as args  # a valid call, with overrides

OP = "inception_block"


def test_valid_args_are_valid():
    assert torch.ops.cnnkernels.inception_block(*args()).shape == (2, 3 + 5 + 3 + 2, 5, 5)


@pytest.mark.bad_input
def test_bad_rank():
    assert_op_error(OP, args(input=torch.randn(4, 5, 5)), ValueError, "input")


@pytest.mark.bad_input
def test_bad_spatial_size():
    assert_op_error(OP, args(input=torch.randn(2, 4, 5, 0)), ValueError, "input")


@pytest.mark.bad_input
def test_bad_w1_channels():
    assert_op_error(OP, args(w1=torch.randn(3, 5, 1, 1)), ValueError, "w1")


@pytest.mark.bad_input
def test_bad_w4_not_1x1():
    assert_op_error(OP, args(w4=torch.randn(2, 4, 3, 3)), ValueError, "w4")


@pytest.mark.bad_input
def test_bad_w2_channels():
    # w2 reads the 2 channels of the reduce stage, not the input's 4.
    assert_op_error(OP, args(w2=torch.randn(5, 4, 3, 3)), ValueError, "w2")


@pytest.mark.bad_input
def test_bad_w3_even_kernel():
    assert_op_error(OP, args(w3=torch.randn(3, 2, 4, 4)), ValueError, "w3")


@pytest.mark.bad_input
def test_bad_w3_reduce_channels():
    assert_op_error(OP, args(w3_reduce=torch.randn(2, 3, 1, 1)), ValueError, "w3_reduce")


@pytest.mark.bad_input
def test_bad_bias_shape():
    assert_op_error(OP, args(b2=torch.randn(2)), ValueError, "b2")


@pytest.mark.bad_input
def test_bad_reduce_bias_shape():
    assert_op_error(OP, args(b2_reduce=torch.randn(5)), ValueError, "b2_reduce")


@pytest.mark.bad_input
def test_bad_dtype():
    assert_op_error(OP, args(w4=torch.randn(2, 4, 1, 1, dtype=torch.bfloat16)), TypeError, "w4")


@pytest.mark.bad_input
def test_bad_device():
    assert_op_error(OP, args(w2=torch.empty(5, 2, 3, 3, device="meta")), ValueError, "w2", compare_meta=False)


@pytest.mark.bad_input
def test_empty_batch():
    assert_empty_batch(OP, args(input=torch.randn(0, 4, 5, 5)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("n,hw", [(1, 7), (1, 5), (2, 3), (1, 16)], ids=["7x7", "5x5", "b2-3x3", "16x16"])
def test_schedules_agree_across_thread_counts(restore_num_threads, dtype, n, hw):
    """Threads split phase 1 by pixels (a thread's range may start mid-row) and, with few rows per thread, phase 2 by
    output-channel blocks of both branches; 1 thread runs everything in one range. Each output is summed in the same
    order whatever the split, so the results are bit-identical."""
    torch.manual_seed(hw)
    c, c1, c2r, c2, c3r, c3, c4 = 20, 24, 12, 40, 6, 20, 9  # not panel multiples, a 40-channel branch in 3 panels
    t = lambda *s: torch.randn(*s, dtype=dtype)
    a = [t(n, c, hw, hw).contiguous(memory_format=torch.channels_last), t(c1, c, 1, 1), t(c1), t(c2r, c, 1, 1),
         t(c2r), t(c2, c2r, 3, 3) * 0.3, t(c2), t(c3r, c, 1, 1), t(c3r), t(c3, c3r, 3, 3) * 0.3, t(c3),
         t(c4, c, 1, 1), t(c4)]
    op = torch.ops.cnnkernels.inception_block
    torch.set_num_threads(1)
    want = op(*a)
    assert_matches_reference(OP, a, dtype)
    for threads in (2, 3, 4):
        torch.set_num_threads(threads)
        assert torch.equal(op(*a), want), f"{threads} threads"
