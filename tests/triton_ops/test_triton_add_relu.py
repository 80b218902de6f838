"""cnnkernels::add_relu_triton in the Triton interpreter vs the reference (see tests/support/triton_cases/common.py for
how these modules run)."""

import pytest
import torch

from support.dtypes import TRITON_TOLERANCES as TOLERANCES
from support.triton_cases.common import (LAYOUT_DTYPES, assert_fake_matches, assert_grads_match, assert_same_error,
                                         check_against_reference, op, opcheck_eager, require_interpreter)
from support.triton_cases.samples import ADD_RELU, add_relu_args, make

require_interpreter()

from cnnkernels.ops._checks import check_add_relu  # noqa: E402
from cnnkernels.ops.add_relu import add_relu_reference  # noqa: E402

OP = "add_relu"


@pytest.mark.parametrize("dtype, channels_last", LAYOUT_DTYPES)
@pytest.mark.parametrize("shape", ADD_RELU.values(), ids=ADD_RELU.keys())
def test_matches_reference(shape, dtype, channels_last):
    check_against_reference(OP, add_relu_reference, add_relu_args(shape, dtype, channels_last))


@pytest.mark.parametrize("shape", [(), (5,), (3, 1000), (2, 3, 4), (2, 3, 5, 9, 2), (0, 3, 4, 4)], ids=str)
def test_any_shape(shape):
    # odd sizes that do not fill a block, and 0 elements
    x, r = make(shape, torch.float32), make(shape, torch.float32)
    check_against_reference(OP, add_relu_reference, (x, r))


def test_mixed_layouts_and_strided():
    x = make((2, 13, 5, 9), torch.float32, channels_last=True)
    r = make((2, 13, 5, 9), torch.float32)                        # residual in the other layout
    check_against_reference(OP, add_relu_reference, (x, r))
    x2 = make((2, 13, 5, 18), torch.float32)[..., ::2]            # non-dense input
    check_against_reference(OP, add_relu_reference, (x2, r))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_dtypes(dtype):
    x, r = make((2, 3, 5, 9), dtype), make((2, 3, 5, 9), dtype)
    out = op("add_relu_triton")(x, r)
    torch.testing.assert_close(out.float(), add_relu_reference(x.float(), r.float()), **TOLERANCES[dtype])


@pytest.mark.parametrize("args", [
    pytest.param(lambda: (torch.ones(2, 3), torch.ones(2, 4)), id="shape"),
    pytest.param(lambda: (torch.ones(2, 3), torch.ones(2, 3, dtype=torch.float64)), id="dtype-mismatch"),
    pytest.param(lambda: (torch.ones(2, 3, dtype=torch.int32), torch.ones(2, 3, dtype=torch.int32)), id="int"),
])
def test_bad_input(args):
    assert_same_error(check_add_relu, OP, args())


def test_autograd():
    x, r = make((2, 3, 5, 9), torch.float64), make((2, 3, 5, 9), torch.float64)
    assert_grads_match(OP, add_relu_reference, (x, r))


def test_fake_and_opcheck():
    args = (make((2, 3, 5, 9), torch.float32, True), make((2, 3, 5, 9), torch.float32))
    assert_fake_matches(OP, args)
    opcheck_eager(OP, args)


def test_use_backend_forces_triton_on_cpu_in_interpreter():
    from cnnkernels import backends, use_backend
    assert backends.resolve(OP, "cpu") == "cpu"
    with use_backend("triton"):
        assert backends.resolve(OP, "cpu") == "triton"
        assert backends.resolve(OP, torch.device("cpu")) == "triton"
    with use_backend(conv2d_act="triton"):
        assert backends.resolve(OP, "cpu") == "cpu"
        assert backends.resolve("conv2d_act", "cpu") == "triton"
