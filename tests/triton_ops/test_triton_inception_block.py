"""cnnkernels::inception_block_triton in the Triton interpreter vs the reference (see
tests/support/triton_cases/common.py for how these modules run)."""

import pytest
import torch

from support.triton_cases.common import (LAYOUT_DTYPES, assert_fake_matches, assert_grads_match, assert_same_error,
                                         check_against_reference, op, opcheck_eager, require_interpreter)
from support.triton_cases.samples import INCEPTION_BLOCK, inception_block_args

require_interpreter()

from cnnkernels.ops._checks import check_inception_block  # noqa: E402
from cnnkernels.ops.inception_block import inception_block_reference  # noqa: E402

OP = "inception_block"

@pytest.mark.parametrize("dtype, channels_last", LAYOUT_DTYPES)
@pytest.mark.parametrize("geom", INCEPTION_BLOCK.values(), ids=INCEPTION_BLOCK.keys())
def test_matches_reference(geom, dtype, channels_last):
    check_against_reference(OP, inception_block_reference, inception_block_args(geom, dtype, channels_last))


def test_pool_branch_with_negative_input():
    # the 3x3 max-pool's padding must never win, also where every input is negative
    args = list(inception_block_args(INCEPTION_BLOCK["c3-7x7"]))
    args[0] = -args[0].abs() - 1
    check_against_reference(OP, inception_block_reference, tuple(args))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=["bf16", "fp64"])
def test_other_dtypes(dtype):
    check_against_reference(OP, inception_block_reference, inception_block_args(INCEPTION_BLOCK["c3-7x7"], dtype, True))


def test_empty_batch():
    args = inception_block_args((0, 3, 5, 5, 2, 2, 2, (3, 3), 2, 2, (5, 5), 2))
    assert op("inception_block_triton")(*args).shape == (0, 8, 5, 5)


NAMES = ["input", "w1", "b1", "w2_reduce", "b2_reduce", "w2", "b2", "w3_reduce", "b3_reduce", "w3", "b3", "w4",
         "b4"]


def _bad(**kw):
    args = dict(zip(NAMES, inception_block_args(INCEPTION_BLOCK["c3-7x7"])))
    args.update(kw)
    return tuple(args.values())


BAD = {
    "input-3d": lambda: _bad(input=torch.ones(3, 7, 7)),
    "int-input": lambda: _bad(input=torch.ones(2, 3, 7, 7, dtype=torch.int64)),
    "empty-spatial": lambda: _bad(input=torch.ones(2, 3, 7, 0)),
    "w1-cin": lambda: _bad(w1=torch.ones(4, 2, 1, 1)),
    "w1-3x3": lambda: _bad(w1=torch.ones(4, 3, 3, 3)),
    "b1-shape": lambda: _bad(b1=torch.ones(5)),
    "w2-even-k": lambda: _bad(w2=torch.ones(5, 3, 2, 2)),
    "w2-cin": lambda: _bad(w2=torch.ones(5, 2, 3, 3)),
    "w3-dtype": lambda: _bad(w3=torch.ones(3, 2, 5, 5, dtype=torch.float16)),
    "b4-shape": lambda: _bad(b4=torch.ones(5)),
}


@pytest.mark.parametrize("make_args", BAD.values(), ids=BAD.keys())
def test_bad_input(make_args):
    assert_same_error(check_inception_block, OP, make_args())


def test_autograd():
    assert_grads_match(OP, inception_block_reference, inception_block_args(INCEPTION_BLOCK["c3-7x7"], torch.float64))


def test_fake_and_opcheck():
    assert_fake_matches(OP, inception_block_args(INCEPTION_BLOCK["c13-5x9"], channels_last=True))
    opcheck_eager(OP, inception_block_args(INCEPTION_BLOCK["c3-7x7"]))


def test_no_weight_concatenation():
    # The two 1x1 reduces write r's two channel ranges in two launches: no per-call cat (kernel + allocation) of
    # their weights or biases. The profiler sees the aten ops the Triton op's body runs (a dispatch mode would see
    # only the op itself).
    args = inception_block_args(INCEPTION_BLOCK["c3-7x7"])
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        out = op("inception_block_triton")(*args)
    seen = {e.key for e in prof.key_averages()}
    assert "aten::empty_strided" in seen or "aten::empty" in seen, seen     # the body's own ops are recorded
    assert "aten::cat" not in seen, seen
    torch.testing.assert_close(out, inception_block_reference(*args), atol=1e-4, rtol=1e-4)
