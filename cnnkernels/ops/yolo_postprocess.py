"""YOLO head decoding (yolo_decode, the one definition of it) and post-processing (yolo_postprocess: decode,
score threshold, class-aware nms, top max_detections per image).

Layout of the head [N, A*(5+C), S_h, S_w]: anchor a owns channels a*(5+C) .. a*(5+C)+4+C, holding
(tx, ty, tw, th, to, class logits c_0..c_{C-1}), i.e. head.view(N, A, 5+C, S_h, S_w). At cell (i, j):

    cx = (j + sigmoid(tx)) * W_img / S_w            w = anchor_w * exp(tw)
    cy = (i + sigmoid(ty)) * H_img / S_h            h = anchor_h * exp(th)
    box = (cx - w/2, cy - h/2, cx + w/2, cy + h/2) clipped to [0, W_img] x [0, H_img]
    score = sigmoid(to) * max_c softmax(logits)_c,  label = argmax_c (the first on ties)

Candidates are numbered (a * S_h + i) * S_w + j. yolo_postprocess keeps, per image, the candidates with
score > score_threshold (compared in the head's dtype, as `scores > score_threshold` does), runs batched_nms on them
with their labels as classes, and returns the first max_detections of its result; rows from counts[n] on are zero
boxes and scores with label -1. It equals that composition exactly (tests/ops/test_yolo_postprocess.py checks it
against torchvision.ops.batched_nms).

NaN logits give a NaN score, which no threshold passes. Neither op is differentiable (outputs do not require grad);
heads are float32 or float64.
"""

from __future__ import annotations

from typing import Sequence, Tuple

import torch

from cnnkernels._library import register_reference_where_missing
from cnnkernels.backends import call
from cnnkernels.ops._checks import check_yolo_head, check_yolo_postprocess
from cnnkernels.ops._register import register_op_hooks
from cnnkernels.ops.boxes import batched_nms_reference, no_gradient_backward, non_differentiable_setup_context

__all__ = ["yolo_decode", "yolo_postprocess", "yolo_postprocess_reference"]


def yolo_decode(head: torch.Tensor, anchors: torch.Tensor,
                image_size: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Decodes a YOLO head (see the module docstring): boxes [N, A*S_h*S_w, 4] (xyxy pixels, clipped to the image),
    scores [N, A*S_h*S_w] and int64 labels [N, A*S_h*S_w], candidates numbered (a * S_h + i) * S_w + j."""
    g = check_yolo_head("yolo_decode", head, anchors, image_size)
    H_img, W_img = (int(v) for v in image_size)
    t = head.unflatten(1, (g.A, 5 + g.C))                      # [N, A, 5+C, S_h, S_w], a view for any strides
    col = torch.arange(g.Sw, dtype=head.dtype, device=head.device)
    row = torch.arange(g.Sh, dtype=head.dtype, device=head.device)[:, None]
    cx = (col + torch.sigmoid(t[:, :, 0])) * W_img / g.Sw
    cy = (row + torch.sigmoid(t[:, :, 1])) * H_img / g.Sh
    w = anchors[:, 0].view(1, g.A, 1, 1) * torch.exp(t[:, :, 2])
    h = anchors[:, 1].view(1, g.A, 1, 1) * torch.exp(t[:, :, 3])
    boxes = torch.stack((
        (cx - w / 2).clamp(0, W_img), (cy - h / 2).clamp(0, H_img),
        (cx + w / 2).clamp(0, W_img), (cy + h / 2).clamp(0, H_img)), -1)
    probs = torch.softmax(t[:, :, 5:], dim=2)
    scores = torch.sigmoid(t[:, :, 4]) * probs.amax(dim=2)
    labels = probs.argmax(dim=2)
    m = g.A * g.Sh * g.Sw
    return boxes.reshape(g.N, m, 4), scores.reshape(g.N, m), labels.reshape(g.N, m)


def _select(boxes, scores, labels, score_threshold: float, iou_threshold: float, max_detections: int, batched_nms):
    """Per image: candidates with score > score_threshold, `batched_nms` on them, the first max_detections kept, in
    padded outputs."""
    N, K = boxes.shape[0], max_detections
    out_boxes = boxes.new_zeros((N, K, 4))
    out_scores = scores.new_zeros((N, K))
    out_labels = labels.new_full((N, K), -1)
    counts = labels.new_zeros((N,))
    for n in range(N):
        cand = torch.where(scores[n] > score_threshold)[0]
        keep = cand[batched_nms(boxes[n, cand], scores[n, cand], labels[n, cand], iou_threshold)][:K]
        k = keep.shape[0]
        out_boxes[n, :k], out_scores[n, :k], out_labels[n, :k] = boxes[n, keep], scores[n, keep], labels[n, keep]
        counts[n] = k
    return out_boxes, out_scores, out_labels, counts


def yolo_postprocess_reference(head: torch.Tensor, anchors: torch.Tensor, image_size: Sequence[int],
                               score_threshold: float, iou_threshold: float, max_detections: int):
    """decode -> score > score_threshold -> batched_nms -> first max_detections, per image; padded outputs
    (boxes [N, K, 4], scores [N, K], labels int64 [N, K] (-1 in padding), counts int64 [N])."""
    return _select(*yolo_decode(head, anchors, image_size), score_threshold, iou_threshold, max_detections,
                   batched_nms_reference)


def _fallback(head, anchors, image_size, score_threshold, iou_threshold, max_detections):
    check_yolo_postprocess(head, anchors, image_size, score_threshold, iou_threshold, max_detections)
    # The same composition with the batched_nms op: its compiled kernel where there is one (the reference's Python
    # suppression loop is the slow part).
    return _select(*yolo_decode(head, anchors, image_size), score_threshold, iou_threshold, max_detections,
                   torch.ops.cnnkernels.batched_nms)


register_reference_where_missing("yolo_postprocess", _fallback)


def _fake(head, anchors, image_size, score_threshold, iou_threshold, max_detections):
    g = check_yolo_postprocess(head, anchors, image_size, score_threshold, iou_threshold, max_detections)
    K = max_detections
    return (head.new_empty((g.N, K, 4)), head.new_empty((g.N, K)), head.new_empty((g.N, K), dtype=torch.int64),
            head.new_empty((g.N,), dtype=torch.int64))


register_op_hooks("yolo_postprocess", fake=_fake, backward=no_gradient_backward,
                  setup_context=non_differentiable_setup_context)


def yolo_postprocess(head: torch.Tensor, anchors: torch.Tensor, image_size: Sequence[int],
                     score_threshold: float = 0.25, iou_threshold: float = 0.45, max_detections: int = 100):
    """Detections of a YOLO head, per image: (boxes [N, K, 4], scores [N, K], labels int64 [N, K], counts int64 [N])
    with K = max_detections, sorted by descending score, rows from counts[n] on zero boxes/scores and label -1.
    Equal to yolo_decode -> score > score_threshold -> batched_nms(iou_threshold) -> first K (module docstring)."""
    return call("yolo_postprocess", _fallback, head, anchors, [int(v) for v in image_size], float(score_threshold),
                float(iou_threshold), int(max_detections))
