"""conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, activation)."""

import pytest
import torch

from support.helpers import assert_empty_batch, assert_op_error
from support.valid_args import conv2d_act_args as args  # a valid call, with overrides

OP = "conv2d_act"


def test_valid_args_are_valid():
    assert torch.ops.cnnkernels.conv2d_act(*args()).shape == (2, 6, 5, 5)


@pytest.mark.bad_input
def test_bad_rank():
    assert_op_error(OP, args(input=torch.randn(4, 5, 5)), ValueError, "input")


@pytest.mark.bad_input
def test_bad_weight_rank():
    assert_op_error(OP, args(weight=torch.randn(6, 4, 3)), ValueError, "weight")


@pytest.mark.bad_input
def test_bad_weight_channels():
    assert_op_error(OP, args(weight=torch.randn(6, 3, 3, 3)), ValueError, "weight")


@pytest.mark.bad_input
def test_bad_groups():
    assert_op_error(OP, args(groups=3), ValueError, "groups")


@pytest.mark.bad_input
def test_bad_bias_shape():
    assert_op_error(OP, args(bias=torch.randn(5)), ValueError, "bias")


@pytest.mark.bad_input
def test_bad_residual_shape():
    assert_op_error(OP, args(residual=torch.randn(2, 6, 3, 3)), ValueError, "residual")


@pytest.mark.bad_input
def test_bad_dtype():
    assert_op_error(OP, args(weight=torch.randn(6, 4, 3, 3, dtype=torch.float16)), TypeError, "weight")


@pytest.mark.bad_input
def test_bad_residual_dtype():
    assert_op_error(OP, args(residual=torch.randn(2, 6, 5, 5, dtype=torch.float64)), TypeError, "residual")


@pytest.mark.bad_input
def test_bad_input_dtype():
    assert_op_error(OP, args(input=torch.ones(2, 4, 5, 5, dtype=torch.int64), weight=torch.ones(6, 4, 3, 3,
                    dtype=torch.int64)), TypeError, "input")


@pytest.mark.bad_input
def test_bad_device():
    assert_op_error(OP, args(weight=torch.empty(6, 4, 3, 3, device="meta")), ValueError, "weight", compare_meta=False)


@pytest.mark.bad_input
def test_bad_activation():
    assert_op_error(OP, args(activation="gelu"), ValueError, "activation")


@pytest.mark.bad_input
@pytest.mark.parametrize("stride", [[0, 1], [1, -2]])
def test_bad_stride(stride):
    assert_op_error(OP, args(stride=stride), ValueError, "stride")


@pytest.mark.bad_input
def test_bad_padding():
    assert_op_error(OP, args(padding=[1, -1]), ValueError, "padding")


@pytest.mark.bad_input
def test_bad_dilation():
    assert_op_error(OP, args(dilation=[0, 1]), ValueError, "dilation")


@pytest.mark.bad_input
def test_kernel_larger_than_input():
    assert_op_error(OP, args(weight=torch.randn(6, 4, 9, 9), residual=None), ValueError, "input")


@pytest.mark.bad_input
def test_empty_batch():
    assert_empty_batch(OP, args(input=torch.randn(0, 4, 5, 5), residual=torch.randn(0, 6, 5, 5)))
