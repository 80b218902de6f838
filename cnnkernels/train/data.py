"""Offline image data for training and tests: scikit-learn's handwritten digits (UCI "optdigits" test set as bundled
with scikit-learn, 1,797 8x8 grayscale images of the digits 0-9, pixel values 0..16, about 180 per class).

`digits(split)` returns a torch Dataset of 1-channel float32 images in [0, 1], bilinearly upsampled to size x size
(32x32 by default, LeNet-5's input size), over a FIXED stratified train/test split: the split is computed once from
all 1,797 images with scikit-learn's train_test_split(stratify=labels, random_state=seed), so the same (test_fraction,
seed) always gives the same, disjoint train and test sets, and class subsets (`classes=`) are taken from that same
split (a model trained on digits 0-4 never saw the test images of digits 5-9 either).
"""

from __future__ import annotations

import functools
import numbers
from typing import Callable, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset

__all__ = ["DigitsDataset", "digits", "digits_augmentation", "digits_split_indices", "NUM_DIGITS", "DIGITS_NATIVE_SIZE"]

NUM_DIGITS = 1797
DIGITS_NATIVE_SIZE = 8
_MAX_PIXEL = 16.0
_SPLITS = ("train", "test")


@functools.lru_cache(maxsize=1)
def _load_raw() -> Tuple[np.ndarray, np.ndarray]:
    # Imported here: scikit-learn is only needed by the digits data, not by the rest of cnnkernels.train.
    from sklearn.datasets import load_digits
    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float32) / _MAX_PIXEL
    labels = np.asarray(bunch.target, dtype=np.int64)
    if images.shape != (NUM_DIGITS, DIGITS_NATIVE_SIZE, DIGITS_NATIVE_SIZE):
        raise RuntimeError(f"scikit-learn's load_digits returned images of shape {images.shape}, expected "
                           f"({NUM_DIGITS}, 8, 8)")
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


@functools.lru_cache(maxsize=4)
def _images_at(size: int) -> Tensor:
    images, _ = _load_raw()
    x = torch.from_numpy(images.copy()).unsqueeze(1)  # N x 1 x 8 x 8
    if size != DIGITS_NATIVE_SIZE:
        # Upsampling only (size >= 8), where antialiasing would change nothing, so it is left off. align_corners=False
        # keeps the image centred: each source pixel covers a (size/8)^2 block.
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=False)
    return x.clamp_(0.0, 1.0).contiguous()


def _check_split_args(test_fraction, seed) -> None:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real) \
            or not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be a float strictly between 0 and 1, got {test_fraction!r}")
    n_test = int(np.ceil(float(test_fraction) * NUM_DIGITS))
    # Stratification needs at least one image of each of the 10 classes on both sides.
    if n_test < 10 or NUM_DIGITS - n_test < 10:
        raise ValueError(f"test_fraction must leave at least 10 images (one per class) on each side of the split, "
                         f"got {test_fraction!r} ({n_test} test images of {NUM_DIGITS})")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 2 ** 32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")


@functools.lru_cache(maxsize=8)
def _split(test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split
    _, labels = _load_raw()
    train_idx, test_idx = train_test_split(np.arange(NUM_DIGITS), test_size=test_fraction, stratify=labels,
                                           random_state=seed, shuffle=True)
    # Sorted: the dataset order follows scikit-learn's order; shuffling is the DataLoader's job.
    train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
    train_idx.setflags(write=False)
    test_idx.setflags(write=False)
    return train_idx, test_idx


def digits_split_indices(*, test_fraction: float = 0.25, seed: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """(train_indices, test_indices) into scikit-learn's load_digits() arrays: the fixed stratified split digits()
    uses. Both sorted, disjoint, covering all 1,797 images; the same arguments always give the same split."""
    _check_split_args(test_fraction, seed)
    train_idx, test_idx = _split(float(test_fraction), int(seed))
    return train_idx.copy(), test_idx.copy()


def _check_classes(classes) -> Optional[Tuple[int, ...]]:
    if classes is None:
        return None
    if isinstance(classes, (str, bytes)) or not isinstance(classes, Sequence):
        raise ValueError(f"classes must be None or a sequence of distinct digits 0..9, got {classes!r}")
    out = []
    for c in classes:
        if isinstance(c, bool) or not isinstance(c, numbers.Integral) or not 0 <= int(c) <= 9:
            raise ValueError(f"classes must hold digits 0..9 (ints), got {classes!r}")
        out.append(int(c))
    if not out:
        raise ValueError("classes must hold at least one digit 0..9, got an empty sequence")
    if len(set(out)) != len(out):
        raise ValueError(f"classes must not repeat a digit, got {classes!r}")
    return tuple(out)


class DigitsDataset(Dataset):
    """Images and labels of one side of the digits split. Item i is (image, label): image a 1 x size x size float32
    tensor in [0, 1] (after `transform`, if any, which runs per item so augmentation happens in DataLoader workers),
    label an int.

    Attributes: images (N x 1 x size x size, before the transform), targets (N, int64, remapped labels), digits
    (N, int64, the original digit of each image), indices (N, positions in load_digits()), classes (the original digit
    of each label: classes[label] == digit), split, size, transform."""

    def __init__(self, images: Tensor, targets: Tensor, digits_: Tensor, indices: np.ndarray,
                 classes: Tuple[int, ...], split: str, size: int, transform: Optional[Callable]) -> None:
        self.images = images
        self.targets = targets
        self.digits = digits_
        self.indices = indices
        self.classes = classes
        self.split = split
        self.size = size
        self.transform = transform

    @property
    def num_classes(self) -> int:
        """Number of distinct labels (len(classes))."""
        return len(self.classes)

    def __len__(self) -> int:
        return int(self.targets.shape[0])

    def __getitem__(self, index: int):
        image = self.images[index]
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])

    def __repr__(self) -> str:
        return (f"DigitsDataset(split={self.split!r}, size={self.size}, classes={self.classes}, n={len(self)}, "
                f"transform={self.transform!r})")


def digits(split: str, *, size: int = 32, classes: Optional[Sequence[int]] = None, test_fraction: float = 0.25,
           seed: int = 0, transform: Optional[Callable[[Tensor], Tensor]] = None) -> DigitsDataset:
    """The scikit-learn digits as a Dataset of (1 x size x size float32 image in [0, 1], int label).

    split: "train" or "test", a side of the fixed stratified split (digits_split_indices(test_fraction=, seed=)):
        with the defaults 1,347 train and 450 test images, each class in the same proportion on both sides.
    size: output height and width, an int >= 8 (8 is the native resolution; larger sizes are bilinear upsamplings,
        align_corners=False, no antialiasing, which only matters when downsampling).
    classes: None for all ten digits with label == digit, or a sequence of distinct digits to keep, e.g. (5, 6, 7, 8,
        9); the labels are then remapped to 0..k-1 in the given order (label i is digit classes[i]).
    transform: applied to each image in __getitem__ (e.g. torchvision.transforms.v2 augmentation).
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or int(size) < DIGITS_NATIVE_SIZE:
        raise ValueError(f"size must be an int >= {DIGITS_NATIVE_SIZE} (images are only upsampled), got {size!r}")
    if transform is not None and not callable(transform):
        raise TypeError(f"transform must be None or a callable taking and returning an image tensor, "
                        f"got {type(transform).__name__}")
    kept = _check_classes(classes)
    train_idx, test_idx = digits_split_indices(test_fraction=test_fraction, seed=seed)
    idx = train_idx if split == "train" else test_idx
    _, labels = _load_raw()
    digit_of = labels[idx]
    if kept is None:
        kept = tuple(range(10))
    else:
        keep = np.isin(digit_of, kept)
        idx, digit_of = idx[keep], digit_of[keep]
    remap = np.full(10, -1, dtype=np.int64)
    remap[list(kept)] = np.arange(len(kept))
    size = int(size)
    index = torch.from_numpy(idx.astype(np.int64))
    images = _images_at(size).index_select(0, index)
    return DigitsDataset(images=images, targets=torch.from_numpy(remap[digit_of]),
                         digits_=torch.from_numpy(digit_of.copy()), indices=idx, classes=kept, split=split,
                         size=size, transform=transform)


def digits_augmentation(degrees: float = 10.0, translate: float = 0.1) -> Callable[[Tensor], Tensor]:
    """The light augmentation the digits recipes use: a random rotation within +-degrees and a random shift of up to
    `translate` times the image size (torchvision.transforms.v2.RandomAffine, zero fill). Pass it as digits(...,
    transform=); it draws from torch's RNG, seeded per DataLoader worker."""
    if isinstance(degrees, bool) or not isinstance(degrees, numbers.Real) or not 0 <= degrees <= 180:
        raise ValueError(f"degrees must be a number in [0, 180], got {degrees!r}")
    if isinstance(translate, bool) or not isinstance(translate, numbers.Real) or not 0 <= translate <= 1:
        raise ValueError(f"translate must be a number in [0, 1] (a fraction of the image size), got {translate!r}")
    # torchvision is not a dependency of cnnkernels.train: only augmentation needs it.
    from torchvision.transforms import v2
    return v2.RandomAffine(degrees=float(degrees), translate=(float(translate), float(translate)))
