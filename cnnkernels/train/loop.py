"""A plain supervised training loop for cnnkernels models: fit / evaluate / predict_proba, and checkpoints that resume
a run exactly.

Exact resumption. A run interrupted after epoch k and resumed from its checkpoint computes the same weights as the
uninterrupted run, because every source of randomness of epoch k+1 is restored:
- model, optimizer and scheduler state come from the checkpoint;
- with fit(seed=s), each epoch reseeds torch's RNG (and the DataLoader's / sampler's own generator, if any) from
  (s, epoch, rank) and calls sampler.set_epoch(epoch) where the sampler has it (DistributedSampler), so an epoch's
  shuffling, augmentation, dropout and DataLoader worker seeds depend only on (s, epoch, rank), not on what ran before;
  this is the mode for multi-process runs, whose ranks all draw different random numbers. DataLoader workers are
  seeded when the loader's iterator starts, so with persistent_workers=True they keep their RNG streams from epoch to
  epoch and a resumed run's augmentation differs: use persistent_workers=False (the default) for exact resumption;
- with seed=None, the checkpoint holds torch's CPU (and CUDA) RNG state, Python's and NumPy's; load_checkpoint
  restores them, so a DataLoader that draws its shuffling and worker seeds from torch's global RNG (the default,
  generator=None) continues the same sequence. A loader or sampler with its own torch.Generator needs seed= (its
  state is not in the checkpoint), and so do multi-process runs (only the saving rank's states are kept).

Progress: a tqdm bar per epoch (running loss and accuracy), shown on rank 0 only in a torch.distributed run.
"""

from __future__ import annotations

import os
import random
import tempfile
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = ["fit", "evaluate", "predict_proba", "save_checkpoint", "load_checkpoint", "read_checkpoint", "epoch_seed",
           "unwrap_model", "CHECKPOINT_FORMAT"]

CHECKPOINT_FORMAT = "cnnkernels.train.checkpoint/1"

PathLike = Union[str, "os.PathLike[str]"]


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel wrappers (the model itself otherwise), whose
    state_dict has the plain model's keys."""
    while isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
        model = model.module
    return model


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """The seed fit(seed=seed) gives torch's RNG at the start of `epoch` on `rank`: a 63-bit mix of the three, so
    neighbouring seeds, epochs and ranks draw unrelated streams."""
    x = (int(seed) * 0x9E3779B97F4A7C15 + int(epoch) * 0xBF58476D1CE4E5B9 + int(rank) * 0x94D049BB133111EB) \
        & 0xFFFFFFFFFFFFFFFF
    # splitmix64 finaliser
    x ^= x >> 30
    x = (x * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 27
    x = (x * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return x & 0x7FFFFFFFFFFFFFFF


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


def _resolve_device(model: nn.Module, device) -> torch.device:
    if device is None:
        return _model_device(model)
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"device must be None, a torch.device or a device string like 'cpu', got {device!r}") from e


def _check_loader(loader, name: str) -> None:
    if isinstance(loader, (Tensor, str, bytes)) or not hasattr(loader, "__iter__"):
        raise TypeError(f"{name} must be an iterable of (inputs, labels) batches such as a torch DataLoader, "
                        f"got {type(loader).__name__}")


def _split_batch(batch, name: str) -> Tuple[Tensor, Tensor]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise ValueError(f"{name} must yield (inputs, labels) batches, got a {type(batch).__name__}"
                         + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""))
    return batch[0], batch[1]


def _check_model(model) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")


def _rng_state() -> Dict[str, Any]:
    # NumPy's state as tensors and Python scalars: the weights_only unpickler of read_checkpoint accepts no ndarrays.
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: Dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate(),
                             "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                                       "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: Dict[str, Any]) -> None:
    if "torch" in state:
        torch.set_rng_state(state["torch"].cpu())
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["kind"], s["keys"].cpu().numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in cuda_states])


def save_checkpoint(path: PathLike, model: nn.Module, optimizer: Optional[torch.optim.Optimizer], epoch: int,
                    scheduler: Optional[Any] = None, extra: Optional[Dict[str, Any]] = None) -> None:
    """Writes a training checkpoint to `path` (torch.save; atomically: a temporary file renamed over `path`, so an
    interruption never leaves a half-written checkpoint).

    It holds the model's state_dict (of the plain model inside a DDP wrapper, so it loads strictly into a plain
    cnnkernels model), the optimizer's and scheduler's state_dicts, `epoch` (the number of epochs completed, the
    start_epoch of the resumed run), the RNG states (torch CPU and CUDA, Python, NumPy) and `extra` (any picklable
    dict, e.g. the arguments of the run)."""
    _check_model(model)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
        raise ValueError(f"epoch must be an int >= 0 (epochs completed), got {epoch!r}")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"extra must be None or a dict, got {type(extra).__name__}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "model": unwrap_model(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "rng": _rng_state(),
        "extra": dict(extra) if extra is not None else {},
    }
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".ckpt-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_checkpoint(path: PathLike, map_location=None) -> Dict[str, Any]:
    """The raw checkpoint dict written by save_checkpoint (keys format, epoch, model, optimizer, scheduler, rng,
    extra). weights_only loading: a checkpoint cannot run code."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    payload = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path!r} is not a cnnkernels.train checkpoint (expected format {CHECKPOINT_FORMAT!r})")
    return payload


def load_checkpoint(path: PathLike, model: nn.Module, optimizer: Optional[torch.optim.Optimizer] = None,
                    scheduler: Optional[Any] = None, *, restore_rng: bool = True, strict: bool = True,
                    map_location=None) -> int:
    """Loads a save_checkpoint() file into `model` (strictly by default; a DDP wrapper is looked through) and, when
    given, `optimizer` and `scheduler`; restores the RNG states (restore_rng=True) and returns the checkpoint's epoch,
    the start_epoch to pass to fit() to continue the run. map_location defaults to the model's device."""
    _check_model(model)
    if map_location is None:
        map_location = _model_device(model)
    payload = read_checkpoint(path, map_location=map_location)
    unwrap_model(model).load_state_dict(payload["model"], strict=strict)
    if optimizer is not None:
        if payload["optimizer"] is None:
            raise ValueError(f"checkpoint {os.fspath(path)!r} holds no optimizer state, but optimizer was given")
        optimizer.load_state_dict(payload["optimizer"])
    if scheduler is not None:
        if payload["scheduler"] is None:
            raise ValueError(f"checkpoint {os.fspath(path)!r} holds no scheduler state, but scheduler was given")
        scheduler.load_state_dict(payload["scheduler"])
    if restore_rng:
        _set_rng_state(payload["rng"])
    return int(payload["epoch"])


def _reseed_epoch(loader, seed: int, epoch: int) -> None:
    s = epoch_seed(seed, epoch, _rank())
    torch.manual_seed(s)
    random.seed(s)
    np.random.seed(s % 2 ** 32)
    # A DataLoader / sampler with its own generator ignores torch's global RNG.
    gen = getattr(loader, "generator", None)
    if isinstance(gen, torch.Generator):
        gen.manual_seed(s)
    sampler = getattr(loader, "sampler", None)
    sgen = getattr(sampler, "generator", None)
    if isinstance(sgen, torch.Generator) and sgen is not gen:
        sgen.manual_seed(s ^ 0x5DEECE66D)


def fit(model: nn.Module, train_loader, *, epochs: int, optimizer: torch.optim.Optimizer,
        loss_fn: Optional[Callable[[Tensor, Tensor], Tensor]] = None, scheduler: Optional[Any] = None,
        device=None, progress: bool = True, checkpoint: Optional[PathLike] = None, start_epoch: int = 0,
        on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None, seed: Optional[int] = None,
        checkpoint_extra: Optional[Dict[str, Any]] = None, desc: str = "train") -> List[Dict[str, Any]]:
    """Trains `model` (in training mode) for epochs start_epoch+1 .. `epochs` over `train_loader` batches of
    (inputs, labels) and returns the history: one dict per epoch with epoch (1-based, the number completed), loss (mean
    over the epoch's samples), accuracy (training accuracy of the predictions made during the epoch, for
    classification logits) and lr (the first parameter group's learning rate during the epoch).

    epochs: the total number of epochs of the run (a resumed run passes the same `epochs` and the start_epoch that
        load_checkpoint returned). loss_fn(logits, labels) defaults to cross entropy. scheduler: stepped once after
        each epoch. device: where batches go (default: the model's device). checkpoint: a path written after every
        epoch (save_checkpoint, by rank 0 only in a torch.distributed run). on_epoch_end(record) is called with each
        history record. seed: see the module docstring (exact resumption). In a torch.distributed run the loss and
        accuracy are averaged over all ranks (every rank must call fit), the sampler's set_epoch(epoch) is called each
        epoch and only rank 0 shows a progress bar. desc: the progress bar's label."""
    _check_model(model)
    _check_loader(train_loader, "train_loader")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be an int >= 1 (the total number of epochs), got {epochs!r}")
    if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or not 0 <= start_epoch <= epochs:
        raise ValueError(f"start_epoch must be an int in [0, epochs={epochs}] (epochs already completed), "
                         f"got {start_epoch!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    if loss_fn is None:
        loss_fn = F.cross_entropy
    elif not callable(loss_fn):
        raise TypeError(f"loss_fn must be a callable (logits, labels) -> loss, got {type(loss_fn).__name__}")
    if on_epoch_end is not None and not callable(on_epoch_end):
        raise TypeError(f"on_epoch_end must be None or a callable taking the epoch's record, "
                        f"got {type(on_epoch_end).__name__}")
    dev = _resolve_device(model, device)
    distributed = _world_size() > 1
    show = bool(progress) and _rank() == 0
    history: List[Dict[str, Any]] = []
    sampler = getattr(train_loader, "sampler", None)
    for epoch in range(start_epoch, epochs):
        if seed is not None:
            _reseed_epoch(train_loader, seed, epoch)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        model.train()
        lr = optimizer.param_groups[0]["lr"]
        # Sums kept on the device: one synchronisation per epoch instead of one per batch.
        stats = torch.zeros(3, dtype=torch.float64, device=dev)  # loss * n, correct, n
        try:
            total = len(train_loader)
        except TypeError:
            total = None
        bar = tqdm(train_loader, total=total, desc=f"{desc} {epoch + 1}/{epochs}", disable=not show, leave=True,
                   dynamic_ncols=True)
        for step, batch in enumerate(bar):
            inputs, labels = _split_batch(batch, "train_loader")
            inputs = inputs.to(dev, non_blocking=True)
            labels = labels.to(dev, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            out = model(inputs)
            loss = loss_fn(out, labels)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                n = labels.shape[0]
                stats[0] += loss.detach().double() * n
                stats[2] += n
                if out.dim() == 2 and labels.dim() == 1:
                    stats[1] += (out.argmax(1) == labels).sum()
            if show and (step % 10 == 0 or step + 1 == total):
                s = stats.tolist()
                bar.set_postfix(loss=f"{s[0] / max(s[2], 1):.4f}", acc=f"{s[1] / max(s[2], 1):.3f}")
        bar.close()
        if distributed:
            dist.all_reduce(stats)
        loss_sum, correct, count = stats.tolist()
        record: Dict[str, Any] = {"epoch": epoch + 1, "loss": loss_sum / max(count, 1),
                                  "accuracy": correct / max(count, 1), "lr": lr}
        if scheduler is not None:
            scheduler.step()
        history.append(record)
        if checkpoint is not None:
            if _rank() == 0:
                save_checkpoint(checkpoint, model, optimizer, epoch + 1, scheduler, extra=checkpoint_extra)
            if distributed:
                # No rank runs ahead of a checkpoint that is not written yet (e.g. to stop and resume from it).
                dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(record)
    return history


@torch.inference_mode()
def _forward_all(model: nn.Module, loader, device) -> Tuple[Tensor, Tensor]:
    outs, labels = [], []
    for batch in loader:
        inputs, y = _split_batch(batch, "loader")
        outs.append(model(inputs.to(device)).float().cpu())
        labels.append(torch.as_tensor(y).cpu())
    if not outs:
        raise ValueError("loader yielded no batches")
    return torch.cat(outs), torch.cat(labels)


def _run_eval(model: nn.Module, loader, device) -> Tuple[Tensor, Tensor]:
    _check_model(model)
    _check_loader(loader, "loader")
    dev = _resolve_device(model, device)
    was_training = model.training
    model.eval()
    try:
        return _forward_all(model, loader, dev)
    finally:
        model.train(was_training)


def predict_proba(model: nn.Module, loader, *, device=None) -> Tuple[Tensor, Tensor]:
    """(probabilities N x C, labels N) of `model` (run in eval mode under inference_mode, training mode restored
    afterwards) over all batches of `loader`: softmax of the logits, float32 on the CPU."""
    logits, labels = _run_eval(model, loader, device)
    if logits.dim() != 2:
        raise ValueError(f"model must output N x C logits, got shape {tuple(logits.shape)}")
    return logits.softmax(dim=1), labels


def evaluate(model: nn.Module, loader, *, device=None) -> float:
    """Top-1 accuracy (a float in [0, 1]) of `model` over all batches of `loader`, in eval mode under
    inference_mode (training mode restored afterwards)."""
    logits, labels = _run_eval(model, loader, device)
    if logits.dim() != 2:
        raise ValueError(f"model must output N x C logits, got shape {tuple(logits.shape)}")
    return float((logits.argmax(dim=1) == labels).double().mean())
