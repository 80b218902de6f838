"""cnnkernels::dwsep_conv2d_triton in the Triton interpreter vs the reference (see tests/support/triton_cases/common.py
for how these modules run)."""

import pytest
import torch

from support.triton_cases.common import (LAYOUT_DTYPES, assert_fake_matches, assert_grads_match, assert_same_error,
                                         check_against_reference, op, opcheck_eager, require_interpreter)
from support.triton_cases.samples import DWSEP_CONV2D, dwsep_conv2d_args, make

require_interpreter()

from support.valid_args import AT_WINDOW_MAX, call_args  # noqa: E402

from cnnkernels.ops._act import ACTIVATIONS  # noqa: E402
from cnnkernels.ops._checks import check_dwsep_conv2d  # noqa: E402
from cnnkernels.ops.dwsep_conv2d import dwsep_conv2d_reference  # noqa: E402

OP = "dwsep_conv2d"

@pytest.mark.parametrize("dtype, channels_last", LAYOUT_DTYPES)
@pytest.mark.parametrize("geom", DWSEP_CONV2D.values(), ids=DWSEP_CONV2D.keys())
def test_matches_reference(geom, dtype, channels_last):
    check_against_reference(OP, dwsep_conv2d_reference, dwsep_conv2d_args(geom, dtype, channels_last))


@pytest.mark.parametrize("dw_act", ACTIVATIONS)
@pytest.mark.parametrize("pw_act", ACTIVATIONS)
def test_activations(dw_act, pw_act):
    geom = (1, 5, 5, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), True, True, dw_act, pw_act)
    check_against_reference(OP, dwsep_conv2d_reference, dwsep_conv2d_args(geom))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_dtypes(dtype):
    check_against_reference(OP, dwsep_conv2d_reference, dwsep_conv2d_args(DWSEP_CONV2D["c3-7x7"], dtype, True))


def test_strided_input():
    args = list(dwsep_conv2d_args(DWSEP_CONV2D["c13-5x9-s2"], channels_last=True))
    args[0] = make((1, 26, 5, 9), torch.float32, channels_last=True)[:, ::2]
    check_against_reference(OP, dwsep_conv2d_reference, tuple(args))


def test_empty_batch():
    args = dwsep_conv2d_args((0, 3, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), True, True, "relu", "relu"))
    assert op("dwsep_conv2d_triton")(*args).shape == (0, 4, 5, 5)


NAMES = ["input", "dw_weight", "dw_bias", "pw_weight", "pw_bias", "stride", "padding", "dilation", "dw_activation",
         "pw_activation"]


def _bad(**kw):
    args = dict(zip(NAMES, dwsep_conv2d_args(DWSEP_CONV2D["c3-7x7"])))
    args.update(kw)
    return tuple(args.values())


BAD = {
    "dw-activation": lambda: _bad(dw_activation="gelu"),
    "pw-activation": lambda: _bad(pw_activation="tanh"),
    "input-3d": lambda: _bad(input=torch.ones(3, 7, 7)),
    "dw-weight-channels": lambda: _bad(dw_weight=torch.ones(4, 1, 3, 3)),
    "dw-weight-2-per-group": lambda: _bad(dw_weight=torch.ones(3, 2, 3, 3)),
    "dw-bias-shape": lambda: _bad(dw_bias=torch.ones(4)),
    "pw-weight-cin": lambda: _bad(pw_weight=torch.ones(13, 4, 1, 1)),
    "pw-weight-3x3": lambda: _bad(pw_weight=torch.ones(13, 3, 3, 3)),
    "pw-bias-dtype": lambda: _bad(pw_bias=torch.ones(13, dtype=torch.float16)),
    "stride-0": lambda: _bad(stride=[0, 0]),
}


@pytest.mark.parametrize("make_args", BAD.values(), ids=BAD.keys())
def test_bad_input(make_args):
    assert_same_error(check_dwsep_conv2d, OP, make_args())


@pytest.mark.parametrize("geom", ["c3-7x7", "c13-5x9-s2", "silu-hardswish"])
def test_autograd(geom):
    assert_grads_match(OP, dwsep_conv2d_reference, dwsep_conv2d_args(DWSEP_CONV2D[geom], torch.float64))


def test_fake_and_opcheck():
    assert_fake_matches(OP, dwsep_conv2d_args(DWSEP_CONV2D["c13-5x9-s2"], channels_last=True))
    opcheck_eager(OP, dwsep_conv2d_args(DWSEP_CONV2D["c3-7x7"]))


@pytest.mark.parametrize("overrides", [ov for o, ov in AT_WINDOW_MAX if o == OP])
def test_window_param_at_int32_max(overrides):
    # Stride, padding and dilation at their cap, 2**31 - 1 (cases from support/valid_args.py, as the CPU catalogue).
    args = tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                 for a in call_args(OP, **overrides))
    check_against_reference(OP, dwsep_conv2d_reference, args)

