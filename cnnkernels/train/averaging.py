"""Test-time evaluation: multi-crop averaging and model ensembles.

* `MultiCrop(model, crop_size, crops="10crop")` classifies several crops of every image (AlexNet's 10 crops: the
  centre and 4 corners and their horizontal mirrors; also "5crop" and "mirror") in one batch and averages their
  softmax probabilities.
* `Ensemble(models)` averages the softmax probabilities of several models.

Both return probabilities (not logits) and say so with the class attribute `returns_probabilities = True`;
`Ensemble` uses that attribute to take such members' outputs as they are instead of applying softmax again, so
`Ensemble([MultiCrop(a, 224), MultiCrop(b, 224)])` and ensembles of ensembles work. Any module of your own that
returns probabilities can set the same attribute. Both work with `cnnkernels.optimize()`d models (and can be
optimize()d themselves: optimize() leaves unknown modules in place and optimizes their children). Neither module
changes its members' mode by itself: like any nn.Module they start in training mode, and `.eval()` on them puts them
and their members in eval mode (which optimize() requires), e.g. `cnnkernels.optimize(MultiCrop(net, 224).eval())`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import List, Optional, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = ["CROPS", "MultiCrop", "Ensemble"]

CROPS: Tuple[str, ...] = ("10crop", "5crop", "mirror")


def _probabilities(logits: Tensor) -> Tensor:
    """softmax over classes, in at least float32 (half-precision logits give float32 probabilities)."""
    return torch.softmax(logits, dim=1, dtype=torch.promote_types(logits.dtype, torch.float32))


def _crop_pair(crop_size: Union[None, int, Sequence[int]], crops: str) -> Optional[Tuple[int, int]]:
    if crop_size is None:
        if crops != "mirror":
            raise ValueError(f"MultiCrop: `crop_size` must be an int or (height, width) for crops={crops!r}; "
                             f"None (the full image) is only allowed with crops='mirror'")
        return None
    if isinstance(crop_size, int) and not isinstance(crop_size, bool):
        crop_size = (crop_size, crop_size)
    if (not isinstance(crop_size, Sequence) or len(crop_size) != 2
            or not all(isinstance(s, int) and not isinstance(s, bool) for s in crop_size)):
        raise TypeError(f"MultiCrop: `crop_size` must be an int, a pair of ints (height, width) or None, got "
                        f"{crop_size!r}")
    if min(crop_size) < 1:
        raise ValueError(f"MultiCrop: `crop_size` must be positive, got {tuple(crop_size)}")
    return int(crop_size[0]), int(crop_size[1])


class MultiCrop(nn.Module):
    """Multi-crop test-time evaluation: the mean of softmax(model(crop)) over several crops of every image.

    crops:
      "10crop": the centre and the 4 corner crops, and the same 5 crops of the horizontally mirrored image (as
                torchvision's ten_crop, in its order: top-left, top-right, bottom-left, bottom-right, centre, then
                the mirrored ones);
      "5crop":  the centre and the 4 corner crops (torchvision's five_crop);
      "mirror": the centre crop and the centre crop of the mirrored image; with crop_size=None, the full image and
                its mirror.
    crop_size: int or (height, width); None only with "mirror".

    The centre crop starts at (round((H - h) / 2), round((W - w) / 2)) with Python's round (halves to even), as
    torchvision's center_crop; when W - w is odd, the centre crop of the mirrored image is therefore the mirror of a
    crop one pixel to the right of the centre crop, as in torchvision's ten_crop.

    forward(x): x of shape (N, C, H, W) -> (N, classes) probabilities. All k crops of all images go through the model
    as one batch of k * N images (built by slicing, one torch.flip and one torch.cat), so the model runs once per
    forward. The model must return (batch, classes) logits. Probabilities are float32 for half-precision logits."""

    returns_probabilities = True

    def __init__(self, model: nn.Module, crop_size: Union[None, int, Sequence[int]],
                 crops: str = "10crop") -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"MultiCrop: `model` must be a torch.nn.Module, got {type(model).__name__}")
        if crops not in CROPS:
            raise ValueError(f"MultiCrop: `crops` must be one of {', '.join(repr(c) for c in CROPS)}, got {crops!r}")
        self.model = model
        self.crops = crops
        self.crop_size = _crop_pair(crop_size, crops)

    @property
    def num_crops(self) -> int:
        """Crops per image: 10, 5 or 2."""
        return {"10crop": 10, "5crop": 5, "mirror": 2}[self.crops]

    def _offsets(self, height: int, width: int) -> Tuple[int, int, List[Tuple[int, int]]]:
        if self.crop_size is None:
            return height, width, [(0, 0)]
        h, w = self.crop_size
        if h > height or w > width:
            raise ValueError(f"MultiCrop: `crop_size` {(h, w)} (height, width) is larger than the image size "
                             f"{(height, width)}")
        centre = (int(round((height - h) / 2.0)), int(round((width - w) / 2.0)))
        if self.crops == "mirror":
            return h, w, [centre]
        corners = [(0, 0), (0, width - w), (height - h, 0), (height - h, width - w)]
        return h, w, corners + [centre]

    def crop_batch(self, x: Tensor) -> Tensor:
        """The (k * N, C, h, w) batch of crops forward() runs, crop-major: crop j of image i is row j * N + i."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"MultiCrop: the input must be a 4-D (N, C, H, W) tensor, got {shape}")
        height, width = x.shape[-2:]
        h, w, offsets = self._offsets(height, width)
        plain = [x[..., t:t + h, l:l + w] for t, l in offsets]
        if self.crops == "5crop":
            return torch.cat(plain)
        # A crop at (t, l) of the mirrored image is the mirror of the crop at (t, W - w - l) of the image.
        mirrored = torch.cat([x[..., t:t + h, width - w - l:width - l] for t, l in offsets]).flip(-1)
        return torch.cat([torch.cat(plain), mirrored])

    def forward(self, x: Tensor) -> Tensor:
        """(N, C, H, W) images -> (N, classes) mean crop probabilities."""
        batch = self.crop_batch(x)
        n, k = x.shape[0], self.num_crops
        logits = self.model(batch)
        if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[0] != n * k:
            shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
            raise ValueError(f"MultiCrop: the model must return (batch, classes) logits; for a batch of {n * k} "
                             f"crops it returned {shape}")
        return _probabilities(logits).view(k, n, -1).mean(0)

    def extra_repr(self) -> str:
        return f"crop_size={self.crop_size}, crops={self.crops!r}"


class Ensemble(nn.Module):
    """The mean of several models' softmax probabilities.

    models: a non-empty sequence of nn.Modules, held in an nn.ModuleList (`self.models`), each mapping the same input
    to (N, classes) outputs of one shape. A member whose `returns_probabilities` attribute is true (MultiCrop,
    Ensemble, or a module of yours) is taken to return probabilities already and is averaged as it is; the others
    return logits and get softmax(dim=1) first. forward(x) -> (N, classes) probabilities, each model run once;
    float32 at least (promoted across members)."""

    returns_probabilities = True

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if isinstance(models, nn.Module) and not isinstance(models, nn.ModuleList):
            raise TypeError("Ensemble: `models` must be a sequence of nn.Modules, got a single "
                            f"{type(models).__name__}; wrap it in a list")
        models = list(models)
        if not models:
            raise ValueError("Ensemble: `models` must hold at least one model, got an empty sequence")
        for i, m in enumerate(models):
            if not isinstance(m, nn.Module):
                raise TypeError(f"Ensemble: `models[{i}]` must be a torch.nn.Module, got {type(m).__name__}")
        self.models = nn.ModuleList(models)

    def forward(self, x: Tensor) -> Tensor:
        """x -> (N, classes) mean probabilities of the members."""
        probs = []
        for i, m in enumerate(self.models):
            out = m(x)
            if not isinstance(out, Tensor) or out.dim() != 2:
                shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
                raise ValueError(f"Ensemble: every model must return (N, classes) outputs; "
                                 f"models[{i}] ({type(m).__name__}) returned {shape}")
            probs.append(out if getattr(m, "returns_probabilities", False) else _probabilities(out))
        shapes = [tuple(p.shape) for p in probs]
        if len(set(shapes)) > 1:
            listed = ", ".join(f"models[{i}] ({type(m).__name__}): {s}"
                               for i, (m, s) in enumerate(zip(self.models, shapes)))
            raise ValueError(f"Ensemble: the models' output shapes differ: {listed}")
        dtype = probs[0].dtype
        for p in probs[1:]:
            dtype = torch.promote_types(dtype, p.dtype)
        dtype = torch.promote_types(dtype, torch.float32)
        return torch.stack([p.to(dtype) for p in probs]).mean(0)
