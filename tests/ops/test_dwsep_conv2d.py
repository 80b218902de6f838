"""dwsep_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation,
pw_activation)."""

import pytest
import torch

from support.helpers import assert_empty_batch, assert_op_error
from support.valid_args import dwsep_conv2d_args as args  # a valid call, with overrides

OP = "dwsep_conv2d"


def test_valid_args_are_valid():
    assert torch.ops.cnnkernels.dwsep_conv2d(*args()).shape == (2, 6, 5, 5)
    assert torch.ops.cnnkernels.dwsep_conv2d(*args(stride=[2, 1])).shape == (2, 6, 3, 5)


@pytest.mark.bad_input
def test_bad_rank():
    assert_op_error(OP, args(input=torch.randn(2, 4, 5)), ValueError, "input")


@pytest.mark.bad_input
def test_bad_dw_weight_rank():
    assert_op_error(OP, args(dw_weight=torch.randn(4, 3, 3)), ValueError, "dw_weight")


@pytest.mark.bad_input
def test_bad_dw_weight_not_depthwise():
    # [C, C, k, k] is a dense conv weight: with groups = C it has the wrong C_in/groups.
    assert_op_error(OP, args(dw_weight=torch.randn(4, 4, 3, 3)), ValueError, "dw_weight")


@pytest.mark.bad_input
def test_bad_dw_weight_channel_multiplier():
    # [2C, 1, k, k] is a valid grouped conv (channel multiplier 2) but not one filter per channel.
    assert_op_error(OP, args(dw_weight=torch.randn(8, 1, 3, 3)), ValueError, "dw_weight")


@pytest.mark.bad_input
def test_bad_pw_weight_channels():
    assert_op_error(OP, args(pw_weight=torch.randn(6, 3, 1, 1)), ValueError, "pw_weight")


@pytest.mark.bad_input
def test_bad_pw_weight_not_1x1():
    assert_op_error(OP, args(pw_weight=torch.randn(6, 4, 3, 3)), ValueError, "pw_weight")


@pytest.mark.bad_input
def test_bad_dw_bias_shape():
    assert_op_error(OP, args(dw_bias=torch.randn(6)), ValueError, "dw_bias")


@pytest.mark.bad_input
def test_bad_pw_bias_shape():
    assert_op_error(OP, args(pw_bias=torch.randn(1, 6)), ValueError, "pw_bias")


@pytest.mark.bad_input
def test_bad_dtype():
    assert_op_error(OP, args(pw_weight=torch.randn(6, 4, 1, 1, dtype=torch.bfloat16)), TypeError, "pw_weight")


@pytest.mark.bad_input
def test_bad_bias_dtype():
    assert_op_error(OP, args(dw_bias=torch.randn(4, dtype=torch.float64)), TypeError, "dw_bias")


@pytest.mark.bad_input
def test_bad_device():
    assert_op_error(OP, args(dw_weight=torch.empty(4, 1, 3, 3, device="meta")), ValueError, "dw_weight",
                    compare_meta=False)


@pytest.mark.bad_input
@pytest.mark.parametrize("arg", ["dw_activation", "pw_activation"])
def test_bad_activation(arg):
    assert_op_error(OP, args(**{arg: "gelu"}), ValueError, arg)


@pytest.mark.bad_input
def test_bad_stride():
    assert_op_error(OP, args(stride=[1, 0]), ValueError, "stride")


@pytest.mark.bad_input
def test_bad_padding():
    assert_op_error(OP, args(padding=[-1, 1]), ValueError, "padding")


@pytest.mark.bad_input
def test_bad_dilation():
    assert_op_error(OP, args(dilation=[1, 0]), ValueError, "dilation")


@pytest.mark.bad_input
def test_kernel_larger_than_input():
    assert_op_error(OP, args(dw_weight=torch.randn(4, 1, 7, 7), padding=[0, 0]), ValueError, "input")


@pytest.mark.bad_input
def test_empty_batch():
    assert_empty_batch(OP, args(input=torch.randn(0, 4, 5, 5), stride=[2, 2]))
