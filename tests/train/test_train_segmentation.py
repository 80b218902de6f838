"""cnnkernels.train.segmentation: the semantic-map data set of generated scenes, the IoU (torchmetrics) and picture
helpers, a tiny U-Net training run whose loss decreases, and `python -m cnnkernels.train segment` end to end."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cnnkernels.models import unet
from cnnkernels.train.__main__ import main
from cnnkernels.train.loop import fit
from cnnkernels.train.scenes import make_scene, scene_split
from cnnkernels.train.segmentation import (NUM_SEGMENT_CLASSES, PALETTE, SEGMENT_CLASSES, SemanticScenes, colorize,
                                           save_segmentation_picture, segmentation_augmentation, segmentation_iou)


@pytest.fixture(autouse=True)
def _one_thread(restore_num_threads):
    torch.set_num_threads(1)


def test_dataset_holds_the_scenes_semantic_maps():
    ds = SemanticScenes("val", 3, seed=5, size=32)
    ref = scene_split("val", 3, seed=5, size=32)
    assert len(ds) == 3 and SEGMENT_CLASSES[0] == "background" and NUM_SEGMENT_CLASSES == len(SEGMENT_CLASSES)
    for i in range(3):
        image, target = ds[i]
        assert image.dtype == torch.float32 and target.dtype == torch.int64
        assert torch.equal(image, ref[i].image) and torch.equal(target, ref[i].semantic)
    assert not set(ds.targets.unique().tolist()) - set(range(NUM_SEGMENT_CLASSES))


def test_flips_move_image_and_map_together():
    ds = SemanticScenes("train", 2, size=32, transform=segmentation_augmentation())
    torch.manual_seed(0)
    flipped = 0
    for _ in range(10):
        image, target = ds[1]
        assert type(image) is torch.Tensor and type(target) is torch.Tensor
        if torch.equal(image, ds.images[1].flip(-1)):
            assert torch.equal(target, ds.targets[1].long().flip(-1))
            flipped += 1
        else:
            assert torch.equal(image, ds.images[1]) and torch.equal(target, ds.targets[1].long())
    assert 0 < flipped < 10


def test_iou_per_class_over_all_pixels():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, 3, 3]])
    per_class, mean = segmentation_iou(target.clone(), target)
    assert per_class == [1.0] * 4 and mean == 1.0
    pred = torch.tensor([[0, 1, 1, 1], [2, 2, 3, 0]])
    per_class, mean = segmentation_iou(pred, target)
    # class 0: 1 of {0, 1, 7}; class 1: {2, 3} of {1, 2, 3}; class 2: exact; class 3: 1 of 2
    assert per_class == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5])
    assert mean == pytest.approx((1 / 3 + 2 / 3 + 1.0 + 0.5) / 4)
    with pytest.raises(ValueError, match="same shape"):
        segmentation_iou(pred[:1], target)


def test_picture_layout_and_errors(tmp_path):
    scenes = [make_scene(i, 32) for i in range(2)]
    images = torch.stack([s.image for s in scenes])
    targets = torch.stack([s.semantic for s in scenes])
    grid = save_segmentation_picture(tmp_path / "p.png", images, targets, torch.zeros_like(targets), scale=2)
    with Image.open(tmp_path / "p.png") as img:
        assert img.size == (3 * (64 + 2) + 2, 2 * (64 + 2) + 2) == (grid.shape[2], grid.shape[1])
    # the prediction column is all background: PALETTE[0]
    assert torch.allclose(grid[:, 2:66, 2 * 66 + 2:3 * 66], PALETTE[0][:, None, None].expand(3, 64, 64))
    assert torch.equal(colorize(targets[0]), PALETTE[targets[0]].permute(2, 0, 1))
    with pytest.raises(ValueError, match="`predictions` must have shape"):
        save_segmentation_picture(tmp_path / "q.png", images, targets, targets[:1])
    with pytest.raises(ValueError, match=r"class indices must be in \[0, 4\)"):
        colorize(targets + 4)


def test_tiny_training_run_loss_decreases():
    ds = SemanticScenes("train", 16, size=32)
    torch.manual_seed(0)
    model = unet(num_classes=NUM_SEGMENT_CLASSES, depth=2, base_width=4, batch_norm=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    history = fit(model, DataLoader(ds, batch_size=8, shuffle=True), epochs=6, optimizer=opt, progress=False, seed=0)
    losses = [h["loss"] for h in history]
    assert losses[-1] < 0.8 * losses[0], losses


def test_segment_command_end_to_end(tmp_path, capsys):
    picture = tmp_path / "seg.png"
    argv = ["segment", "--epochs", "1", "--train-scenes", "8", "--val-scenes", "3", "--size", "32", "--depth", "2",
            "--base-width", "4", "--batch-size", "4", "--picture", str(picture), "--picture-scenes", "2",
            "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "mean" in out and "background" in out and "wall time" in out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert list(metrics["per_class_iou"]) == list(SEGMENT_CLASSES)
    assert metrics["mean_iou"] == pytest.approx(sum(metrics["per_class_iou"].values()) / NUM_SEGMENT_CLASSES)
    assert metrics["pixels_differ"] <= 3 * 32 * 32 // 1000  # the eager and fused models agree up to rounding ties
    with Image.open(picture) as img:
        assert img.size == (3 * 66 + 2, 2 * 66 + 2)
    # an unreachable target fails the run
    assert main(argv + ["--expect-miou", "1.0"]) == 1


def test_segment_command_rejects_sizes_the_depth_cannot_halve():
    with pytest.raises(SystemExit) as e:
        main(["segment", "--size", "36", "--depth", "3", "--no-progress"])
    assert e.value.code == 2
    with pytest.raises(SystemExit):
        main(["segment", "--size", "16"])  # below scenes.MIN_SIZE
