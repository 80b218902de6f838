"""Landmarks of the generated scenes' objects (cnnkernels.train.scenes) with LandmarkNet: the `landmarks` command of
`python -m cnnkernels.train`.

Each object is cut out of its scene by its box, padded by `pad` of the box's width and height on every side, and
resampled to crop_size x crop_size (torchvision.ops.roi_align, bilinear, averaging over each output pixel's area).
LandmarkNet regresses the object's NUM_LANDMARKS points in that crop's normalised coordinates: (0, 0) the crop box's
top-left corner, (1, 1) its bottom-right, so a point p in scene pixels is (p - xy1) / (xy2 - xy1) (to_crop) and back
(from_crop). The network sees the crop only (not the class): the k-th point's meaning depends on the shape, which it
has to recognise. Training crops can be jittered (each side of the crop box moved by up to `jitter` of the box
size, drawn once per object from the seed) so that the network does not rely on a perfectly centred box, as a
detector's boxes would not be. Loss: smooth L1 on the normalised coordinates; Adam, cosine-annealed.

Errors are reported in scene pixels (distance between predicted and true point) and as a fraction of the diagonal of
the object's box (its visible extent), averaged over all validation points, next to the error of the best constant
prediction (the training points' mean position in the crop) for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import roi_align
from tqdm.auto import tqdm

import cnnkernels
from cnnkernels._argtypes import checked, fraction, nonnegative_int, positive_float, positive_int
from cnnkernels.models import LandmarkNet
from cnnkernels.nn import fusion
from cnnkernels.train.loop import fit
from cnnkernels.train.scenes import CLASSES, NUM_LANDMARKS, SPLITS, scene_size_arg, scene_split

__all__ = ["crop_boxes", "to_crop", "from_crop", "cut_crops", "LandmarkCrops", "landmark_loss", "predict_landmarks",
           "landmark_errors", "add_landmarks_arguments", "run_landmarks"]

# Below this a crop box side is degenerate (a zero-width box has no normalised coordinates).
_MIN_SIDE = 1e-3
# Smooth L1's transition, in crop units: about a pixel of a 48-pixel crop, so the loss is L1-like where the errors
# are larger than the labels' own precision.
_SMOOTH_L1_BETA = 0.02

Log = Callable[[str], None]


def _check_boxes(name: str, boxes: object) -> Tensor:
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4 or not boxes.is_floating_point():
        got = f"shape {tuple(boxes.shape)}, {boxes.dtype}" if isinstance(boxes, Tensor) else type(boxes).__name__
        raise ValueError(f"`{name}` must be a floating-point (M, 4) xyxy tensor, got {got}")
    return boxes


def crop_boxes(boxes: Tensor, pad: float = 0.15) -> Tensor:
    """The crop box of each xyxy box (M, 4): every side moved out by `pad` (>= 0) times the box's width (left and
    right) or height (top and bottom)."""
    _check_boxes("boxes", boxes)
    if isinstance(pad, bool) or not isinstance(pad, (int, float)) or not pad >= 0:
        raise ValueError(f"`pad` must be a number >= 0, got {pad!r}")
    wh = boxes[:, 2:] - boxes[:, :2]
    return torch.cat([boxes[:, :2] - pad * wh, boxes[:, 2:] + pad * wh], dim=1)


def _check_points(points: object, crops: Tensor) -> Tensor:
    _check_boxes("crops", crops)
    if not isinstance(points, Tensor) or points.dim() != 3 or points.shape[2] != 2 \
            or points.shape[0] != crops.shape[0]:
        got = tuple(points.shape) if isinstance(points, Tensor) else type(points).__name__
        raise ValueError(f"`points` must be an (M, K, 2) tensor with M = {crops.shape[0]} (one row per crop), "
                         f"got {got}")
    side = (crops[:, 2:] - crops[:, :2]).min() if crops.shape[0] else None
    if side is not None and not side >= _MIN_SIDE:
        raise ValueError(f"`crops` must have positive widths and heights (>= {_MIN_SIDE}), got a side of "
                         f"{float(side):g}")
    return points


def to_crop(points: Tensor, crops: Tensor) -> Tensor:
    """Scene pixel positions (M, K, 2) xy of the objects of `crops` (M, 4) xyxy -> the crops' normalised
    coordinates: (0, 0) the crop's top-left corner, (1, 1) its bottom-right (from_crop's inverse)."""
    _check_points(points, crops)
    return (points - crops[:, None, :2]) / (crops[:, None, 2:] - crops[:, None, :2])


def from_crop(points: Tensor, crops: Tensor) -> Tensor:
    """Normalised crop coordinates (M, K, 2) -> scene pixel positions (to_crop's inverse)."""
    _check_points(points, crops)
    return crops[:, None, :2] + points * (crops[:, None, 2:] - crops[:, None, :2])


def cut_crops(images: Tensor, crops: Union[Tensor, Sequence[Tensor]], size: int) -> Tensor:
    """The regions `crops` of `images` (N, C, H, W), each resampled to size x size: `crops` is one (M_n, 4) xyxy
    tensor per image (or one tensor for a single image); returns (sum M_n, C, size, size) in that order. Output pixel
    (i, j) averages the crop over its own area, [x1 + j w / size, x1 + (j + 1) w / size) and likewise in y, in the
    scenes' convention (pixel c covers [c, c + 1)); parts outside the image read as 0."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        got = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"`images` must be an (N, C, H, W) tensor, got {got}")
    boxes = [crops] if isinstance(crops, Tensor) else list(crops)
    if len(boxes) != images.shape[0]:
        raise ValueError(f"`crops` must hold one box tensor per image ({images.shape[0]}), got {len(boxes)}")
    for b in boxes:
        _check_boxes("crops", b)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"`size` must be a positive int, got {size!r}")
    # aligned=True: box coordinates are continuous positions with pixel centres at c + 0.5, the scenes' convention.
    return roi_align(images, [b.to(images.dtype) for b in boxes], output_size=size, spatial_scale=1.0,
                     sampling_ratio=-1, aligned=True)


class LandmarkCrops(Dataset):
    """(crop, target) pairs of every object of `scene_split(split, length, seed=seed, size=size,
    max_objects=max_objects)`: crop float32 (3, crop_size, crop_size), target float32 (NUM_LANDMARKS, 2) in the crop's
    normalised coordinates. All scenes are drawn at construction and the crops kept; also kept per object: `boxes`
    (its box in the scene), `crop_boxes`, `landmarks` (scene pixels), `labels` and `scene_index`. jitter: each side of a
    crop box moved by a uniform draw in [-jitter, jitter] times the box's width or height (a generator seeded with
    `seed` and the split), after padding by `pad`."""

    def __init__(self, split: str, length: int, *, seed: int = 0, size: int = 96, max_objects: int = 5,
                 crop_size: int = 48, pad: float = 0.15, jitter: float = 0.0, progress: bool = False) -> None:
        if isinstance(jitter, bool) or not isinstance(jitter, (int, float)) or not 0 <= jitter < 0.5:
            raise ValueError(f"LandmarkCrops: `jitter` must be a number in [0, 0.5), got {jitter!r}")
        scenes = scene_split(split, length, seed=seed, size=size, max_objects=max_objects)
        rng = torch.Generator().manual_seed(seed * len(SPLITS) + SPLITS.index(split))
        crops, boxes, cboxes, points, labels, index = [], [], [], [], [], []
        for i in tqdm(range(len(scenes)), desc=f"drawing {split} scenes", disable=not progress, leave=False):
            s = scenes[i]
            cb = crop_boxes(s.boxes, pad)
            if jitter:
                wh = (s.boxes[:, 2:] - s.boxes[:, :2]).repeat(1, 2)
                cb = cb + (torch.rand(cb.shape, generator=rng) * 2 - 1) * jitter * wh
            crops.append(cut_crops(s.image[None], cb, crop_size))
            boxes.append(s.boxes)
            cboxes.append(cb)
            points.append(s.landmarks)
            labels.append(s.labels)
            index.append(torch.full((s.labels.shape[0],), i, dtype=torch.int64))
        self.split, self.crop_size = split, crop_size
        self.crops = torch.cat(crops) if crops else torch.empty(0, 3, crop_size, crop_size)
        self.boxes = torch.cat(boxes) if boxes else torch.empty(0, 4)
        self.crop_boxes = torch.cat(cboxes) if cboxes else torch.empty(0, 4)
        self.landmarks = torch.cat(points) if points else torch.empty(0, NUM_LANDMARKS, 2)
        self.labels = torch.cat(labels) if labels else torch.empty(0, dtype=torch.int64)
        self.scene_index = torch.cat(index) if index else torch.empty(0, dtype=torch.int64)
        self.targets = to_crop(self.landmarks, self.crop_boxes)

    def __len__(self) -> int:
        return self.crops.shape[0]

    def __getitem__(self, index: int):
        return self.crops[index], self.targets[index]


def landmark_loss(pred: Tensor, target: Tensor) -> Tensor:
    """The training loss: smooth L1 between normalised points (N, K, 2), averaged over coordinates."""
    return F.smooth_l1_loss(pred, target, beta=_SMOOTH_L1_BETA)


@torch.inference_mode()
def predict_landmarks(model: nn.Module, crops: Tensor, *, batch_size: int = 256) -> Tensor:
    """The model's normalised points (M, K, 2) for `crops` (M, C, S, S), in batches (the model in eval mode)."""
    if crops.shape[0] == 0:
        raise ValueError("`crops` must hold at least one crop")
    return torch.cat([model(crops[i:i + batch_size]) for i in range(0, crops.shape[0], batch_size)])


def landmark_errors(pred: Tensor, data: LandmarkCrops) -> Dict[str, Any]:
    """Errors of normalised predictions `pred` (M, K, 2) for `data`'s objects: `pixels` (M, K) distances in scene
    pixels; `diagonal` (M, K) the same over the diagonal of each object's box; their means `mean_pixels`,
    `mean_diagonal`, and per class (`per_class`: name -> (mean pixels, mean fraction, points))."""
    if pred.shape != data.targets.shape:
        raise ValueError(f"`pred` must have the targets' shape {tuple(data.targets.shape)}, got {tuple(pred.shape)}")
    dist = (from_crop(pred.float(), data.crop_boxes) - data.landmarks).norm(dim=2)
    diag = (data.boxes[:, 2:] - data.boxes[:, :2]).norm(dim=1)
    frac = dist / diag[:, None]
    per_class = {}
    for c, name in enumerate(CLASSES):
        sel = data.labels == c
        if sel.any():
            per_class[name] = (float(dist[sel].mean()), float(frac[sel].mean()), int(dist[sel].numel()))
    return {"pixels": dist, "diagonal": frac, "mean_pixels": float(dist.mean()), "mean_diagonal": float(frac.mean()),
            "per_class": per_class}


_jitter = checked(float, lambda v: 0 <= v < 0.5, "a number in [0, 0.5)")


def _crop_size(text: str) -> int:
    v = positive_int(text)
    if v % 8:
        raise argparse.ArgumentTypeError(f"expected a positive multiple of 8 (LandmarkNet), got {v}")
    return v


def add_landmarks_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `python -m cnnkernels.train landmarks`."""
    p.add_argument("--epochs", type=positive_int, default=8)
    p.add_argument("--train-scenes", type=positive_int, default=2000, help="training scenes (stream 'train')")
    p.add_argument("--val-scenes", type=positive_int, default=200, help="validation scenes (stream 'val')")
    p.add_argument("--size", type=scene_size_arg, default=96, help="scene height and width in pixels")
    p.add_argument("--max-objects", type=positive_int, default=5, help="at most this many objects per scene")
    p.add_argument("--crop-size", type=_crop_size, default=48, help="side of the crops the network sees")
    p.add_argument("--pad", type=fraction, default=0.15, help="crop padding, a fraction of the box per side")
    p.add_argument("--jitter", type=_jitter, default=0.05,
                   help="random shift of each training crop side, a fraction of the box (validation: none)")
    p.add_argument("--width", type=positive_int, default=16, help="channels of LandmarkNet's first stage")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate, cosine-annealed to 0")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the scenes, jitter, weights, shuffling")
    p.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--out", default=None, help="directory for metrics.json")
    p.add_argument("--expect-error", type=positive_float, default=None,
                   help="exit with status 1 when the mean validation error, as a fraction of the box diagonal, "
                        "ends above this")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_landmarks(args: argparse.Namespace) -> int:
    """The `landmarks` command: trains LandmarkNet on the objects of generated training scenes and reports the mean
    point error on the validation scenes' objects (scene pixels and fraction of the box diagonal, per class too) of
    cnnkernels.optimize(model), with the eager model's and the constant baseline's, and the wall times; optionally
    OUT/metrics.json. Exit status 1 when the error is above --expect-error."""
    log: Log = lambda line: print(line, flush=True)  # noqa: E731
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    t0 = time.perf_counter()
    common = dict(seed=args.seed, size=args.size, max_objects=args.max_objects, crop_size=args.crop_size,
                  pad=args.pad, progress=progress)
    train_set = LandmarkCrops("train", args.train_scenes, jitter=args.jitter, **common)
    val_set = LandmarkCrops("val", args.val_scenes, **common)
    data_time = time.perf_counter() - t0
    diag = (val_set.boxes[:, 2:] - val_set.boxes[:, :2]).norm(dim=1)
    log(f"objects: {len(train_set)} train ({args.train_scenes} scenes) / {len(val_set)} val ({args.val_scenes} "
        f"scenes) at {args.size}x{args.size}, crops {args.crop_size}x{args.crop_size} padded {args.pad:g}, train "
        f"jitter {args.jitter:g}; drawn in {data_time:.1f} s; validation box diagonals {float(diag.min()):.1f}-"
        f"{float(diag.max()):.1f} px (median {float(diag.median()):.1f})")

    torch.manual_seed(args.seed)
    model = LandmarkNet(num_points=NUM_LANDMARKS, crop_size=args.crop_size, width=args.width)
    n_params = sum(p.numel() for p in model.parameters())
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True,
                        drop_last=len(train_set) > args.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    log(f"LandmarkNet width {args.width}: {n_params:,} parameters; {args.epochs} epochs, batch {args.batch_size}, "
        f"Adam lr {args.lr:g} (cosine), smooth L1, {torch.get_num_threads()} threads")

    t1 = time.perf_counter()

    def report(rec: Dict[str, Any]) -> None:
        log(f"epoch {rec['epoch']:3d}/{args.epochs} loss {rec['loss']:.5f} ({time.perf_counter() - t1:.1f} s)")

    history = fit(model, loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler,
                  loss_fn=landmark_loss, progress=progress, on_epoch_end=report, seed=args.seed, desc="landmarks")
    train_time = time.perf_counter() - t1

    model.eval()
    t2 = time.perf_counter()
    fused = cnnkernels.optimize(model)
    pred = predict_landmarks(fused, val_set.crops)
    infer_time = time.perf_counter() - t2
    with fusion(False):
        eager = predict_landmarks(model, val_set.crops)
    errors = landmark_errors(pred, val_set)
    eager_errors = landmark_errors(eager, val_set)
    constant = train_set.targets.mean(dim=0, keepdim=True).expand_as(val_set.targets)
    baseline = landmark_errors(constant, val_set)
    eager_gap = float((from_crop(pred, val_set.crop_boxes) - from_crop(eager, val_set.crop_boxes)).abs().max())
    total = time.perf_counter() - t0
    points = errors["pixels"].numel()
    log(f"validation mean point error of cnnkernels.optimize(model) over {len(val_set)} objects ({points} points): "
        f"{errors['mean_pixels']:.2f} px, {errors['mean_diagonal']:.4f} of the box diagonal")
    for name, (px, frac, n) in errors["per_class"].items():
        log(f"  {name:<10} {px:6.2f} px  {frac:.4f}  ({n} points)")
    log(f"constant prediction (mean training position in the crop): {baseline['mean_pixels']:.2f} px, "
        f"{baseline['mean_diagonal']:.4f}; eager model: {eager_errors['mean_pixels']:.2f} px (max difference from "
        f"the optimized model {eager_gap:.1e} px)")
    log(f"wall time: {data_time:.1f} s drawing scenes, {train_time:.1f} s training, {infer_time:.2f} s optimize() + "
        f"validation inference, {total:.1f} s in all")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        metrics = {"mean_pixels": errors["mean_pixels"], "mean_diagonal": errors["mean_diagonal"],
                   "per_class": {k: {"pixels": v[0], "diagonal": v[1], "points": v[2]}
                                 for k, v in errors["per_class"].items()},
                   "eager_mean_pixels": eager_errors["mean_pixels"], "eager_max_difference_pixels": eager_gap,
                   "constant_mean_pixels": baseline["mean_pixels"],
                   "constant_mean_diagonal": baseline["mean_diagonal"], "train_objects": len(train_set),
                   "val_objects": len(val_set), "parameters": n_params, "data_seconds": data_time,
                   "train_seconds": train_time, "total_seconds": total, "threads": torch.get_num_threads(),
                   "history": history, "args": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    if args.expect_error is not None and errors["mean_diagonal"] > args.expect_error:
        print(f"error: validation mean point error {errors['mean_diagonal']:.4f} of the box diagonal is above "
              f"--expect-error {args.expect_error}", file=sys.stderr)
        return 1
    return 0
