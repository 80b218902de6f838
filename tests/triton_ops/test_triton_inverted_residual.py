"""cnnkernels::inverted_residual_triton in the Triton interpreter vs the reference (see
tests/support/triton_cases/common.py for how these modules run)."""

import pytest
import torch

from support.triton_cases.common import (LAYOUT_DTYPES, assert_fake_matches, assert_grads_match, assert_same_error,
                                         check_against_reference, op, opcheck_eager, require_interpreter)
from support.triton_cases.samples import INVERTED_RESIDUAL, inverted_residual_args

require_interpreter()

from support.valid_args import AT_WINDOW_MAX, call_args  # noqa: E402

from cnnkernels.ops._act import ACTIVATIONS  # noqa: E402
from cnnkernels.ops._checks import check_inverted_residual  # noqa: E402
from cnnkernels.ops.inverted_residual import inverted_residual_reference  # noqa: E402

OP = "inverted_residual"

@pytest.mark.parametrize("dtype, channels_last", LAYOUT_DTYPES)
@pytest.mark.parametrize("geom", INVERTED_RESIDUAL.values(), ids=INVERTED_RESIDUAL.keys())
def test_matches_reference(geom, dtype, channels_last):
    check_against_reference(OP, inverted_residual_reference, inverted_residual_args(geom, dtype, channels_last))


# Tile edges of the halo kernel in its first config (4x8-pixel tiles, 32 hidden channels per block, halo expanded 32
# pixels at a time): N, C, H, W, hidden, Cout, k, stride, residual, activation, expand_bias.
HALO_EDGES = {
    # 3 x 2 tiles per image, the last ones partial; 40 hidden = a full and a partial block (both scratch buffers)
    "odd-9x11-6tiles-h40-res": (2, 4, 9, 11, 40, 4, 3, 1, True, "relu6", True),
    # stride 2 on odd sizes: 5x7 output, a 9x15 halo (5 chunks), the zero padding on every side
    "odd-9x13-s2": (1, 3, 9, 13, 40, 6, 3, 2, False, "hardswish", True),
    "k5-s2-odd-11x9": (1, 3, 11, 9, 24, 4, 5, 2, False, "silu", False),
    # one output row: the tile shrinks to the map (a 3-row halo), three tiles across
    "one-row-1x17": (1, 3, 1, 17, 8, 3, 3, 1, True, "relu", True),
}


@pytest.mark.parametrize("geom", HALO_EDGES.values(), ids=HALO_EDGES.keys())
def test_halo_tile_edges(geom):
    check_against_reference(OP, inverted_residual_reference, inverted_residual_args(geom))


def test_halo_tile_edges_fp16_channels_last():
    check_against_reference(OP, inverted_residual_reference,
                            inverted_residual_args(HALO_EDGES["odd-9x13-s2"], torch.float16, True))


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("expand", [True, False], ids=["expand", "noexpand"])
def test_activations(activation, expand):
    geom = (1, 4, 5, 9, 8 if expand else None, 4, 3, 1, True, activation, True)
    check_against_reference(OP, inverted_residual_reference, inverted_residual_args(geom))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_dtypes(dtype):
    args = inverted_residual_args(INVERTED_RESIDUAL["expand-c3-7x7-res"], dtype, True)
    check_against_reference(OP, inverted_residual_reference, args)


def test_empty_batch():
    args = inverted_residual_args((0, 4, 5, 5, 8, 4, 3, 1, True, "relu6", True))
    assert op("inverted_residual_triton")(*args).shape == (0, 4, 5, 5)


NAMES = ["input", "expand_weight", "expand_bias", "dw_weight", "dw_bias", "project_weight", "project_bias", "stride",
         "residual", "activation"]


def _bad(**kw):
    args = dict(zip(NAMES, inverted_residual_args(INVERTED_RESIDUAL["expand-c3-7x7-res"])))
    args.update(kw)
    return tuple(args.values())


BAD = {
    "activation": lambda: _bad(activation="gelu"),
    "input-3d": lambda: _bad(input=torch.ones(3, 7, 7)),
    "empty-spatial": lambda: _bad(input=torch.ones(2, 3, 0, 7)),
    "expand-bias-without-weight": lambda: _bad(expand_weight=None),
    "expand-weight-cin": lambda: _bad(expand_weight=torch.ones(18, 4, 1, 1)),
    "dw-weight-even-k": lambda: _bad(dw_weight=torch.ones(18, 1, 2, 2)),
    "dw-weight-hidden": lambda: _bad(dw_weight=torch.ones(17, 1, 3, 3)),
    "dw-bias-dtype": lambda: _bad(dw_bias=torch.ones(18, dtype=torch.float64)),
    "project-weight-hidden": lambda: _bad(project_weight=torch.ones(3, 17, 1, 1)),
    "stride-0": lambda: _bad(stride=0),
    "residual-stride-2": lambda: _bad(stride=2),
}


@pytest.mark.parametrize("make_args", BAD.values(), ids=BAD.keys())
def test_bad_input(make_args):
    assert_same_error(check_inverted_residual, OP, make_args())


@pytest.mark.parametrize("geom", ["expand-c3-7x7-res", "noexpand-5x9-s2", "expand-5x5-s2-hardswish",
                                  "noexpand-silu-res"])
def test_autograd(geom):
    assert_grads_match(OP, inverted_residual_reference, inverted_residual_args(INVERTED_RESIDUAL[geom], torch.float64))


def test_fake_and_opcheck():
    assert_fake_matches(OP, inverted_residual_args(INVERTED_RESIDUAL["expand-c13-5x9-s2"], channels_last=True))
    opcheck_eager(OP, inverted_residual_args(INVERTED_RESIDUAL["noexpand-c13-res"]))


@pytest.mark.parametrize("overrides", [ov for o, ov in AT_WINDOW_MAX if o == OP])
def test_window_param_at_int32_max(overrides):
    # Stride, padding and dilation at their cap, 2**31 - 1 (cases from support/valid_args.py, as the CPU catalogue).
    args = tuple(a.contiguous(memory_format=torch.channels_last) if isinstance(a, torch.Tensor) and a.dim() == 4 else a
                 for a in call_args(OP, **overrides))
    check_against_reference(OP, inverted_residual_reference, args)



def test_modules_follow_use_backend():
    # cnnkernels.nn modules call the ops through the same wrappers as cnnkernels.<op>(), so use_backend("triton")
    # reaches a whole model (here on CPU tensors, which the interpreter runs); without it the CPU op runs.
    import cnnkernels
    import cnnkernels.nn as cnn
    from cnnkernels.testing import randomize_bn

    torch.manual_seed(0)
    model = torch.nn.Sequential(cnn.ConvBNAct(3, 8, 3, stride=2), cnn.InvertedResidual(8, 8, 1, 2),
                                cnn.BasicBlock(8, 8))
    model = randomize_bn(model).eval()
    x = torch.randn(1, 3, 9, 9)

    def run():
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            y = model(x)
        return y, {e.key for e in prof.key_averages() if e.key.startswith("cnnkernels::")}

    y_cpu, ops_cpu = run()
    with cnnkernels.use_backend("triton"):
        y_triton, ops_triton = run()
    assert ops_cpu == {"cnnkernels::conv2d_act", "cnnkernels::inverted_residual"}, ops_cpu
    assert {"cnnkernels::conv2d_act_triton", "cnnkernels::inverted_residual_triton"} <= ops_triton, ops_triton
    assert not ops_triton & ops_cpu, ops_triton
    torch.testing.assert_close(y_triton, y_cpu, atol=1e-4, rtol=1e-4)
