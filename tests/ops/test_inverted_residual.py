"""inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias, stride,
residual, activation)."""

import pytest
import torch

from support.helpers import assert_empty_batch, assert_matches_reference, assert_op_error
from support.valid_args import inverted_residual_args as args  # a valid call, with overrides

OP = "inverted_residual"


def test_valid_args_are_valid():
    assert torch.ops.cnnkernels.inverted_residual(*args()).shape == (2, 4, 5, 5)
    assert torch.ops.cnnkernels.inverted_residual(*args(stride=2, residual=False)).shape == (2, 4, 3, 3)


@pytest.mark.bad_input
def test_bad_rank():
    assert_op_error(OP, args(input=torch.randn(2, 4, 5, 5, 1)), ValueError, "input")


@pytest.mark.bad_input
def test_bad_spatial_size():
    assert_op_error(OP, args(input=torch.randn(2, 4, 0, 5)), ValueError, "input")


@pytest.mark.bad_input
def test_bad_expand_weight_channels():
    assert_op_error(OP, args(expand_weight=torch.randn(12, 5, 1, 1)), ValueError, "expand_weight")


@pytest.mark.bad_input
def test_bad_expand_bias_shape():
    assert_op_error(OP, args(expand_bias=torch.randn(4)), ValueError, "expand_bias")


@pytest.mark.bad_input
def test_bad_expand_bias_without_expand_weight():
    assert_op_error(OP, args(expand_weight=None, dw_weight=torch.randn(4, 1, 3, 3), dw_bias=torch.randn(4),
                             project_weight=torch.randn(4, 4, 1, 1)), ValueError, "expand_bias")


@pytest.mark.bad_input
def test_bad_dw_weight_channels():
    assert_op_error(OP, args(dw_weight=torch.randn(4, 1, 3, 3)), ValueError, "dw_weight")


@pytest.mark.bad_input
def test_bad_dw_weight_even_kernel():
    assert_op_error(OP, args(dw_weight=torch.randn(12, 1, 3, 4)), ValueError, "dw_weight")


@pytest.mark.bad_input
def test_bad_dw_bias_shape():
    assert_op_error(OP, args(dw_bias=torch.randn(4)), ValueError, "dw_bias")


@pytest.mark.bad_input
def test_bad_project_weight_channels():
    assert_op_error(OP, args(project_weight=torch.randn(4, 4, 1, 1)), ValueError, "project_weight")


@pytest.mark.bad_input
def test_bad_project_bias_shape():
    assert_op_error(OP, args(project_bias=torch.randn(12)), ValueError, "project_bias")


@pytest.mark.bad_input
def test_bad_residual_channels():
    assert_op_error(OP, args(project_weight=torch.randn(6, 12, 1, 1), project_bias=torch.randn(6)), ValueError,
                    "residual")


@pytest.mark.bad_input
def test_bad_residual_stride():
    assert_op_error(OP, args(stride=2), ValueError, "residual")


@pytest.mark.bad_input
def test_bad_dtype():
    assert_op_error(OP, args(dw_bias=torch.randn(12, dtype=torch.float16)), TypeError, "dw_bias")


@pytest.mark.bad_input
def test_bad_device():
    assert_op_error(OP, args(project_weight=torch.empty(4, 12, 1, 1, device="meta")), ValueError, "project_weight",
                    compare_meta=False)


@pytest.mark.bad_input
def test_bad_activation():
    assert_op_error(OP, args(activation="gelu"), ValueError, "activation")


@pytest.mark.bad_input
@pytest.mark.parametrize("stride", [0, -1])
def test_bad_stride(stride):
    assert_op_error(OP, args(stride=stride, residual=False), ValueError, "stride")


@pytest.mark.bad_input
def test_empty_batch():
    assert_empty_batch(OP, args(input=torch.randn(0, 4, 5, 5)))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("n,c,hw,hidden,k,stride,expand", [
    (1, 8, 7, 40, 3, 1, True),     # 7 rows at 2-3 threads: the channel-split schedule, hidden not a panel multiple
    (1, 8, 13, 40, 3, 2, True),    # stride 2 -> 7 rows
    (2, 6, 3, 24, 5, 1, True),     # 5x5 depthwise, batch 2
    (1, 24, 7, 24, 3, 1, False),   # no expansion: the depthwise reads the input's channel slices
    (1, 8, 28, 40, 3, 1, True),    # 28 rows: row bands at every thread count
], ids=["7x7", "13x13-s2", "b2-5x5", "no-expand", "28x28"])
def test_schedules_agree_across_thread_counts(restore_num_threads, dtype, n, c, hw, hidden, k, stride,
                                              expand):
    """Few output rows per thread switch the CPU kernel from row bands to a hidden-channel split; 1 thread always
    uses bands. Every schedule sums each output in the same order, so the results are bit-identical."""
    torch.manual_seed(hw * 100 + hidden)
    out_c = c if stride == 1 else 16
    cin = c if expand else hidden
    x = torch.randn(n, cin, hw, hw, dtype=dtype).contiguous(memory_format=torch.channels_last)
    a = [x, torch.randn(hidden, cin, 1, 1, dtype=dtype) if expand else None,
         torch.randn(hidden, dtype=dtype) if expand else None, torch.randn(hidden, 1, k, k, dtype=dtype),
         torch.randn(hidden, dtype=dtype), torch.randn(out_c, hidden, 1, 1, dtype=dtype) * 0.2,
         torch.randn(out_c, dtype=dtype), stride, stride == 1 and out_c == cin, "relu6"]
    op = torch.ops.cnnkernels.inverted_residual
    torch.set_num_threads(1)
    want = op(*a)
    assert_matches_reference(OP, a, dtype)
    for threads in (2, 3):
        torch.set_num_threads(threads)
        assert torch.equal(op(*a), want), f"{threads} threads"
