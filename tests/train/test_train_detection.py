"""The YOLO-style detector (cnnkernels.models.yolo) and its training (cnnkernels.train.detection): k-means anchors,
target encoding as the inverse of cnnkernels.yolo_decode, the loss, the fused inference model, and `python -m
cnnkernels.train detect` end to end on a tiny run (the mAP target is reported by a full run, not tested here)."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.ops import box_iou

import cnnkernels
from cnnkernels.models import YOLODetector
from cnnkernels.testing import randomize_bn
from cnnkernels.train.__main__ import main
from cnnkernels.train.detection import (TARGET_CHANNELS, EpochBlockSampler, YOLOLoss, box_sizes, cache_scenes,
                                        detect, encode_targets, kmeans_anchors, targets_to_head, wh_iou)
from cnnkernels.train.scenes import NUM_CLASSES, make_scene, scene_split

ANCHORS = torch.tensor([[20.0, 20.0], [40.0, 24.0], [30.0, 48.0]])
SIZE = 128
GRID = (8, 8)


@pytest.fixture(autouse=True)
def _one_thread(restore_num_threads):
    torch.set_num_threads(1)


def test_wh_iou():
    iou = wh_iou(torch.tensor([[2.0, 2.0], [1.0, 4.0]]), torch.tensor([[1.0, 4.0], [4.0, 4.0]]))
    # (2x2, 1x4): overlap 1x2 = 2, union 4 + 4 - 2 = 6.
    torch.testing.assert_close(iou, torch.tensor([[1 / 3, 0.25], [1.0, 0.25]]))
    with pytest.raises(ValueError, match="wh_a must hold positive"):
        wh_iou(torch.tensor([[0.0, 1.0]]), torch.ones(1, 2))


def test_kmeans_anchors_finds_planted_sizes_deterministically():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[10.0, 30.0], [25.0, 25.0], [60.0, 40.0]])
    wh = (centres[torch.arange(300) % 3] * (1 + 0.05 * torch.randn(300, 2, generator=g))).abs()
    anchors = kmeans_anchors(wh, 3, seed=5)
    assert torch.equal(anchors, kmeans_anchors(wh, 3, seed=5))
    torch.testing.assert_close(anchors, centres, rtol=0.03, atol=0)       # sorted by area, as centres are
    assert bool((anchors.prod(1).diff() > 0).all())
    with pytest.raises(ValueError, match="at least k=4"):
        kmeans_anchors(wh[:3], 4)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        kmeans_anchors(wh, 0)


def test_encode_decode_round_trip():
    for seed in range(6):
        s = make_scene(seed, max_objects=6)
        t = encode_targets(s.boxes, s.labels, ANCHORS, GRID, (SIZE, SIZE))
        assert t.shape == (3, *GRID, TARGET_CHANNELS)
        obj = t[..., 4] > 0
        if int(obj.sum()) < len(s.labels):   # more centres than anchors in one cell: the only way to drop a box
            continue
        assert int(obj.sum()) == len(s.labels) and bool((t[..., 5][~obj] == -1).all())
        head = targets_to_head(t[None].double(), NUM_CLASSES)
        boxes, scores, labels = cnnkernels.yolo_decode(head, ANCHORS.double(), (SIZE, SIZE))
        keep = scores[0] > 0.5
        assert int(keep.sum()) == len(s.labels)
        iou = box_iou(boxes[0][keep], s.boxes.double())
        match = iou.argmax(1)
        torch.testing.assert_close(boxes[0][keep], s.boxes.double()[match], atol=1e-4, rtol=0)
        assert torch.equal(labels[0][keep], s.labels[match])
        assert sorted(match.tolist()) == list(range(len(s.labels)))


def test_encode_assignment_rules():
    # Two boxes centred in cell (row 2, column 1); both fit anchor 1 best: the better fit keeps it, the other moves
    # to its next best anchor of the same cell.
    boxes = torch.tensor([[4.0, 28.0, 44.0, 52.0], [6.0, 30.0, 42.0, 50.0]])
    t = encode_targets(boxes, torch.tensor([2, 0]), ANCHORS, GRID, (SIZE, SIZE))
    assert t[..., 4].sum() == 2 and t[1, 2, 1, 4] == 1 and t[1, 2, 1, 5] == 2
    assert t[0, 2, 1, 4] == 1 and t[0, 2, 1, 5] == 0
    torch.testing.assert_close(t[1, 2, 1, :4], torch.tensor([0.5, 0.5, 0.0, 0.0]))
    with pytest.raises(ValueError, match="positive widths"):
        encode_targets(torch.tensor([[5.0, 5.0, 5.0, 9.0]]), torch.tensor([0]), ANCHORS, GRID, (SIZE, SIZE))
    with pytest.raises(ValueError, match="labels must be an int64"):
        encode_targets(boxes, torch.tensor([0.0, 1.0]), ANCHORS, GRID, (SIZE, SIZE))
    with pytest.raises(ValueError, match="anchors must hold positive"):
        encode_targets(boxes, torch.tensor([0, 1]), -ANCHORS, GRID, (SIZE, SIZE))


def _targets(seeds):
    return torch.stack([encode_targets(s.boxes, s.labels, ANCHORS, GRID, (SIZE, SIZE))
                        for s in (make_scene(i) for i in seeds)])


def test_loss_zero_for_perfect_predictions_and_bad_shapes():
    t = _targets(range(4))
    loss = YOLOLoss(ANCHORS, NUM_CLASSES, (SIZE, SIZE))
    assert float(loss(targets_to_head(t, NUM_CLASSES), t)) < 1e-6
    assert float(loss(torch.zeros(4, 3 * (5 + NUM_CLASSES), *GRID), t)) > 1.0
    with pytest.raises(ValueError, match="channels"):
        loss(torch.zeros(4, 5, *GRID), t)
    with pytest.raises(ValueError, match="targets must have shape"):
        loss(torch.zeros(4, 3 * (5 + NUM_CLASSES), *GRID), t[:2])


def test_loss_ignores_no_object_slots_that_predict_a_true_box():
    boxes = torch.tensor([[4.0, 28.0, 44.0, 52.0]])                         # anchor 1's size, cell (2, 1)
    t = encode_targets(boxes, torch.tensor([1]), ANCHORS, GRID, (SIZE, SIZE))[None]
    head = targets_to_head(t, NUM_CLASSES).unflatten(1, (3, 5 + NUM_CLASSES))
    # Anchor 0 of the same cell predicts the same box with confidence: a no-object slot, but a correct prediction.
    head[0, 0, :2, 2, 1] = head[0, 1, :2, 2, 1]
    head[0, 0, 2:4, 2, 1] = torch.log(ANCHORS[1] / ANCHORS[0])
    head[0, 0, 4, 2, 1] = 5.0
    head = head.flatten(1, 2)
    assert float(YOLOLoss(ANCHORS, NUM_CLASSES, (SIZE, SIZE))(head, t)) < 1e-6
    strict = YOLOLoss(ANCHORS, NUM_CLASSES, (SIZE, SIZE), ignore_iou=None)
    assert float(strict(head, t)) > 2.0 and strict.last["noobj"] > 5.0


def test_loss_decreases_on_a_tiny_overfit():
    torch.manual_seed(0)
    model = YOLODetector(ANCHORS, NUM_CLASSES, width_mult=0.25, head_channels=32)
    images = torch.stack([make_scene(i).image for i in range(2)])
    t = _targets(range(2))
    loss = YOLOLoss(ANCHORS, NUM_CLASSES, (SIZE, SIZE))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(20):
        opt.zero_grad()
        value = loss(model(images), t)
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
    assert losses[-1] < 0.3 * losses[0], losses


def test_optimized_detector_matches_eager():
    torch.manual_seed(0)
    model = randomize_bn(YOLODetector(ANCHORS, NUM_CLASSES, width_mult=0.35)).eval()
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad(), cnnkernels.nn.fusion(False):
        eager = model(x)
    fast = cnnkernels.optimize(model)
    with torch.no_grad():
        out = fast(x)
    assert out.shape == (2, 3 * (5 + NUM_CLASSES), *GRID)
    torch.testing.assert_close(out, eager, atol=1e-4, rtol=1e-4)
    dets = detect(fast, x, score_threshold=0.0, max_detections=5)
    assert len(dets) == 2 and dets[0]["boxes"].shape == (5, 4)
    with pytest.raises(ValueError, match="multiples of the stride"):
        model(torch.rand(1, 3, 100, 128))
    with pytest.raises(ValueError, match="anchors must be an"):
        YOLODetector(torch.ones(3), NUM_CLASSES)


def test_box_sizes_cache_and_epoch_blocks():
    scenes = [make_scene(i) for i in range(3)]
    wh = box_sizes(scenes)
    assert wh.shape == (sum(len(s.labels) for s in scenes), 2) and bool((wh > 0).all())
    cached = cache_scenes(scenes)
    assert cached[1].image_u8.dtype == torch.uint8 and torch.equal(cached[1].boxes, scenes[1].boxes)
    assert float((cached[1].image - scenes[1].image).abs().max()) <= 0.5 / 255 + 1e-6
    sampler = EpochBlockSampler(4, 3)
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        seen.append(sorted(sampler))
    assert seen == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    with pytest.raises(ValueError, match="epoch must be an int in"):
        sampler.set_epoch(3)


def test_detect_command_end_to_end(tmp_path, capsys):
    picture, out = tmp_path / "det.png", tmp_path / "run"
    status = main(["detect", "--epochs", "3", "--train-scenes", "16", "--val-scenes", "4", "--batch-size", "8",
                   "--width-mult", "0.25", "--threads", "1", "--no-progress", "--picture", str(picture),
                   "--out", str(out), "--checkpoint", str(tmp_path / "ckpt.pt")])
    assert status == 0
    text = capsys.readouterr().out
    assert "mAP@0.5" in text and "training time" in text
    metrics = json.loads((out / "metrics.json").read_text())
    losses = [r["loss"] for r in metrics["history"]]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    assert 0.0 <= metrics["map"] <= 1.0 and set(metrics["ap_per_class"]) <= {"ellipse", "rectangle", "triangle"}
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "ckpt.pt").is_file()
    assert scene_split("val", 1)[0].image.shape == (3, SIZE, SIZE)
