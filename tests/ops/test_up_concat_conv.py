"""up_concat_conv(input, skip, up_weight, up_bias, weight, bias, activation): what is particular to it (the generic
grid, gradcheck, opcheck and the bad-input catalogue run it with every other op). The CPU kernel builds the
concatenated rows band by band in a per-thread ring, so the splits into bands, threads and images are tested here."""

import pytest
import torch

import cnnkernels
from support.dtypes import TOLERANCES
from support.fuzz import num_threads
from support.helpers import assert_empty_batch, assert_matches_reference, assert_op_error
from support.samples import Maker
from support.valid_args import up_concat_conv_args as args  # a valid call, with overrides

OP = "up_concat_conv"


def _call(m: Maker, N, C, H, W, Cup, Cskip, Cout, layout="cl", act="relu"):
    return (m.input(N, C, H, W, layout), m.input(N, Cskip, 2 * H, 2 * W, layout), m.randn(C, Cup, 2, 2, scale=C ** -0.5),
            m.bias(Cup), m.weight(Cout, Cskip + Cup, 3), m.bias(Cout), act)


def test_valid_args_are_valid():
    assert torch.ops.cnnkernels.up_concat_conv(*args()).shape == (2, 7, 6, 10)


def test_empty_batch():
    assert_empty_batch(OP, args(input=torch.randn(0, 4, 3, 5), skip=torch.randn(0, 5, 6, 10)))


@pytest.mark.parametrize("N,C,H,W,Cup,Cskip,Cout", [
    (2, 3, 1, 1, 5, 2, 4),    # 1x1 input: every output pixel sees the zero padding
    (1, 7, 3, 4, 1, 6, 9),    # one upsampled channel
    (2, 5, 4, 3, 6, 1, 3),    # one skip channel
    (1, 1, 2, 5, 1, 1, 1),    # one channel everywhere
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_edge_shapes(N, C, H, W, Cup, Cskip, Cout, dtype):
    m = Maker(f"upconv-edge-{N}-{C}-{H}-{W}-{Cup}-{Cskip}", dtype, "cpu")
    assert_matches_reference(OP, _call(m, N, C, H, W, Cup, Cskip, Cout, act="silu"), dtype)


def test_skip_comes_first_in_the_concatenation():
    # Weights that read only the skip channels: the output is the 3x3 conv of skip alone, whatever the input.
    m = Maker("upconv-order", torch.float32, "cpu")
    x, skip, uw, ub, w, b, _ = _call(m, 1, 4, 3, 3, 5, 2, 3, layout="nchw")
    w[:, 2:] = 0
    out = torch.ops.cnnkernels.up_concat_conv(x, skip, uw, ub, w, b, "none")
    torch.testing.assert_close(out, torch.nn.functional.conv2d(skip, w[:, :2], b, padding=1))


@pytest.mark.parametrize("threads", [2, 3])
def test_results_do_not_depend_on_the_split(threads):
    # 128 x 256 concatenated fp32 pixels per row (128 KB) make a ring of 8 rows (bands of 6 output rows), so each
    # thread runs several bands of its 32 / threads rows and, with 3 threads, a thread's rows cross an image boundary.
    # Every value is summed in one order whatever the split: the same bits as on one thread.
    m = Maker("upconv-bits", torch.float32, "cpu")
    a = _call(m, 2, 16, 8, 64, 128, 128, 9, act="hardswish")
    with num_threads(1):
        one = torch.ops.cnnkernels.up_concat_conv(*a)
    torch.testing.assert_close(one, cnnkernels.up_concat_conv_reference(*a), **TOLERANCES[torch.float32])
    with num_threads(threads):
        assert torch.equal(torch.ops.cnnkernels.up_concat_conv(*a), one)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_many_concatenated_channels(dtype):
    # From 768 concatenated channels on, an fp32 output's 3x3 conv runs in two halves (skip channels, then the
    # upsampled ones adding the first half's sums): the same result as the reference, the same bits on any thread
    # count. bf16 keeps the single conv.
    m = Maker(f"upconv-wide-{dtype}", dtype, "cpu")
    a = _call(m, 2, 6, 2, 3, 400, 390, 5, act="relu6")
    with num_threads(1):
        one = torch.ops.cnnkernels.up_concat_conv(*a)
    assert_matches_reference(OP, a, dtype)
    with num_threads(2):
        assert torch.equal(torch.ops.cnnkernels.up_concat_conv(*a), one)


def test_wrapper_defaults():
    x, skip, uw, ub, w, b, _ = args()
    assert torch.equal(cnnkernels.up_concat_conv(x, skip, uw, None, w),
                       torch.ops.cnnkernels.up_concat_conv(x, skip, uw, None, w, None, "none"))


@pytest.mark.bad_input
def test_bad_input_rank():
    assert_op_error(OP, args(input=torch.randn(4, 3, 5)), ValueError, "input")


@pytest.mark.bad_input
@pytest.mark.parametrize("shape", [(2, 5, 6, 9), (2, 5, 5, 10), (2, 5, 3, 5), (1, 5, 6, 10), (2, 0, 6, 10)],
                         ids=["odd_width", "odd_height", "same_size", "batch", "no_channels"])
def test_bad_skip_shape(shape):
    msg = assert_op_error(OP, args(skip=torch.randn(*shape)), ValueError, "skip")
    assert "[2, C_skip, 6, 10]" in msg


@pytest.mark.bad_input
@pytest.mark.parametrize("shape", [(5, 6, 2, 2), (4, 6, 3, 3), (4, 6, 2, 1), (4, 0, 2, 2), (4, 6, 4)],
                         ids=["in_channels", "kernel3", "kernel2x1", "no_channels", "rank3"])
def test_bad_up_weight(shape):
    assert_op_error(OP, args(up_weight=torch.randn(*shape)), ValueError, "up_weight")


@pytest.mark.bad_input
def test_bad_up_bias_shape():
    assert_op_error(OP, args(up_bias=torch.randn(4)), ValueError, "up_bias")


@pytest.mark.bad_input
@pytest.mark.parametrize("shape", [(7, 10, 3, 3), (7, 6, 3, 3), (7, 11, 1, 1), (7, 11, 5, 5), (0, 11, 3, 3)],
                         ids=["channels_minus_one", "up_channels_only", "kernel1", "kernel5", "no_outputs"])
def test_bad_weight(shape):
    msg = assert_op_error(OP, args(weight=torch.randn(*shape)), ValueError, "weight")
    assert "C_skip + C_up = 5 + 6" in msg


@pytest.mark.bad_input
def test_bad_bias_shape():
    assert_op_error(OP, args(bias=torch.randn(11)), ValueError, "bias")


@pytest.mark.bad_input
def test_bad_activation():
    assert_op_error(OP, args(activation="gelu"), ValueError, "activation")


@pytest.mark.bad_input
@pytest.mark.parametrize("arg", ["skip", "up_weight", "up_bias", "weight", "bias"])
def test_dtype_mismatch(arg):
    valid = dict(zip(["input", "skip", "up_weight", "up_bias", "weight", "bias"], args()))
    assert_op_error(OP, args(**{arg: valid[arg].double()}), TypeError, arg)


@pytest.mark.bad_input
def test_skip_on_another_device():
    assert_op_error(OP, args(skip=torch.randn(2, 5, 6, 10, device="meta")), ValueError, "skip", compare_meta=False)


@pytest.mark.bad_input
def test_none_skip():
    assert_op_error(OP, args(skip=None), TypeError, "skip")
