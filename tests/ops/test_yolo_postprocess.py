"""yolo_decode against the formulas written out per candidate, and yolo_postprocess against the composition
yolo_decode -> score threshold -> torchvision.ops.batched_nms -> truncation."""

import math

import pytest
import torch

import cnnkernels
from cnnkernels import cost
from support.helpers import assert_op_error

torchvision = pytest.importorskip("torchvision")

ANCHORS = torch.tensor([[10.0, 13.0], [30.0, 20.0], [40.0, 60.0]])


def make_head(n, a, c, sh, sw, seed, scale=2.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, a * (5 + c), sh, sw, generator=g) * scale).to(dtype)


def composition(head, anchors, image_size, score_t, iou_t, k):
    boxes, scores, labels = cnnkernels.yolo_decode(head, anchors, image_size)
    out = []
    for n in range(head.shape[0]):
        cand = torch.where(scores[n] > score_t)[0]
        keep = cand[torchvision.ops.batched_nms(boxes[n, cand], scores[n, cand], labels[n, cand], iou_t)][:k]
        out.append((boxes[n, keep], scores[n, keep], labels[n, keep]))
    return out


def assert_matches_composition(head, anchors, image_size, score_t, iou_t, k):
    boxes, scores, labels, counts = cnnkernels.yolo_postprocess(head, anchors, image_size, score_t, iou_t, k)
    N = head.shape[0]
    assert boxes.shape == (N, k, 4) and scores.shape == (N, k) and labels.shape == (N, k) and counts.shape == (N,)
    assert labels.dtype == torch.int64 and counts.dtype == torch.int64 and boxes.dtype == head.dtype
    for n, (b, s, lab) in enumerate(composition(head, anchors, image_size, score_t, iou_t, k)):
        m = b.shape[0]
        assert counts[n] == m
        assert torch.equal(boxes[n, :m], b) and torch.equal(scores[n, :m], s) and torch.equal(labels[n, :m], lab)
        assert not boxes[n, m:].any() and not scores[n, m:].any() and (labels[n, m:] == -1).all()
    return counts


def test_decode_formulas():
    head = make_head(1, 3, 4, 3, 5, seed=0)
    H, W = 48, 80
    boxes, scores, labels = cnnkernels.yolo_decode(head, ANCHORS, (H, W))
    t = head.double().view(1, 3, 9, 3, 5)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    for a, i, j in [(0, 0, 0), (1, 2, 4), (2, 1, 3)]:
        tx, ty, tw, th, to = (t[0, a, k, i, j].item() for k in range(5))
        logits = t[0, a, 5:, i, j]
        cx, cy = (j + sig(tx)) * W / 5, (i + sig(ty)) * H / 3
        w, h = ANCHORS[a, 0].item() * math.exp(tw), ANCHORS[a, 1].item() * math.exp(th)
        want = [min(max(v, 0), lim) for v, lim in ((cx - w / 2, W), (cy - h / 2, H), (cx + w / 2, W), (cy + h / 2, H))]
        idx = (a * 3 + i) * 5 + j
        torch.testing.assert_close(boxes[0, idx].double(), torch.tensor(want, dtype=torch.float64), rtol=1e-5,
                                   atol=1e-4)
        probs = torch.softmax(logits, 0)
        assert math.isclose(scores[0, idx].item(), sig(to) * probs.max().item(), rel_tol=1e-5)
        assert labels[0, idx] == probs.argmax()


@pytest.mark.correctness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_matches_composition(dtype):
    head = make_head(3, 3, 4, 8, 10, seed=1, dtype=dtype)
    for score_t, iou_t, k in [(0.3, 0.5, 20), (0.05, 0.45, 300), (0.9, 0.5, 5), (0.0, 0.0, 7)]:
        assert_matches_composition(head, ANCHORS.to(dtype), (64, 80), score_t, iou_t, k)


@pytest.mark.correctness
def test_many_candidates_per_class_strategy():
    # > 1000 candidates in an image: batched_nms runs per class (its other strategy) inside yolo_postprocess too.
    head = make_head(1, 3, 2, 20, 20, seed=2, scale=1.0)
    head[:, 4::7] = 6.0   # every objectness high: all 1200 candidates pass the threshold
    counts = assert_matches_composition(head, ANCHORS, (160, 160), 0.01, 0.6, 2000)
    assert counts[0] > 0


@pytest.mark.correctness
def test_ties_nan_and_non_contiguous():
    head = make_head(2, 3, 3, 6, 6, seed=3)
    head[0, 5:8] = 0.0              # equal class logits: label 0 (first on ties)
    head[0, 4, :2] = 3.0            # equal objectness on a row
    head[1, 4 + 8, 2, 2] = float("nan")
    head_cl = head.contiguous(memory_format=torch.channels_last)
    counts = assert_matches_composition(head_cl, ANCHORS, (96, 96), 0.2, 0.5, 30)
    assert torch.equal(counts, assert_matches_composition(head, ANCHORS, (96, 96), 0.2, 0.5, 30))
    assert cnnkernels.yolo_decode(head, ANCHORS, (96, 96))[2][0, 0] == 0


def test_empty_and_no_gradient():
    head = make_head(0, 3, 2, 4, 4, seed=4)
    out = cnnkernels.yolo_postprocess(head, ANCHORS, (32, 32), 0.5, 0.5, 10)
    assert [o.shape for o in out] == [(0, 10, 4), (0, 10), (0, 10), (0,)]
    head = make_head(2, 3, 2, 4, 4, seed=4).requires_grad_()
    out = cnnkernels.yolo_postprocess(head, ANCHORS, (32, 32), 0.1, 0.5, 10)
    assert not any(o.requires_grad for o in out)
    assert out[0].shape == (2, 10, 4)
    # zero detections: everything is padding
    boxes, scores, labels, counts = cnnkernels.yolo_postprocess(head.detach(), ANCHORS, (32, 32), 1.0, 0.5, 4)
    assert (counts == 0).all() and (labels == -1).all() and not boxes.any()


@pytest.mark.bad_input
def test_bad_inputs():
    head = make_head(1, 3, 2, 4, 4, seed=6)
    op = "yolo_postprocess"
    assert_op_error(op, (head[0], ANCHORS, [32, 32], 0.5, 0.5, 10), ValueError, "head")
    assert_op_error(op, (head.half(), ANCHORS.half(), [32, 32], 0.5, 0.5, 10), TypeError, "head")
    assert_op_error(op, (head, ANCHORS[:2], [32, 32], 0.5, 0.5, 10), ValueError, "head")
    assert_op_error(op, (head, ANCHORS[:, :1], [32, 32], 0.5, 0.5, 10), ValueError, "anchors")
    assert_op_error(op, (head, ANCHORS.double(), [32, 32], 0.5, 0.5, 10), TypeError, "anchors")
    assert_op_error(op, (head, ANCHORS, [0, 32], 0.5, 0.5, 10), ValueError, "image_size")
    assert_op_error(op, (head, ANCHORS, [32, 32], float("nan"), 0.5, 10), ValueError, "score_threshold")
    assert_op_error(op, (head, ANCHORS, [32, 32], 0.5, float("nan"), 10), ValueError, "iou_threshold")
    assert_op_error(op, (head, ANCHORS, [32, 32], 0.5, 0.5, -1), ValueError, "max_detections")
    with pytest.raises(ValueError, match="cnnkernels.yolo_decode: head must have A"):
        cnnkernels.yolo_decode(head[:, :-1], ANCHORS, (32, 32))


def test_cost_counts_a_detector():
    # cnnkernels.cost over a model that ends in the detection ops: they add no MACs, the conv counts as usual.
    class Detector(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.head = torch.nn.Conv2d(3, 3 * 7, 3, stride=8, padding=1)

        def forward(self, x):
            boxes, scores, labels, counts = cnnkernels.yolo_postprocess(self.head(x), ANCHORS, x.shape[2:], 0.0, 0.5, 5)
            return cnnkernels.box_iou(boxes[0], boxes[0]), cnnkernels.nms(boxes[0], scores[0], 0.5)

    c = cost.count(Detector(), (3, 32, 32))
    assert c.macs == 4 * 4 * 21 * 3 * 9   # the conv's output elements x kernel volume x input channels
