"""Training-time augmentation on top of torchvision.transforms.v2, plus what v2 lacks.

* `PCAColor`: AlexNet's PCA colour ("lighting") augmentation as a v2 transform (composes with v2.Compose, acts on
  tv_tensors.Image and plain tensors, leaves boxes, masks and labels alone).
* `pca_color`: the same shift with an explicit alpha (the functional form).
* `rgb_pca`: the eigen-decomposition of the RGB covariance over a training set, to feed PCAColor.
* `default_augmentation`: the case studies' pipeline (crop, flip, rotation, shear, elastic warping, colour jitter,
  PCA colour) in one call; everything but PCAColor is torchvision's own transform.
* `save_augmentation_grid`: a PNG grid of augmented samples, to look at what a pipeline does; also a command:

      python -m cnnkernels.train.augment --out grid.png [--size 128] [--samples 8] [--seed 0]

  which runs default_augmentation over scikit-image's bundled sample photographs (they ship with the package, so it
  works offline).

All randomness comes from torch's global RNG, so DataLoader workers (each seeded by the DataLoader from its
`generator`) draw different, reproducible augmentations.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from collections.abc import Iterable, Sequence
from typing import Any, Dict, List, Optional, Tuple, Union

import PIL.Image
import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F
from torchvision.utils import make_grid, save_image

__all__ = [
    "IMAGENET_EIGVAL",
    "IMAGENET_EIGVEC",
    "PCAColor",
    "pca_color",
    "rgb_pca",
    "default_augmentation",
    "save_augmentation_grid",
    "SAMPLE_IMAGES",
    "load_sample_images",
    "main",
]

# ImageNet's RGB PCA for images scaled to [0, 1]: the values published with Facebook's fb.resnet.torch training code
# (its "Lighting" transform) and reused by most AlexNet-style training scripts. Columns of IMAGENET_EIGVEC are the
# eigenvectors, in the order of IMAGENET_EIGVAL (descending); channels in R, G, B order.
IMAGENET_EIGVAL: Tuple[float, float, float] = (0.2175, 0.0188, 0.0045)
IMAGENET_EIGVEC: Tuple[Tuple[float, float, float], ...] = (
    (-0.5675, 0.7192, 0.4009),
    (-0.5808, -0.0045, -0.8140),
    (-0.5836, -0.6948, 0.4203),
)


def _check_eig(eigval: Any, eigvec: Any) -> Tuple[Tensor, Tensor]:
    """eigval/eigvec as float32 CPU tensors of shapes (3,) and (3, 3), ImageNet's values where None."""
    eigval = torch.tensor(IMAGENET_EIGVAL) if eigval is None else torch.as_tensor(eigval)
    eigvec = torch.tensor(IMAGENET_EIGVEC) if eigvec is None else torch.as_tensor(eigvec)
    if eigval.shape != (3,):
        raise ValueError(f"PCAColor: `eigval` must have shape (3,) (one eigenvalue per RGB principal axis), "
                         f"got shape {tuple(eigval.shape)}")
    if eigvec.shape != (3, 3):
        raise ValueError(f"PCAColor: `eigvec` must have shape (3, 3) (eigenvectors as columns), "
                         f"got shape {tuple(eigvec.shape)}")
    eigval = eigval.detach().to("cpu", torch.float32)
    eigvec = eigvec.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(eigval).all()) or bool((eigval < 0).any()):
        raise ValueError(f"PCAColor: `eigval` must be finite and >= 0 (eigenvalues of a covariance), "
                         f"got {eigval.tolist()}")
    if not bool(torch.isfinite(eigvec).all()):
        raise ValueError(f"PCAColor: `eigvec` must be finite, got {eigvec.tolist()}")
    return eigval, eigvec


def _check_image(image: Any, who: str) -> None:
    if not isinstance(image, Tensor):
        raise TypeError(f"{who}: the image must be a torch.Tensor or tv_tensors.Image of shape (3, H, W) or "
                        f"(N, 3, H, W), got {type(image).__name__}")
    if image.dim() not in (3, 4) or image.shape[-3] != 3:
        raise ValueError(f"{who}: the image must have shape (3, H, W) or (N, 3, H, W) (RGB channels), got shape "
                         f"{tuple(image.shape)}; for grayscale images leave PCA colour out "
                         f"(default_augmentation(..., pca=False))")
    if image.dtype != torch.uint8 and not image.dtype.is_floating_point:
        raise TypeError(f"{who}: the image must be uint8 (0..255) or floating point ([0, 1]), got {image.dtype}")


def pca_color(image: Tensor, alpha: Tensor, eigval: Any = None, eigvec: Any = None) -> Tensor:
    """Adds `eigvec @ (alpha * eigval)` to every pixel of `image` (AlexNet's PCA colour shift with a given alpha).

    image: (3, H, W) or (N, 3, H, W), uint8 (shift scaled by 255, computed in float32, rounded and clamped to
    0..255) or any float dtype (taken as [0, 1]; the result is not clamped, so the shift stays zero-mean).
    alpha: (3,) for a (3, H, W) image, (N, 3) for a batch (one alpha per image); it is moved to the image's device.
    eigval, eigvec: (3,) and (3, 3) with eigenvectors as columns; None: ImageNet's values (IMAGENET_EIGVAL/EIGVEC).
    tv_tensors.Image in, tv_tensors.Image out."""
    _check_image(image, "pca_color")
    eigval, eigvec = _check_eig(eigval, eigvec)
    alpha = torch.as_tensor(alpha)
    lead = tuple(image.shape[:-3])
    if tuple(alpha.shape) != lead + (3,):
        raise ValueError(f"pca_color: `alpha` must have shape {lead + (3,)} for an image of shape "
                         f"{tuple(image.shape)}, got {tuple(alpha.shape)}")
    plain = image.as_subclass(Tensor)
    compute = torch.promote_types(image.dtype, torch.float32) if image.dtype.is_floating_point else torch.float32
    eigval = eigval.to(plain.device, compute)
    eigvec = eigvec.to(plain.device, compute)
    # Row form of eigvec @ (alpha * eigval), for every image of the batch at once.
    shift = (alpha.to(plain.device, compute) * eigval) @ eigvec.T
    shift = shift[..., None, None]
    if image.dtype == torch.uint8:
        out = (plain.to(compute) + shift * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    else:
        out = (plain.to(compute) + shift).to(image.dtype)
    return tv_tensors.wrap(out, like=image) if isinstance(image, tv_tensors.Image) else out


class PCAColor(v2.Transform):
    """AlexNet's PCA colour augmentation (Krizhevsky et al. 2012, section 4.1) as a torchvision v2 transform.

    To every pixel of an image it adds `eigvec @ (alpha * eigval)`, where eigval/eigvec are the eigenvalues and
    eigenvectors (columns) of the RGB covariance over the training set and alpha ~ N(0, alphastd^2) (3 values) is
    drawn once per image. The shift moves colours along the data's principal colour axes, most along the first
    (roughly brightness), which makes a model less sensitive to illumination.

    alphastd: the standard deviation of alpha (AlexNet: 0.1); 0 leaves images unchanged (no RNG draw either).
    eigval, eigvec: shapes (3,) and (3, 3), for RGB values scaled to [0, 1], e.g. from `rgb_pca(train_images)`.
    None: ImageNet's published values (IMAGENET_EIGVAL / IMAGENET_EIGVEC, from fb.resnet.torch's Lighting
    transform), also for [0, 1]-scaled RGB.

    Inputs: tv_tensors.Image or plain tensors of shape (3, H, W) or (N, 3, H, W) (alpha drawn independently per
    image, shape (N, 3)); float images of any float dtype are taken as [0, 1] and not clamped afterwards (the shift is
    zero-mean; clamping would bias it), uint8 images are on the 0..255 scale, so the shift is multiplied by 255,
    computed in float32, rounded and clamped to 0..255. CPU and CUDA tensors alike; alpha comes from torch's global
    RNG on the image's device, so torch.manual_seed and DataLoader worker seeding apply. As with other v2
    transforms, bounding boxes, masks, labels and other non-image entries of a sample pass through untouched; all
    images of one sample get the same alpha. PIL images are refused (put v2.ToImage() before PCAColor); videos
    pass through."""

    _transformed_types = (tv_tensors.Image, F.is_pure_tensor)

    def __init__(self, alphastd: float = 0.1, eigval: Any = None, eigvec: Any = None) -> None:
        super().__init__()
        if isinstance(alphastd, bool) or not isinstance(alphastd, (int, float)):
            raise TypeError(f"PCAColor: `alphastd` must be a real number >= 0, got {type(alphastd).__name__}")
        if not math.isfinite(alphastd) or alphastd < 0:
            raise ValueError(f"PCAColor: `alphastd` must be a finite number >= 0, got {alphastd}")
        self.alphastd = float(alphastd)
        ev, evec = _check_eig(eigval, eigvec)
        self.register_buffer("eigval", ev)
        self.register_buffer("eigvec", evec)

    def check_inputs(self, flat_inputs: List[Any]) -> None:
        """Refuses PIL images, which v2 would otherwise pass through unchanged without a word."""
        if any(isinstance(x, PIL.Image.Image) for x in flat_inputs):
            raise TypeError("PCAColor: PIL images are not supported; convert them to tensors first, e.g. "
                            "v2.Compose([v2.ToImage(), ..., PCAColor()])")

    def make_params(self, flat_inputs: List[Any]) -> Dict[str, Any]:
        """Draws alpha: shape (3,) for one image, (N, 3) for a batch of N, on the (first) image's device."""
        if not flat_inputs:
            return {"alpha": None}
        lead = None
        for image in flat_inputs:
            _check_image(image, "PCAColor")
            if lead is None:
                lead = tuple(image.shape[:-3])
            elif tuple(image.shape[:-3]) != lead:
                raise ValueError(f"PCAColor: all images of one sample must have the same batch shape, got "
                                 f"{[tuple(x.shape) for x in flat_inputs]}")
        if self.alphastd == 0.0:
            return {"alpha": None}
        alpha = torch.randn(lead + (3,), device=flat_inputs[0].device) * self.alphastd
        return {"alpha": alpha}

    def transform(self, inpt: Any, params: Dict[str, Any]) -> Any:
        """Applies the shift drawn by make_params to one image or batch."""
        if params["alpha"] is None:
            return inpt
        return pca_color(inpt, params["alpha"], self.eigval, self.eigvec)

    def extra_repr(self) -> str:
        return f"alphastd={self.alphastd}"


def _image_items(images: Any) -> Iterable[Any]:
    """The images of a tensor, an iterable or a map-style Dataset (which need not define __iter__)."""
    if isinstance(images, Tensor):
        if images.dim() == 3:
            return [images]
        if images.dim() == 4:
            return images  # iterating a 4-D tensor yields its (3, H, W) images, one at a time
        raise ValueError(f"rgb_pca: a tensor `images` must have shape (3, H, W) or (N, 3, H, W), got shape "
                         f"{tuple(images.shape)}")
    if hasattr(images, "__len__") and hasattr(images, "__getitem__") and not hasattr(images, "__iter__"):
        return (images[i] for i in range(len(images)))
    if isinstance(images, Iterable):
        return images
    raise TypeError(f"rgb_pca: `images` must be a tensor, an iterable or a Dataset of images, got "
                    f"{type(images).__name__}")


def _pixels(item: Any) -> Tensor:
    """An item's pixels as a float64 (P, 3) matrix on the [0, 1] scale."""
    if isinstance(item, (tuple, list)) and item:
        item = item[0]  # (image, label) samples from a Dataset or (images, labels) batches from a DataLoader
    if isinstance(item, PIL.Image.Image):
        item = F.pil_to_tensor(item.convert("RGB"))
    if not isinstance(item, Tensor):
        raise TypeError(f"rgb_pca: each image must be a tensor or PIL image (or an (image, label) pair), got "
                        f"{type(item).__name__}")
    if item.dim() not in (3, 4) or item.shape[-3] != 3:
        raise ValueError(f"rgb_pca: each image must have shape (3, H, W) or (N, 3, H, W), got shape "
                         f"{tuple(item.shape)}")
    item = item.as_subclass(Tensor).detach()
    if item.dtype == torch.uint8:
        x = item.to(torch.float64) / 255.0
    elif item.dtype.is_floating_point:
        x = item.to(torch.float64)
    else:
        raise TypeError(f"rgb_pca: images must be uint8 or floating point, got {item.dtype}")
    return x.movedim(-3, -1).reshape(-1, 3)


def rgb_pca(images: Any) -> Tuple[Tensor, Tensor]:
    """The eigen-decomposition of the RGB covariance of all pixels of a training set, for PCAColor.

    images: a tensor (N, 3, H, W) or (3, H, W), or an iterable / map-style Dataset / DataLoader yielding (3, H, W)
    or (N, 3, H, W) tensors, PIL images, or (image, label) pairs. Images are streamed: running means and
    co-moments are merged image by image (Chan et al.'s pairwise update, in float64), so the set is never held in
    memory at once. uint8 images are scaled to [0, 1]; float images are taken as they are (expected in [0, 1]).

    Returns (eigval, eigvec), float32 on the CPU: eigval (3,) sorted in descending order, eigvec (3, 3) with the
    matching eigenvectors as columns, each column's sign chosen so that its largest-magnitude entry is positive.
    The covariance is the unbiased one (divided by pixels - 1)."""
    count = 0
    mean = torch.zeros(3, dtype=torch.float64)
    comoment = torch.zeros(3, 3, dtype=torch.float64)
    for item in _image_items(images):
        px = _pixels(item)
        n = px.shape[0]
        if n == 0:
            continue
        m = px.mean(0)
        centred = px - m
        # Per-image statistics are computed where the image lives (CUDA included); only 3 + 9 numbers come back.
        c = (centred.T @ centred).cpu()
        m = m.cpu()
        delta = m - mean
        total = count + n
        comoment += c + torch.outer(delta, delta) * (count * n / total)
        mean += delta * (n / total)
        count = total
    if count < 2:
        raise ValueError(f"rgb_pca: `images` must hold at least 2 pixels to estimate a covariance, got {count}")
    cov = comoment / (count - 1)
    eigval, eigvec = torch.linalg.eigh(cov)  # ascending
    eigval = eigval.flip(0).clamp_min(0.0)
    eigvec = eigvec.flip(1)
    idx = eigvec.abs().argmax(0)
    signs = torch.sign(eigvec[idx, torch.arange(3)])
    eigvec = eigvec * torch.where(signs == 0, torch.ones_like(signs), signs)
    return eigval.to(torch.float32), eigvec.to(torch.float32)


def _size_pair(size: Any, who: str) -> Tuple[int, int]:
    if isinstance(size, int) and not isinstance(size, bool):
        size = (size, size)
    if (not isinstance(size, (tuple, list)) or len(size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in size)):
        raise TypeError(f"{who}: `size` must be an int or a pair of ints (height, width), got {size!r}")
    if min(size) < 1:
        raise ValueError(f"{who}: `size` must be positive, got {tuple(size)}")
    return int(size[0]), int(size[1])


def default_augmentation(size: Union[int, Tuple[int, int]], *, pca: bool = True, elastic: bool = True) -> v2.Compose:
    """The case studies' training augmentation in one v2.Compose, producing `size` (int or (h, w)) images:

    v2.ToImage (PIL / ndarray / tensor -> tv_tensors.Image), RandomResizedCrop(size, scale=(0.5, 1)),
    RandomHorizontalFlip, RandomRotation(10 degrees), RandomAffine(shear=10 degrees), with probability 0.5
    ElasticTransform(alpha=6 sigma, sigma=min(5, (min(h, w) - 1) / 4.5)) (if `elastic`; sigma is 5 from 24x24 up,
    smaller below so that the blur kernel fits), ColorJitter(brightness=contrast=saturation=0.3, hue=0.02),
    then PCAColor(0.1) with ImageNet's eigenvalues (if `pca`).

    Crops come first so that everything after them works on `size`-sized images. Input: one image (PIL, or a uint8
    or [0, 1] float tensor of shape (C, H, W)); a (N, C, H, W) batch gets the same geometry for all its images (v2's
    rule) but its own PCA colour shift per image. PCAColor needs 3-channel RGB images: pass pca=False for grayscale
    data (e.g. digits), where PCAColor would raise ValueError."""
    h, w = _size_pair(size, "default_augmentation")
    ops: List[Any] = [
        v2.ToImage(),
        v2.RandomResizedCrop((h, w), scale=(0.5, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomRotation(10),
        v2.RandomAffine(degrees=0, shear=10),
    ]
    if elastic:
        # ElasticTransform blurs its displacement field with a reflect-padded kernel of about 8 sigma + 1 pixels,
        # which must fit in the image; alpha follows sigma to keep the warp's strength.
        sigma = min(5.0, (min(h, w) - 1) / 4.5)
        ops.append(v2.RandomApply([v2.ElasticTransform(alpha=6.0 * sigma, sigma=sigma)], p=0.5))
    ops.append(v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.02))
    if pca:
        ops.append(PCAColor(0.1))
    return v2.Compose(ops)


def _as_float_image(x: Any, who: str) -> Tensor:
    """An image as a plain float32 (C, H, W) tensor in [0, 1], C in (1, 3)."""
    if isinstance(x, PIL.Image.Image):
        x = F.pil_to_tensor(x)
    if not isinstance(x, Tensor):
        raise TypeError(f"{who}: images and transform outputs must be tensors or PIL images, got {type(x).__name__}")
    x = x.as_subclass(Tensor).detach().cpu()
    if x.dim() != 3 or x.shape[0] not in (1, 3):
        raise ValueError(f"{who}: each image must have shape (C, H, W) with C = 1 or 3, got shape {tuple(x.shape)}")
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    if not x.dtype.is_floating_point:
        raise TypeError(f"{who}: images must be uint8 or floating point, got {x.dtype}")
    return x.to(torch.float32).clamp(0.0, 1.0)


def _letterbox(x: Tensor, h: int, w: int) -> Tensor:
    """x scaled to fit inside h x w (aspect ratio kept) and centred on black."""
    ih, iw = x.shape[-2:]
    if (ih, iw) == (h, w):
        return x
    scale = min(h / ih, w / iw)
    nh, nw = max(1, min(h, round(ih * scale))), max(1, min(w, round(iw * scale)))
    x = F.resize(x, [nh, nw], antialias=True).clamp(0.0, 1.0)
    out = x.new_zeros(x.shape[0], h, w)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[:, top:top + nh, left:left + nw] = x
    return out


def save_augmentation_grid(path: Union[str, os.PathLike], images: Any, transform: Any, *, samples: int = 8,
                           seed: int = 0) -> Tensor:
    """Saves a PNG grid to `path`: one row per input image, its original first, then `samples` outputs of
    `transform` applied to it. Returns the grid as a float (3, H, W) tensor in [0, 1].

    images: a (N, C, H, W) or (C, H, W) tensor or a sequence of tensors / PIL images (uint8, or float in [0, 1];
    C = 1 or 3). Tiles are the size of the largest transform output; the originals (and any smaller outputs) are
    scaled to fit inside a tile with their aspect ratio kept, on black. Tiles are 2 pixels apart (make_grid's
    padding), so the PNG is (samples + 1) * (tile_w + 2) + 2 pixels wide and N * (tile_h + 2) + 2 high.
    Deterministic given `seed`: torch's (and Python's) RNG are seeded inside and restored afterwards, so the
    caller's random state is left as it was. The parent folder is created if needed; the file is PNG whatever its
    name."""
    who = "save_augmentation_grid"
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"{who}: `samples` must be an int >= 1, got {samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{who}: `seed` must be an int, got {seed!r}")
    if not callable(transform):
        raise TypeError(f"{who}: `transform` must be callable, got {type(transform).__name__}")
    if isinstance(images, Tensor):
        if images.dim() == 3:
            images = [images]
        elif images.dim() != 4:
            raise ValueError(f"{who}: a tensor `images` must have shape (C, H, W) or (N, C, H, W), got shape "
                             f"{tuple(images.shape)}")
        else:
            images = list(images.unbind(0))
    elif isinstance(images, PIL.Image.Image):
        images = [images]
    elif not isinstance(images, Sequence):
        raise TypeError(f"{who}: `images` must be a tensor or a sequence of images, got {type(images).__name__}")
    if len(images) == 0:
        raise ValueError(f"{who}: `images` must hold at least one image, got none")

    originals = [_as_float_image(x, who) for x in images]
    devices = sorted({x.device.index or 0 for x in images if isinstance(x, Tensor) and x.is_cuda})
    py_state = random.getstate()
    try:
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            random.seed(seed)
            augmented = [[_as_float_image(transform(x), who) for _ in range(samples)] for x in images]
    finally:
        random.setstate(py_state)

    th = max(a.shape[-2] for row in augmented for a in row)
    tw = max(a.shape[-1] for row in augmented for a in row)
    channels = 3 if any(t.shape[0] == 3 for t in originals + [a for row in augmented for a in row]) else 1
    tiles = []
    for original, row in zip(originals, augmented):
        for t in [original] + row:
            t = _letterbox(t, th, tw)
            tiles.append(t.expand(channels, -1, -1))
    grid = make_grid(torch.stack(tiles), nrow=samples + 1, padding=2, pad_value=0.0)
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    save_image(grid, path, format="PNG")
    return grid


# scikit-image's sample photographs that ship inside the package (no download); grayscale ones are repeated to RGB.
SAMPLE_IMAGES: Tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "retina", "camera", "coins", "moon")


def load_sample_images(names: Sequence[str] = ("astronaut", "chelsea", "coffee"),
                       max_side: Optional[int] = None) -> List[Tensor]:
    """scikit-image's bundled sample photographs as uint8 (3, H, W) tensors (grayscale ones repeated to RGB).

    names: from SAMPLE_IMAGES. max_side: if given, larger images are downscaled (antialiased, aspect ratio kept) so
    that their shorter side is max_side, which keeps augmentation fast on big photographs."""
    import skimage.data  # optional heavy dependency, only for the sample photographs

    out = []
    for name in names:
        if name not in SAMPLE_IMAGES:
            raise ValueError(f"load_sample_images: unknown image {name!r}; choose from {', '.join(SAMPLE_IMAGES)}")
        a = torch.from_numpy(getattr(skimage.data, name)().copy())
        a = a.unsqueeze(0).expand(3, -1, -1) if a.dim() == 2 else a.permute(2, 0, 1)
        a = a.contiguous()
        if max_side is not None and min(a.shape[-2:]) > max_side:
            a = F.resize(a, max_side, antialias=True)
        out.append(a)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python -m cnnkernels.train.augment --out grid.png`: saves a grid of default_augmentation's outputs on
    scikit-image's sample photographs. Returns the exit status (0)."""
    parser = argparse.ArgumentParser(
        prog="python -m cnnkernels.train.augment",
        description="Save a PNG grid of augmented samples (default_augmentation on scikit-image's sample photos): "
                    "one row per photo, the original first.")
    parser.add_argument("--out", required=True, help="PNG file to write")
    parser.add_argument("--size", type=int, default=128, help="output size of the augmentation (default 128)")
    parser.add_argument("--samples", type=int, default=8, help="augmented samples per photo (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--images", nargs="+", default=["astronaut", "chelsea", "coffee"], choices=SAMPLE_IMAGES,
                        metavar="NAME", help=f"sample photos, from: {', '.join(SAMPLE_IMAGES)}")
    parser.add_argument("--no-pca", action="store_true", help="leave out PCA colour augmentation")
    parser.add_argument("--no-elastic", action="store_true", help="leave out elastic warping")
    args = parser.parse_args(argv)
    if args.size < 1:
        parser.error(f"--size must be >= 1, got {args.size}")
    if args.samples < 1:
        parser.error(f"--samples must be >= 1, got {args.samples}")
    images = load_sample_images(args.images, max_side=2 * args.size)
    transform = default_augmentation(args.size, pca=not args.no_pca, elastic=not args.no_elastic)
    grid = save_augmentation_grid(args.out, images, transform, samples=args.samples, seed=args.seed)
    print(f"wrote {args.out}: {grid.shape[-1]}x{grid.shape[-2]} pixels, {len(images)} images x "
          f"(original + {args.samples} samples)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
