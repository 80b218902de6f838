"""Every op's reference, and the op itself, against the independent float64 oracle of tests/support/oracle.py.

The op-vs-reference tests cannot fail when the compiled library is disabled (the ops then run their references), so
this file gives the reference itself a check that does not go through F.conv2d / F.max_pool2d. It is marked
`correctness`, so tests/reliability/test_fallback.py re-runs it with CNNKERNELS_DISABLE_COMPILED=1 and on every ISA
build.
"""

from __future__ import annotations

import pytest
import torch

from support import oracle
from support.helpers import map_tensors, op, reference
from support.samples import generic_ops, sample_inputs

OPS = generic_ops("oracle")  # torchvision is the detection ops' oracle (samples.NOT_APPLICABLE)

pytestmark = pytest.mark.correctness

# Measured as max |got - want| / (1 + |want|), which is what assert_close bounds when atol == rtol, over every sample:
#   reference in fp64 vs oracle: 1.7e-15 (summation order only); the bound leaves ~500x, yet an fp32 computation
#   (errors ~1e-7 and up) cannot pass it.
#   op on fp32 inputs vs oracle on the same inputs: 1.56e-6 (conv2d_act n2-c13-13x17-k5-s2-cl-relu6), the same for
#   the compiled DEFAULT / AVX2 / AVX512 builds and for the reference fallback; the bound leaves ~5x.
FP64_TOL = dict(atol=1e-12, rtol=1e-12)
FP32_TOL = dict(atol=8e-6, rtol=8e-6)

CASES = [pytest.param(op_name, args, id=f"{op_name}-{label}")
         for op_name in OPS for label, args in sample_inputs(op_name, torch.float32)]


def _f64(args) -> tuple:
    return map_tensors(args, lambda t: t.to(torch.float64))


def _sample(op_name: str, label: str) -> tuple:
    return dict(sample_inputs(op_name, torch.float32))[label]


def _assert_close(got: torch.Tensor, want: torch.Tensor, tol: dict) -> None:
    assert got.shape == want.shape
    torch.testing.assert_close(got.to(torch.float64), want, equal_nan=True, **tol)


def test_every_op_has_an_oracle():
    assert set(OPS) == set(oracle.OPS_WITH_ORACLE)


@pytest.mark.parametrize("op_name,args", CASES)
def test_reference_matches_oracle(op_name, args):
    got = reference(op_name)(*_f64(args))
    assert got.dtype == torch.float64
    _assert_close(got, oracle.oracle(op_name)(*args), FP64_TOL)


@pytest.mark.parametrize("op_name,args", CASES)
def test_op_matches_oracle(op_name, args):
    # Whatever serves the op here (compiled kernel or reference fallback): it must agree with the oracle, not just
    # with a reference that may be the very function it runs.
    got = op(op_name)(*args)
    assert got.dtype == torch.float32
    _assert_close(got, oracle.oracle(op_name)(*args), FP32_TOL)


# ---- the comparisons above can fail: wrong semantics (same output shape) or fp32 precision do not pass them ---------

def _assert_differs(op_name: str, args: tuple, want: torch.Tensor, tol: dict = FP64_TOL) -> None:
    got = reference(op_name)(*_f64(args))
    assert got.shape == want.shape  # so only the values can make the comparison fail
    with pytest.raises(AssertionError):
        _assert_close(got, want, tol)


def test_oracle_without_dilation_differs():
    # dilation 2 / padding 2 -> dilation 1 / padding 1 keeps the output shape: only the window taps differ.
    label = "n2-c8-13x17-k3-s2-d2-g4-tview-bias-relu6"
    args = list(_sample("conv2d_act", label))
    assert args[5] == [2, 2] and args[6] == [2, 2]
    args[5], args[6] = [1, 1], [1, 1]
    _assert_differs("conv2d_act", _sample("conv2d_act", label), oracle.oracle("conv2d_act")(*args))


def test_oracle_with_kernel_axes_swapped_differs():
    # A 5x5 kernel read transposed (kh <-> kw mixed up in the im2col) keeps every shape.
    label = "n2-c13-13x17-k5-s2-cl-relu6"
    args = list(_sample("conv2d_act", label))
    args[1] = args[1].transpose(2, 3)
    _assert_differs("conv2d_act", _sample("conv2d_act", label), oracle.oracle("conv2d_act")(*args))


def test_oracle_with_shifted_padding_differs():
    # The padding all on one side (2 rows/cols before, none after) instead of 1 + 1: same shape, shifted windows.
    label = "n1-c3-7x7-k3-s1-nchw-bias-relu"
    x, w, b, res, stride, padding, dilation, groups, act = _sample("conv2d_act", label)
    assert padding == [1, 1] and stride == [1, 1]
    shifted = torch.nn.functional.pad(x.double(), (2, 0, 2, 0))
    want = oracle.conv2d_act(shifted, w, b, res, stride, [0, 0], dilation, groups, act)
    _assert_differs("conv2d_act", _sample("conv2d_act", label), want)


def test_oracle_with_relu_for_relu6_differs():
    label = "n1-c13-7x7-x37-k3-s1-nchw-res-relu6"
    args = list(_sample("inverted_residual", label))
    assert args[-1] == "relu6"
    args[-1] = "relu"
    _assert_differs("inverted_residual", _sample("inverted_residual", label),
                    oracle.oracle("inverted_residual")(*args))


def test_oracle_without_pool_branch_pooling_differs(monkeypatch):
    args = _sample("inception_block", "n2-c13-13x17-k3k5-cl")
    monkeypatch.setattr(oracle, "maxpool3x3", lambda x: x.to(torch.float64))
    _assert_differs("inception_block", args, oracle.oracle("inception_block")(*args))


@pytest.mark.parametrize("op_name", OPS)
def test_fp32_computation_fails_the_fp64_bound(op_name):
    # A reference that silently computed in fp32 (e.g. a float64 input downcast on the way) must not pass (a), on
    # any sample.
    for label, args in sample_inputs(op_name, torch.float32):
        got = reference(op_name)(*args).to(torch.float64)
        assert not torch.allclose(got, oracle.oracle(op_name)(*args), equal_nan=True, **FP64_TOL), label
