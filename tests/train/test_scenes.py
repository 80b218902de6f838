"""cnnkernels.train.scenes: generated scenes are deterministic per seed and self-consistent (boxes, masks, semantic
map, landmarks), the train/val streams are disjoint, and bad arguments are refused."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader

from cnnkernels.train.scenes import (CLASSES, LANDMARK_NAMES, NUM_CLASSES, NUM_LANDMARKS, Scene, SceneBatch,
                                     SceneDataset, collate_scenes, make_scene, scene_split)

SEEDS = range(12)


def _assert_scene_equal(a: Scene, b: Scene) -> None:
    for name in ("image", "boxes", "labels", "masks", "landmarks", "semantic"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_constants():
    assert 3 <= NUM_CLASSES == len(CLASSES) <= 4
    assert len(LANDMARK_NAMES) == NUM_CLASSES and all(len(n) == NUM_LANDMARKS for n in LANDMARK_NAMES)


def test_deterministic_per_seed():
    _assert_scene_equal(make_scene(7), make_scene(7))
    assert not torch.equal(make_scene(7).image, make_scene(8).image)
    ds = SceneDataset(4, seed=3)
    _assert_scene_equal(ds[2], ds[2])
    _assert_scene_equal(ds[-1], ds[3])


@pytest.mark.parametrize("size", [128, 64])
def test_shapes_dtypes_and_consistency(size):
    for seed in SEEDS:
        s = make_scene(seed, size, max_objects=6)
        m = s.labels.shape[0]
        assert 1 <= m <= 6
        assert s.image.shape == (3, size, size) and s.image.dtype == torch.float32
        assert 0.0 <= float(s.image.min()) and float(s.image.max()) <= 1.0
        assert s.boxes.shape == (m, 4) and s.boxes.dtype == torch.float32
        assert s.labels.dtype == torch.int64 and bool(((s.labels >= 0) & (s.labels < NUM_CLASSES)).all())
        assert s.masks.shape == (m, size, size) and s.masks.dtype == torch.bool
        assert s.landmarks.shape == (m, NUM_LANDMARKS, 2) and s.landmarks.dtype == torch.float32
        assert s.semantic.shape == (size, size) and s.semantic.dtype == torch.int64
        # Visible masks are disjoint (occlusion resolved) and none is empty.
        assert int(s.masks.sum(0).max()) <= 1
        assert bool((s.masks.flatten(1).sum(1) > 0).all())
        # Semantic map = label + 1 on each mask, 0 elsewhere.
        expected = torch.zeros(size, size, dtype=torch.int64)
        for i in range(m):
            expected[s.masks[i]] = s.labels[i] + 1
        assert torch.equal(s.semantic, expected)
        # Each box is the tight pixel-aligned box of its mask (x2, y2 exclusive).
        for i in range(m):
            rows = torch.nonzero(s.masks[i].any(1)).flatten()
            cols = torch.nonzero(s.masks[i].any(0)).flatten()
            assert s.boxes[i].tolist() == [cols[0], rows[0], cols[-1] + 1, rows[-1] + 1]
        # Objects lie wholly inside the image, landmarks too.
        assert bool(((s.landmarks >= 0) & (s.landmarks <= size)).all())


def test_landmarks_on_their_object_and_consistently_labelled():
    classes_seen = set()
    for seed in range(30):
        s = make_scene(seed, max_objects=1)   # one object: nothing occludes it
        label = int(s.labels[0])
        classes_seen.add(label)
        pts = s.landmarks[0]
        ys, xs = torch.nonzero(s.masks[0], as_tuple=True)
        centres = torch.stack([xs, ys], 1).float() + 0.5
        # Every landmark is on the shape's outline: near a mask pixel centre. 2.5 px, not ~0.7: the tip of an acute
        # triangle corner holds no pixel centre for a pixel or two.
        dist = torch.cdist(pts, centres).min(1).values
        assert float(dist.max()) <= 2.5, (seed, label, dist)
        # Labelling in the shape's own frame survives rotation within +-30 degrees.
        if label == 0:    # top, right, bottom, left
            assert pts[0, 1] < pts[2, 1] and pts[3, 0] < pts[1, 0]
        elif label == 1:  # top-left, top-right, bottom-right, bottom-left
            assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[2, 0] and pts[0, 1] < pts[3, 1] and pts[1, 1] < pts[2, 1]
            # A rectangle's box is spanned by its corners.
            lo, hi = pts.min(0).values, pts.max(0).values
            assert torch.allclose(s.boxes[0], torch.cat([lo, hi]), atol=1.5)
        else:             # apex, base-right, base-left, base-midpoint
            assert pts[0, 1] < pts[3, 1] and pts[2, 0] < pts[1, 0]
            assert torch.allclose(pts[3], (pts[1] + pts[2]) / 2, atol=1e-4)
    assert classes_seen == set(range(NUM_CLASSES))


def test_splits_disjoint_and_collate():
    train, val = scene_split("train", 50), scene_split("val", 50)
    assert not {train.scene_seed(i) for i in range(50)} & {val.scene_seed(i) for i in range(50)}
    assert not torch.equal(train[0].image, val[0].image)
    batch = next(iter(DataLoader(SceneDataset(3, size=64), batch_size=3, collate_fn=collate_scenes)))
    assert isinstance(batch, SceneBatch) and len(batch) == 3
    assert batch.image.shape == (3, 3, 64, 64)
    assert len(batch.boxes) == len(batch.labels) == len(batch.masks) == len(batch.landmarks) == 3
    assert batch.boxes[1].shape[0] == batch.labels[1].shape[0] == batch.masks[1].shape[0]


def test_bad_arguments():
    with pytest.raises(ValueError, match="seed"):
        make_scene(-1)
    with pytest.raises(ValueError, match="size"):
        make_scene(0, size=16)
    with pytest.raises(ValueError, match="max_objects"):
        make_scene(0, max_objects=0)
    with pytest.raises(ValueError, match="split"):
        scene_split("test", 10)
    with pytest.raises(ValueError, match="length"):
        SceneDataset(-1)
    with pytest.raises(IndexError):
        SceneDataset(2)[2]
    with pytest.raises(ValueError, match="batch"):
        collate_scenes([])
    with pytest.raises(ValueError, match="same image shape"):
        collate_scenes([make_scene(0, 64), make_scene(0, 128)])
