"""cnnkernels::up_concat_conv_triton in the Triton interpreter vs the reference (see tests/support/triton_cases/common.py
for how these modules run)."""

import pytest
import torch

from support.triton_cases.common import (LAYOUT_DTYPES, assert_fake_matches, assert_grads_match, assert_same_error,
                                         check_against_reference, op, opcheck_eager, require_interpreter)
from support.triton_cases.samples import UP_CONCAT_CONV, make, up_concat_conv_args

require_interpreter()

from cnnkernels.ops._checks import check_up_concat_conv  # noqa: E402
from cnnkernels.ops.up_concat_conv import up_concat_conv_reference  # noqa: E402

OP = "up_concat_conv"


# The interpreter runs this kernel slowly (9 taps, each two chained GEMMs): the small geometries get two of the four
# layout/dtype pairs, the multi-tile one a single run; tests/triton_ops/test_triton_gpu.py runs every pair on a GPU.
SMALL = [k for k in UP_CONCAT_CONV if k != "multi-tile"]


@pytest.mark.parametrize("dtype, channels_last", [LAYOUT_DTYPES[0], LAYOUT_DTYPES[3]])
@pytest.mark.parametrize("geom", SMALL)
def test_matches_reference(geom, dtype, channels_last):
    check_against_reference(OP, up_concat_conv_reference, up_concat_conv_args(UP_CONCAT_CONV[geom], dtype,
                                                                              channels_last))


def test_multi_tile():
    check_against_reference(OP, up_concat_conv_reference, up_concat_conv_args(UP_CONCAT_CONV["multi-tile"],
                                                                              channels_last=True))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_dtypes(dtype):
    args = up_concat_conv_args(UP_CONCAT_CONV["c3-1x1-up2-skip1-nobias-silu"], dtype, True)
    check_against_reference(OP, up_concat_conv_reference, args)


def test_strided_skip():
    args = list(up_concat_conv_args(UP_CONCAT_CONV["c5-2x3-up1-skip4-hardswish"], channels_last=True))
    args[1] = make((1, 8, 4, 6), torch.float32)[:, ::2]
    check_against_reference(OP, up_concat_conv_reference, tuple(args))


def test_empty_batch():
    args = list(up_concat_conv_args(UP_CONCAT_CONV["c6-3x4-up5-skip3-relu"]))
    args[0], args[1] = args[0][:0], args[1][:0]
    assert op("up_concat_conv_triton")(*args).shape == (0, 7, 6, 8)


NAMES = ["input", "skip", "up_weight", "up_bias", "weight", "bias", "activation"]


def _bad(**kw):
    args = dict(zip(NAMES, up_concat_conv_args(UP_CONCAT_CONV["c6-3x4-up5-skip3-relu"])))
    args.update(kw)
    return tuple(args.values())


BAD = {
    "activation": lambda: _bad(activation="gelu"),
    "skip-not-2x": lambda: _bad(skip=torch.ones(2, 3, 6, 7)),
    "up-weight-3x3": lambda: _bad(up_weight=torch.ones(6, 5, 3, 3)),
    "weight-channels": lambda: _bad(weight=torch.ones(7, 9, 3, 3)),
    "bias-dtype": lambda: _bad(bias=torch.ones(7, dtype=torch.float16)),
}


@pytest.mark.parametrize("make_args", BAD.values(), ids=BAD.keys())
def test_bad_input(make_args):
    assert_same_error(check_up_concat_conv, OP, make_args())


def test_autograd():
    assert_grads_match(OP, up_concat_conv_reference,
                       up_concat_conv_args(UP_CONCAT_CONV["c5-2x3-up1-skip4-hardswish"], torch.float64))


def test_fake_and_opcheck():
    assert_fake_matches(OP, up_concat_conv_args(UP_CONCAT_CONV["c5-2x3-up1-skip4-hardswish"], channels_last=True))
    opcheck_eager(OP, up_concat_conv_args(UP_CONCAT_CONV["c3-1x1-up2-skip1-nobias-silu"]))
