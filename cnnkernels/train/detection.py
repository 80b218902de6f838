"""Training and evaluating the YOLO-style detector (cnnkernels.models.yolo) on generated scenes
(cnnkernels.train.scenes): anchors, targets, loss, evaluation, and the `detect` command of python -m cnnkernels.train.

- Anchors: `kmeans_anchors(wh, k, seed=)` clusters box (width, height) pairs with the distance 1 - IoU of two boxes
  aligned at a corner (`wh_iou`), YOLOv2's choice: plain Euclidean k-means would let large boxes dominate.
- Targets: `encode_targets` gives each ground-truth box to the grid cell holding its centre and, there, to the anchor
  whose (w, h) IoU with it is highest (the next best free anchor of that cell when two boxes claim the same one). The
  slot's target is (tx, ty) = the centre's offset in the cell, in [0, 1) (what sigmoid(tx) decodes to), (tw, th) =
  log(w / anchor_w), log(h / anchor_h), objectness 1 and the class; every other slot has objectness 0. It is the
  inverse of cnnkernels.yolo_decode: `targets_to_head` turns targets into logits that decode back to the boxes.
- Loss (`YOLOLoss`): MSE on sigmoid(tx, ty) and on (tw, th) at object slots (weight `coord_weight`), BCE-with-logits
  on objectness everywhere (no-object slots weighted `noobj_weight`; like YOLOv2, a no-object slot whose predicted
  box overlaps a ground-truth box by IoU > `ignore_iou` is not pushed to 0), cross-entropy on the classes at object
  slots; summed and divided by the batch size.
- Decoding and NMS are cnnkernels.yolo_decode / cnnkernels.yolo_postprocess (cnnkernels/ops/yolo_postprocess.py), not
  redefined here; `evaluate_detector` scores with torchmetrics' MeanAveragePrecision at IoU 0.5.
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision import tv_tensors
from torchvision.ops import box_iou
from torchvision.transforms import v2
from torchvision.utils import draw_bounding_boxes, save_image
from tqdm.auto import tqdm

from cnnkernels._argtypes import fraction, nonnegative_int, positive_float, positive_int
from cnnkernels.models.yolo import YOLODetector
from cnnkernels.ops.yolo_postprocess import yolo_decode, yolo_postprocess
from cnnkernels.train.loop import fit
from cnnkernels.train.scenes import CLASSES, NUM_CLASSES, Scene, collate_scenes, scene_split

__all__ = ["TARGET_CHANNELS", "wh_iou", "kmeans_anchors", "box_sizes", "encode_targets", "targets_to_head",
           "YOLOLoss", "CachedScene", "cache_scenes", "DetectionScenes", "detection_augmentation", "detect",
           "evaluate_detector", "draw_detections", "EpochBlockSampler", "train_detector", "add_detect_arguments",
           "run_detect"]

# Per anchor slot: (tx, ty, tw, th, objectness, class); class is -1 where objectness is 0.
TARGET_CHANNELS = 6
# Offsets of exactly 0 have no finite logit; targets_to_head clamps them this far inside (0, 1).
_OFFSET_EPS = 1e-6


def _check_wh(wh, name: str) -> Tensor:
    if not isinstance(wh, Tensor):
        raise TypeError(f"{name} must be a tensor of (width, height) pairs, got {type(wh).__name__}")
    if wh.dim() != 2 or wh.shape[1] != 2:
        raise ValueError(f"{name} must have shape (M, 2), got {tuple(wh.shape)}")
    if not bool(torch.isfinite(wh).all()) or not bool((wh > 0).all()):
        raise ValueError(f"{name} must hold positive finite widths and heights")
    return wh.to(torch.float32)


def wh_iou(wh_a: Tensor, wh_b: Tensor) -> Tensor:
    """(M, K) IoU of boxes of sizes wh_a (M, 2) and wh_b (K, 2) placed with a common corner: the overlap of two
    shapes regardless of where they are."""
    a, b = _check_wh(wh_a, "wh_a"), _check_wh(wh_b, "wh_b")
    return box_iou(torch.cat([torch.zeros_like(a), a], 1), torch.cat([torch.zeros_like(b), b], 1))


def kmeans_anchors(wh: Tensor, k: int, *, seed: int = 0, iterations: int = 100, restarts: int = 5) -> Tensor:
    """k anchor (width, height) pairs from the box sizes `wh` (M, 2), M >= k: k-means with distance 1 - wh_iou,
    k-means++ seeding, cluster centres the mean of their members, at most `iterations` assignment rounds per run (a run
    stops when the assignment no longer changes). Of `restarts` runs, the one whose anchors fit the boxes best (highest
    mean IoU of each box with its nearest anchor) wins: one run can settle with two centres in one cluster. Every draw
    comes from torch.Generator().manual_seed(seed), so the same (wh, k, seed, ...) always gives the same anchors.
    Sorted by area."""
    wh = _check_wh(wh, "wh")
    for name, v, low in (("k", k, 1), ("iterations", iterations, 1), ("restarts", restarts, 1), ("seed", seed, 0)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < low:
            raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
    if wh.shape[0] < k:
        raise ValueError(f"kmeans_anchors needs at least k={k} box sizes, got {wh.shape[0]}")
    gen = torch.Generator().manual_seed(int(seed))
    best, best_fit = None, -1.0
    for _ in range(int(restarts)):
        centres = _kmeans_run(wh, int(k), int(iterations), gen)
        fit_ = float(wh_iou(wh, centres).amax(1).mean())
        if fit_ > best_fit:
            best, best_fit = centres, fit_
    return best[torch.argsort(best.prod(1), stable=True)].contiguous()


def _kmeans_run(wh: Tensor, k: int, iterations: int, gen: torch.Generator) -> Tensor:
    centres = wh[torch.randint(wh.shape[0], (1,), generator=gen)]
    while centres.shape[0] < k:
        # k-means++: the next centre is drawn with probability proportional to the squared distance to the nearest.
        d = (1 - wh_iou(wh, centres).amax(1)).clamp_min(0) ** 2
        if float(d.sum()) <= 0:
            d = torch.ones_like(d)
        centres = torch.cat([centres, wh[torch.multinomial(d, 1, generator=gen)]])
    assign = None
    for _ in range(iterations):
        iou = wh_iou(wh, centres)
        new = iou.argmax(1)
        if assign is not None and torch.equal(new, assign):
            break
        assign = new
        for c in range(k):
            members = wh[assign == c]
            if members.shape[0]:
                centres[c] = members.mean(0)
            else:
                # An empty cluster restarts at the box worst covered by the current centres.
                centres[c] = wh[iou.amax(1).argmin()]
    return centres


def box_sizes(scenes: Sequence[Scene]) -> Tensor:
    """(M, 2) widths and heights of every box of `scenes` (e.g. a SceneDataset), the input of kmeans_anchors."""
    wh = [s.boxes[:, 2:] - s.boxes[:, :2] for s in scenes]
    if not wh:
        raise ValueError("scenes must hold at least one scene")
    return torch.cat(wh)


def _image_hw(image_size) -> Tuple[int, int]:
    try:
        h, w = (int(v) for v in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if h < 1 or w < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return h, w


def encode_targets(boxes: Tensor, labels: Tensor, anchors: Tensor, grid_size: Tuple[int, int],
                   image_size: Tuple[int, int]) -> Tensor:
    """Training targets of one image (see the module docstring): float32 (A, S_h, S_w, TARGET_CHANNELS).

    boxes: (M, 4) xyxy pixels with positive width and height, centres inside the image; labels: (M,) int64 class
    indices; anchors: (A, 2) in pixels; grid_size: (S_h, S_w); image_size: (H, W) in pixels. A box finds no slot only
    when all A anchors of its cell are taken (more than A centres in one cell); it is then left out."""
    anchors = _check_wh(anchors, "anchors")
    sh, sw = _image_hw(grid_size)
    h_img, w_img = _image_hw(image_size)
    if not isinstance(boxes, Tensor) or boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be an (M, 4) tensor, got {getattr(boxes, 'shape', type(boxes).__name__)}")
    if not isinstance(labels, Tensor) or labels.shape != (boxes.shape[0],) or labels.dtype != torch.int64:
        raise ValueError(f"labels must be an int64 tensor of shape ({boxes.shape[0]},), got "
                         f"{getattr(labels, 'dtype', type(labels).__name__)} {tuple(getattr(labels, 'shape', ()))}")
    a = anchors.shape[0]
    targets = torch.zeros(a, sh, sw, TARGET_CHANNELS)
    targets[..., 5] = -1
    if boxes.shape[0] == 0:
        return targets
    boxes = boxes.to(torch.float32)
    wh = boxes[:, 2:] - boxes[:, :2]
    if not bool((wh > 0).all()):
        raise ValueError("boxes must have positive widths and heights (x2 > x1, y2 > y1)")
    cx = (boxes[:, 0] + boxes[:, 2]) / 2 * sw / w_img        # centres in cell units
    cy = (boxes[:, 1] + boxes[:, 3]) / 2 * sh / h_img
    if not bool(((cx >= 0) & (cx <= sw) & (cy >= 0) & (cy <= sh)).all()):
        raise ValueError("box centres must lie inside the image")
    # A centre on the far edge belongs to the last cell (offset just under 1).
    j = cx.floor().clamp(max=sw - 1)
    i = cy.floor().clamp(max=sh - 1)
    offx, offy = cx - j, cy - i
    iou = wh_iou(wh, anchors)
    # Best-matching boxes choose first, so a contested slot goes to the box it fits best.
    order = torch.argsort(iou.amax(1), descending=True, stable=True)
    for m in order.tolist():
        ii, jj = int(i[m]), int(j[m])
        for best in torch.argsort(iou[m], descending=True, stable=True).tolist():
            if targets[best, ii, jj, 4] == 0:
                targets[best, ii, jj] = torch.stack([
                    offx[m], offy[m], torch.log(wh[m, 0] / anchors[best, 0]), torch.log(wh[m, 1] / anchors[best, 1]),
                    torch.ones(()), labels[m].to(torch.float32)])
                break
    return targets


def targets_to_head(targets: Tensor, num_classes: int, *, confidence: float = 20.0) -> Tensor:
    """Head logits (N, A * (5 + C), S_h, S_w) whose decoding is `targets` (N, A, S_h, S_w, TARGET_CHANNELS): logit of
    the offsets, tw/th as they are, objectness +-confidence, and a class logit of `confidence` for the target class
    (0 for the others). cnnkernels.yolo_decode of it gives back the encoded boxes at the object slots, with score
    ~1 there and ~0 elsewhere."""
    if targets.dim() != 5 or targets.shape[-1] != TARGET_CHANNELS:
        raise ValueError(f"targets must be (N, A, S_h, S_w, {TARGET_CHANNELS}), got {tuple(targets.shape)}")
    n, a, sh, sw, _ = targets.shape
    obj = targets[..., 4] > 0
    head = torch.zeros(n, a, sh, sw, 5 + num_classes, dtype=targets.dtype, device=targets.device)
    head[..., :2] = torch.logit(targets[..., :2].clamp(_OFFSET_EPS, 1 - _OFFSET_EPS))
    head[..., 2:4] = targets[..., 2:4]
    head[..., 4] = torch.where(obj, confidence, -confidence)
    cls = targets[..., 5].clamp(min=0).long()
    head[..., 5:] = F.one_hot(cls, num_classes).to(targets.dtype) * confidence * obj[..., None]
    return head.permute(0, 1, 4, 2, 3).reshape(n, a * (5 + num_classes), sh, sw)


class YOLOLoss(nn.Module):
    """The detector's training loss (module docstring): forward(head (N, A*(5+C), S_h, S_w), targets (N, A, S_h, S_w,
    TARGET_CHANNELS)) -> scalar. `last` holds the latest call's parts (xy, wh, obj, noobj, cls), per image.

    anchors: (A, 2) pixels and image_size (H, W): needed only for the ignore rule (ignore_iou=None switches it off)."""

    def __init__(self, anchors: Tensor, num_classes: int, image_size: Tuple[int, int], *, coord_weight: float = 5.0,
                 noobj_weight: float = 0.5, ignore_iou: Optional[float] = 0.6) -> None:
        super().__init__()
        self.register_buffer("anchors", _check_wh(anchors, "anchors").clone())
        if isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise ValueError(f"num_classes must be an int >= 1, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.image_size = _image_hw(image_size)
        for name, v in (("coord_weight", coord_weight), ("noobj_weight", noobj_weight)):
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not v >= 0:
                raise ValueError(f"{name} must be a number >= 0, got {v!r}")
        if ignore_iou is not None and not 0 < ignore_iou <= 1:
            raise ValueError(f"ignore_iou must be None or in (0, 1], got {ignore_iou!r}")
        self.coord_weight, self.noobj_weight, self.ignore_iou = float(coord_weight), float(noobj_weight), ignore_iou
        self.last: Dict[str, float] = {}

    def forward(self, head: Tensor, targets: Tensor) -> Tensor:
        a, c = self.anchors.shape[0], self.num_classes
        n, ch, sh, sw = head.shape
        if ch != a * (5 + c):
            raise ValueError(f"head must have A * (5 + C) = {a * (5 + c)} channels, got {ch}")
        if tuple(targets.shape) != (n, a, sh, sw, TARGET_CHANNELS):
            raise ValueError(f"targets must have shape {(n, a, sh, sw, TARGET_CHANNELS)}, got {tuple(targets.shape)}")
        p = head.unflatten(1, (a, 5 + c)).permute(0, 1, 3, 4, 2)     # (N, A, S_h, S_w, 5 + C)
        targets = targets.to(p.dtype)
        obj = targets[..., 4] > 0
        noobj = ~obj
        if self.ignore_iou is not None and bool(obj.any()):
            noobj = noobj & ~self._ignored(head, targets, obj)
        xy = F.mse_loss(torch.sigmoid(p[..., :2][obj]), targets[..., :2][obj], reduction="sum")
        wh = F.mse_loss(p[..., 2:4][obj], targets[..., 2:4][obj], reduction="sum")
        bce = F.binary_cross_entropy_with_logits(p[..., 4], targets[..., 4], reduction="none")
        obj_loss, noobj_loss = bce[obj].sum(), bce[noobj].sum()
        cls = F.cross_entropy(p[..., 5:][obj], targets[..., 5][obj].long(), reduction="sum")
        total = (self.coord_weight * (xy + wh) + obj_loss + self.noobj_weight * noobj_loss + cls) / n
        self.last = {k: float(v.detach()) / n for k, v in
                     (("xy", xy), ("wh", wh), ("obj", obj_loss), ("noobj", noobj_loss), ("cls", cls))}
        return total

    @torch.no_grad()
    def _ignored(self, head: Tensor, targets: Tensor, obj: Tensor) -> Tensor:
        # Predicted boxes and ground-truth boxes through the one decoding; ground truth = the targets' own logits.
        anchors = self.anchors.to(head.dtype)
        pred, _, _ = yolo_decode(head.detach(), anchors, self.image_size)
        truth, _, _ = yolo_decode(targets_to_head(targets, self.num_classes), anchors, self.image_size)
        flat_obj = obj.flatten(1)                                     # candidate order (a, i, j), as decoded
        ignored = torch.zeros_like(flat_obj)
        for k in range(head.shape[0]):
            gt = truth[k][flat_obj[k]]
            if gt.shape[0]:
                ignored[k] = box_iou(pred[k], gt).amax(1) > self.ignore_iou
        return ignored.view_as(obj)


class CachedScene(NamedTuple):
    """What detection needs of a Scene, kept small: the image as uint8 (a 128 x 128 scene is 48 KiB; the rounding,
    1/255, is far below the scenes' own pixel noise), boxes and labels. `image` gives the float32 image back."""
    image_u8: Tensor
    boxes: Tensor
    labels: Tensor

    @property
    def image(self) -> Tensor:
        """float32 (3, H, W) in [0, 1]."""
        return self.image_u8.to(torch.float32) / 255


def cache_scenes(scenes: Sequence[Scene], *, progress: bool = False) -> List[CachedScene]:
    """Every scene of `scenes` generated once and kept as a CachedScene, to be reused every epoch."""
    return [CachedScene((s.image * 255).round_().to(torch.uint8), s.boxes, s.labels)
            for s in tqdm(scenes, desc="scenes", disable=not progress, leave=False)]


class DetectionScenes(Dataset):
    """(image, targets) pairs for training the detector: item i is scene i of `scenes` (Scenes or CachedScenes) with
    its boxes encoded by encode_targets: image (3, H, W) float32, targets (A, S_h, S_w, TARGET_CHANNELS). `transform`
    (a torchvision.transforms.v2 transform) is called as transform(image, tv_tensors.BoundingBoxes, labels) first, so
    the boxes follow a flip or crop; boxes left with no area are dropped."""

    def __init__(self, scenes: Sequence, anchors: Tensor, grid_size: Tuple[int, int], *,
                 transform: Optional[Callable] = None) -> None:
        self.scenes = scenes
        self.anchors = _check_wh(anchors, "anchors").clone()
        self.grid_size = _image_hw(grid_size)
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be None or a callable, got {type(transform).__name__}")
        self.transform = transform

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        s = self.scenes[index]
        image, boxes, labels = s.image, s.boxes, s.labels
        h, w = image.shape[-2:]
        if self.transform is not None:
            image, boxes, labels = self.transform(
                image, tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)), labels)
            boxes = boxes.as_subclass(Tensor)
            keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
            boxes, labels = boxes[keep], labels[keep]
        return image, encode_targets(boxes, labels, self.anchors, self.grid_size, (h, w))


def detection_augmentation() -> v2.Transform:
    """Random horizontal flips (the boxes follow). Generated scenes need nothing else: every scene is new; a flipped
    scene is still a valid scene (rotations stay within +-30 degrees, triangles keep their apex up)."""
    return v2.RandomHorizontalFlip(0.5)


@torch.inference_mode()
def detect(model: YOLODetector, images: Tensor, *, score_threshold: float = 0.25, iou_threshold: float = 0.45,
           max_detections: int = 100) -> List[Dict[str, Tensor]]:
    """Detections of `model` (run as it is: call model.eval() first for inference) on images (N, 3, H, W): one dict
    per image with boxes (K, 4) xyxy pixels, scores (K,) and labels (K,), sorted by score, via
    cnnkernels.yolo_postprocess."""
    if not isinstance(model, YOLODetector):
        raise TypeError(f"model must be a YOLODetector, got {type(model).__name__}")
    head = model(images).float()
    boxes, scores, labels, counts = yolo_postprocess(head, model.anchors.float(), images.shape[-2:], score_threshold,
                                                     iou_threshold, max_detections)
    return [{"boxes": boxes[k, :c], "scores": scores[k, :c], "labels": labels[k, :c]}
            for k, c in enumerate(counts.tolist())]


def evaluate_detector(model: YOLODetector, scenes: Sequence[Scene], *, batch_size: int = 32,
                      score_threshold: float = 0.01, progress: bool = False) -> Dict[str, object]:
    """mAP at IoU 0.5 of `model` (in eval mode; its mode is restored afterwards) on `scenes`:
    torchmetrics.detection.MeanAveragePrecision(iou_thresholds=[0.5], class_metrics=True). Returns {"map": float,
    "ap_per_class": {class name: AP}}. A low score_threshold keeps the low-confidence detections the precision-recall
    curve needs."""
    # torchmetrics (and pycocotools behind it) are needed by evaluation only: the `train` extra brings them.
    from torchmetrics.detection import MeanAveragePrecision
    metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", iou_thresholds=[0.5], class_metrics=True)
    loader = DataLoader(scenes, batch_size=batch_size, collate_fn=collate_scenes)
    was_training = model.training
    model.eval()
    try:
        for batch in tqdm(loader, desc="evaluate", disable=not progress, leave=False):
            preds = detect(model, batch.image, score_threshold=score_threshold)
            metric.update(preds, [{"boxes": b, "labels": l} for b, l in zip(batch.boxes, batch.labels)])
    finally:
        model.train(was_training)
    result = metric.compute()
    per_class = {CLASSES[int(c)]: float(ap) for c, ap in zip(result["classes"].tolist(), result["map_per_class"])}
    return {"map": float(result["map_50"]), "ap_per_class": per_class}


def draw_detections(model: YOLODetector, scenes: Sequence[Scene], path: str, *, score_threshold: float = 0.3,
                    scale: int = 2) -> None:
    """Saves a PNG of `scenes` side by side, each upscaled `scale` times, with the detections of `model` drawn
    (torchvision.utils.draw_bounding_boxes: class name and score)."""
    was_training = model.training
    model.eval()
    try:
        images = torch.stack([s.image for s in scenes])
        dets = detect(model, images, score_threshold=score_threshold)
    finally:
        model.train(was_training)
    palette = ["#ff3030", "#30ff30", "#40a0ff", "#ffff30"]
    tiles = []
    for image, d in zip(images, dets):
        big = F.interpolate(image[None], scale_factor=scale, mode="nearest")[0]
        tile = (big * 255).round().to(torch.uint8)
        if d["boxes"].shape[0]:
            names = [f"{CLASSES[int(l)]} {float(s):.2f}" for l, s in zip(d["labels"], d["scores"])]
            tile = draw_bounding_boxes(tile, d["boxes"] * scale, names,
                                       colors=[palette[int(l) % len(palette)] for l in d["labels"]], width=2)
        tiles.append(tile)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    save_image(torch.cat(tiles, dim=2).float() / 255, path)


class EpochBlockSampler(Sampler):
    """Epoch e of a data set of `epochs` blocks of `block` items: the indices e * block .. (e + 1) * block - 1 in a
    random order (torch's global RNG, which fit(seed=) reseeds per epoch). fit() calls set_epoch(e) before each epoch,
    so over a SceneDataset every epoch trains on scenes never seen before."""

    def __init__(self, block: int, epochs: int) -> None:
        for name, v in (("block", block), ("epochs", epochs)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        self.block, self.epochs, self.epoch = int(block), int(epochs), 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the block of epoch `epoch` (0-based, < epochs)."""
        if isinstance(epoch, bool) or not isinstance(epoch, numbers.Integral) or not 0 <= epoch < self.epochs:
            raise ValueError(f"epoch must be an int in [0, {self.epochs}), got {epoch!r}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.block

    def __iter__(self):
        return iter((self.epoch * self.block + torch.randperm(self.block)).tolist())


def train_detector(*, epochs: int = 16, train_scenes: int = 1024, reuse_scenes: bool = False, val_scenes: int = 300,
                   num_anchors: int = 3, width_mult: float = 0.5, batch_size: int = 32, lr: float = 3e-3,
                   weight_decay: float = 5e-4, seed: int = 0, size: int = 128, augment: bool = True,
                   progress: bool = True, checkpoint: Optional[str] = None,
                   log: Callable[[str], None] = print) -> Tuple[YOLODetector, Dict[str, object]]:
    """Trains a YOLODetector on generated "train" scenes and evaluates mAP@0.5 (evaluate_detector) on `val_scenes`
    "val" scenes (other seeds). Each epoch is `train_scenes` scenes: new ones every epoch, drawn on the fly
    (EpochBlockSampler), or with reuse_scenes=True one set generated up front (cache_scenes) and repeated, which
    over-fits sooner. Anchors: kmeans_anchors on the boxes of the first epoch's scenes. AdamW, learning rate
    cosine-annealed per epoch, cnnkernels.train.loop.fit (checkpoint: its per-epoch checkpoint path). Returns (model
    in eval mode, metrics: map, ap_per_class, anchors, train_seconds, history)."""
    t0 = time.perf_counter()
    if reuse_scenes:
        train_set = cache_scenes(scene_split("train", train_scenes, seed=seed, size=size), progress=progress)
        sampler = None
        first = train_set
    else:
        train_set = scene_split("train", train_scenes * epochs, seed=seed, size=size)
        sampler = EpochBlockSampler(train_scenes, epochs)
        first = [train_set[i] for i in range(train_scenes)]
    val_set = scene_split("val", val_scenes, seed=seed, size=size)
    anchors = kmeans_anchors(box_sizes(first), num_anchors, seed=seed)
    del first
    torch.manual_seed(seed)
    # channels_last: ~25% less time per training step here (BatchNorm and the convolutions' CPU kernels).
    model = YOLODetector(anchors, NUM_CLASSES, width_mult=width_mult).to(memory_format=torch.channels_last)
    grid = model.grid_size((size, size))
    data = DetectionScenes(train_set, anchors, grid, transform=detection_augmentation() if augment else None)
    loader = DataLoader(data, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
                        drop_last=train_scenes > batch_size)
    loss_fn = YOLOLoss(anchors, NUM_CLASSES, (size, size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    log(f"anchors (w x h px): {', '.join(f'{w:.1f}x{h:.1f}' for w, h in anchors.tolist())}; grid {grid[0]}x{grid[1]}; "
        f"{epochs} epochs of {train_scenes} {'cached' if reuse_scenes else 'new'} train scenes ({len(loader)} steps "
        f"of batch {batch_size}); {val_scenes} val scenes; {torch.get_num_threads()} threads")

    def report(rec: Dict[str, object]) -> None:
        log(f"epoch {rec['epoch']:3d}/{epochs} loss {rec['loss']:.3f} lr {rec['lr']:.2e} "
            f"({time.perf_counter() - t0:.0f} s)")

    history = fit(model, loader, epochs=epochs, optimizer=optimizer, loss_fn=loss_fn, scheduler=scheduler,
                  progress=progress, checkpoint=checkpoint, on_epoch_end=report, seed=seed, desc="detect",
                  checkpoint_extra={"command": "detect", "anchors": anchors.tolist()})
    train_seconds = time.perf_counter() - t0
    model.eval()
    metrics = evaluate_detector(model, val_set, progress=progress)
    metrics.update(anchors=anchors.tolist(), train_seconds=train_seconds, history=history)
    return model, metrics


# --- the `detect` command of python -m cnnkernels.train --------------------------------------------------------------

def add_detect_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `python -m cnnkernels.train detect`."""
    p.add_argument("--epochs", type=positive_int, default=16)
    p.add_argument("--train-scenes", type=positive_int, default=1024,
                   help="generated training scenes per epoch (new ones every epoch unless --reuse-scenes)")
    p.add_argument("--reuse-scenes", action="store_true",
                   help="generate one set of --train-scenes scenes up front and repeat it every epoch")
    p.add_argument("--val-scenes", type=positive_int, default=300, help="generated validation scenes (other seeds)")
    p.add_argument("--anchors", type=positive_int, default=3, help="number of k-means anchors")
    p.add_argument("--width-mult", type=positive_float, default=0.5, help="MobileNet v2 width multiplier")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=3e-3, help="AdamW learning rate, cosine-annealed to 0")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the scenes, anchors, initial weights and shuffling")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random horizontal flips of the training scenes")
    p.add_argument("--threads", type=positive_int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--checkpoint", default=None, help="path of a checkpoint written after every epoch")
    p.add_argument("--picture", default=None, help="PNG of detections on validation scenes")
    p.add_argument("--out", default=None, help="directory for metrics.json")
    p.add_argument("--expect-map", type=fraction, default=None,
                   help="exit with status 1 when mAP@0.5 ends below this")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_detect(args: argparse.Namespace) -> int:
    """The `detect` command: train_detector with the options, then prints mAP@0.5, AP per class and the training
    time, and writes the picture and OUT/metrics.json when asked. Exit status 1 below --expect-map."""
    torch.set_num_threads(args.threads)
    model, metrics = train_detector(
        epochs=args.epochs, train_scenes=args.train_scenes, reuse_scenes=args.reuse_scenes, val_scenes=args.val_scenes,
        num_anchors=args.anchors, width_mult=args.width_mult, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        augment=args.augment, progress=not args.no_progress, checkpoint=args.checkpoint,
        log=lambda line: print(line, flush=True))
    per_class = ", ".join(f"{name} {ap:.3f}" for name, ap in metrics["ap_per_class"].items())
    print(f"mAP@0.5 on {args.val_scenes} validation scenes: {metrics['map']:.3f} (AP per class: {per_class})",
          flush=True)
    print(f"training time: {metrics['train_seconds']:.1f} s on {torch.get_num_threads()} threads", flush=True)
    if args.picture:
        draw_detections(model, [scene_split("val", 2, seed=args.seed)[i] for i in range(2)], args.picture)
        print(f"picture: {args.picture}", flush=True)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump({**metrics, "args": {k: v for k, v in vars(args).items() if not k.startswith("_")}}, f,
                      indent=2)
    if args.expect_map is not None and metrics["map"] < args.expect_map:
        print(f"error: mAP@0.5 {metrics['map']:.3f} is below --expect-map {args.expect_map}", file=sys.stderr)
        return 1
    return 0
