"""Generated scenes: synthetic images of simple shapes on cluttered backgrounds, with everything the detection,
segmentation and landmark tasks need, drawn on the fly from a seed (no files).

`make_scene(seed)` draws one scene: 1..max_objects objects (an ellipse, a rectangle or an isosceles triangle each) of
varied size, aspect ratio, rotation, colour and texture, over a background of colour gradients, noise and distractor
strokes (lines and arcs that belong to no object). Objects are painted in order, later ones on top; the masks, boxes
and semantic map describe what is visible after that.

Conventions:
- pixel (row r, column c) covers [c, c + 1) x [r, r + 1); its centre is (c + 0.5, r + 0.5);
- a box is (x1, y1, x2, y2) = the smallest pixel-aligned rectangle holding the visible mask: x2 = last column + 1,
  so a one-pixel object has width 1;
- landmarks are continuous xy positions in the same pixel coordinates, NUM_LANDMARKS per object, the k-th always the
  same part of a shape of that class (see LANDMARK_NAMES). Rotations stay within +-MAX_ROTATION_DEGREES (less than
  half of any shape's symmetry angle) and ellipses are never close to circles, so the image of an object determines
  which point is which. Every object lies wholly inside the image, so its landmarks do too; a landmark can lie on an
  occluded part of its object.

`SceneDataset` indexes scenes by position (item i of a data set is always the same scene), `scene_split` gives the
disjoint "train" and "val" sets, and `collate_scenes` batches them for a DataLoader.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

from cnnkernels._argtypes import checked

__all__ = ["CLASSES", "NUM_CLASSES", "NUM_LANDMARKS", "LANDMARK_NAMES", "MAX_ROTATION_DEGREES", "MIN_SIZE",
           "scene_size_arg", "Scene", "SceneBatch", "make_scene", "scene_seed", "SceneDataset", "scene_split",
           "collate_scenes", "SPLITS"]

CLASSES: Tuple[str, ...] = ("ellipse", "rectangle", "triangle")
NUM_CLASSES = len(CLASSES)
# Per class, what landmark k is, in the shape's own frame (y down, before rotation).
LANDMARK_NAMES: Tuple[Tuple[str, ...], ...] = (
    ("top", "right", "bottom", "left"),                                  # ends of the ellipse's axes
    ("top-left", "top-right", "bottom-right", "bottom-left"),            # corners
    ("apex", "base-right", "base-left", "base-midpoint"),                # apex up, base down
)
NUM_LANDMARKS = 4
MAX_ROTATION_DEGREES = 30.0
# Below this the objects (at least ~9 px across) and the clutter no longer fit.
MIN_SIZE = 32
# argparse type of the training commands' --size
scene_size_arg = checked(int, lambda v: v >= MIN_SIZE, f"an integer >= {MIN_SIZE} (scenes.MIN_SIZE)")
SPLITS = ("train", "val")

# An ellipse's axes differ by at least this ratio: a near-circle would show no orientation, and its landmarks could
# not be told apart.
_MIN_ELLIPSE_RATIO = 1.35
# An object stays in the scene only while at least this fraction of it is visible; a placement that would hide more
# of an earlier object is redrawn.
_MIN_VISIBLE = 0.6
_PLACEMENT_TRIES = 8
# Minimum RGB distance between an object's mean colour and the background under it, so that every object can be seen.
_MIN_CONTRAST = 0.35


@dataclass
class Scene:
    """One generated scene; M objects, K = NUM_LANDMARKS.

    image: float32 (3, H, W) in [0, 1]; boxes: float32 (M, 4) xyxy pixels of each visible mask (x2, y2 exclusive);
    labels: int64 (M,) in [0, NUM_CLASSES); masks: bool (M, H, W), visible pixels of each object (later objects on
    top, masks disjoint); landmarks: float32 (M, K, 2) xy pixels; semantic: int64 (H, W), 0 background, label + 1 on
    each object's visible pixels."""
    image: Tensor
    boxes: Tensor
    labels: Tensor
    masks: Tensor
    landmarks: Tensor
    semantic: Tensor


@dataclass
class SceneBatch:
    """A batch of scenes from collate_scenes: `image` stacked to (N, 3, H, W), every other field a list of the
    scenes' tensors (their object counts differ)."""
    image: Tensor
    boxes: List[Tensor]
    labels: List[Tensor]
    masks: List[Tensor]
    landmarks: List[Tensor]
    semantic: List[Tensor]

    def __len__(self) -> int:
        return int(self.image.shape[0])


def _check_int(name: str, value, low: int, high: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < low \
            or (high is not None and int(value) > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be an int {bound}, got {value!r}")
    return int(value)


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.0, 1.0, size=3).astype(np.float32)


def _background(rng: np.random.Generator, size: int, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    """Linear gradient between two colours, low-frequency blotches and pixel noise, (3, H, W)."""
    c0, c1 = _random_colour(rng), _random_colour(rng)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy) / size
    t = (t - t.min()) / max(float(t.max() - t.min()), 1e-6)
    img = c0[:, None, None] * (1 - t) + c1[:, None, None] * t
    # Blotches: a coarse random grid, bilinearly upsampled.
    cells = int(rng.integers(3, 7))
    coarse = torch.from_numpy(rng.normal(0.0, 0.08, size=(1, 3, cells, cells)).astype(np.float32))
    blot = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0].numpy()
    img = img + blot + rng.normal(0.0, rng.uniform(0.01, 0.06), size=img.shape).astype(np.float32)
    return img.astype(np.float32)


def _segment_mask(yy, xx, p0, p1, half_width) -> np.ndarray:
    """Pixels whose centre lies within half_width of the segment p0-p1 (xy)."""
    d = p1 - p0
    px, py = xx + 0.5 - p0[0], yy + 0.5 - p0[1]
    t = np.clip((px * d[0] + py * d[1]) / max(float(d @ d), 1e-6), 0.0, 1.0)
    return (px - t * d[0]) ** 2 + (py - t * d[1]) ** 2 <= half_width ** 2


def _draw_distractors(rng: np.random.Generator, img: np.ndarray, size: int, yy, xx) -> None:
    """Straight strokes and circular arcs in random colours: edges and colour changes that are not objects."""
    for _ in range(int(rng.integers(2, 7))):
        colour = _random_colour(rng)
        half_width = rng.uniform(0.5, 1.6)
        if rng.random() < 0.5:
            p0 = rng.uniform(0, size, size=2)
            p1 = p0 + rng.uniform(-0.6, 0.6, size=2) * size
            m = _segment_mask(yy, xx, p0, p1, half_width)
        else:
            centre = rng.uniform(0, size, size=2)
            radius = rng.uniform(0.1, 0.4) * size
            start = rng.uniform(0, 2 * np.pi)
            span = rng.uniform(0.5, 2.0)
            r = np.hypot(xx + 0.5 - centre[0], yy + 0.5 - centre[1])
            ang = np.mod(np.arctan2(yy + 0.5 - centre[1], xx + 0.5 - centre[0]) - start, 2 * np.pi)
            m = (np.abs(r - radius) <= half_width) & (ang <= span)
        img[:, m] = colour[:, None]


def _shape(rng: np.random.Generator, label: int, size: int, yy, xx):
    """Full (unoccluded) mask and landmarks of one object of class `label`, placed at random."""
    half = rng.uniform(0.07, 0.22, size=2) * size     # half-extents along the shape's own x and y
    if label == 0:
        # Redraw the minor axis so the ratio is at least _MIN_ELLIPSE_RATIO, keeping which axis is the long one.
        long_, short = max(half), min(half)
        short = min(short, long_ / _MIN_ELLIPSE_RATIO)
        half = np.array([long_, short]) if half[0] >= half[1] else np.array([short, long_])
    theta = np.deg2rad(rng.uniform(-MAX_ROTATION_DEGREES, MAX_ROTATION_DEGREES))
    cos, sin = np.cos(theta), np.sin(theta)
    # Centre anywhere that keeps the whole object (its rotated bounding rectangle) inside the image, so that every
    # landmark lies in the image too.
    extent = np.array([abs(half[0] * cos) + abs(half[1] * sin), abs(half[0] * sin) + abs(half[1] * cos)])
    centre = rng.uniform(extent, size - extent)
    # Shape-frame coordinates of every pixel centre (rotate the image frame back by theta).
    dx, dy = xx + 0.5 - centre[0], yy + 0.5 - centre[1]
    u, v = cos * dx + sin * dy, -sin * dx + cos * dy
    a, b = half
    if label == 0:
        mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
        local = np.array([[0, -b], [a, 0], [0, b], [-a, 0]])
    elif label == 1:
        mask = (np.abs(u) <= a) & (np.abs(v) <= b)
        local = np.array([[-a, -b], [a, -b], [a, b], [-a, b]])
    else:
        # Apex (0, -b), base (+-a, b): inside when on the inner side of both slanted edges and above the base.
        mask = (v <= b) & (2 * b * np.abs(u) <= a * (v + b))
        local = np.array([[0, -b], [a, b], [-a, b], [0, b]])
    rot = np.array([[cos, -sin], [sin, cos]])
    landmarks = local @ rot.T + centre
    return mask, landmarks.astype(np.float32)


def _paint(rng: np.random.Generator, img: np.ndarray, mask: np.ndarray, yy, xx) -> None:
    """Paints `mask` in a colour that stands out from the background under it, with a random texture."""
    under = img[:, mask].mean(axis=1)
    for _ in range(16):
        colour = _random_colour(rng)
        if np.linalg.norm(colour - under) >= _MIN_CONTRAST:
            break
    else:
        colour = np.where(under > 0.5, 0.0, 1.0).astype(np.float32)
    kind = int(rng.integers(0, 4))
    ys, xs = yy[mask] + 0.5, xx[mask] + 0.5
    if kind == 0:          # solid
        tex = np.zeros_like(xs)
    elif kind == 1:        # stripes at a random angle and period
        ang, period = rng.uniform(0, np.pi), rng.uniform(3, 8)
        tex = (np.sin((np.cos(ang) * xs + np.sin(ang) * ys) * 2 * np.pi / period) > 0).astype(np.float32)
    elif kind == 2:        # checkerboard
        cell = rng.uniform(2, 6)
        tex = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    else:                  # speckle
        tex = rng.uniform(0, 1, size=xs.shape).astype(np.float32)
    # The texture varies brightness by up to +-amp around the colour, keeping the mean colour (and the contrast).
    amp = rng.uniform(0.05, 0.15)
    img[:, mask] = colour[:, None] + (amp * (2 * tex - 1))[None, :]


def make_scene(seed: int, size: int = 128, *, max_objects: int = 5) -> Scene:
    """The scene of `seed` (an int in [0, 2**64)): the same seed and arguments always give the same scene.

    size: height and width in pixels, an int >= MIN_SIZE. max_objects: at most this many objects (>= 1); the number
    is drawn uniformly from 1..max_objects, and an object is left out when it cannot be placed without hiding more
    than 40% of an earlier one (so a scene can hold fewer). See the module docstring for the conventions."""
    seed = _check_int("seed", seed, 0, 2 ** 64 - 1)
    size = _check_int("size", size, MIN_SIZE)
    max_objects = _check_int("max_objects", max_objects, 1)
    rng = np.random.default_rng(seed)
    yy, xx = (g.astype(np.float32) for g in np.mgrid[0:size, 0:size])
    img = _background(rng, size, yy, xx)
    _draw_distractors(rng, img, size, yy, xx)

    owner = np.full((size, size), -1, dtype=np.int64)     # index of the object visible at each pixel
    full_area: List[int] = []
    labels: List[int] = []
    landmarks: List[np.ndarray] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        label = int(rng.integers(0, NUM_CLASSES))
        # The first object always fits (nothing to hide); retrying only guards against a draw too small to see.
        for _ in range(_PLACEMENT_TRIES if labels else 1000):
            mask, points = _shape(rng, label, size, yy, xx)
            area = int(mask.sum())
            if area < 16:
                continue
            # Visible area each earlier object would keep with this one on top.
            kept = np.bincount(owner[~mask & (owner >= 0)], minlength=len(labels))
            if all(kept[i] >= _MIN_VISIBLE * full_area[i] for i in range(len(labels))):
                break
        else:
            continue
        _paint(rng, img, mask, yy, xx)
        owner[mask] = len(labels)
        full_area.append(area)
        labels.append(label)
        landmarks.append(points)

    # Global sensor noise over everything, objects included.
    img += rng.normal(0.0, 0.02, size=img.shape).astype(np.float32)
    np.clip(img, 0.0, 1.0, out=img)

    m = len(labels)
    if m == 0:
        raise RuntimeError(f"make_scene(seed={seed}, size={size}) placed no object (every draw was under 16 pixels)")
    masks = owner[None] == np.arange(m)[:, None, None]
    boxes = np.zeros((m, 4), dtype=np.float32)
    for i in range(m):
        rows, cols = np.any(masks[i], axis=1), np.any(masks[i], axis=0)
        r = np.flatnonzero(rows)
        c = np.flatnonzero(cols)
        boxes[i] = (c[0], r[0], c[-1] + 1, r[-1] + 1)
    label_arr = np.asarray(labels, dtype=np.int64)
    semantic = np.concatenate([[0], label_arr + 1])[owner + 1]
    return Scene(
        image=torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32)),
        boxes=torch.from_numpy(boxes),
        labels=torch.from_numpy(label_arr),
        masks=torch.from_numpy(masks),
        landmarks=torch.from_numpy(np.asarray(landmarks, dtype=np.float32).reshape(m, NUM_LANDMARKS, 2)),
        semantic=torch.from_numpy(semantic),
    )


def scene_seed(seed: int, stream: int, index: int) -> int:
    """The make_scene seed of item `index` of stream `stream` under base `seed`: a 64-bit hash of the three
    (numpy's SeedSequence), so streams and base seeds give unrelated scenes (equal seeds have probability ~2**-64)."""
    state = np.random.SeedSequence([seed, stream, index]).generate_state(2, dtype=np.uint32)
    return int(state[0]) | (int(state[1]) << 32)


class SceneDataset(Dataset):
    """`length` scenes; item i is make_scene(scene_seed(seed, stream, i), size, max_objects=max_objects), a Scene,
    generated when asked for (nothing is stored). `stream` separates data sets drawn from the same base seed
    (scene_split uses 0 for "train" and 1 for "val")."""

    def __init__(self, length: int, *, seed: int = 0, size: int = 128, max_objects: int = 5, stream: int = 0) -> None:
        self.length = _check_int("length", length, 0)
        self.seed = _check_int("seed", seed, 0, 2 ** 63 - 1)
        self.size = _check_int("size", size, MIN_SIZE)
        self.max_objects = _check_int("max_objects", max_objects, 1)
        self.stream = _check_int("stream", stream, 0, 2 ** 63 - 1)

    def __len__(self) -> int:
        return self.length

    def scene_seed(self, index: int) -> int:
        """The make_scene seed of item `index`."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        i = int(index)
        if i < 0:
            i += self.length
        if not 0 <= i < self.length:
            raise IndexError(f"index {index} out of range for a SceneDataset of length {self.length}")
        return scene_seed(self.seed, self.stream, i)

    def __getitem__(self, index: int) -> Scene:
        return make_scene(self.scene_seed(index), self.size, max_objects=self.max_objects)

    def __repr__(self) -> str:
        return (f"SceneDataset(length={self.length}, seed={self.seed}, size={self.size}, "
                f"max_objects={self.max_objects}, stream={self.stream})")


def scene_split(split: str, length: int, *, seed: int = 0, size: int = 128, max_objects: int = 5) -> SceneDataset:
    """The "train" (stream 0) or "val" (stream 1) SceneDataset of base `seed`: the two never share a scene seed."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return SceneDataset(length, seed=seed, size=size, max_objects=max_objects, stream=SPLITS.index(split))


def collate_scenes(batch: Sequence[Scene]) -> SceneBatch:
    """DataLoader collate_fn for Scenes: images stacked (all scenes must have the same size), the rest as lists."""
    if not batch:
        raise ValueError("batch must hold at least one Scene, got an empty sequence")
    for s in batch:
        if not isinstance(s, Scene):
            raise TypeError(f"batch must hold Scene objects, got {type(s).__name__}")
    shapes = {tuple(s.image.shape) for s in batch}
    if len(shapes) != 1:
        raise ValueError(f"all scenes of a batch must have the same image shape, got {sorted(shapes)}")
    return SceneBatch(image=torch.stack([s.image for s in batch]), boxes=[s.boxes for s in batch],
                      labels=[s.labels for s in batch], masks=[s.masks for s in batch],
                      landmarks=[s.landmarks for s in batch], semantic=[s.semantic for s in batch])
