"""Input validation mirrored from csrc/common/checks.cpp.

The fake (meta) kernels and the pure-PyTorch fallback run these, so a bad argument raises the same exception type
with the same wording whether the compiled kernel, the fallback or torch.compile tracing sees it. ValueError for bad
shapes and values, TypeError for dtypes; messages name the op, the argument and what was expected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import torch
from torch._prims_common import suggest_memory_format

from cnnkernels.ops._act import ACTIVATIONS, GATES

# Upper bound of stride, padding and dilation (csrc/common/checks.h kMaxWindowParam): the CUDA and Triton kernels hold
# them in 32 bits, and with them bounded no index computation in any kernel can overflow.
MAX_WINDOW_PARAM = 2 ** 31 - 1
INT64_MAX = 2 ** 63 - 1
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


# c10::ScalarType names, which is how the C++ checks print a dtype (`<< scalar_type()`): Float, not torch.float32.
_SCALAR_TYPE_NAMES = {
    torch.float32: "Float", torch.float64: "Double", torch.float16: "Half", torch.bfloat16: "BFloat16",
    torch.uint8: "Byte", torch.int8: "Char", torch.int16: "Short", torch.int32: "Int", torch.int64: "Long",
    torch.bool: "Bool", torch.complex32: "ComplexHalf", torch.complex64: "ComplexFloat",
    torch.complex128: "ComplexDouble",
}


def _dtype(dt: torch.dtype) -> str:
    return _SCALAR_TYPE_NAMES.get(dt, str(dt))


def _listing(values) -> str:
    return ", ".join(f"'{v}'" for v in values)


def parse_activation(op: str, arg: str, value: str) -> str:
    if value not in ACTIVATIONS:
        raise ValueError(f"cnnkernels.{op}: {arg} must be one of {_listing(ACTIVATIONS)}, got '{value}'")
    return value


def _check_tensor(op: str, t, arg: str) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"cnnkernels.{op}: {arg} must be a tensor, got None")


def check_input(op: str, input: torch.Tensor, arg: str = "input") -> None:
    _check_tensor(op, input, arg)
    if input.dim() != 4:
        raise ValueError(f"cnnkernels.{op}: {arg} must be a 4-D tensor [N, C, H, W], got {input.dim()}-D shape "
                         f"{_shape(input)}")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"cnnkernels.{op}: {arg} must be float32, float16, bfloat16 or float64, got "
                        f"{_dtype(input.dtype)}")
    if input.shape[1] == 0:
        raise ValueError(f"cnnkernels.{op}: {arg} must have at least one channel, got shape {_shape(input)}")
    if input.shape[2] == 0 or input.shape[3] == 0:
        raise ValueError(f"cnnkernels.{op}: {arg} spatial size must be non-zero, got {input.shape[2]}x{input.shape[3]}")


def check_like(op: str, ref: torch.Tensor, t: torch.Tensor, arg: str) -> None:
    _check_tensor(op, t, arg)
    if t.dtype != ref.dtype:
        raise TypeError(f"cnnkernels.{op}: {arg} must have the input's dtype {_dtype(ref.dtype)}, got "
                        f"{_dtype(t.dtype)}")
    if t.device != ref.device:
        raise ValueError(f"cnnkernels.{op}: {arg} must be on the input's device {ref.device}, got {t.device}")


def check_bias(op: str, ref: torch.Tensor, bias: Optional[torch.Tensor], n: int, arg: str,
               required: bool = False) -> None:
    """`required`: a Tensor (not Tensor?) argument of the schema, for which None is an error as in the C++ checks."""
    if bias is None:
        if required:
            _check_tensor(op, bias, arg)
        return
    check_like(op, ref, bias, arg)
    if bias.dim() != 1 or bias.shape[0] != n:
        raise ValueError(f"cnnkernels.{op}: {arg} must have shape [{n}], got {_shape(bias)}")


def check_shape(op: str, ref: torch.Tensor, t: torch.Tensor, arg: str, shape: Sequence[int]) -> None:
    check_like(op, ref, t, arg)
    if tuple(t.shape) != tuple(shape):
        raise ValueError(f"cnnkernels.{op}: {arg} must have shape [{', '.join(str(s) for s in shape)}], "
                         f"got {_shape(t)}")


def check_window_param(op: str, arg: str, values) -> None:
    if any(v > MAX_WINDOW_PARAM for v in values):
        raise ValueError(f"cnnkernels.{op}: {arg} must be at most {MAX_WINDOW_PARAM}, got {values}")


@dataclass(frozen=True)
class ConvGeom:
    N: int
    C: int
    H: int
    W: int
    Cout: int
    kH: int
    kW: int
    Ho: int
    Wo: int


def check_conv(op: str, input: torch.Tensor, weight: torch.Tensor, warg: str, stride: Sequence[int],
               padding: Sequence[int], dilation: Sequence[int], groups: int) -> ConvGeom:
    check_input(op, input)
    check_like(op, input, weight, warg)
    if weight.dim() != 4:
        raise ValueError(f"cnnkernels.{op}: {warg} must be a 4-D tensor [C_out, C_in/groups, kH, kW], got shape "
                         f"{_shape(weight)}")
    if len(stride) != 2 or len(padding) != 2 or len(dilation) != 2:
        raise ValueError(f"cnnkernels.{op}: stride, padding and dilation must have 2 elements each")
    stride, padding, dilation = list(stride), list(padding), list(dilation)
    if stride[0] <= 0 or stride[1] <= 0:
        raise ValueError(f"cnnkernels.{op}: stride must be positive, got {stride}")
    if padding[0] < 0 or padding[1] < 0:
        raise ValueError(f"cnnkernels.{op}: padding must be non-negative, got {padding}")
    if dilation[0] <= 0 or dilation[1] <= 0:
        raise ValueError(f"cnnkernels.{op}: dilation must be positive, got {dilation}")
    if groups <= 0:
        raise ValueError(f"cnnkernels.{op}: groups must be positive, got {groups}")
    for arg, values in (("stride", stride), ("padding", padding), ("dilation", dilation)):
        check_window_param(op, arg, values)
    N, C, H, W = input.shape
    Cout, cin_g, kH, kW = weight.shape
    if C % groups != 0 or Cout % groups != 0:
        raise ValueError(f"cnnkernels.{op}: groups={groups} must divide the input channels ({C}) and "
                         f"{warg}.size(0) ({Cout})")
    if cin_g != C // groups:
        raise ValueError(f"cnnkernels.{op}: {warg} must have C_in/groups = {C // groups} in dim 1 for input with {C} "
                         f"channels and groups={groups}, got shape {_shape(weight)}")
    if Cout <= 0 or kH <= 0 or kW <= 0:
        raise ValueError(f"cnnkernels.{op}: {warg} must have non-zero C_out and kernel size, got shape "
                         f"{_shape(weight)}")
    nh = H + 2 * padding[0] - dilation[0] * (kH - 1) - 1
    nw = W + 2 * padding[1] - dilation[1] * (kW - 1) - 1
    if nh < 0 or nw < 0:
        raise ValueError(f"cnnkernels.{op}: input spatial size ({H}x{W}) with padding {padding} is smaller than the "
                         f"dilated kernel ({kH}x{kW}, dilation {dilation})")
    Ho, Wo = nh // stride[0] + 1, nw // stride[1] + 1
    if Ho > INT64_MAX or Wo > INT64_MAX:  # an expanded input with H or W near 2**63
        raise ValueError(f"cnnkernels.{op}: input spatial size ({H}x{W}) with padding {padding} and stride {stride} "
                         f"gives an output size ({Ho}x{Wo}) beyond int64")
    return ConvGeom(N, C, H, W, Cout, kH, kW, Ho, Wo)


def check_pointwise(op: str, ref: torch.Tensor, weight: torch.Tensor, arg: str, cin: int) -> int:
    """A 1x1 conv weight [C_out, cin, 1, 1]; returns C_out."""
    check_like(op, ref, weight, arg)
    if weight.dim() != 4 or weight.shape[1] != cin or weight.shape[2] != 1 or weight.shape[3] != 1 \
            or weight.shape[0] <= 0:
        raise ValueError(f"cnnkernels.{op}: {arg} must be a 1x1 convolution weight [C_out, {cin}, 1, 1], got shape "
                         f"{_shape(weight)}")
    return weight.shape[0]


def check_add_relu(input: torch.Tensor, residual: torch.Tensor) -> None:
    _check_tensor("add_relu", input, "input")
    if input.dtype not in FLOAT_DTYPES:
        raise TypeError(f"cnnkernels.add_relu: input must be float32, float16, bfloat16 or float64, got "
                        f"{_dtype(input.dtype)}")
    check_like("add_relu", input, residual, "residual")
    if input.shape != residual.shape:
        raise ValueError(f"cnnkernels.add_relu: residual must have the input's shape {_shape(input)}, got "
                         f"{_shape(residual)}")


def output_memory_format(input: torch.Tensor) -> torch.memory_format:
    """The layout every kernel writes its output in (same rule as at::Tensor::suggest_memory_format)."""
    return suggest_memory_format(input)


def empty_output(input: torch.Tensor, shape) -> torch.Tensor:
    """The op's output as the compiled kernels allocate it, at::empty(shape, memory_format=output_memory_format(input)):
    strides canonical for that format even where the shape makes it ambiguous (one channel, 1x1 maps), which
    `new_empty(shape).contiguous(memory_format=...)` would leave in the contiguous layout."""
    return torch.empty(shape, dtype=input.dtype, device=input.device, memory_format=output_memory_format(input))


def as_output(input: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """`y` (a reference result) with exactly empty_output's strides; copies only when the layout really differs."""
    fmt = output_memory_format(input)
    strides = torch.empty(y.shape, device="meta", memory_format=fmt).stride()
    if y.stride() == strides:
        return y
    if y.is_contiguous(memory_format=fmt):  # differs in the strides of size-1 dims only
        return y.as_strided(y.shape, strides)
    return torch.empty_strided(y.shape, strides, dtype=y.dtype, device=y.device).copy_(y)


def pair(v) -> Tuple[int, ...]:
    """An int or a sequence of ints as a tuple, an int repeated for both spatial dims (validated by the op itself)."""
    return (v, v) if isinstance(v, int) else tuple(v)


def same_padding(weight: torch.Tensor):
    """The padding that keeps the spatial size at stride 1 for an odd kernel: [kH // 2, kW // 2]."""
    return [weight.shape[2] // 2, weight.shape[3] // 2]


# ---- per-op validation, as csrc/common/op_checks.cpp: run by the fake kernels, the fallbacks and the Triton ops -----


def check_conv2d_act(input, weight, bias, residual, stride, padding, dilation, groups, activation) -> ConvGeom:
    op = "conv2d_act"
    g = check_conv(op, input, weight, "weight", stride, padding, dilation, groups)
    check_bias(op, input, bias, g.Cout, "bias")
    if residual is not None:
        check_shape(op, input, residual, "residual", (g.N, g.Cout, g.Ho, g.Wo))
    parse_activation(op, "activation", activation)
    return g


def check_dwsep_conv2d(input, dw_weight, dw_bias, pw_weight, pw_bias, stride, padding, dilation, dw_activation,
                       pw_activation):
    """The output shape (N, C_out, H_out, W_out)."""
    op = "dwsep_conv2d"
    check_input(op, input)
    C = input.shape[1]
    g = check_conv(op, input, dw_weight, "dw_weight", stride, padding, dilation, C)
    if dw_weight.shape[0] != C:
        raise ValueError(f"cnnkernels.{op}: dw_weight must have shape [C, 1, kH, kW] with C = {C} (one filter per "
                         f"input channel), got shape {_shape(dw_weight)}")
    check_bias(op, input, dw_bias, C, "dw_bias")
    Cout = check_pointwise(op, input, pw_weight, "pw_weight", C)
    check_bias(op, input, pw_bias, Cout, "pw_bias")
    parse_activation(op, "dw_activation", dw_activation)
    parse_activation(op, "pw_activation", pw_activation)
    return g.N, Cout, g.Ho, g.Wo


def check_expansion(op: str, input: torch.Tensor, expand_weight, expand_bias) -> int:
    """A block's optional 1x1 expansion (weight and bias, or neither); returns the hidden width (C without one)."""
    if expand_weight is None:
        if expand_bias is not None:
            raise ValueError(f"cnnkernels.{op}: expand_bias must be None when expand_weight is None")
        return input.shape[1]
    hidden = check_pointwise(op, input, expand_weight, "expand_weight", input.shape[1])
    check_bias(op, input, expand_bias, hidden, "expand_bias")
    return hidden


def check_inverted_residual(input, expand_weight, expand_bias, dw_weight, dw_bias, project_weight, project_bias,
                            stride, residual, activation):
    """The output shape (N, C_out, H_out, W_out)."""
    op = "inverted_residual"
    check_input(op, input)
    N, C, H, W = input.shape
    hidden = check_expansion(op, input, expand_weight, expand_bias)
    if stride <= 0:
        raise ValueError(f"cnnkernels.{op}: stride must be positive, got {stride}")
    if stride > MAX_WINDOW_PARAM:
        raise ValueError(f"cnnkernels.{op}: stride must be at most {MAX_WINDOW_PARAM}, got {stride}")
    check_like(op, input, dw_weight, "dw_weight")
    if dw_weight.dim() != 4 or dw_weight.shape[0] != hidden or dw_weight.shape[1] != 1 \
            or dw_weight.shape[2] % 2 != 1 or dw_weight.shape[3] % 2 != 1:
        raise ValueError(f"cnnkernels.{op}: dw_weight must have shape [{hidden}, 1, kH, kW] with odd kH and kW, got "
                         f"shape {_shape(dw_weight)}")
    check_bias(op, input, dw_bias, hidden, "dw_bias", required=True)
    Cout = check_pointwise(op, input, project_weight, "project_weight", hidden)
    check_bias(op, input, project_bias, Cout, "project_bias", required=True)
    if residual and (stride != 1 or Cout != C):
        raise ValueError(f"cnnkernels.{op}: residual=True needs stride 1 and as many output as input channels, got "
                         f"stride {stride}, {C} -> {Cout} channels")
    parse_activation(op, "activation", activation)
    return N, Cout, (H - 1) // stride + 1, (W - 1) // stride + 1


def _check_odd_spatial(op, input, weight, arg, cin):
    check_like(op, input, weight, arg)
    if weight.dim() != 4 or weight.shape[0] <= 0 or weight.shape[1] != cin or weight.shape[2] % 2 != 1 \
            or weight.shape[3] % 2 != 1:
        raise ValueError(f"cnnkernels.{op}: {arg} must have shape [C_out, {cin}, kH, kW] with odd kH and kW, got "
                         f"shape {_shape(weight)}")
    return weight.shape[0]


def check_inception_block(input, w1, b1, w2_reduce, b2_reduce, w2, b2, w3_reduce, b3_reduce, w3, b3, w4, b4):
    """The output shape (N, C_out, H, W)."""
    op = "inception_block"
    check_input(op, input)
    N, C, H, W = input.shape
    c1 = check_pointwise(op, input, w1, "w1", C)
    check_bias(op, input, b1, c1, "b1", required=True)
    c2r = check_pointwise(op, input, w2_reduce, "w2_reduce", C)
    check_bias(op, input, b2_reduce, c2r, "b2_reduce", required=True)
    c2 = _check_odd_spatial(op, input, w2, "w2", c2r)
    check_bias(op, input, b2, c2, "b2", required=True)
    c3r = check_pointwise(op, input, w3_reduce, "w3_reduce", C)
    check_bias(op, input, b3_reduce, c3r, "b3_reduce", required=True)
    c3 = _check_odd_spatial(op, input, w3, "w3", c3r)
    check_bias(op, input, b3, c3, "b3", required=True)
    c4 = check_pointwise(op, input, w4, "w4", C)
    check_bias(op, input, b4, c4, "b4", required=True)
    return N, c1 + c2 + c3 + c4, H, W


def check_mbconv(input, expand_weight, expand_bias, dw_weight, dw_bias, se_reduce_weight, se_reduce_bias,
                 se_expand_weight, se_expand_bias, project_weight, project_bias, stride, residual, activation,
                 se_activation, se_gate):
    """The output shape (N, C_out, H_out, W_out)."""
    op = "mbconv"
    check_input(op, input)
    N, C, H, W = input.shape
    hidden = check_expansion(op, input, expand_weight, expand_bias)
    if stride not in (1, 2):
        raise ValueError(f"cnnkernels.{op}: stride must be 1 or 2, got {stride}")
    check_like(op, input, dw_weight, "dw_weight")
    if dw_weight.dim() != 4 or dw_weight.shape[0] != hidden or dw_weight.shape[1] != 1 \
            or dw_weight.shape[2] != dw_weight.shape[3] or dw_weight.shape[2] not in (3, 5):
        raise ValueError(f"cnnkernels.{op}: dw_weight must have shape [{hidden}, 1, k, k] with k 3 or 5, got shape "
                         f"{_shape(dw_weight)}")
    check_bias(op, input, dw_bias, hidden, "dw_bias", required=True)
    se = (se_reduce_weight, se_reduce_bias, se_expand_weight, se_expand_bias)
    if any(t is not None for t in se):
        names = ("se_reduce_weight", "se_reduce_bias", "se_expand_weight", "se_expand_bias")
        missing = [n for n, t in zip(names, se) if t is None]
        if missing:
            raise ValueError(f"cnnkernels.{op}: the squeeze-and-excitation tensors come all four or none, got None "
                             f"for {', '.join(missing)}")
        squeeze = check_pointwise(op, input, se_reduce_weight, "se_reduce_weight", hidden)
        check_bias(op, input, se_reduce_bias, squeeze, "se_reduce_bias")
        check_shape(op, input, se_expand_weight, "se_expand_weight", (hidden, squeeze, 1, 1))
        check_bias(op, input, se_expand_bias, hidden, "se_expand_bias")
    Cout = check_pointwise(op, input, project_weight, "project_weight", hidden)
    check_bias(op, input, project_bias, Cout, "project_bias", required=True)
    if residual and (stride != 1 or Cout != C):
        raise ValueError(f"cnnkernels.{op}: residual=True needs stride 1 and as many output as input channels, got "
                         f"stride {stride}, {C} -> {Cout} channels")
    parse_activation(op, "activation", activation)
    parse_activation(op, "se_activation", se_activation)
    if se_gate not in GATES:
        raise ValueError(f"cnnkernels.{op}: se_gate must be one of {_listing(GATES)}, got '{se_gate}'")
    return N, Cout, (H - 1) // stride + 1, (W - 1) // stride + 1


# ---- detection ops (boxes.py, yolo_postprocess.py), as csrc/common/op_checks.cpp -------------------------------------

INDEX_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
_FLOAT_NAMES = "float32, float16, bfloat16 or float64"


def check_boxes(op: str, boxes, arg: str) -> None:
    """An [N, 4] floating tensor of (x1, y1, x2, y2) boxes."""
    _check_tensor(op, boxes, arg)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"cnnkernels.{op}: {arg} must be a 2-D tensor [N, 4] of (x1, y1, x2, y2) boxes, got shape "
                         f"{_shape(boxes)}")
    if boxes.dtype not in FLOAT_DTYPES:
        raise TypeError(f"cnnkernels.{op}: {arg} must be {_FLOAT_NAMES}, got {_dtype(boxes.dtype)}")


def _check_same_place(op: str, ref: torch.Tensor, ref_arg: str, t: torch.Tensor, arg: str, dtype: bool = True) -> None:
    if dtype and t.dtype != ref.dtype:
        raise TypeError(f"cnnkernels.{op}: {arg} must have {ref_arg}'s dtype {_dtype(ref.dtype)}, got "
                        f"{_dtype(t.dtype)}")
    if t.device != ref.device:
        raise ValueError(f"cnnkernels.{op}: {arg} must be on {ref_arg}'s device {ref.device}, got {t.device}")


def _check_per_box(op: str, boxes: torch.Tensor, t, arg: str) -> None:
    """A 1-D tensor with one entry per box (scores, idxs)."""
    _check_tensor(op, t, arg)
    if t.dim() != 1 or t.shape[0] != boxes.shape[0]:
        raise ValueError(f"cnnkernels.{op}: {arg} must be a 1-D tensor [{boxes.shape[0]}] (one per box), got shape "
                         f"{_shape(t)}")


def check_threshold(op: str, arg: str, value: float) -> None:
    # NaN compares false with everything, so a NaN threshold would silently keep every box (or drop every candidate).
    if math.isnan(value):
        raise ValueError(f"cnnkernels.{op}: {arg} must be a number, got nan")


def check_box_iou(boxes1, boxes2) -> None:
    op = "box_iou"
    check_boxes(op, boxes1, "boxes1")
    check_boxes(op, boxes2, "boxes2")
    _check_same_place(op, boxes1, "boxes1", boxes2, "boxes2")


def check_nms(boxes, scores, iou_threshold: float) -> None:
    op = "nms"
    check_boxes(op, boxes, "boxes")
    _check_per_box(op, boxes, scores, "scores")
    _check_same_place(op, boxes, "boxes", scores, "scores")
    check_threshold(op, "iou_threshold", iou_threshold)


def check_batched_nms(boxes, scores, idxs, iou_threshold: float) -> None:
    op = "batched_nms"
    check_boxes(op, boxes, "boxes")
    _check_per_box(op, boxes, scores, "scores")
    _check_same_place(op, boxes, "boxes", scores, "scores")
    _check_per_box(op, boxes, idxs, "idxs")
    if idxs.dtype not in INDEX_DTYPES:
        raise TypeError(f"cnnkernels.{op}: idxs must be an integer tensor (int64, int32, int16, int8 or uint8), got "
                        f"{_dtype(idxs.dtype)}")
    _check_same_place(op, boxes, "boxes", idxs, "idxs", dtype=False)
    check_threshold(op, "iou_threshold", iou_threshold)


@dataclass(frozen=True)
class YoloGeom:
    N: int
    A: int   # anchors
    C: int   # classes
    Sh: int
    Sw: int


def check_yolo_head(op: str, head, anchors, image_size) -> YoloGeom:
    """head [N, A*(5+C), S_h, S_w] (float32/float64), anchors [A, 2] of its dtype, image_size (H_img, W_img) > 0."""
    _check_tensor(op, head, "head")
    if head.dim() != 4:
        raise ValueError(f"cnnkernels.{op}: head must be a 4-D tensor [N, A*(5+C), S_h, S_w], got {head.dim()}-D shape "
                         f"{_shape(head)}")
    if head.dtype not in (torch.float32, torch.float64):
        raise TypeError(f"cnnkernels.{op}: head must be float32 or float64 (convert a float16/bfloat16 head with "
                        f".float()), got {_dtype(head.dtype)}")
    _check_tensor(op, anchors, "anchors")
    if anchors.dim() != 2 or anchors.shape[1] != 2 or anchors.shape[0] == 0:
        raise ValueError(f"cnnkernels.{op}: anchors must be a 2-D tensor [A, 2] of (width, height) with A >= 1, got "
                         f"shape {_shape(anchors)}")
    _check_same_place(op, head, "head", anchors, "anchors")
    N, ch, Sh, Sw = head.shape
    A = anchors.shape[0]
    if ch % A != 0 or ch // A < 6:
        raise ValueError(f"cnnkernels.{op}: head must have A*(5+C) channels with C >= 1 for the {A} anchors, got {ch}")
    if Sh == 0 or Sw == 0:
        raise ValueError(f"cnnkernels.{op}: head spatial size must be non-zero, got {Sh}x{Sw}")
    if len(image_size) != 2 or image_size[0] <= 0 or image_size[1] <= 0:
        raise ValueError(f"cnnkernels.{op}: image_size must be 2 positive integers (H_img, W_img), got "
                         f"{list(image_size)}")
    return YoloGeom(N, A, ch // A - 5, Sh, Sw)


def check_yolo_postprocess(head, anchors, image_size, score_threshold: float, iou_threshold: float,
                           max_detections: int) -> YoloGeom:
    op = "yolo_postprocess"
    g = check_yolo_head(op, head, anchors, image_size)
    check_threshold(op, "score_threshold", score_threshold)
    check_threshold(op, "iou_threshold", iou_threshold)
    if max_detections < 0:
        raise ValueError(f"cnnkernels.{op}: max_detections must be >= 0, got {max_detections}")
    return g


def check_up_concat_conv(input, skip, up_weight, up_bias, weight, bias, activation):
    """The output shape (N, C_out, 2H, 2W)."""
    op = "up_concat_conv"
    check_input(op, input)
    N, C, H, W = input.shape
    if 2 * H > INT64_MAX or 2 * W > INT64_MAX:  # an expanded input with H or W near 2**63
        raise ValueError(f"cnnkernels.{op}: input spatial size ({H}x{W}) gives an upsampled size beyond int64")
    check_like(op, input, up_weight, "up_weight")
    if up_weight.dim() != 4 or up_weight.shape[0] != C or up_weight.shape[1] <= 0 or up_weight.shape[2] != 2 \
            or up_weight.shape[3] != 2:
        raise ValueError(f"cnnkernels.{op}: up_weight must have shape [{C}, C_up, 2, 2] (a 2x2 stride-2 transposed "
                         f"convolution of the input's {C} channels), got shape {_shape(up_weight)}")
    C_up = up_weight.shape[1]
    check_bias(op, input, up_bias, C_up, "up_bias")
    check_like(op, input, skip, "skip")
    if skip.dim() != 4 or skip.shape[0] != N or skip.shape[1] <= 0 or skip.shape[2] != 2 * H \
            or skip.shape[3] != 2 * W:
        raise ValueError(f"cnnkernels.{op}: skip must have shape [{N}, C_skip, {2 * H}, {2 * W}] (twice the input's "
                         f"spatial size), got shape {_shape(skip)}")
    C_cat = skip.shape[1] + C_up
    check_like(op, input, weight, "weight")
    if weight.dim() != 4 or weight.shape[0] <= 0 or weight.shape[1] != C_cat or weight.shape[2] != 3 \
            or weight.shape[3] != 3:
        raise ValueError(f"cnnkernels.{op}: weight must have shape [C_out, {C_cat}, 3, 3] (C_skip + C_up = "
                         f"{skip.shape[1]} + {C_up} input channels), got shape {_shape(weight)}")
    Cout = weight.shape[0]
    check_bias(op, input, bias, Cout, "bias")
    parse_activation(op, "activation", activation)
    return N, Cout, 2 * H, 2 * W
