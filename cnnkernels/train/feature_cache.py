"""FeatureCache: run a frozen backbone once over a data set, keep what reaches the classifier on disk, and train the
classifier from there.

When only the head of a model trains (`freeze(model, until=head_name(model))`), every epoch pushes the same images
through the same frozen layers (which stay in eval mode) and gets the same features. FeatureCache computes them once,
in eval mode under torch.inference_mode and, by default, through `cnnkernels.optimize()` (the fused ops with
BatchNorm folded), and stores them in a memory-mapped .npy file. Training the head on `cache.dataset()` then gives
the head that end-to-end training with the frozen backbone gives (same seed, same data order; the fused path differs
from the eager one by fp32 rounding only), without a single backbone forward per epoch.

Files, in the directory `path`:
* features.npy: float rows, one per sample, shape (len(dataset), *feature_shape) (numpy format, memory-mapped);
* labels.npy: int64 class indices, shape (len(dataset),);
* meta.json: what the rows belong to (format version, backbone fingerprint, head name, data set length, shape and
  dtype of the first image, feature shape and dtype) and how many rows are complete.

Rows are written batch by batch; after each batch both arrays are flushed and then meta.json is replaced (atomically)
with the new completed count, so a build that is interrupted (an exception, Ctrl-C, a crash) resumes at the first
incomplete batch, and with the same batch size the result is identical to an uninterrupted build. A cache whose
fingerprint, head, data set length, image shape/dtype or feature shape/dtype differ from the current ones is deleted and
rebuilt from scratch: stale features are never used.

The fingerprint is a sha256 over the model's structure (module names, classes and extra_repr()) and its whole
state_dict (names, dtypes, shapes and bytes of every parameter and buffer), except the head and the auxiliary
classifiers' final Linears (aux_head_names; only when `head` is the default head_name(model)): those are what gets
trained or replaced, and they do not change the features. Changing any other weight, running statistic or layer
hyper-parameter changes the fingerprint. The data set itself is known only by its length and the shape/dtype of its
first image: when its contents change, use another path or build(rebuild=True).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from cnnkernels.optimize import optimize as _optimize
from cnnkernels.train.transfer import aux_head_names, head_name

__all__ = ["FeatureCache", "CachedFeatures", "backbone_fingerprint"]

_FORMAT_VERSION = 1
_FEATURES = "features.npy"
_LABELS = "labels.npy"
_META = "meta.json"
# numpy has no bfloat16: such features are stored as float32.
_STORE_DTYPES = (torch.float16, torch.float32, torch.float64, torch.bfloat16)


def _excluded_names(model: nn.Module, head: str) -> List[str]:
    names = [head]
    if head == head_name(model):
        names += aux_head_names(model, head)
    return names


def _under(name: str, prefixes: Sequence[str]) -> bool:
    return any(p == "" or name == p or name.startswith(p + ".") for p in prefixes)


def backbone_fingerprint(model: nn.Module, head: Optional[str] = None) -> str:
    """sha256 (hex) of everything in `model` that determines the input of module `head` (default head_name(model)):
    the structure (names, classes and extra_repr() of the modules) and the state_dict (names, dtypes, shapes, bytes),
    leaving out the head and, for the default head, the auxiliary classifiers' final Linears. Neither training nor
    replacing the head changes it; changing any other weight or buffer does."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"backbone_fingerprint: `model` must be a torch.nn.Module, got {type(model).__name__}")
    head = _resolve_head(model, head, "backbone_fingerprint")
    excluded = _excluded_names(model, head)
    h = hashlib.sha256()
    h.update(f"cnnkernels.train.FeatureCache/{_FORMAT_VERSION}\0head={head}\0".encode())
    for name, module in model.named_modules():
        if not _under(name, excluded):
            cls = type(module)
            h.update(f"M\0{name}\0{cls.__module__}.{cls.__qualname__}\0{module.extra_repr()}\0".encode())
    for key, t in model.state_dict().items():
        if _under(key, excluded) or not isinstance(t, Tensor):
            continue
        t = t.detach()
        h.update(f"T\0{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _resolve_head(model: nn.Module, head: Optional[str], who: str) -> str:
    if head is None:
        return head_name(model)
    if not isinstance(head, str):
        raise TypeError(f"{who}: `head` must be a module name (str) or None, got {type(head).__name__}")
    names = [n for n, _ in model.named_modules()]
    if head not in names:
        top = ", ".join(repr(n) for n, _ in model.named_children())
        raise ValueError(f"{who}: `head` must be the qualified name of a module of {type(model).__name__} (a name "
                         f"from model.named_modules(), e.g. {head_name(model)!r}), got {head!r}; top-level modules: "
                         f"{top}")
    return head


def _check_image(image: Any, index: int) -> Tensor:
    if isinstance(image, np.ndarray):
        image = torch.from_numpy(image)
    if not isinstance(image, Tensor):
        raise TypeError(f"FeatureCache: item {index} of `dataset` must be an (image, label) pair with the image a "
                        f"torch.Tensor (or numpy array), got an image of type {type(image).__name__}")
    return image


def _check_label(label: Any, index: int) -> int:
    if isinstance(label, Tensor):
        if label.numel() != 1 or label.is_floating_point() or label.is_complex() or label.dtype == torch.bool:
            raise TypeError(f"FeatureCache: item {index} of `dataset`: the label must be an integer class index, got "
                            f"a {label.dtype} tensor of shape {tuple(label.shape)}")
        return int(label.item())
    if isinstance(label, (bool, np.bool_)) or not isinstance(label, (int, np.integer)):
        raise TypeError(f"FeatureCache: item {index} of `dataset`: the label must be an integer class index, got "
                        f"{type(label).__name__}")
    return int(label)


def _check_item(item: Any, index: int) -> Tuple[Tensor, int]:
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        what = f"a {type(item).__name__} of length {len(item)}" if isinstance(item, (tuple, list)) else \
            type(item).__name__
        raise TypeError(f"FeatureCache: item {index} of `dataset` must be an (image, label) pair, got {what}")
    return _check_image(item[0], index), _check_label(item[1], index)


class _Indexed(Dataset):
    """dataset[start + i] with its index, so that the collate function can name a bad item."""

    def __init__(self, dataset, start: int, stop: int) -> None:
        self.dataset, self.start, self.stop = dataset, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int):
        return self.start + i, self.dataset[self.start + i]


def _collate(batch: List[Tuple[int, Any]]) -> Tuple[Tensor, Tensor]:
    images, labels = [], []
    for index, item in batch:
        image, label = _check_item(item, index)
        if images and image.shape != images[0].shape:
            raise ValueError(f"FeatureCache: item {index} of `dataset` has an image of shape {tuple(image.shape)}, "
                             f"item {batch[0][0]} one of shape {tuple(images[0].shape)}; all images must have the "
                             f"same shape")
        images.append(image)
        labels.append(label)
    return torch.stack(images), torch.tensor(labels, dtype=torch.int64)


class _Stop(Exception):
    """Raised by the capture hook once the head's input is in hand: nothing after it needs to run."""


class _Capture:
    """Forward pre-hook on the head: keeps its input and stops the forward."""

    def __init__(self) -> None:
        self.value: Optional[Tensor] = None

    def __call__(self, module: nn.Module, args) -> None:
        x = args[0] if args else None
        if not isinstance(x, Tensor):
            raise TypeError(f"FeatureCache: the head's input must be a tensor, got {type(x).__name__}")
        self.value = x
        raise _Stop


def _write_json(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


class CachedFeatures(Dataset):
    """The (feature, label) pairs of a built FeatureCache, read from its memory-mapped files: feature is a tensor of
    the cached shape and dtype, label an int64 scalar tensor. Opened lazily (per process: it pickles without its
    arrays, so DataLoader workers open their own maps). `__getitems__` reads a whole batch with one indexed read."""

    def __init__(self, directory: Union[str, os.PathLike], length: int) -> None:
        self.directory = Path(directory)
        self.length = length
        self._features: Optional[np.ndarray] = None
        self._labels: Optional[np.ndarray] = None

    def _open(self) -> None:
        if self._features is None:
            self._features = np.load(self.directory / _FEATURES, mmap_mode="r")
            self._labels = np.load(self.directory / _LABELS, mmap_mode="r")

    @property
    def features(self) -> np.ndarray:
        """All features, a read-only memory-mapped array of shape (len, *feature_shape)."""
        self._open()
        return self._features

    @property
    def labels(self) -> np.ndarray:
        """All labels, a read-only memory-mapped int64 array of shape (len,)."""
        self._open()
        return self._labels

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tuple[Tensor, Tensor]:
        self._open()
        return torch.from_numpy(np.array(self._features[index])), torch.tensor(int(self._labels[index]))

    def __getitems__(self, indices: Sequence[int]) -> List[Tuple[Tensor, Tensor]]:
        self._open()
        idx = np.asarray(indices, dtype=np.int64)
        feats = torch.from_numpy(np.ascontiguousarray(self._features[idx]))
        labels = torch.from_numpy(np.array(self._labels[idx]))
        return list(zip(feats.unbind(0), labels.unbind(0)))

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_features"] = state["_labels"] = None
        return state

    def __repr__(self) -> str:
        return f"CachedFeatures({str(self.directory)!r}, length={self.length})"


class FeatureCache:
    """Features of `model` over `dataset`, computed once and kept on disk in the directory `path`.

    The features are the input of module `head` (a qualified name, default head_name(model), e.g. "fc" or
    "classifier.6"), captured with a forward pre-hook while a deep copy of the model runs in eval mode under
    torch.inference_mode, through cnnkernels.optimize() when optimize=True (the model itself is never changed). The
    forward stops at the head. `dataset` yields (image, label) pairs: the image a tensor (or numpy array) the model
    takes once batched, the label an integer class index. Batches of `batch_size` are loaded with a DataLoader
    (`num_workers` workers, in order) and moved to the device of the model's parameters.

    `build()` computes what is missing (resuming an interrupted build; rebuilding a cache made for other weights,
    another head, another data set length or image shape); `dataset()` builds if needed and returns the cached
    (feature, label) pairs as a torch Dataset (CachedFeatures). See the module docstring for the files and the
    fingerprint. Progress is shown with tqdm unless progress=False."""

    def __init__(self, model: nn.Module, dataset, path: Union[str, os.PathLike], *, head: Optional[str] = None,
                 batch_size: int = 256, optimize: bool = True, progress: bool = True, num_workers: int = 0) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"FeatureCache: `model` must be a torch.nn.Module, got {type(model).__name__}")
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"FeatureCache: `dataset` must be a map-style dataset (with __len__ and __getitem__), got "
                            f"{type(dataset).__name__}")
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"FeatureCache: `path` must be a directory path (str or os.PathLike), got "
                            f"{type(path).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"FeatureCache: `batch_size` must be an int >= 1, got {batch_size!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(f"FeatureCache: `num_workers` must be an int >= 0, got {num_workers!r}")
        self.model = model
        self.source = dataset
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"FeatureCache: `path` must be a directory (the cache writes {_FEATURES}, {_LABELS} and "
                             f"{_META} into it), got the file {str(self.path)!r}")
        self.head = _resolve_head(model, head, "FeatureCache")
        self.batch_size = batch_size
        self.optimize = bool(optimize)
        self.progress = bool(progress)
        self.num_workers = num_workers

    @property
    def features_path(self) -> Path:
        """The memory-mapped features (.npy)."""
        return self.path / _FEATURES

    @property
    def labels_path(self) -> Path:
        """The labels (.npy, int64)."""
        return self.path / _LABELS

    @property
    def meta_path(self) -> Path:
        """The JSON sidecar: fingerprint, sizes and the number of completed rows."""
        return self.path / _META

    def __len__(self) -> int:
        return len(self.source)

    def __repr__(self) -> str:
        return (f"FeatureCache({type(self.model).__name__}, head={self.head!r}, len={len(self)}, "
                f"path={str(self.path)!r})")

    def fingerprint(self) -> str:
        """backbone_fingerprint(model, head) of the model as it is now."""
        return backbone_fingerprint(self.model, self.head)

    def read_meta(self) -> Optional[Dict[str, Any]]:
        """The sidecar's contents, or None when there is none (or it cannot be read)."""
        try:
            return json.loads(self.meta_path.read_text())
        except (OSError, ValueError):
            return None

    def _identity(self) -> Dict[str, Any]:
        """What a cache must have been built for to be reused (the sidecar holds it)."""
        n = len(self.source)
        if n == 0:
            raise ValueError("FeatureCache: `dataset` is empty")
        image, _ = _check_item(self.source[0], 0)
        return {"version": _FORMAT_VERSION, "fingerprint": self.fingerprint(), "head": self.head, "length": n,
                "input_shape": list(image.shape), "input_dtype": str(image.dtype)}

    def _usable(self, meta: Optional[Dict[str, Any]], identity: Dict[str, Any]) -> bool:
        if meta is None or any(meta.get(k) != v for k, v in identity.items()):
            return False
        try:
            feats = np.load(self.features_path, mmap_mode="r")
            labels = np.load(self.labels_path, mmap_mode="r")
            ok = (list(feats.shape) == [identity["length"]] + list(meta["feature_shape"])
                  and str(feats.dtype) == meta["feature_dtype"] and labels.shape == (identity["length"],)
                  and labels.dtype == np.int64 and 0 <= int(meta["completed"]) <= identity["length"])
            del feats, labels
            return ok
        except (OSError, ValueError, KeyError, TypeError):
            return False

    def is_complete(self) -> bool:
        """True when the files on disk hold every row for the current model weights, head and data set."""
        identity = self._identity()
        meta = self.read_meta()
        return self._usable(meta, identity) and meta["completed"] == identity["length"]

    def _reset(self) -> None:
        # The sidecar goes first: without it nothing on disk is ever taken for valid.
        for p in (self.meta_path, self.meta_path.with_name(_META + ".tmp"), self.features_path, self.labels_path):
            if p.exists():
                p.unlink()

    def _network(self) -> Tuple[nn.Module, _Capture, torch.device]:
        net = copy.deepcopy(self.model).eval()
        if self.optimize:
            tensors = itertools.chain(net.parameters(), net.buffers())
            # optimize() refuses to work in place on inference tensors; it copies them into normal ones instead.
            net = _optimize(net, inplace=not any(t.is_inference() for t in tensors))
        capture = _Capture()
        net.get_submodule(self.head).register_forward_pre_hook(capture)
        first = next(itertools.chain(net.parameters(), net.buffers()), None)
        return net, capture, (first.device if first is not None else torch.device("cpu"))

    def build(self, *, rebuild: bool = False) -> "FeatureCache":
        """Computes the features that are missing and returns self: nothing when the cache is complete and was made
        for the current weights, head and data set; the remaining rows after an interrupted build; everything (old
        files deleted first) otherwise or when rebuild=True."""
        identity = self._identity()
        meta = self.read_meta()
        if rebuild or not self._usable(meta, identity):
            self._reset()
            meta = None
        if meta is not None and int(meta["completed"]) >= identity["length"]:
            return self
        if not self._fill(identity, meta):
            # The weights match but the features do not (a change the fingerprint cannot see, e.g. a plain Python
            # attribute the forward reads): start again rather than mix rows of two kinds.
            self._reset()
            self._fill(identity, None)
        return self

    def _fill(self, identity: Dict[str, Any], meta: Optional[Dict[str, Any]]) -> bool:
        """Computes rows from meta["completed"] on (from 0 and new files when meta is None). False, with nothing
        written, when the features turn out to differ in shape or dtype from those already on disk."""
        n = identity["length"]
        start = int(meta["completed"]) if meta is not None else 0
        self.path.mkdir(parents=True, exist_ok=True)
        net, capture, device = self._network()
        loader = DataLoader(_Indexed(self.source, start, n), batch_size=self.batch_size, shuffle=False,
                            num_workers=self.num_workers, collate_fn=_collate)
        feats = labels = None
        done = start
        try:
            with tqdm(total=n, initial=start, disable=not self.progress, desc=f"features at {self.head}",
                      unit="img") as bar, torch.inference_mode():
                for images, targets in loader:
                    out = self._features_of(net, capture, images.to(device))
                    if feats is None:
                        shape, dtype = list(out.shape[1:]), str(out.numpy().dtype)
                        if meta is None:
                            feats = np.lib.format.open_memmap(self.features_path, mode="w+", dtype=dtype,
                                                              shape=(n, *shape))
                            labels = np.lib.format.open_memmap(self.labels_path, mode="w+", dtype=np.int64,
                                                               shape=(n,))
                            meta = dict(identity, feature_shape=shape, feature_dtype=dtype, completed=0)
                            _write_json(self.meta_path, meta)
                        elif meta["feature_shape"] != shape or meta["feature_dtype"] != dtype:
                            return False
                        else:
                            feats = np.load(self.features_path, mmap_mode="r+")
                            labels = np.load(self.labels_path, mmap_mode="r+")
                    stop = done + out.shape[0]
                    feats[done:stop] = out.numpy()
                    labels[done:stop] = targets.numpy()
                    feats.flush()
                    labels.flush()
                    done = stop
                    meta["completed"] = done
                    _write_json(self.meta_path, meta)
                    bar.update(out.shape[0])
        finally:
            del feats, labels
        return True

    def _features_of(self, net: nn.Module, capture: _Capture, images: Tensor) -> Tensor:
        """The head's input for a batch, on the CPU in the dtype it is stored in."""
        capture.value = None
        try:
            net(images)
        except _Stop:
            pass
        if capture.value is None:
            raise RuntimeError(f"FeatureCache: the model's forward never called its head {self.head!r}, so there "
                               f"are no features to cache; pass `head=` the module whose input is wanted")
        out = capture.value.detach()
        if out.dtype not in _STORE_DTYPES:
            raise TypeError(f"FeatureCache: the head's input is {out.dtype}; only floating-point features can be "
                            f"cached")
        if out.dim() == 0 or out.shape[0] != images.shape[0]:
            raise ValueError(f"FeatureCache: the head's input has shape {tuple(out.shape)} for a batch of "
                             f"{images.shape[0]} images; the head must see one row per image")
        return out.to("cpu", torch.float32 if out.dtype == torch.bfloat16 else out.dtype).contiguous()

    def dataset(self) -> CachedFeatures:
        """build() if needed, then the cached (feature, label) pairs as a torch Dataset."""
        self.build()
        return CachedFeatures(self.path, len(self.source))
