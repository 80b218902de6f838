"""The bad-input catalogue: every way to call an op wrongly, one test each, for every op.

Complements the per-op files (tests/ops/test_<op>.py), which already cover, and are not repeated here: add_relu residual
rank/shape/dtype/device, int input, empty batch; conv2d_act input/weight rank, weight channels, groups, bias and
residual shape, weight/residual dtype, int input, weight device, activation, stride/padding/dilation signs, kernel
larger than the input, empty batch; dwsep_conv2d input/dw_weight rank, dw_weight not depthwise, pw_weight channels and
kernel, bias shapes, pw_weight/dw_bias dtype, dw_weight device, both activations, stride/padding/dilation, kernel too
large, empty batch; inverted_residual input rank, empty map, every weight/bias shape, residual constraints, dw_bias
dtype, project_weight device, activation, stride, empty batch; inception_block input rank, empty map, w1/w2/w3/w4/
w3_reduce shapes, b2/b2_reduce shape, w4 dtype, w2 device, empty batch.

Here, systematically over every op and every tensor argument: wrong rank, mixed dtype, mixed device (meta vs cpu),
None for a required tensor; and per op: non-float dtypes, unknown activation spellings, zero-sized C/H/W (compared
with what F.conv2d does), the remaining shape mismatches and hyper-parameter errors, NaN/Inf propagation, and tensors
with more than 2**31 elements. Every error must be a ValueError or TypeError whose message starts with
'cnnkernels.<op>: <argument>' and is the same from the fake (meta) kernel (helpers.assert_op_error).
"""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

from support.fuzz import check_case
from support.helpers import assert_op_error, op, reference, with_specials
from support.samples import generic_ops, sample_inputs
from support.valid_args import AT_WINDOW_MAX, VALID, WINDOW_MAX
from support.valid_args import call_args as _call_args

OPS = tuple(VALID)


def _schema(op_name):
    return op(op_name).default._schema.arguments


def _valid_dict(op_name) -> dict:
    return {a.name: v for a, v in zip(_schema(op_name), VALID[op_name]())}


def _tensor_args(op_name, required_only=False):
    """Names of the op's tensor arguments that its valid arguments set (optional ones included unless
    required_only)."""
    valid = _valid_dict(op_name)
    return [a.name for a in _schema(op_name)
            if str(a.type) in ("Tensor", "Optional[Tensor]") and valid[a.name] is not None
            and not (required_only and str(a.type) != "Tensor")]


def _first_arg(op_name) -> str:
    """The argument the others are checked against ("input"; "boxes", "boxes1", "head" for the detection ops)."""
    return _schema(op_name)[0].name


def _params(skip=(), include_input=False, required_only=False):
    """pytest params (op, arg) over every tensor argument of every op, less those the per-op files cover."""
    return [pytest.param(o, a, id=f"{o}-{a}") for o in OPS for a in _tensor_args(o, required_only)
            if (a != _first_arg(o) or include_input) and (o, a) not in skip]


# -------------------------------------------------------------------------------------- every tensor argument

@pytest.mark.bad_input
@pytest.mark.parametrize("op_name,arg", _params(skip={
    ("add_relu", "residual"), ("conv2d_act", "weight"), ("dwsep_conv2d", "dw_weight"), ("dwsep_conv2d", "pw_bias")}))
def test_wrong_rank(op_name, arg):
    bad = _valid_dict(op_name)[arg].unsqueeze(0)
    assert_op_error(op_name, _call_args(op_name, **{arg: bad}), ValueError, arg)


@pytest.mark.bad_input
@pytest.mark.parametrize("op_name,arg", _params(skip={
    ("add_relu", "residual"), ("conv2d_act", "weight"), ("conv2d_act", "residual"), ("dwsep_conv2d", "pw_weight"),
    ("dwsep_conv2d", "dw_bias"), ("inverted_residual", "dw_bias"), ("inception_block", "w4"),
    ("batched_nms", "idxs")}))  # idxs is an integer tensor of any integer dtype (tests/ops/test_boxes.py)
def test_mixed_dtype(op_name, arg):
    bad = _valid_dict(op_name)[arg].double()
    msg = assert_op_error(op_name, _call_args(op_name, **{arg: bad}), TypeError, arg)
    assert "Float" in msg and "Double" in msg, msg


@pytest.mark.bad_input
@pytest.mark.parametrize("op_name,arg", _params(skip={
    ("add_relu", "residual"), ("conv2d_act", "weight"), ("dwsep_conv2d", "dw_weight"),
    ("inverted_residual", "project_weight"), ("inception_block", "w2")}))
def test_mixed_device(op_name, arg):
    bad = _valid_dict(op_name)[arg].to("meta")
    msg = assert_op_error(op_name, _call_args(op_name, **{arg: bad}), ValueError, arg, compare_meta=False)
    assert "cpu" in msg and "meta" in msg, msg


@pytest.mark.bad_input
def test_mixed_device_meta_input():
    # The input on meta, the weight on the CPU: the meta (fake) kernel runs and names the weight.
    args = _call_args("conv2d_act", input=torch.empty(2, 4, 5, 5, device="meta"), bias=None, residual=None)
    msg = assert_op_error("conv2d_act", args, ValueError, "weight", compare_meta=False)
    assert "device meta, got cpu" in msg, msg


@pytest.mark.bad_input
@pytest.mark.parametrize("op_name,arg", _params(include_input=True, required_only=True))
def test_none_for_required_tensor(op_name, arg):
    # torch's schema binding lets None through for a (non-optional) Tensor argument; the checks must name it.
    msg = assert_op_error(op_name, _call_args(op_name, **{arg: None}), TypeError, arg)
    assert msg.endswith("must be a tensor, got None"), msg


# ----------------------------------------------------------------------------------------------- dtypes

@pytest.mark.bad_input
@pytest.mark.parametrize("dtype", [torch.bool, torch.int32, torch.uint8, torch.complex64],
                         ids=["bool", "int32", "uint8", "complex64"])
@pytest.mark.parametrize("op_name", OPS)
def test_non_float_dtype(op_name, dtype):
    if (op_name, dtype) in {("add_relu", torch.int32)}:
        pytest.skip("covered by test_add_relu.py")
    args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) else a for a in VALID[op_name]())
    msg = assert_op_error(op_name, args, TypeError, _first_arg(op_name))
    # a YOLO head is float32 or float64 only (cnnkernels/ops/yolo_postprocess.py)
    assert ("must be float32 or float64" if op_name == "yolo_postprocess" else
            "must be float32, float16, bfloat16 or float64") in msg, msg


# ----------------------------------------------------------------------------------------------- activations

ACTIVATION_ARGS = [("conv2d_act", "activation"), ("dwsep_conv2d", "dw_activation"),
                   ("dwsep_conv2d", "pw_activation"), ("inverted_residual", "activation"), ("mbconv", "activation"),
                   ("mbconv", "se_activation"), ("mbconv", "se_gate")]


@pytest.mark.bad_input
@pytest.mark.parametrize("value", ["ReLU", "", "relu "])
@pytest.mark.parametrize("op_name,arg", ACTIVATION_ARGS, ids=[f"{o}-{a}" for o, a in ACTIVATION_ARGS])
def test_activation_spelling(op_name, arg, value):
    msg = assert_op_error(op_name, _call_args(op_name, **{arg: value}), ValueError, arg)
    assert f"got '{value}'" in msg, msg


@pytest.mark.bad_input
def test_activation_not_a_string():
    # None for a `str` argument is rejected by torch's schema binding itself, before any cnnkernels code runs: a
    # RuntimeError (not ValueError/TypeError, which torch does not let us raise here) that names the argument.
    with pytest.raises(RuntimeError, match="argument 'activation'"):
        op("conv2d_act")(*_call_args("conv2d_act", activation=None))


# ----------------------------------------------------------------------------------------------- zero sizes

@pytest.mark.bad_input
@pytest.mark.parametrize("op_name", [o for o in generic_ops("conv_shapes", OPS) if o != "add_relu"])
def test_zero_channels(op_name):
    # F.conv2d returns an empty tensor shaped like neither the input nor the true result for C = 0 (it would be
    # act(bias) everywhere); the ops reject it, compiled, fallback and fake alike.
    valid = _valid_dict(op_name)
    x = torch.randn(2, 0, 5, 5)
    over = {"input": x}
    # weights sized for zero input channels, so that only the input's channel count is wrong
    for name, t in valid.items():
        if isinstance(t, torch.Tensor) and t.dim() == 4 and name != "input" and t.shape[1] == 4:
            over[name] = torch.randn(t.shape[0], 0, *t.shape[2:])
    if op_name == "dwsep_conv2d":
        over.update(dw_weight=torch.randn(0, 1, 3, 3), dw_bias=torch.randn(0))
    msg = assert_op_error(op_name, _call_args(op_name, **over), ValueError, "input")
    assert "at least one channel" in msg, msg
    assert F.conv2d(x, torch.randn(3, 0, 1, 1)).shape == (2, 0, 5, 5)  # what PyTorch does


@pytest.mark.bad_input
@pytest.mark.parametrize("op_name,hw", [("conv2d_act", (0, 5)), ("conv2d_act", (5, 0)), ("dwsep_conv2d", (0, 5)),
                                        ("inverted_residual", (5, 0)), ("inception_block", (0, 5)),
                                        ("mbconv", (0, 3))])
def test_zero_spatial(op_name, hw):
    # Padding alone would make an output (1x1 kernel, padding 1); F.conv2d refuses an empty map, and so do the ops.
    over = {"input": torch.randn(2, 4, *hw)}
    if op_name == "conv2d_act":
        over.update(weight=torch.randn(6, 4, 1, 1), residual=None)
    elif op_name == "dwsep_conv2d":
        over.update(dw_weight=torch.randn(4, 1, 1, 1))
    msg = assert_op_error(op_name, _call_args(op_name, **over), ValueError, "input")
    assert f"spatial size must be non-zero, got {hw[0]}x{hw[1]}" in msg, msg
    with pytest.raises(RuntimeError):
        F.conv2d(torch.randn(2, 4, *hw), torch.randn(6, 4, 1, 1), padding=1)


@pytest.mark.bad_input
@pytest.mark.parametrize("shape", [(0,), (3, 0, 4), (2, 3, 0, 5), (0, 3, 4, 5)])
def test_add_relu_zero_sized(shape):
    # add_relu takes any shape, empty ones included: an empty result, as torch.relu(x + r) gives.
    x = torch.randn(shape)
    for fmt in ((torch.contiguous_format, torch.channels_last) if len(shape) == 4 else (torch.contiguous_format,)):
        xx = x.contiguous(memory_format=fmt)
        out = op("add_relu")(xx, xx)
        assert out.shape == shape and out.dtype == x.dtype
        fake = op("add_relu")(xx.to("meta"), xx.to("meta"))
        assert fake.shape == out.shape and fake.stride() == out.stride()


@pytest.mark.bad_input
@pytest.mark.parametrize("shape", [(0, 4, 3, 3), (6, 4, 0, 3), (6, 4, 3, 0)], ids=["cout0", "kh0", "kw0"])
def test_conv2d_act_zero_sized_weight(shape):
    # F.conv2d raises a RuntimeError for these; the op a ValueError naming the weight.
    msg = assert_op_error("conv2d_act", _call_args("conv2d_act", weight=torch.randn(shape), bias=None, residual=None),
                          ValueError, "weight")
    assert "non-zero C_out and kernel size" in msg, msg


# ----------------------------------------------------------------------------------------- remaining shapes

SHAPE_CASES = [
    ("add_relu", dict(residual=torch.randn(1, 3, 4, 5)), "residual"),  # broadcastable, but no broadcasting
    ("add_relu", dict(residual=torch.randn(2, 3, 4, 5).flatten()), "residual"),  # same numel, other shape
    ("conv2d_act", dict(weight=torch.randn(6, 1, 3, 3), groups=4), "groups"),  # 6 output channels, 4 groups
    ("conv2d_act", dict(bias=torch.randn(6, 1)), "bias"),
    ("conv2d_act", dict(residual=torch.randn(2, 6, 5, 5).transpose(2, 3)[:, :, :4]), "residual"),
    ("dwsep_conv2d", dict(pw_weight=torch.randn(6, 4, 1)), "pw_weight"),
    ("inverted_residual", dict(expand_weight=torch.randn(12, 4, 3, 3)), "expand_weight"),
    ("inverted_residual", dict(dw_weight=torch.randn(12, 2, 3, 3)), "dw_weight"),
    ("inception_block", dict(b1=torch.randn(4)), "b1"),
    ("inception_block", dict(b3=torch.randn(2)), "b3"),
    ("inception_block", dict(b4=torch.randn(1)), "b4"),
    ("inception_block", dict(b3_reduce=torch.randn(3)), "b3_reduce"),
    ("inception_block", dict(w2_reduce=torch.randn(2, 3, 1, 1)), "w2_reduce"),
    ("inception_block", dict(w4=torch.randn(2, 5, 1, 1)), "w4"),
    ("inception_block", dict(w2=torch.randn(5, 2, 2, 3)), "w2"),
    ("inception_block", dict(w3=torch.randn(3, 3, 5, 5)), "w3"),
    ("inception_block", dict(w1=torch.randn(0, 4, 1, 1)), "w1"),
    ("mbconv", dict(dw_weight=torch.randn(12, 1, 3, 5)), "dw_weight"),  # not square
    ("mbconv", dict(dw_weight=torch.randn(12, 1, 7, 7)), "dw_weight"),  # 3 or 5 only
    ("mbconv", dict(se_reduce_weight=torch.randn(3, 4, 1, 1)), "se_reduce_weight"),  # reduces the input, not hidden
    ("mbconv", dict(se_expand_weight=torch.randn(12, 4, 1, 1)), "se_expand_weight"),
    ("mbconv", dict(se_expand_bias=torch.randn(3)), "se_expand_bias"),
    ("mbconv", dict(se_reduce_bias=torch.randn(12)), "se_reduce_bias"),
    ("mbconv", dict(expand_weight=None, expand_bias=None), "dw_weight"),  # the depthwise conv then sees 4 channels, not 12
    ("mbconv", dict(project_weight=torch.randn(6, 12, 1, 1), project_bias=torch.randn(6)), "residual"),
    ("box_iou", dict(boxes2=torch.rand(3, 5)), "boxes2"),
    ("box_iou", dict(boxes1=torch.rand(4)), "boxes1"),
    ("nms", dict(scores=torch.rand(6, 1)), "scores"),
    ("nms", dict(scores=torch.rand(7)), "scores"),
    ("batched_nms", dict(idxs=torch.zeros(5, dtype=torch.long)), "idxs"),
    ("batched_nms", dict(boxes=torch.rand(6, 2, 2)), "boxes"),
    ("yolo_postprocess", dict(head=torch.randn(2, 3 * 7 + 1, 4, 5)), "head"),  # not A*(5+C) channels
    ("yolo_postprocess", dict(head=torch.randn(2, 3 * 5, 4, 5)), "head"),      # C = 0
    ("yolo_postprocess", dict(head=torch.randn(2, 21, 0, 5)), "head"),
    ("yolo_postprocess", dict(anchors=torch.rand(0, 2)), "anchors"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("op_name,overrides,arg", [pytest.param(o, ov, a, id=f"{o}-{a}-{i}")
                                                   for i, (o, ov, a) in enumerate(SHAPE_CASES)])
def test_shape_mismatch(op_name, overrides, arg):
    assert_op_error(op_name, _call_args(op_name, **overrides), ValueError, arg)


HPARAM_CASES = [
    ("conv2d_act", dict(dilation=[1, -1]), "dilation"),
    ("conv2d_act", dict(stride=[1, 1, 1]), "stride"),
    ("conv2d_act", dict(padding=[1]), "stride"),  # the message names all three lists
    ("conv2d_act", dict(groups=0), "groups"),
    ("conv2d_act", dict(groups=-2), "groups"),
    ("dwsep_conv2d", dict(stride=[-1, 1]), "stride"),
    ("dwsep_conv2d", dict(dilation=[-2, 1]), "dilation"),
    ("dwsep_conv2d", dict(padding=[1, 1, 1]), "stride"),
    ("dwsep_conv2d", dict(stride=[3, 3], padding=[0, 0], dw_weight=torch.randn(4, 1, 5, 6)), "input"),
    ("mbconv", dict(stride=3, residual=False), "stride"),
    ("mbconv", dict(stride=0, residual=False), "stride"),
    ("mbconv", dict(stride=2), "residual"),  # stride 2 cannot add the input
    ("nms", dict(iou_threshold=math.nan), "iou_threshold"),
    ("batched_nms", dict(iou_threshold=math.nan), "iou_threshold"),
    ("yolo_postprocess", dict(score_threshold=math.nan), "score_threshold"),
    ("yolo_postprocess", dict(iou_threshold=math.nan), "iou_threshold"),
    ("yolo_postprocess", dict(max_detections=-1), "max_detections"),
    ("yolo_postprocess", dict(image_size=[32, 0]), "image_size"),
    ("yolo_postprocess", dict(image_size=[-32, 40]), "image_size"),
]


@pytest.mark.bad_input
@pytest.mark.parametrize("op_name,overrides,arg", [pytest.param(o, ov, a, id=f"{o}-{list(ov)[0]}-{i}")
                                                   for i, (o, ov, a) in enumerate(HPARAM_CASES)])
def test_bad_hyperparameter(op_name, overrides, arg):
    assert_op_error(op_name, _call_args(op_name, **overrides), ValueError, arg)


@pytest.mark.bad_input
@pytest.mark.parametrize("given", [("se_reduce_weight",), ("se_reduce_weight", "se_reduce_bias", "se_expand_weight"),
                                   ("se_expand_bias",)], ids=["one", "three", "bias_only"])
def test_mbconv_se_all_or_none(given):
    names = ("se_reduce_weight", "se_reduce_bias", "se_expand_weight", "se_expand_bias")
    missing = [n for n in names if n not in given]
    msg = assert_op_error("mbconv", _call_args("mbconv", **{n: None for n in missing}), ValueError, "the squeeze")
    assert msg.endswith(f"got None for {', '.join(missing)}"), msg


# ------------------------------------------------------------------------- hyper-parameters near the int limits
#
# Stride, padding and dilation are capped at 2**31 - 1 (the CUDA and Triton kernels hold them in 32 bits): a ValueError
# above, exact results at the cap (the cases, AT_WINDOW_MAX, live in support/valid_args.py: the CUDA and Triton tests
# run them too). The output size is computed without overflow, also for expanded (stride-0) views with sizes near
# 2**63. Before, padding or dilation near 2**63 overflowed int64 in the C++ checks (undefined behaviour; in practice a
# wrong output shape, e.g. padding [2**63 - 1, 1] gave a 1x5 output, dilation [2**63 - 1, 1] a 7x3 one) and stride
# 2**63 - 1 overflowed in the CPU kernels' index arithmetic. The UBSan build (tests/run_sanitized.sh) runs these tests
# and reports any such overflow.

OVER_WINDOW_MAX = (2 ** 31, 2 ** 32 + 1, 2 ** 62, 2 ** 63 - 1)


def _meta_strided(args):
    """args on the meta device with their strides kept (.to("meta") would materialize an expanded view)."""
    return tuple(torch.empty_strided(a.shape, a.stride(), dtype=a.dtype, device="meta")
                 if isinstance(a, torch.Tensor) else a for a in args)


@pytest.mark.bad_input
@pytest.mark.parametrize("value", OVER_WINDOW_MAX)
@pytest.mark.parametrize("arg", ["stride", "padding", "dilation"])
@pytest.mark.parametrize("op_name", ["conv2d_act", "dwsep_conv2d"])
def test_window_param_over_int32(op_name, arg, value):
    msg = assert_op_error(op_name, _call_args(op_name, **{arg: [1, value]}), ValueError, arg)
    assert f"{arg} must be at most {WINDOW_MAX}, got [1, {value}]" in msg, msg


@pytest.mark.bad_input
@pytest.mark.parametrize("value", OVER_WINDOW_MAX)
def test_inverted_residual_stride_over_int32(value):
    args = _call_args("inverted_residual", stride=value, residual=False,
                      dw_weight=torch.randn(12, 1, 5, 5))  # 5x5: the kernel specialised for it
    msg = assert_op_error("inverted_residual", args, ValueError, "stride")
    assert f"stride must be at most {WINDOW_MAX}, got {value}" in msg, msg


@pytest.mark.bad_input
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("op_name,overrides", [pytest.param(o, ov, id=f"{o}-{i}")
                                               for i, (o, ov) in enumerate(AT_WINDOW_MAX)])
def test_window_param_at_int32_max(op_name, overrides, dtype):
    args = tuple(a.to(dtype) if isinstance(a, torch.Tensor) else a for a in _call_args(op_name, **overrides))
    check_case(op_name, args, dtype)


@pytest.mark.bad_input
def test_conv_output_size_beyond_int64():
    # H = 2**63 - 1 (an expanded view) plus padding: an output 2**63 + 1 rows high.
    x = torch.randn(1, 1, 1, 1).expand(1, 1, 2 ** 63 - 1, 1)
    args = _call_args("conv2d_act", input=x, weight=torch.randn(1, 1, 1, 1), bias=None, residual=None, padding=[1, 0])
    msg = assert_op_error("conv2d_act", args, ValueError, "input", compare_meta=False)
    assert f"gives an output size ({2 ** 63 + 1}x1) beyond int64" in msg, msg
    with pytest.raises(ValueError) as meta:
        op("conv2d_act")(*_meta_strided(args))
    assert str(meta.value) == msg


@pytest.mark.bad_input
@pytest.mark.parametrize("dilation", [4, 8, WINDOW_MAX])
def test_dilated_kernel_beyond_int64(dilation):
    # A 2**62-tap kernel (an expanded view) dilated: its extent dilation * (2**62 - 1) + 1 exceeds int64 (dilation 4:
    # exceeds it but still fits in 64 unsigned bits).
    w = torch.randn(1, 1, 1, 1).expand(1, 1, 2 ** 62, 1)
    args = _call_args("conv2d_act", input=torch.randn(1, 1, 5, 5), weight=w, bias=None, residual=None,
                      dilation=[dilation, 1])
    msg = assert_op_error("conv2d_act", args, ValueError, "input", compare_meta=False)
    assert "is smaller than the dilated kernel" in msg, msg
    with pytest.raises(ValueError) as meta:
        op("conv2d_act")(*_meta_strided(args))
    assert str(meta.value) == msg


# ------------------------------------------------------------------------------------------------ NaN and Inf

@pytest.mark.correctness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64],
                         ids=["fp32", "fp16", "bf16", "fp64"])
@pytest.mark.parametrize("op_name", generic_ops("nan", OPS))
def test_nan_inf_propagate(op_name, dtype):
    # NaN and Inf in the input end up where the reference puts them (relu(-inf) = 0, relu6(inf) = 6, nan stays nan;
    # max pooling propagates nan), for every sample of the op.
    for label, args in sample_inputs(op_name, dtype):
        n = args[0].numel()
        args = with_specials(args, [0, n // 3, n // 2, n - 1, 7 * n // 11])
        expected = reference(op_name)(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
        assert expected.isnan().any() or expected.isinf().any(), label  # the test really has specials to check
        check_case(op_name, args, dtype)


@pytest.mark.correctness
def test_add_relu_specials_exact():
    x = torch.tensor([math.nan, math.inf, -math.inf, 1.0, math.inf, -0.0, 3.0, -2.0, math.nan])
    r = torch.tensor([0.0, 0.0, 0.0, -math.inf, -math.inf, 0.0, math.nan, 1.0, math.inf])
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for n in (9, 9 * 37):  # scalar tail only, and full SIMD vectors
            xx, rr = x.repeat(n // 9).to(dtype), r.repeat(n // 9).to(dtype)
            out = op("add_relu")(xx, rr)
            torch.testing.assert_close(out, torch.relu(xx + rr), equal_nan=True, atol=0, rtol=0)


# ----------------------------------------------------------------------------------- more than 2**31 elements
#
# 64-bit indexing: inputs or outputs with more than 2**31 elements, filled with patterns that differ between the two
# sides of every 2**31 boundary (a 32-bit index would read or write the wrong half, or fault) and exactly checked.
# They need up to ~9 GiB and a minute or so, so they run only when asked for: `pytest -m slow` or
# CNNKERNELS_TEST_BIG=1 (and are skipped when the machine lacks the memory).

BIG_ENV = "CNNKERNELS_TEST_BIG"
GIB = 2 ** 30


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.fixture
def big(request):
    """Skips unless big tests were asked for; returns a function asserting `gib` GiB of free memory (+2 GiB)."""
    asked = "slow" in (request.config.getoption("-m") or "") or os.environ.get(BIG_ENV, "0") not in ("", "0")
    if not asked:
        pytest.skip(f"needs up to 9 GiB: runs with `pytest -m slow` or {BIG_ENV}=1")

    def need(gib: float):
        if _mem_available() < (gib + 2) * GIB:
            pytest.skip(f"needs {gib:.1f} GiB free memory (+2 GiB margin), {_mem_available() / GIB:.1f} GiB available")
    return need


PERIOD = 4093  # prime: no power of two is a multiple of it


def _periodic(n: int) -> torch.Tensor:
    """fp16 values f(i mod PERIOD), i < n: multiples of 1/256 in [-8, 8], exact in fp16 (also when doubled)."""
    i = torch.arange(n, dtype=torch.int32)
    return ((i * 1237) % PERIOD - PERIOD // 2).to(torch.float16) / 256


@pytest.mark.slow
def test_add_relu_over_2_31_elements(big):
    n = 2 ** 31 + 2 ** 20 + 13  # past the boundary by more than a parallel chunk, with a SIMD tail
    big(2 * n * 2 / GIB)
    chunk = 2 ** 24
    pat = _periodic(chunk + PERIOD)
    want_pat = torch.relu(2 * pat)  # exact in fp16

    def offset(k):  # chunk k holds f(i + offset(k)); chunks 2**31 elements apart hold different data
        return (k * 7) % PERIOD

    x = torch.empty(n, dtype=torch.float16)
    for k, s in enumerate(range(0, n, chunk)):
        e = min(n, s + chunk)
        x[s:e] = pat[offset(k):offset(k) + e - s]
    out = op("add_relu")(x, x)  # residual = input: 8 GiB in all instead of 12
    assert out.shape == (n,) and out.dtype == torch.float16
    for k, s in enumerate(range(0, n, chunk)):
        e = min(n, s + chunk)
        assert torch.equal(out[s:e], want_pat[offset(k):offset(k) + e - s]), f"wrong data in [{s}, {e})"


def _nhwc_ints(rows: int, W: int, C: int, lo: int = -4, hi: int = 4) -> torch.Tensor:
    """[rows, W, C] fp16 small integers in [lo, hi] (exact in fp16, and in fp32 sums of a few thousand products)."""
    i = torch.arange(rows * W * C, dtype=torch.int32)
    return ((i * 7) % (hi - lo + 1) + lo).to(torch.float16).view(rows, W, C)


def _fill_rows(xh: torch.Tensor, rows: int) -> None:
    """Fills the [H, W, C] view xh block by block (rows at a time) with small integers that also vary between blocks,
    so that the data 2**31 elements apart differs."""
    block = _nhwc_ints(rows, xh.shape[1], xh.shape[2])
    for k, h0 in enumerate(range(0, xh.shape[0], rows)):
        torch.add(block, k % 3 - 1, out=xh[h0:h0 + rows])


@pytest.mark.slow
def test_conv2d_act_output_over_2_31_elements(big):
    # 1x1 conv from 2 to 520 channels with bias and relu on a 2048x2048 channels_last map: 520 * 2**22 > 2**31 output
    # elements (4.3 GiB of fp16). Small integers everywhere: exact, so the check is equality.
    H = W = 2048
    cout, rows = 520, 64
    big(cout * H * W * 2 / GIB + 0.5)
    x = torch.empty((1, 2, H, W), dtype=torch.float16, memory_format=torch.channels_last)
    xh = x.permute(0, 2, 3, 1)[0]  # [H, W, C] view of the same memory
    _fill_rows(xh, rows)
    g = torch.Generator().manual_seed(0)
    w = torch.randint(-3, 4, (cout, 2, 1, 1), generator=g).to(torch.float16)
    b = torch.randint(-8, 9, (cout,), generator=g).to(torch.float16)
    y = op("conv2d_act")(x, w, b, None, [1, 1], [0, 0], [1, 1], 1, "relu")
    assert y.shape == (1, cout, H, W) and y.numel() > 2 ** 31 and y.is_contiguous(memory_format=torch.channels_last)
    # Every output pixel is one of 11 x 11 rows of 520 values (one per input pair in [-5, 5]^2): a table lookup.
    vals = torch.arange(-5, 6, dtype=torch.float32)
    pairs = torch.cartesian_prod(vals, vals)  # [121, 2]
    table = torch.relu(pairs @ w[:, :, 0, 0].float().t() + b.float()).half()  # [121, 520]
    yh = y.permute(0, 2, 3, 1)[0]  # [H, W, Cout], contiguous
    for h0 in range(0, H, rows):  # row blocks: one pass over the output
        xb = xh[h0:h0 + rows].long() + 5
        assert torch.equal(yh[h0:h0 + rows], table[xb[..., 0] * 11 + xb[..., 1]]), \
            f"wrong data in output rows [{h0}, {h0 + rows})"


@pytest.mark.slow
def test_conv2d_act_input_over_2_31_elements(big):
    # The transpose: a 520-channel 2048x2048 channels_last input (4.3 GiB of fp16, > 2**31 elements) reduced by a
    # strided 1x1 conv to one channel; the last rows lie beyond 2**31 elements from the start.
    H = W = 2048
    cin, rows = 520, 64
    big(cin * H * W * 2 / GIB + 1.0)
    x = torch.empty((1, cin, H, W), dtype=torch.float16, memory_format=torch.channels_last)
    xh = x.permute(0, 2, 3, 1)[0]
    _fill_rows(xh, rows)
    w = _nhwc_ints(1, 1, cin, lo=-1, hi=1).view(1, cin, 1, 1)
    y = op("conv2d_act")(x, w, None, None, [4, 4], [0, 0], [1, 1], 1, "none")
    assert y.shape == (1, 1, H // 4, W // 4)
    # sums of 520 products of small integers: exact in fp32, then one rounding to fp16 on both sides
    want = (xh[::4, ::4].float() @ w.view(cin, 1).float()).half()
    torch.testing.assert_close(y[0, 0], want[:, :, 0], atol=0, rtol=0)
