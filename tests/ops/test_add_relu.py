"""add_relu(input, residual) = relu(input + residual)."""

import pytest
import torch

from support.helpers import assert_empty_batch, assert_op_error

OP = "add_relu"


def _x(*shape, dtype=torch.float32):
    return torch.randn(*shape).to(dtype)


@pytest.mark.bad_input
def test_bad_rank():
    # Any rank is accepted, but residual must have the input's: a 3-D residual for a 4-D input is rejected.
    assert_op_error(OP, (_x(2, 3, 4, 5), _x(3, 4, 5)), ValueError, "residual")


@pytest.mark.bad_input
def test_bad_residual_shape():
    assert_op_error(OP, (_x(2, 3, 4, 5), _x(2, 3, 5, 4)), ValueError, "residual")


@pytest.mark.bad_input
def test_bad_dtype():
    assert_op_error(OP, (_x(2, 3, 4, 5), _x(2, 3, 4, 5, dtype=torch.float16)), TypeError, "residual")


@pytest.mark.bad_input
def test_bad_input_dtype():
    assert_op_error(OP, (_x(2, 3, 4, 5, dtype=torch.int32), _x(2, 3, 4, 5, dtype=torch.int32)), TypeError, "input")


@pytest.mark.bad_input
def test_bad_device():
    assert_op_error(OP, (_x(2, 3, 4, 5), torch.empty(2, 3, 4, 5, device="meta")), ValueError, "residual",
                    compare_meta=False)


@pytest.mark.bad_input
def test_empty_batch():
    assert_empty_batch(OP, (_x(0, 3, 4, 5), _x(0, 3, 4, 5)))
