"""cnnkernels::conv2d_act_triton in the Triton interpreter vs the reference (see tests/support/triton_cases/common.py
for how these modules run)."""

import pytest
import torch

from support.triton_cases.common import (LAYOUT_DTYPES, assert_fake_matches, assert_grads_match, assert_same_error,
                                         check_against_reference, op, opcheck_eager, require_interpreter)
from support.triton_cases.samples import CONV2D_ACT, conv2d_act_args, make

require_interpreter()

from support.valid_args import AT_WINDOW_MAX, call_args  # noqa: E402

from cnnkernels.ops._act import ACTIVATIONS  # noqa: E402
from cnnkernels.ops._checks import check_conv2d_act  # noqa: E402
from cnnkernels.ops.conv2d_act import conv2d_act_reference  # noqa: E402

OP = "conv2d_act"

@pytest.mark.parametrize("dtype, channels_last", LAYOUT_DTYPES)
@pytest.mark.parametrize("geom", CONV2D_ACT.values(), ids=CONV2D_ACT.keys())
def test_matches_reference(geom, dtype, channels_last):
    check_against_reference(OP, conv2d_act_reference, conv2d_act_args(geom, dtype, channels_last))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("bias, residual", [(False, False), (True, True)], ids=["plain", "bias-res"])
def test_epilogue(activation, bias, residual):
    geom = (1, 5, 5, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, bias, residual, activation)
    args = conv2d_act_args(geom, torch.float32)
    out = check_against_reference(OP, conv2d_act_reference, args)
    if activation == "relu6":
        assert out.max() <= 6


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")   # numpy's, in the interpreter
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_activation_extremes(activation):
    # NaN passes through every activation as in torch; silu's exp over- and underflows in the tails without
    # producing NaN; hardswish's and relu6's bends at -3, 0, 3 and 6 are hit exactly
    # (the values come in as the bias of a 1x1 conv of zeros)
    bias = torch.tensor([float("nan"), -1e4, -100.0, -3.0, -1.0, -0.0, 0.0, 1.0, 3.0, 6.0, 100.0, 1e4])
    args = (torch.zeros(1, 1, 2, 3), torch.ones(12, 1, 1, 1), bias, None, [1, 1], [0, 0], [1, 1], 1, activation)
    out = op("conv2d_act_triton")(*args)
    torch.testing.assert_close(out, conv2d_act_reference(*args), atol=0, rtol=1e-6, equal_nan=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_dtypes(dtype):
    for geom in (CONV2D_ACT["3x3-c3-7x7"], CONV2D_ACT["depthwise-s2"]):
        check_against_reference(OP, conv2d_act_reference, conv2d_act_args(geom, dtype, channels_last=True))


def test_strided_and_mixed_layouts():
    args = list(conv2d_act_args(CONV2D_ACT["3x3-c3-7x7"], channels_last=True, res_channels_last=False))
    args[0] = make((2, 3, 7, 14), torch.float32)[..., ::2]       # non-dense input: read through its strides
    check_against_reference(OP, conv2d_act_reference, tuple(args))


def test_empty_batch():
    args = conv2d_act_args((0, 3, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, False, "relu"))
    assert op("conv2d_act_triton")(*args).shape == (0, 4, 5, 5)


def _bad(**kw):
    args = dict(zip(["input", "weight", "bias", "residual", "stride", "padding", "dilation", "groups", "activation"],
                    conv2d_act_args(CONV2D_ACT["3x3-c3-7x7"])))
    args.update(kw)
    return tuple(args.values())


BAD = {
    "activation": lambda: _bad(activation="gelu"),
    "input-3d": lambda: _bad(input=torch.ones(3, 7, 7)),
    "int-input": lambda: _bad(input=torch.ones(2, 3, 7, 7, dtype=torch.int32)),
    "weight-dtype": lambda: _bad(weight=torch.ones(13, 3, 3, 3, dtype=torch.float64)),
    "weight-cin": lambda: _bad(weight=torch.ones(13, 4, 3, 3)),
    "bias-shape": lambda: _bad(bias=torch.ones(12)),
    "residual-shape": lambda: _bad(residual=torch.ones(2, 13, 6, 7)),
    "stride-0": lambda: _bad(stride=[0, 1]),
    "padding-neg": lambda: _bad(padding=[-1, 1]),
    "groups": lambda: _bad(groups=2),
    "kernel-too-big": lambda: _bad(weight=torch.ones(13, 3, 9, 9)),
}


@pytest.mark.parametrize("make_args", BAD.values(), ids=BAD.keys())
def test_bad_input(make_args):
    assert_same_error(check_conv2d_act, OP, make_args())


@pytest.mark.parametrize("geom, activation", [("3x3-c3-7x7", "relu6"), ("depthwise-s2", "relu6"),
                                              ("grouped-dilated", "relu6"), ("3x3-c3-7x7", "silu"),
                                              ("depthwise-s2", "hardswish")])
def test_autograd(geom, activation):
    g = list(CONV2D_ACT[geom])
    g[-1] = activation
    assert_grads_match(OP, conv2d_act_reference, conv2d_act_args(tuple(g), torch.float64))


def test_fake_and_opcheck():
    args = conv2d_act_args(CONV2D_ACT["3x3-s2-c13-5x9"], channels_last=True)
    assert_fake_matches(OP, args)
    opcheck_eager(OP, conv2d_act_args(CONV2D_ACT["3x3-c3-7x7"]))


@pytest.mark.parametrize("overrides", [ov for o, ov in AT_WINDOW_MAX if o == OP])
def test_window_param_at_int32_max(overrides):
    # Stride, padding and dilation at their cap, 2**31 - 1 (cases from support/valid_args.py, as the CPU catalogue).
    args = tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                 for a in call_args(OP, **overrides))
    check_against_reference(OP, conv2d_act_reference, args)

