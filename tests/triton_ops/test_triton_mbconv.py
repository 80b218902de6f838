"""cnnkernels::mbconv_triton in the Triton interpreter vs the reference (see tests/support/triton_cases/common.py for
how these modules run)."""

import pytest
import torch

from support.triton_cases.common import (LAYOUT_DTYPES, assert_fake_matches, assert_grads_match, assert_same_error,
                                         check_against_reference, op, opcheck_eager, require_interpreter)
from support.triton_cases.samples import MBCONV, make, mbconv_args

require_interpreter()

from cnnkernels.ops._act import ACTIVATIONS, GATES  # noqa: E402
from cnnkernels.ops._checks import check_mbconv  # noqa: E402
from cnnkernels.ops.mbconv import mbconv_reference  # noqa: E402

OP = "mbconv"


@pytest.mark.parametrize("dtype, channels_last", LAYOUT_DTYPES)
@pytest.mark.parametrize("geom", MBCONV.values(), ids=MBCONV.keys())
def test_matches_reference(geom, dtype, channels_last):
    check_against_reference(OP, mbconv_reference, mbconv_args(geom, dtype, channels_last))


# Tile edges of the SE path's depthwise kernel in its first config (4x8-pixel tiles, 32 hidden channels per program):
# odd sizes, several tiles per image (their partial sums), hidden counts that leave a partial block.
SE_TILE_EDGES = {
    "x40-k3-9x11-6tiles-res": (2, 4, 9, 11, 40, 3, 1, 3, 4, True, "hardswish", "relu", "hardsigmoid"),
    "x36-k5-s2-11x9": (1, 3, 11, 9, 36, 5, 2, 4, 5, False, "silu", "silu", "sigmoid"),
}


@pytest.mark.parametrize("geom", SE_TILE_EDGES.values(), ids=SE_TILE_EDGES.keys())
def test_se_tile_edges(geom):
    check_against_reference(OP, mbconv_reference, mbconv_args(geom))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("se", [True, False], ids=["se", "nose"])
def test_activations(activation, se):
    geom = (1, 4, 5, 9, 8, 3, 1, 2 if se else None, 4, True, activation, "relu", "sigmoid")
    check_against_reference(OP, mbconv_reference, mbconv_args(geom))


@pytest.mark.parametrize("se_activation", ACTIVATIONS)
@pytest.mark.parametrize("se_gate", GATES)
def test_se_activations_and_gates(se_activation, se_gate):
    # the SE stage is where these two apply; the block's own activation stays fixed
    geom = (1, 4, 5, 9, 8, 3, 2, 3, 6, False, "silu", se_activation, se_gate)
    check_against_reference(OP, mbconv_reference, mbconv_args(geom))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
@pytest.mark.parametrize("geom", ["x12-k3-se3-res-silu", "x20-k5-s2-se5-hardswish", "x16-k3-nose-res-hardswish"])
def test_other_dtypes(geom, dtype):
    check_against_reference(OP, mbconv_reference, mbconv_args(MBCONV[geom], dtype, True))


def test_strided_input():
    args = list(mbconv_args(MBCONV["noexpand-k3-se2-res-silu"], channels_last=True))
    args[0] = make((1, 16, 7, 7), torch.float32, channels_last=True)[:, ::2]   # non-dense: read through its strides
    check_against_reference(OP, mbconv_reference, tuple(args))


@pytest.mark.filterwarnings("ignore:overflow encountered in exp:RuntimeWarning")   # numpy's, in the interpreter
def test_saturated_gates():
    # SE logits far out in both tails: sigmoid's exp over- and underflows, hardsigmoid clamps at 0 and 1
    args = list(mbconv_args(MBCONV["x12-k3-se3-res-silu"]))
    args[8] = torch.tensor([-200.0, 200.0, -4.0, 4.0] * 3)
    for gate in GATES:
        args[-1] = gate
        check_against_reference(OP, mbconv_reference, tuple(args))


def test_empty_batch():
    for squeeze in (3, None):
        args = mbconv_args((0, 4, 5, 5, 8, 3, 1, squeeze, 4, True, "silu", "silu", "sigmoid"))
        assert op("mbconv_triton")(*args).shape == (0, 4, 5, 5)


NAMES = ["input", "expand_weight", "expand_bias", "dw_weight", "dw_bias", "se_reduce_weight", "se_reduce_bias",
         "se_expand_weight", "se_expand_bias", "project_weight", "project_bias", "stride", "residual", "activation",
         "se_activation", "se_gate"]


def _bad(**kw):
    args = dict(zip(NAMES, mbconv_args(MBCONV["x12-k3-se3-res-silu"])))
    args.update(kw)
    return tuple(args.values())


BAD = {
    "activation": lambda: _bad(activation="gelu"),
    "se-activation": lambda: _bad(se_activation="tanh"),
    "se-gate": lambda: _bad(se_gate="relu"),
    "input-3d": lambda: _bad(input=torch.ones(4, 7, 7)),
    "expand-bias-without-weight": lambda: _bad(expand_weight=None),
    "dw-weight-k7": lambda: _bad(dw_weight=torch.ones(12, 1, 7, 7)),
    "dw-weight-hidden": lambda: _bad(dw_weight=torch.ones(11, 1, 3, 3)),
    "se-partial": lambda: _bad(se_expand_bias=None),
    "se-expand-shape": lambda: _bad(se_expand_weight=torch.ones(12, 4, 1, 1)),
    "se-dtype": lambda: _bad(se_reduce_bias=torch.ones(3, dtype=torch.float64)),
    "project-weight-hidden": lambda: _bad(project_weight=torch.ones(4, 11, 1, 1)),
    "stride-3": lambda: _bad(stride=3),
    "residual-stride-2": lambda: _bad(stride=2),
}


@pytest.mark.parametrize("make_args", BAD.values(), ids=BAD.keys())
def test_bad_input(make_args):
    assert_same_error(check_mbconv, OP, make_args())


@pytest.mark.parametrize("geom", ["x12-k3-se3-res-silu", "noexpand-k5-s2-se1-relu", "x16-k3-nose-res-hardswish"])
def test_autograd(geom):
    assert_grads_match(OP, mbconv_reference, mbconv_args(MBCONV[geom], torch.float64))


def test_fake_and_opcheck():
    assert_fake_matches(OP, mbconv_args(MBCONV["x20-k5-s2-se5-hardswish"], channels_last=True))
    assert_fake_matches(OP, mbconv_args(MBCONV["x16-k3-nose-res-hardswish"]))
    opcheck_eager(OP, mbconv_args(MBCONV["noexpand-k3-se2-res-silu"]))


def test_wrapper_follows_use_backend():
    # cnnkernels.mbconv() picks the Triton op under use_backend("triton") (CPU tensors: the interpreter runs it)
    import cnnkernels

    args = mbconv_args(MBCONV["x12-k3-se3-res-silu"])

    def run():
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            y = cnnkernels.mbconv(*args)
        return y, {e.key for e in prof.key_averages() if e.key.startswith("cnnkernels::")}

    with cnnkernels.use_backend("triton"):
        y, ops = run()
    assert ops == {"cnnkernels::mbconv_triton"}, ops
    torch.testing.assert_close(y, mbconv_reference(*args), atol=1e-4, rtol=1e-4)
