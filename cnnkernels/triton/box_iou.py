"""cnnkernels::box_iou_triton: pairwise IoU of xyxy boxes, one [BN, BM] tile of the [N, M] result per program.

The arithmetic is torchvision's (cnnkernels/ops/boxes.py): corner differences in the boxes' dtype, areas and the rest
in float32 (float64 for float64 boxes), NaN propagated. The division is IEEE (div_rn) rather than the GPU's fast
approximate division; whether the GPU compiler contracts `area_a + area_b - w * h` into a fused multiply-add is its
choice, so on a GPU results may differ from torchvision's in the last bit (the interpreter matches it exactly).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from cnnkernels.ops._checks import check_box_iou
from cnnkernels.ops._precision import compute_dtype
from cnnkernels.triton._common import INTERPRET, autotune_configs, check_device, register_like_main_op, schema, up

OP = "box_iou"

_CONFIGS = [
    triton.Config({"BN": 32, "BM": 64}, num_warps=4),
    triton.Config({"BN": 64, "BM": 64}, num_warps=4),
]
_NAN = tl.constexpr(tl.PropagateNan.ALL)


@triton.jit
def _area(x1, y1, x2, y2, F64: tl.constexpr):
    return (up(x2, F64) - up(x1, F64)) * (up(y2, F64) - up(y1, F64))


@triton.jit
def _div(a, b, F64: tl.constexpr, EXACT_DIV: tl.constexpr):
    if F64 or not EXACT_DIV:
        return a / b
    else:
        return tl.math.div_rn(a, b)


@triton.autotune(configs=autotune_configs(_CONFIGS), key=["N", "M"])
@triton.jit
def _box_iou_kernel(A, B, Y, N, M, F64: tl.constexpr, EXACT_DIV: tl.constexpr, BN: tl.constexpr,
                    BM: tl.constexpr):
    rn = tl.program_id(0).to(tl.int64) * BN + tl.arange(0, BN)
    rm = tl.program_id(1).to(tl.int64) * BM + tl.arange(0, BM)
    mn, mm = rn < N, rm < M
    ax1 = tl.load(A + rn * 4 + 0, mask=mn, other=0.0)
    ay1 = tl.load(A + rn * 4 + 1, mask=mn, other=0.0)
    ax2 = tl.load(A + rn * 4 + 2, mask=mn, other=0.0)
    ay2 = tl.load(A + rn * 4 + 3, mask=mn, other=0.0)
    bx1 = tl.load(B + rm * 4 + 0, mask=mm, other=0.0)
    by1 = tl.load(B + rm * 4 + 1, mask=mm, other=0.0)
    bx2 = tl.load(B + rm * 4 + 2, mask=mm, other=0.0)
    by2 = tl.load(B + rm * 4 + 3, mask=mm, other=0.0)
    # corner differences in the boxes' dtype (torchvision upcasts after them)
    dx = tl.minimum(ax2[:, None], bx2[None, :], propagate_nan=_NAN) - \
        tl.maximum(ax1[:, None], bx1[None, :], propagate_nan=_NAN)
    dy = tl.minimum(ay2[:, None], by2[None, :], propagate_nan=_NAN) - \
        tl.maximum(ay1[:, None], by1[None, :], propagate_nan=_NAN)
    w = tl.maximum(up(dx, F64), 0.0, propagate_nan=_NAN)
    h = tl.maximum(up(dy, F64), 0.0, propagate_nan=_NAN)
    inter = w * h
    union = _area(ax1, ay1, ax2, ay2, F64)[:, None] + _area(bx1, by1, bx2, by2, F64)[None, :] - inter
    iou = _div(inter, union, F64, EXACT_DIV)
    tl.store(Y + rn[:, None] * M + rm[None, :], iou, mask=mn[:, None] & mm[None, :])


@triton_op("cnnkernels::box_iou_triton", mutates_args=(), schema=schema(OP))
def box_iou_triton(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    check_box_iou(boxes1, boxes2)
    check_device(OP, boxes1)
    a, b = boxes1.contiguous(), boxes2.contiguous()
    N, M = a.shape[0], b.shape[0]
    out = torch.empty((N, M), dtype=compute_dtype(a.dtype), device=a.device)
    if N == 0 or M == 0:
        return out

    def grid(meta):
        return (triton.cdiv(N, meta["BN"]), triton.cdiv(M, meta["BM"]))

    # The interpreter divides exactly already (numpy) and has no libdevice.
    wrap_triton(_box_iou_kernel)[grid](a, b, out, N, M, F64=a.dtype == torch.float64, EXACT_DIV=not INTERPRET)
    return out


register_like_main_op(OP)
