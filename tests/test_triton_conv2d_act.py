"""cnnkernels::conv2d_act_triton in the Triton interpreter vs the reference (see tests/triton_cases/common.py for how
these modules run)."""

import pytest
import torch

from triton_cases.common import (LAYOUT_DTYPES, TOLERANCES, assert_fake_matches, assert_grads_match,
                                 assert_matches, assert_same_error, check_against_reference, make, op, opcheck_eager,
                                 require_interpreter)

require_interpreter()

from cnnkernels.ops.conv2d_act import _check, conv2d_act_reference  # noqa: E402

OP = "conv2d_act"

# N, C, H, W, Cout, (kH, kW), stride, padding, dilation, groups, bias, residual, activation
GEOMETRIES = {
    "3x3-c3-7x7": (2, 3, 7, 7, 13, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, True, "relu"),
    "3x3-s2-c13-5x9": (1, 13, 5, 9, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1, True, False, "relu6"),
    "1x1-5x9": (2, 3, 5, 9, 5, (1, 1), (1, 1), (0, 0), (1, 1), 1, False, True, "none"),
    "depthwise-s2": (1, 13, 7, 7, 13, (3, 3), (2, 2), (1, 1), (1, 1), 13, True, True, "relu6"),
    "depthwise-x2": (1, 4, 5, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 4, False, False, "relu"),
    "grouped-dilated": (1, 6, 7, 7, 12, (3, 3), (1, 1), (2, 2), (2, 2), 3, False, False, "relu"),
    "1x3-s2x1-pad0x1": (1, 3, 5, 9, 7, (1, 3), (2, 1), (0, 1), (1, 1), 1, True, False, "none"),
    "multi-tile": (1, 40, 5, 5, 70, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, True, "relu"),
}


def conv_args(geom, dtype=torch.float32, channels_last=False, res_channels_last=None):
    N, C, H, W, Cout, (kh, kw), stride, padding, dilation, groups, bias, residual, act = geom
    x = make((N, C, H, W), dtype, channels_last)
    w = make((Cout, C // groups, kh, kw), dtype, scale=0.3)
    b = make((Cout,), dtype) if bias else None
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    rcl = channels_last if res_channels_last is None else res_channels_last
    r = make((N, Cout, Ho, Wo), dtype, rcl) if residual else None
    return (x, w, b, r, list(stride), list(padding), list(dilation), groups, act)


@pytest.mark.parametrize("dtype, channels_last", LAYOUT_DTYPES)
@pytest.mark.parametrize("geom", GEOMETRIES.values(), ids=GEOMETRIES.keys())
def test_matches_reference(geom, dtype, channels_last):
    check_against_reference(OP, conv2d_act_reference, conv_args(geom, dtype, channels_last))


@pytest.mark.parametrize("activation", ["none", "relu", "relu6"])
@pytest.mark.parametrize("bias, residual", [(False, False), (True, True)], ids=["plain", "bias-res"])
def test_epilogue(activation, bias, residual):
    geom = (1, 5, 5, 9, 6, (3, 3), (1, 1), (1, 1), (1, 1), 1, bias, residual, activation)
    args = conv_args(geom, torch.float32)
    out = check_against_reference(OP, conv2d_act_reference, args)
    if activation == "relu6":
        assert out.max() <= 6


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_dtypes(dtype):
    for geom in (GEOMETRIES["3x3-c3-7x7"], GEOMETRIES["depthwise-s2"]):
        check_against_reference(OP, conv2d_act_reference, conv_args(geom, dtype, channels_last=True))


def test_strided_and_mixed_layouts():
    args = list(conv_args(GEOMETRIES["3x3-c3-7x7"], channels_last=True, res_channels_last=False))
    args[0] = make((2, 3, 7, 14), torch.float32)[..., ::2]       # non-dense input: read through its strides
    check_against_reference(OP, conv2d_act_reference, tuple(args))


def test_empty_batch():
    args = conv_args((0, 3, 5, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, False, "relu"))
    assert op("conv2d_act_triton")(*args).shape == (0, 4, 5, 5)


def _bad(**kw):
    args = dict(zip(["input", "weight", "bias", "residual", "stride", "padding", "dilation", "groups", "activation"],
                    conv_args(GEOMETRIES["3x3-c3-7x7"])))
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
    assert_same_error(_check, OP, make_args())


@pytest.mark.parametrize("geom", ["3x3-c3-7x7", "depthwise-s2", "grouped-dilated"])
def test_autograd(geom):
    g = list(GEOMETRIES[geom])
    g[-1] = "relu6"
    assert_grads_match(OP, conv2d_act_reference, conv_args(tuple(g), torch.float64))


def test_fake_and_opcheck():
    args = conv_args(GEOMETRIES["3x3-s2-c13-5x9"], channels_last=True)
    assert_fake_matches(OP, args)
    opcheck_eager(OP, conv_args(GEOMETRIES["3x3-c3-7x7"]))
