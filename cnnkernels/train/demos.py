"""The end-to-end demonstrations behind `python -m cnnkernels.train transfer` and `... evaluate`, as functions that
return their metrics (the command line prints them; tests call the functions with small budgets).

* `transfer_demo`: LeNet-5 trained on the digits 0-4, then frozen and given a new 5-class head trained on the digits
  5-9 from a FeatureCache (the backbone run once, through the fused ops), against the same head trained end to end
  through the frozen backbone (same seed, same data order: the two heads must agree to fp32 rounding) and against a
  LeNet-5 trained from scratch on 5-9; also on stratified fractions of the 5-9 training images (the small-data
  regime, where transfer is expected to help most).
* `multicrop_demo`: two LeNet-5s trained on all ten digits at 32x32 with random crops of 36x36 images, evaluated
  through cnnkernels.optimize() with a single centre crop, 5 crops, 10 crops (with mirrors) and as an ensemble.

Both train with the `digits` command's recipe: Adam, learning rate cosine-annealed to 0 over the run, light
augmentation (random rotations within +-10 degrees; shifts of up to 10% of the image, or random crops), and
fit(seed=...), so a run is reproducible for a given seed and thread count.
"""

from __future__ import annotations

import copy
import numbers
import os
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset

import cnnkernels
from cnnkernels.models import lenet5
from cnnkernels.train.data import DigitsDataset, digits, digits_augmentation
from cnnkernels.train.averaging import Ensemble, MultiCrop
from cnnkernels.train.feature_cache import FeatureCache
from cnnkernels.train.loop import evaluate, fit
from cnnkernels.train.transfer import freeze, head_name, replace_head

__all__ = ["BASE_CLASSES", "TRANSFER_CLASSES", "MIRROR_NOTE", "transfer_demo", "multicrop_demo", "stratified_subset",
           "format_table"]

BASE_CLASSES: Tuple[int, ...] = (0, 1, 2, 3, 4)
TRANSFER_CLASSES: Tuple[int, ...] = (5, 6, 7, 8, 9)

MIRROR_NOTE = ("10 crops include horizontal mirrors, and a mirrored digit is not a digit (a mirrored 2, 3, 4, 5, 7 or "
               "9 looks like no digit or like another one), so mirrors can hurt here; the 5 crops (centre and "
               "corners, no mirrors) are the fair test-time augmentation for digits.")

Log = Callable[[str], None]

# A progress bar costs a few milliseconds per epoch, as much as a whole epoch of head training on cached features.
_PROGRESS_NOTE = "(progress bars add a fixed cost to every epoch and so to every time below; --no-progress for timings)"


# --- argument checks --------------------------------------------------------------------------------------------------

def _check_int(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _check_positive(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _check_fraction(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def _check_log(log: Any) -> Log:
    if log is None:
        return lambda line: None
    if not callable(log):
        raise TypeError(f"log must be None or a callable taking a line of text (e.g. print), got "
                        f"{type(log).__name__}")
    return log


# --- helpers ----------------------------------------------------------------------------------------------------------

def stratified_subset(dataset: DigitsDataset, fraction: float, *, seed: int = 0) -> Dataset:
    """A fixed, class-balanced part of `dataset` (a DigitsDataset): from every label, round(fraction * count) of its
    images (at least one), drawn by a permutation seeded with `seed`, kept in the dataset's order. fraction=1 returns
    the dataset itself; otherwise a torch Subset whose `indices` are positions in `dataset`."""
    if not isinstance(dataset, DigitsDataset):
        raise TypeError(f"dataset must be a DigitsDataset (from cnnkernels.train.data.digits), got "
                        f"{type(dataset).__name__}")
    fraction = _check_fraction(fraction, "fraction")
    seed = _check_int(seed, "seed", 0)
    if fraction == 1.0:
        return dataset
    gen = torch.Generator().manual_seed(seed)
    keep: List[int] = []
    for label in range(dataset.num_classes):
        where = torch.nonzero(dataset.targets == label).flatten()
        if where.numel() == 0:
            continue
        k = max(1, int(round(fraction * where.numel())))
        keep += where[torch.randperm(where.numel(), generator=gen)[:k]].tolist()
    return Subset(dataset, sorted(keep))


def _subset_like(dataset: DigitsDataset, part: Dataset) -> Dataset:
    """`dataset` restricted to the positions `part` (a stratified_subset of a twin of it) holds."""
    return Subset(dataset, part.indices) if isinstance(part, Subset) else dataset


class _SampleCounter:
    """Forward hook counting the samples that pass through a module. A deep copy of the module keeps counting into
    the same counter: FeatureCache runs a (cnnkernels.optimize()d) deep copy of the model."""

    def __init__(self) -> None:
        self.samples = 0
        self.calls = 0

    def __deepcopy__(self, memo) -> "_SampleCounter":
        return self

    def __call__(self, module: nn.Module, args, output) -> None:
        self.calls += 1
        self.samples += int(args[0].shape[0])


def _recipe(params, lr: float, epochs: int):
    optimizer = torch.optim.Adam(params, lr=lr)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)


def _shuffled(dataset: Dataset, batch_size: int) -> DataLoader:
    # An own generator, reseeded by fit(seed=...) every epoch: two loaders over data sets of one length then visit
    # the same positions in the same order, whatever else drew from torch's global RNG in between.
    return DataLoader(dataset, batch_size=batch_size, shuffle=True, generator=torch.Generator())


def _train_lenet(train_set: Dataset, num_classes: int, *, epochs: int, seed: int, lr: float, batch_size: int,
                 progress: bool, desc: str) -> Tuple[nn.Module, float]:
    """LeNet-5 (1 input channel) trained from scratch with the digits recipe; (model, seconds)."""
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    model = lenet5(in_channels=1, num_classes=num_classes)
    optimizer, scheduler = _recipe(model.parameters(), lr, epochs)
    fit(model, _shuffled(train_set, batch_size), epochs=epochs, optimizer=optimizer, scheduler=scheduler,
        progress=progress, seed=seed, desc=desc)
    return model, time.perf_counter() - t0


def _fused(model: nn.Module) -> nn.Module:
    """The cnnkernels.optimize()d inference copy of `model` (the model itself is left in its mode)."""
    was_training = model.training
    try:
        return cnnkernels.optimize(model.eval())
    finally:
        model.train(was_training)


@torch.inference_mode()
def _probabilities(model: nn.Module, loader: DataLoader) -> Tuple[Tensor, Tensor]:
    """(N x C probabilities, N labels) of an eval-mode model over `loader`; modules that declare
    returns_probabilities (MultiCrop, Ensemble) are taken as they are, the others get a softmax."""
    probs, labels = [], []
    as_is = bool(getattr(model, "returns_probabilities", False))
    for x, y in loader:
        out = model(x)
        probs.append((out if as_is else out.softmax(1)).float())
        labels.append(torch.as_tensor(y))
    return torch.cat(probs), torch.cat(labels)


def _accuracy(probs: Tensor, labels: Tensor) -> float:
    return float((probs.argmax(1) == labels).double().mean())


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table: columns padded to their widest cell, the first left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths)] + [line(r) for r in cells[1:]])


# --- transfer ---------------------------------------------------------------------------------------------------------

def _transfer_one_fraction(base: nn.Module, fraction: float, *, epochs_head: int, seed: int, lr: float,
                           head_lr: float, batch_size: int, cache_dir: str, progress: bool,
                           log: Log) -> Dict[str, Any]:
    plain = digits("train", classes=TRANSFER_CLASSES)
    train_part = stratified_subset(plain, fraction, seed=seed)
    test_loader = DataLoader(digits("test", classes=TRANSFER_CLASSES), batch_size=256)
    n = len(train_part)
    log(f"-- digits 5-9, {n} training images (fraction {fraction:g}), {len(test_loader.dataset)} test images")

    # The transferred model: the 0-4 network with a new 5-class head, everything before the head frozen.
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    replace_head(model, len(TRANSFER_CLASSES))
    head = head_name(model)
    freeze(model, until=head)
    # Same initial head, same frozen backbone: the end-to-end twin is copied before any head training.
    twin = copy.deepcopy(model)
    cached_count, twin_count = _SampleCounter(), _SampleCounter()
    hooks = [model.features.register_forward_hook(cached_count), twin.features.register_forward_hook(twin_count)]

    t0 = time.perf_counter()
    cache = FeatureCache(model, train_part, cache_dir, batch_size=256, progress=progress).build(rebuild=True)
    features = cache.dataset()
    t_build = time.perf_counter() - t0
    head_module = model.get_submodule(head)
    initial = [p.detach().clone() for p in head_module.parameters()]
    optimizer, scheduler = _recipe(head_module.parameters(), head_lr, epochs_head)
    t0 = time.perf_counter()
    fit(head_module, _shuffled(features, batch_size), epochs=epochs_head, optimizer=optimizer, scheduler=scheduler,
        progress=progress, seed=seed, desc="head on cached features")
    t_head = time.perf_counter() - t0

    optimizer, scheduler = _recipe([p for p in twin.parameters() if p.requires_grad], head_lr, epochs_head)
    t0 = time.perf_counter()
    fit(twin, _shuffled(train_part, batch_size), epochs=epochs_head, optimizer=optimizer, scheduler=scheduler,
        progress=progress, seed=seed, desc="head end to end")
    t_e2e = time.perf_counter() - t0
    for h in hooks:
        h.remove()

    twin_head = twin.get_submodule(head)
    trained = [p.detach() for p in head_module.parameters()]
    head_diff = max(float((a - b.detach()).abs().max()) for a, b in zip(trained, twin_head.parameters()))
    head_change = max(float((a - b).abs().max()) for a, b in zip(trained, initial))

    acc_cached = evaluate(_fused(model), test_loader)
    acc_e2e = evaluate(_fused(twin), test_loader)

    augmented = digits("train", classes=TRANSFER_CLASSES, transform=digits_augmentation())
    scratch, t_scratch = _train_lenet(_subset_like(augmented, train_part), len(TRANSFER_CLASSES),
                                      epochs=epochs_head, seed=seed, lr=lr, batch_size=batch_size,
                                      progress=progress, desc="scratch on 5-9")
    acc_scratch = evaluate(_fused(scratch), test_loader)

    return {
        "train_fraction": fraction, "train_images": n, "test_images": len(test_loader.dataset),
        "accuracy": {"cached_head": acc_cached, "end_to_end_head": acc_e2e, "scratch": acc_scratch},
        "seconds": {"cache_build": t_build, "cached_head": t_head, "cached_total": t_build + t_head,
                    "end_to_end_head": t_e2e, "scratch": t_scratch},
        "speedup": {"with_cache_build": t_e2e / (t_build + t_head), "head_only": t_e2e / t_head},
        "head_max_abs_diff": head_diff, "head_max_abs_change": head_change,
        "backbone_images": {"cached": cached_count.samples, "end_to_end": twin_count.samples},
        "backbone_calls": {"cached": cached_count.calls, "end_to_end": twin_count.calls},
    }


def transfer_demo(*, epochs_base: int = 30, epochs_head: int = 100, train_fractions: Sequence[float] = (1.0, 0.1),
                  seed: int = 0, lr: float = 3e-3, head_lr: float = 3e-2, batch_size: int = 64,
                  out: Optional[str] = None, progress: bool = False, log: Optional[Log] = print) -> Dict[str, Any]:
    """Transfer learning on the digits; returns the metrics dict (also written to out/metrics.json by the CLI).

    1. LeNet-5 (5 classes) trained from scratch on the digits 0-4 (epochs_base epochs, the digits recipe).
    2. For each fraction in train_fractions, on that stratified part of the 5-9 training images (stratified_subset):
       - cached: replace_head(model, 5), freeze(model, until=head_name(model)), a FeatureCache of the head's input
         over the images (built once, through cnnkernels.optimize()), the head alone trained on it (epochs_head
         epochs, Adam head_lr, cosine, no augmentation: the cache is what a deterministic backbone sees);
       - end to end: a copy of the same frozen model with the same initial head, trained on the images with the same
         seed and data order: it must end with the same head (head_max_abs_diff, fp32 rounding only);
       - scratch: LeNet-5 trained on the same 5-9 images (epochs_head epochs, the digits recipe with augmentation).
       Test accuracies on the 5-9 test split are measured through cnnkernels.optimize()d models.

    Returns {"base": {...}, "runs": [one dict per fraction: train_fraction, train_images, test_images, accuracy
    {cached_head, end_to_end_head, scratch}, seconds {cache_build, cached_head, cached_total, end_to_end_head,
    scratch}, speedup {with_cache_build, head_only} (end-to-end time over cached time), head_max_abs_diff,
    head_max_abs_change (how far head training moved the head, to read the diff against), backbone_images and
    backbone_calls {cached, end_to_end} (samples and forward calls through the backbone `features`)], "args": ...}.
    The caches go to out/cache-<fraction> when `out` is given, else to a temporary directory. log(line) receives the
    progress lines and tables (None: silent)."""
    epochs_base = _check_int(epochs_base, "epochs_base", 1)
    epochs_head = _check_int(epochs_head, "epochs_head", 1)
    if isinstance(train_fractions, (str, bytes)) or not isinstance(train_fractions, Sequence) or not train_fractions:
        raise ValueError(f"train_fractions must be a non-empty sequence of numbers in (0, 1], got {train_fractions!r}")
    fractions = [_check_fraction(f, "train_fractions[%d]" % i) for i, f in enumerate(train_fractions)]
    seed = _check_int(seed, "seed", 0)
    lr = _check_positive(lr, "lr")
    head_lr = _check_positive(head_lr, "head_lr")
    batch_size = _check_int(batch_size, "batch_size", 1)
    if out is not None and not isinstance(out, (str, os.PathLike)):
        raise TypeError(f"out must be None or a directory path, got {type(out).__name__}")
    log = _check_log(log)
    args = {"epochs_base": epochs_base, "epochs_head": epochs_head, "train_fractions": fractions, "seed": seed,
            "lr": lr, "head_lr": head_lr, "batch_size": batch_size, "threads": torch.get_num_threads()}

    base_train = digits("train", classes=BASE_CLASSES, transform=digits_augmentation())
    base_test = DataLoader(digits("test", classes=BASE_CLASSES), batch_size=256)
    log(f"LeNet-5 on the digits 0-4: {len(base_train)} training images, {epochs_base} epochs, "
        f"{torch.get_num_threads()} threads")
    if progress:
        log(_PROGRESS_NOTE)
    base, t_base = _train_lenet(base_train, len(BASE_CLASSES), epochs=epochs_base, seed=seed, lr=lr,
                                batch_size=batch_size, progress=progress, desc="base on 0-4")
    base_acc = evaluate(_fused(base), base_test)
    log(f"base network: test accuracy on 0-4 {base_acc:.4f}, {t_base:.1f} s")

    runs = []
    with tempfile.TemporaryDirectory(prefix="cnnkernels-transfer-") as tmp:
        root = os.fspath(out) if out is not None else tmp
        for fraction in fractions:
            runs.append(_transfer_one_fraction(
                base, fraction, epochs_head=epochs_head, seed=seed, lr=lr, head_lr=head_lr, batch_size=batch_size,
                cache_dir=os.path.join(root, f"cache-{fraction:g}"), progress=progress, log=log))
    metrics = {"base": {"classes": list(BASE_CLASSES), "test_accuracy": base_acc, "seconds": t_base,
                        "train_images": len(base_train)},
               "runs": runs, "args": args}
    for line in transfer_report(metrics).splitlines():
        log(line)
    return metrics


def transfer_report(metrics: Dict[str, Any]) -> str:
    """The tables transfer_demo prints, from its metrics."""
    rows = []
    for r in metrics["runs"]:
        acc, sec, n = r["accuracy"], r["seconds"], r["train_images"]
        rows.append(["transfer, head on cached features", f"{r['train_fraction']:g} ({n})",
                     f"{acc['cached_head']:.4f}",
                     f"{sec['cached_total']:.2f} ({sec['cache_build']:.2f} + {sec['cached_head']:.2f})"])
        rows.append(["transfer, head end to end", f"{r['train_fraction']:g} ({n})", f"{acc['end_to_end_head']:.4f}",
                     f"{sec['end_to_end_head']:.2f}"])
        rows.append(["LeNet-5 from scratch", f"{r['train_fraction']:g} ({n})", f"{acc['scratch']:.4f}",
                     f"{sec['scratch']:.2f}"])
    a = metrics["args"]
    lines = [f"digits 5-9 test accuracy ({metrics['runs'][0]['test_images']} images); {a['epochs_head']} epochs for "
             f"the heads and from scratch, the base trained {a['epochs_base']} epochs on 0-4 in "
             f"{metrics['base']['seconds']:.1f} s (not counted below)",
             format_table(["method", "train fraction (images)", "test acc", "wall s (build + train)"], rows), ""]
    for r in metrics["runs"]:
        imgs, calls = r["backbone_images"], r["backbone_calls"]
        lines.append(f"fraction {r['train_fraction']:g}: cached head vs end-to-end head: max |diff| "
                     f"{r['head_max_abs_diff']:.1e} (training moved the head by up to {r['head_max_abs_change']:.2f}); "
                     f"backbone ran over {imgs['cached']} images in {calls['cached']} calls (cached) vs "
                     f"{imgs['end_to_end']} in {calls['end_to_end']} (end to end); end-to-end time / cached time: "
                     f"{r['speedup']['with_cache_build']:.1f}x with the cache build, "
                     f"{r['speedup']['head_only']:.1f}x without")
    return "\n".join(lines)


# --- multi-crop evaluation and ensembles ------------------------------------------------------------------------------

def multicrop_demo(*, epochs: int = 30, seed: int = 0, lr: float = 3e-3, batch_size: int = 64, image_size: int = 36,
                   crop_size: int = 32, progress: bool = False, log: Optional[Log] = print,
                   keep_probabilities: bool = False) -> Dict[str, Any]:
    """Test-time augmentation and ensembles on the digits; returns the metrics dict.

    Two LeNet-5s (all ten digits, seeds `seed` and `seed + 1`) are trained for `epochs` epochs on random
    crop_size x crop_size crops of image_size x image_size digits (digits(size=image_size): the random crop is a
    translation by up to image_size - crop_size pixels) plus random rotations within +-10 degrees, with the digits
    recipe. On the test split, through cnnkernels.optimize()d models in eval mode, each network is evaluated on the
    centre crop, with MultiCrop "5crop" (centre and corners) and "10crop" (the same and their mirrors; see
    MIRROR_NOTE), and the two as an Ensemble of the centre-crop models, of the 5-crop and of the 10-crop ones.

    Returns {"accuracy": {"model1_centre", "model2_centre", "model1_5crop", "model2_5crop", "model1_10crop",
    "model2_10crop", "ensemble_centre", "ensemble_5crop", "ensemble_10crop"}, "eval_seconds": {same keys},
    "train_seconds": [two floats], "test_images", "args"}; with keep_probabilities=True also "probabilities" (the same
    keys, N x 10 float tensors; not JSON) and "labels"."""
    epochs = _check_int(epochs, "epochs", 1)
    seed = _check_int(seed, "seed", 0)
    lr = _check_positive(lr, "lr")
    batch_size = _check_int(batch_size, "batch_size", 1)
    crop_size = _check_int(crop_size, "crop_size", 8)
    image_size = _check_int(image_size, "image_size", 8)
    if image_size < crop_size:
        raise ValueError(f"image_size must be >= crop_size ({crop_size}), got {image_size}")
    log = _check_log(log)
    args = {"epochs": epochs, "seed": seed, "lr": lr, "batch_size": batch_size, "image_size": image_size,
            "crop_size": crop_size, "threads": torch.get_num_threads()}

    # torchvision only for the training augmentation, as in cnnkernels.train.data.
    from torchvision.transforms import v2
    augment = v2.Compose([v2.RandomCrop(crop_size), digits_augmentation(translate=0.0)])
    train_set = digits("train", size=image_size, transform=augment)
    test_set = digits("test", size=image_size)
    log(f"two LeNet-5s on the digits: {len(train_set)} training images, random {crop_size}x{crop_size} crops of "
        f"{image_size}x{image_size} images and rotations, {epochs} epochs, seeds {seed} and {seed + 1}, "
        f"{torch.get_num_threads()} threads")
    if progress:
        log(_PROGRESS_NOTE)
    nets, train_seconds = [], []
    for k in range(2):
        net, seconds = _train_lenet(train_set, 10, epochs=epochs, seed=seed + k, lr=lr, batch_size=batch_size,
                                    progress=progress, desc=f"model {k + 1}")
        nets.append(_fused(net))
        train_seconds.append(seconds)
        log(f"model {k + 1}: trained in {seconds:.1f} s")

    # The centre crop is MultiCrop's (and torchvision's center_crop's): top/left at round((size - crop) / 2).
    top = int(round((image_size - crop_size) / 2.0))
    centre = test_set.images[..., top:top + crop_size, top:top + crop_size].contiguous()
    centre_loader = DataLoader(list(zip(centre, test_set.targets)), batch_size=256)
    full_loader = DataLoader(list(zip(test_set.images, test_set.targets)), batch_size=256)
    five = [MultiCrop(n, crop_size, "5crop").eval() for n in nets]
    ten = [MultiCrop(n, crop_size, "10crop").eval() for n in nets]
    cases = [("model1_centre", nets[0], centre_loader), ("model2_centre", nets[1], centre_loader),
             ("model1_5crop", five[0], full_loader), ("model2_5crop", five[1], full_loader),
             ("model1_10crop", ten[0], full_loader), ("model2_10crop", ten[1], full_loader),
             ("ensemble_centre", Ensemble(nets).eval(), centre_loader),
             ("ensemble_5crop", Ensemble(five).eval(), full_loader),
             ("ensemble_10crop", Ensemble(ten).eval(), full_loader)]
    accuracy, seconds, probabilities = {}, {}, {}
    labels = test_set.targets
    for name, model, loader in cases:
        t0 = time.perf_counter()
        probs, seen = _probabilities(model, loader)
        seconds[name] = time.perf_counter() - t0
        if not torch.equal(seen, labels):
            raise RuntimeError(f"{name}: the test loader returned the labels out of order")
        accuracy[name] = _accuracy(probs, labels)
        probabilities[name] = probs
    metrics: Dict[str, Any] = {"accuracy": accuracy, "eval_seconds": seconds, "train_seconds": train_seconds,
                               "test_images": len(test_set), "args": args}
    for line in multicrop_report(metrics).splitlines():
        log(line)
    if keep_probabilities:
        metrics["probabilities"] = probabilities
        metrics["labels"] = labels
    return metrics


_MULTICROP_ROWS = [
    ("single model, centre crop", "model1_centre", "model2_centre"),
    ("single model, 5 crops (centre + corners)", "model1_5crop", "model2_5crop"),
    ("single model, 10 crops (5 + mirrors)", "model1_10crop", "model2_10crop"),
    ("ensemble of the two, centre crop", "ensemble_centre", None),
    ("ensemble of the two, 5 crops", "ensemble_5crop", None),
    ("ensemble of the two, 10 crops", "ensemble_10crop", None),
]


def multicrop_report(metrics: Dict[str, Any]) -> str:
    """The table multicrop_demo prints, from its metrics."""
    acc, sec = metrics["accuracy"], metrics["eval_seconds"]
    rows = []
    for label, a, b in _MULTICROP_ROWS:
        if b is None:
            rows.append([label, f"{acc[a]:.4f}", "", f"{sec[a]:.2f}"])
        else:
            rows.append([label, f"{acc[a]:.4f} / {acc[b]:.4f}", f"{(acc[a] + acc[b]) / 2:.4f}",
                         f"{sec[a]:.2f} / {sec[b]:.2f}"])
    a = metrics["args"]
    head = (f"digits test accuracy ({metrics['test_images']} images, {a['crop_size']}x{a['crop_size']} crops of "
            f"{a['image_size']}x{a['image_size']}), cnnkernels.optimize()d models")
    return "\n".join([head, format_table(["evaluation", "test acc (model 1 / 2)", "mean", "eval s"], rows),
                      "note: " + MIRROR_NOTE])
