"""Semantic segmentation of the generated scenes (cnnkernels.train.scenes) with U-Net: the `segment` command of
`python -m cnnkernels.train`.

Every pixel is classified as background or as one of the scene classes (SEGMENT_CLASSES; a scene's `semantic` map
holds the targets). The training and validation scenes come from scene_split's disjoint "train" and "val" streams;
each set is drawn once and kept in memory, so epochs cost only the network. Training: cross entropy over all pixels,
Adam with the learning rate cosine-annealed to 0, random horizontal flips of image and map together
(torchvision.transforms.v2), fit(seed=...) for reproducible runs. Evaluation runs the trained network through
cnnkernels.optimize() (fused ops, BatchNorm folded) and, for comparison, eagerly (cnnkernels.nn.fusion(False)).

The IoU reported (torchmetrics' MulticlassJaccardIndex, average=None) is per class over all validation pixels
together: IoU_c = |pred == c and target == c| / |pred == c or target == c|, counted over the whole set; the mean IoU
is the unweighted mean of the per-class IoUs, background included.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics.classification import MulticlassJaccardIndex
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.utils import make_grid, save_image
from tqdm.auto import tqdm

import cnnkernels
from cnnkernels._argtypes import fraction, nonnegative_int, positive_float, positive_int
from cnnkernels.models import UNet, unet
from cnnkernels.nn import fusion
from cnnkernels.train.loop import fit
from cnnkernels.train.scenes import CLASSES, scene_size_arg, scene_split

__all__ = ["SEGMENT_CLASSES", "NUM_SEGMENT_CLASSES", "PALETTE", "SemanticScenes", "segmentation_augmentation",
           "predict_semantic", "segmentation_iou", "colorize", "save_segmentation_picture", "add_segment_arguments",
           "run_segment"]

SEGMENT_CLASSES: Tuple[str, ...] = ("background",) + tuple(CLASSES)
NUM_SEGMENT_CLASSES = len(SEGMENT_CLASSES)
# The colour of each segment class in colorize()'s pictures, in SEGMENT_CLASSES' order.
_COLOURS = (("dark grey", (0.15, 0.15, 0.15)), ("red", (0.90, 0.20, 0.20)), ("green", (0.20, 0.80, 0.25)),
            ("blue", (0.25, 0.45, 0.95)), ("yellow", (0.95, 0.85, 0.20)), ("magenta", (0.80, 0.30, 0.85)),
            ("cyan", (0.20, 0.85, 0.85)))[:NUM_SEGMENT_CLASSES]
PALETTE = torch.tensor([rgb for _, rgb in _COLOURS])

class SemanticScenes(Dataset):
    """(image, semantic) pairs of `scene_split(split, length, seed=seed, size=size, max_objects=max_objects)`:
    image float32 (3, size, size) in [0, 1], semantic int64 (size, size) with 0 for background and class + 1 on
    objects. All scenes are drawn at construction (a few ms each) and kept (`images`, `targets`); `transform`, if
    given, is applied to each item as transform(tv_tensors.Image, tv_tensors.Mask) (the v2 convention, so geometric
    transforms move both alike) and plain tensors are returned."""

    def __init__(self, split: str, length: int, *, seed: int = 0, size: int = 64, max_objects: int = 5,
                 transform: Optional[Callable[..., Any]] = None, progress: bool = False) -> None:
        if transform is not None and not callable(transform):
            raise TypeError(f"SemanticScenes: `transform` must be None or callable, got {type(transform).__name__}")
        scenes = scene_split(split, length, seed=seed, size=size, max_objects=max_objects)
        self.split, self.size, self.transform = split, size, transform
        self.images = torch.empty(len(scenes), 3, size, size)
        # uint8 holds every class index (NUM_SEGMENT_CLASSES is small) at an eighth of int64's memory.
        self.targets = torch.empty(len(scenes), size, size, dtype=torch.uint8)
        for i in tqdm(range(len(scenes)), desc=f"drawing {split} scenes", disable=not progress, leave=False):
            s = scenes[i]
            self.images[i] = s.image
            self.targets[i] = s.semantic
        if len(scenes) and int(self.targets.max()) >= NUM_SEGMENT_CLASSES:
            raise RuntimeError(f"SemanticScenes: the scenes hold class index {int(self.targets.max())}, but "
                               f"SEGMENT_CLASSES has only {NUM_SEGMENT_CLASSES} classes")

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        image, target = self.images[index], self.targets[index].long()
        if self.transform is not None:
            image, target = self.transform(tv_tensors.Image(image), tv_tensors.Mask(target))
            image, target = image.as_subclass(Tensor), target.as_subclass(Tensor)
        return image, target


def segmentation_augmentation() -> v2.Transform:
    """The training augmentation: a random horizontal flip of image and map together. (Vertical flips and large
    rotations would make scenes the generator never draws: triangles stand apex up, rotations stay within
    scenes.MAX_ROTATION_DEGREES.)"""
    return v2.RandomHorizontalFlip(p=0.5)


@torch.inference_mode()
def predict_semantic(model: nn.Module, images: Tensor, *, batch_size: int = 32) -> Tensor:
    """Per-pixel class indices (N, H, W) int64: argmax over the classes of model(images) (N, C, H, W), computed in
    batches of `batch_size` under inference_mode. The model's mode is left as it is (call eval() first)."""
    if not isinstance(images, Tensor) or images.dim() != 4:
        raise ValueError(f"predict_semantic: `images` must be a (N, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"predict_semantic: `batch_size` must be an int >= 1, got {batch_size!r}")
    return torch.cat([model(images[i:i + batch_size]).argmax(1) for i in range(0, images.shape[0], batch_size)])


def segmentation_iou(pred: Tensor, target: Tensor,
                     num_classes: int = NUM_SEGMENT_CLASSES) -> Tuple[List[float], float]:
    """(per-class IoU list, mean IoU) of class maps `pred` and `target` (same shape, int), with torchmetrics'
    MulticlassJaccardIndex(average=None): each class's intersection and union counted over all pixels of all maps
    together; the mean is the unweighted mean over the `num_classes` classes, background (class 0) included."""
    if not isinstance(pred, Tensor) or not isinstance(target, Tensor) or pred.shape != target.shape:
        raise ValueError(f"segmentation_iou: `pred` and `target` must be tensors of the same shape, got "
                         f"{getattr(pred, 'shape', type(pred).__name__)} and "
                         f"{getattr(target, 'shape', type(target).__name__)}")
    metric = MulticlassJaccardIndex(num_classes=num_classes, average=None)
    per_class = metric(pred.reshape(-1).long(), target.reshape(-1).long())
    return [float(v) for v in per_class], float(per_class.mean())


def colorize(semantic: Tensor) -> Tensor:
    """A (H, W) or (N, H, W) class map as RGB float images (3, H, W) / (N, 3, H, W) in PALETTE's colours."""
    if not isinstance(semantic, Tensor) or semantic.dim() not in (2, 3) or semantic.is_floating_point():
        raise ValueError(f"colorize: `semantic` must be an integer tensor of shape (H, W) or (N, H, W), got "
                         f"{getattr(semantic, 'dtype', type(semantic).__name__)} "
                         f"{tuple(semantic.shape) if isinstance(semantic, Tensor) else ''}")
    if semantic.numel() and (int(semantic.min()) < 0 or int(semantic.max()) >= PALETTE.shape[0]):
        raise ValueError(f"colorize: class indices must be in [0, {PALETTE.shape[0]}), got "
                         f"[{int(semantic.min())}, {int(semantic.max())}]")
    return PALETTE[semantic.long()].movedim(-1, -3)


def save_segmentation_picture(path: Union[str, "os.PathLike[str]"], images: Tensor, targets: Tensor,
                              predictions: Tensor, *, scale: int = 2) -> Tensor:
    """Saves a PNG to `path` with one row per scene: input | ground truth | prediction (class maps in PALETTE's
    colours), each tile enlarged `scale` times (nearest neighbour). Returns the grid, float (3, H', W') in [0, 1]."""
    if not isinstance(images, Tensor) or images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"save_segmentation_picture: `images` must be (N, 3, H, W), got "
                         f"{tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__}")
    n, _, h, w = images.shape
    for name, t in (("targets", targets), ("predictions", predictions)):
        if not isinstance(t, Tensor) or tuple(t.shape) != (n, h, w):
            raise ValueError(f"save_segmentation_picture: `{name}` must have shape {(n, h, w)} to match `images`, "
                             f"got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"save_segmentation_picture: `scale` must be an int >= 1, got {scale!r}")
    tiles = torch.stack([images.float().clamp(0, 1), colorize(targets), colorize(predictions)], 1).flatten(0, 1)
    if scale > 1:
        tiles = tiles.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    grid = make_grid(tiles, nrow=3, padding=2, pad_value=1.0)
    path = os.fspath(path)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    save_image(grid, path, format="PNG")
    return grid


# --- the `segment` command --------------------------------------------------------------------------------------------

def add_segment_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `python -m cnnkernels.train segment`."""
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--train-scenes", type=positive_int, default=2000, help="training scenes (stream 'train')")
    p.add_argument("--val-scenes", type=positive_int, default=200, help="validation scenes (stream 'val')")
    p.add_argument("--size", type=scene_size_arg, default=64,
                   help="scene height and width in pixels; must be divisible by 2**depth")
    p.add_argument("--max-objects", type=positive_int, default=5, help="at most this many objects per scene")
    p.add_argument("--depth", type=positive_int, default=3, help="U-Net's number of pooling steps")
    p.add_argument("--base-width", type=positive_int, default=16, help="channels of the first level (doubling down)")
    p.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=True,
                   help="BatchNorm after every 3x3 conv (folded into the convs for inference)")
    p.add_argument("--batch-size", type=positive_int, default=8)
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate, cosine-annealed to 0")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the scenes, initial weights, shuffling and flips")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flips of the training scenes")
    p.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--picture", default=None, metavar="PATH",
                   help="save input | ground truth | prediction of the first --picture-scenes validation scenes as "
                        "one PNG")
    p.add_argument("--picture-scenes", type=positive_int, default=6)
    p.add_argument("--out", default=None, help="directory for metrics.json")
    p.add_argument("--expect-miou", type=fraction, default=None,
                   help="exit with status 1 when the validation mean IoU ends below this")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _iou_lines(per_class: Sequence[float], mean: float) -> List[str]:
    width = max(len(c) for c in SEGMENT_CLASSES)
    lines = [f"  {c:<{width}}  {v:.4f}" for c, v in zip(SEGMENT_CLASSES, per_class)]
    return lines + [f"  {'mean':<{width}}  {mean:.4f}  (unweighted over the {len(per_class)} classes, background "
                    f"included)"]


def run_segment(args: argparse.Namespace) -> int:
    """The `segment` command: trains U-Net on generated scenes, reports the per-class and mean IoU on the validation
    scenes of cnnkernels.optimize(model) (and of the eager model, with the pixels where the two disagree) and the
    wall times; optionally saves the picture and OUT/metrics.json. Exit status 1 when the mean IoU is below
    --expect-miou."""
    def log(line: str) -> None:
        print(line, flush=True)

    levels = 2 ** args.depth
    if args.size % levels:
        args._parser.error(f"--size {args.size} must be divisible by 2**depth = {levels} (--depth {args.depth})")
    torch.set_num_threads(args.threads)
    progress = not args.no_progress
    t0 = time.perf_counter()
    train_set = SemanticScenes("train", args.train_scenes, seed=args.seed, size=args.size,
                               max_objects=args.max_objects,
                               transform=segmentation_augmentation() if args.augment else None, progress=progress)
    val_set = SemanticScenes("val", args.val_scenes, seed=args.seed, size=args.size, max_objects=args.max_objects,
                             progress=progress)
    data_time = time.perf_counter() - t0
    pixels = val_set.targets.numel()
    share = torch.bincount(val_set.targets.flatten().long(), minlength=NUM_SEGMENT_CLASSES).double() / pixels
    log(f"scenes: {len(train_set)} train / {len(val_set)} val at {args.size}x{args.size}, drawn in {data_time:.1f} s; "
        f"validation pixels per class: " + ", ".join(f"{c} {s:.1%}" for c, s in zip(SEGMENT_CLASSES, share.tolist())))

    torch.manual_seed(args.seed)
    model: UNet = unet(in_channels=3, num_classes=NUM_SEGMENT_CLASSES, depth=args.depth, base_width=args.base_width,
                       batch_norm=args.batch_norm)
    n_params = sum(p.numel() for p in model.parameters())
    # channels_last weights make the convolutions (and so the activations after the first one) channels_last, which
    # oneDNN trains faster here than NCHW.
    model = model.to(memory_format=torch.channels_last)
    loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, drop_last=len(train_set) >
                        args.batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    log(f"U-Net depth {args.depth}, base width {args.base_width}, batch norm {'on' if args.batch_norm else 'off'}: "
        f"{n_params:,} parameters; {args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g} (cosine), "
        f"flips {'on' if args.augment else 'off'}, {torch.get_num_threads()} threads")

    t1 = time.perf_counter()

    def report(rec: Dict[str, Any]) -> None:
        log(f"epoch {rec['epoch']:3d}/{args.epochs} loss {rec['loss']:.4f} ({time.perf_counter() - t1:.1f} s)")

    history = fit(model, loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler, progress=progress,
                  on_epoch_end=report, seed=args.seed, desc="segment")
    # fit's "accuracy" counts classification logits only: 0 for per-pixel outputs, so it is left out.
    history = [{k: v for k, v in rec.items() if k != "accuracy"} for rec in history]
    train_time = time.perf_counter() - t1

    model.eval()
    t2 = time.perf_counter()
    fused_model = cnnkernels.optimize(model)
    fused_pred = predict_semantic(fused_model, val_set.images)
    fused_time = time.perf_counter() - t2
    with fusion(False):
        eager_pred = predict_semantic(model, val_set.images)
    targets = val_set.targets.long()
    per_class, miou = segmentation_iou(fused_pred, targets)
    _, eager_miou = segmentation_iou(eager_pred, targets)
    differ = int((fused_pred != eager_pred).sum())
    pixel_acc = float((fused_pred == targets).double().mean())
    total = time.perf_counter() - t0
    log(f"validation IoU of cnnkernels.optimize(model) over {len(val_set)} scenes ({pixels:,} pixels):")
    for line in _iou_lines(per_class, miou):
        log(line)
    log(f"pixel accuracy {pixel_acc:.4f}; eager model: mean IoU {eager_miou:.4f}, {differ} of {pixels:,} pixels "
        f"predicted differently from the optimized model")
    log(f"wall time: {train_time:.1f} s training, {fused_time:.2f} s optimize() + validation inference, "
        f"{total:.1f} s in all")
    if args.picture:
        k = min(args.picture_scenes, len(val_set))
        save_segmentation_picture(args.picture, val_set.images[:k], targets[:k], fused_pred[:k])
        log(f"picture: {args.picture} (rows: validation scenes 0-{k - 1}; columns: input, ground truth, "
            f"prediction; colours: " + ", ".join(f"{c} {name}" for c, (name, _) in zip(SEGMENT_CLASSES, _COLOURS))
            + ")")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        metrics = {"per_class_iou": dict(zip(SEGMENT_CLASSES, per_class)), "mean_iou": miou,
                   "eager_mean_iou": eager_miou, "pixels_differ": differ, "pixel_accuracy": pixel_acc,
                   "parameters": n_params, "data_seconds": data_time, "train_seconds": train_time,
                   "total_seconds": total, "threads": torch.get_num_threads(), "history": history,
                   "args": {k: v for k, v in vars(args).items() if not k.startswith("_")}}
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    if args.expect_miou is not None and miou < args.expect_miou:
        print(f"error: validation mean IoU {miou:.4f} is below --expect-miou {args.expect_miou}", file=sys.stderr)
        return 1
    return 0
