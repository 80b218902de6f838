"""Box ops on (x1, y1, x2, y2) boxes: box_iou, nms and batched_nms, with torchvision.ops' exact results.

Exact means the same kept indices in the same order, ties included, as torchvision 0.29's CPU kernels. That follows
from doing what they do, step for step:

- IoU arithmetic: area = (x2 - x1) * (y2 - y1); inter = w * h with w = max(0, min(x2_a, x2_b) - max(x1_a, x1_b))
  and h likewise; iou = inter / (area_a + area_b - inter), with a the box that ranks higher in nms;
- nms ranks boxes by a stable descending sort of `scores` (equal scores by ascending index, as torchvision's nms
  kernel sorts them; a NaN score ranks first) and box j is suppressed by a kept box when iou > iou_threshold,
  compared in float64 (torchvision compares the box dtype's IoU with the threshold as a double);
- batched_nms switches strategy where torchvision.ops.batched_nms does (more than 4000 box coordinates on the CPU,
  100,000 on CUDA): below, nms of the boxes shifted by idx * (max coordinate + 1) (the "coordinate trick", whose shift
  rounds the coordinates and lets classes overlap when coordinates are negative); above, nms per class, then the kept
  indices in ascending order sorted by score with torch's default (unstable) sort -- the same call, so equal scores of
  different classes come out in torchvision's order. Both are reproduced because each gives results the other does not.

dtypes: float32 and float64 as torchvision; float16/bfloat16 boxes give a float32 box_iou (torchvision's: the
corner differences are taken in the input dtype, areas and the rest in float32) and run nms in float32 (exact
conversions), where torchvision's CPU nms refuses them.

NaN: box_iou propagates it; in nms a NaN IoU never suppresses (every comparison with NaN is false), so a box with a
NaN coordinate neither suppresses nor is suppressed, as in torchvision.

Gradients: box_iou is differentiable with respect to both box sets; nms and batched_nms return indices, which are not
(inputs that require grad are accepted).
"""

from __future__ import annotations

import torch

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._checks import check_batched_nms, check_box_iou, check_nms
from cnnkernels.ops._precision import compute_dtype
from cnnkernels.ops._register import register_op_hooks

__all__ = ["PER_CLASS_NUMEL", "batched_nms", "batched_nms_reference", "box_area", "box_iou", "box_iou_reference",
           "nms", "nms_reference"]

# torchvision.ops.batched_nms runs nms per class above this many box coordinates (boxes.numel()), the coordinate
# trick at or below it.
PER_CLASS_NUMEL = {"cpu": 4000, "cuda": 100_000}


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """(x2 - x1) * (y2 - y1) of [N, 4] boxes (negative for inverted boxes, as torchvision's)."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _iou(boxes1, boxes2, area1, area2) -> torch.Tensor:
    """[N, M] IoU from boxes and their areas (in the compute dtype); the one definition of the IoU arithmetic."""
    lt = torch.max(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).to(area1.dtype).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (area1[:, None] + area2[None, :] - inter)


def box_iou_reference(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU [N, M] of [N, 4] and [M, 4] xyxy boxes (float32 for float16/bfloat16 boxes)."""
    dt = compute_dtype(boxes1.dtype)
    return _iou(boxes1, boxes2, box_area(boxes1.to(dt)), box_area(boxes2.to(dt)))


def nms_reference(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices (int64) of the boxes greedy non-maximum suppression keeps, by descending score."""
    dt = compute_dtype(boxes.dtype)
    boxes, scores = boxes.to(dt), scores.to(dt)
    n = boxes.shape[0]
    if n == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    order = torch.sort(scores, stable=True, descending=True)[1]
    b = boxes[order]
    area = box_area(b)
    suppressed = torch.zeros(n, dtype=torch.bool, device=boxes.device)
    keep = []
    for i in range(n):
        if suppressed[i]:
            continue
        keep.append(i)
        iou = _iou(b[i:i + 1], b[i + 1:], area[i:i + 1], area[i + 1:])[0]
        suppressed[i + 1:] |= iou.double() > iou_threshold
    return order[torch.tensor(keep, dtype=torch.int64, device=boxes.device)]


def batched_nms_reference(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                          iou_threshold: float) -> torch.Tensor:
    """nms within each class idxs[i]: boxes of different classes never suppress each other (but see the module
    docstring on the coordinate trick below PER_CLASS_NUMEL)."""
    dt = compute_dtype(boxes.dtype)
    boxes, scores = boxes.to(dt), scores.to(dt)
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    if boxes.numel() <= PER_CLASS_NUMEL.get(boxes.device.type, PER_CLASS_NUMEL["cuda"]):
        offsets = idxs.to(dt) * (boxes.max() + torch.ones((), dtype=dt, device=boxes.device))
        return nms_reference(boxes + offsets[:, None], scores, iou_threshold)
    kept = torch.zeros(boxes.shape[0], dtype=torch.bool, device=boxes.device)
    for c in torch.unique(idxs):
        members = torch.where(idxs == c)[0]
        kept[members[nms_reference(boxes[members], scores[members], iou_threshold)]] = True
    keep = torch.where(kept)[0]
    return keep[scores[keep].sort(descending=True)[1]]


# ---- box_iou: op registration ----------------------------------------------------------------------------------------

def _box_iou_fallback(boxes1, boxes2):
    check_box_iou(boxes1, boxes2)
    return box_iou_reference(boxes1, boxes2)


register_reference_where_missing("box_iou", _box_iou_fallback)


def _box_iou_fake(boxes1, boxes2):
    check_box_iou(boxes1, boxes2)
    return boxes1.new_empty((boxes1.shape[0], boxes2.shape[0]), dtype=compute_dtype(boxes1.dtype))


def _box_iou_setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _min_grad(g, a, b):
    """The share of g = d/d min(a, b) that goes to a (half of it on ties, as torch.minimum's backward)."""
    return torch.where(a == b, g / 2, g).masked_fill(a > b, 0)


def _box_iou_backward(ctx, grad):
    boxes1, boxes2 = ctx.saved_tensors
    dt = compute_dtype(boxes1.dtype)
    b1, b2, g = boxes1.to(dt), boxes2.to(dt), grad.to(dt)
    a1, a2 = box_area(b1), box_area(b2)
    p1, p2 = b1[:, None, :], b2[None, :, :]
    d = torch.min(p1[..., 2:], p2[..., 2:]) - torch.max(p1[..., :2], p2[..., :2])
    wh = d.clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = a1[:, None] + a2[None, :] - inter
    g_inter = g * (union + inter) / (union * union)   # d iou / d inter, with union = a1 + a2 - inter
    g_area = -g * inter / (union * union)             # d iou / d a1 = d iou / d a2
    g_d = torch.stack((g_inter * wh[..., 1], g_inter * wh[..., 0]), -1) * (d >= 0)
    g_rb1, g_rb2 = _min_grad(g_d, p1[..., 2:], p2[..., 2:]), _min_grad(g_d, p2[..., 2:], p1[..., 2:])
    # max(a, b) = -min(-a, -b)
    g_lt1, g_lt2 = _min_grad(-g_d, -p1[..., :2], -p2[..., :2]), _min_grad(-g_d, -p2[..., :2], -p1[..., :2])

    def box_grad(b, g_lt, g_rb, g_a):
        w, h = b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]
        area_grad = torch.stack((-h, -w, h, w), -1) * g_a[:, None]
        return (torch.cat((g_lt, g_rb), -1) + area_grad).to(b.dtype)

    gb1 = box_grad(b1, g_lt1.sum(1), g_rb1.sum(1), g_area.sum(1)).to(boxes1.dtype) if ctx.needs_input_grad[0] \
        else None
    gb2 = box_grad(b2, g_lt2.sum(0), g_rb2.sum(0), g_area.sum(0)).to(boxes2.dtype) if ctx.needs_input_grad[1] \
        else None
    return gb1, gb2


register_op_hooks("box_iou", fake=_box_iou_fake, backward=_box_iou_backward, setup_context=_box_iou_setup_context)


# ---- nms, batched_nms: op registration -------------------------------------------------------------------------------

def _nms_fallback(boxes, scores, iou_threshold):
    check_nms(boxes, scores, iou_threshold)
    return nms_reference(boxes, scores, iou_threshold)


def _batched_nms_fallback(boxes, scores, idxs, iou_threshold):
    check_batched_nms(boxes, scores, idxs, iou_threshold)
    return batched_nms_reference(boxes, scores, idxs, iou_threshold)


register_reference_where_missing("nms", _nms_fallback)
register_reference_where_missing("batched_nms", _batched_nms_fallback)


def _kept_indices_fake(boxes):
    # How many boxes survive depends on the data: an unbacked size in [0, N].
    n = torch.library.get_ctx().new_dynamic_size()
    return boxes.new_empty((n,), dtype=torch.int64)


def _nms_fake(boxes, scores, iou_threshold):
    check_nms(boxes, scores, iou_threshold)
    return _kept_indices_fake(boxes)


def _batched_nms_fake(boxes, scores, idxs, iou_threshold):
    check_batched_nms(boxes, scores, idxs, iou_threshold)
    return _kept_indices_fake(boxes)


def non_differentiable_setup_context(ctx, inputs, output):
    """Autograd set-up of ops whose outputs carry no gradient (indices, detections): inputs that require grad are
    accepted and the outputs do not require grad."""
    ctx.mark_non_differentiable(*(output if isinstance(output, tuple) else (output,)))


def no_gradient_backward(ctx, *grads):
    """Never reached (every output is marked non-differentiable); None for each of the op's inputs."""
    return (None,) * len(ctx.needs_input_grad)


register_op_hooks("nms", fake=_nms_fake, backward=no_gradient_backward,
                  setup_context=non_differentiable_setup_context)
register_op_hooks("batched_nms", fake=_batched_nms_fake, backward=no_gradient_backward,
                  setup_context=non_differentiable_setup_context)


# ---- public wrappers -------------------------------------------------------------------------------------------------

def box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Pairwise IoU [N, M] of [N, 4] and [M, 4] (x1, y1, x2, y2) boxes, as torchvision.ops.box_iou (float32 for
    float16/bfloat16 boxes); differentiable with respect to both."""
    return call("box_iou", _box_iou_fallback, boxes1, boxes2)


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression: int64 indices of the kept boxes by descending score, identical to
    torchvision.ops.nms (a box goes when its IoU with a kept higher-scoring box is > iou_threshold)."""
    return call("nms", _nms_fallback, boxes, scores, float(iou_threshold))


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Class-aware nms (boxes with different idxs do not suppress each other), identical to
    torchvision.ops.batched_nms on both sides of its strategy switch (see the module docstring)."""
    return call("batched_nms", _batched_nms_fallback, boxes, scores, idxs, float(iou_threshold))
