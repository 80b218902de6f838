"""Multi-process (data-parallel) training with torch.distributed: DistributedDataParallel, a DistributedSampler and
synchronised BatchNorm, rank-0 checkpoints every epoch, exact resumption.

Run with torchrun (one process per CPU core group or per GPU):

    torchrun --nproc_per_node 2 -m cnnkernels.train.distributed --model lenet5_bn --epochs 10 --batch-size 32 \\
        --checkpoint run.pt [--resume]

The backend is NCCL when CUDA is available (each process on cuda:LOCAL_RANK), gloo otherwise; the process group is
initialised from torchrun's environment (RANK, WORLD_SIZE, MASTER_ADDR, ...). --batch-size is per process: the
global batch is world_size times larger.

Synchronised BatchNorm on the CPU: torch's nn.SyncBatchNorm only runs on GPUs, so convert_sync_batchnorm() uses it for
CUDA models and otherwise swaps each BatchNorm for CPUSyncBatchNorm, which keeps the same parameters, buffers and
state_dict keys and, in training mode, normalises with the statistics of the whole global batch (an all-reduce of the
per-channel sum, sum of squares and count in the forward pass, of the two per-channel gradient sums in the backward
pass). A checkpoint of a converted model therefore loads strictly into the plain model, and
revert_sync_batchnorm() turns a converted model back into one that cnnkernels.optimize() folds.

Exact resumption: the model is seeded identically on every rank, the sampler's order depends on (seed, epoch) and
fit(seed=...) reseeds each rank's RNG from (seed, epoch, rank) at every epoch start, so a run stopped after epoch k
(--stop-after k) and resumed (--resume) ends with the same weights as the uninterrupted run (with the same number of
processes, threads and backend: a different world size changes the batches).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import List, Optional

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.data import DataLoader, Subset
from torch.utils.data.distributed import DistributedSampler

from cnnkernels.models import get_model, lenet5
from cnnkernels.train.data import digits, digits_augmentation
from cnnkernels.train.loop import evaluate, fit, load_checkpoint, read_checkpoint

__all__ = ["CPUSyncBatchNorm", "convert_sync_batchnorm", "revert_sync_batchnorm", "build_model",
           "MODEL_CHOICES", "main"]


class _SyncBatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm over the union of all ranks' batches. Every rank must call it (same order, same
    channel count): the forward and the backward each run one all-reduce."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, eps, momentum, group):
        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        n_local = x.numel() // c if c else 0
        # Local statistics by a stable two-pass var_mean, then sum and sum of squares in float64, where the
        # E[x^2] - E[x]^2 of the global combination loses nothing that matters in fp32.
        if n_local > 0:
            var_l, mean_l = torch.var_mean(x, dim=dims, unbiased=False)
            mean64 = mean_l.double()
            s = mean64 * n_local
            sq = (var_l.double() + mean64 * mean64) * n_local
        else:
            s = sq = torch.zeros(c, dtype=torch.float64, device=x.device)
        packed = torch.cat([s, sq, torch.tensor([float(n_local)], dtype=torch.float64, device=x.device)])
        dist.all_reduce(packed, group=group)
        count = float(packed[-1])
        if count <= 1:
            raise ValueError(f"Expected more than 1 value per channel when training, got {int(count)} over all "
                             f"ranks (input size {tuple(x.shape)} on this rank)")
        mean = packed[:c] / count
        var = (packed[c:2 * c] / count - mean * mean).clamp_(min=0.0)
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None:
            running_mean.mul_(1.0 - momentum).add_(mean.to(running_mean.dtype), alpha=momentum)
        if running_var is not None:
            # Unbiased (Bessel-corrected) global variance, as torch's BatchNorm keeps.
            running_var.mul_(1.0 - momentum).add_((var * (count / (count - 1.0))).to(running_var.dtype),
                                                  alpha=momentum)
        shape = [1, c] + [1] * (x.dim() - 2)
        mean_x = mean.to(x.dtype).view(shape)
        invstd_x = invstd.to(x.dtype).view(shape)
        y = (x - mean_x) * invstd_x
        if weight is not None:
            y = y * weight.view(shape)
        if bias is not None:
            y = y + bias.view(shape)
        ctx.save_for_backward(x, weight, mean_x, invstd_x)
        ctx.count = count
        ctx.group = group
        ctx.has_bias = bias is not None
        return y

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, mean_x, invstd_x = ctx.saved_tensors
        dims = [0] + list(range(2, x.dim()))
        xhat = (x - mean_x) * invstd_x
        sum_dy = grad_out.sum(dim=dims)
        sum_dy_xhat = (grad_out * xhat).sum(dim=dims)
        # The parameter gradients stay local sums: DDP averages them over the ranks like any other gradient.
        grad_weight = sum_dy_xhat if weight is not None and ctx.needs_input_grad[1] else None
        grad_bias = sum_dy if ctx.has_bias and ctx.needs_input_grad[2] else None
        grad_x = None
        if ctx.needs_input_grad[0]:
            c = x.shape[1]
            packed = torch.cat([sum_dy, sum_dy_xhat]).double()
            dist.all_reduce(packed, group=ctx.group)
            shape = [1, c] + [1] * (x.dim() - 2)
            mean_dy = (packed[:c] / ctx.count).to(x.dtype).view(shape)
            mean_dy_xhat = (packed[c:] / ctx.count).to(x.dtype).view(shape)
            scale = invstd_x if weight is None else invstd_x * weight.view(shape)
            grad_x = scale * (grad_out - mean_dy - xhat * mean_dy_xhat)
        return grad_x, grad_weight, grad_bias, None, None, None, None, None


class CPUSyncBatchNorm(_BatchNorm):
    """BatchNorm whose training-mode statistics are those of the global batch of all ranks of `process_group` (the
    default group when None), for any device torch.distributed's backend handles (gloo: CPU). Same constructor,
    parameters, buffers and state_dict as nn.BatchNorm1d/2d/3d; input N x C x *. Outside a torch.distributed run
    (or with one rank) and in eval mode it is plain batch norm.

    Every rank must run the module in the same order with the same channel count, as with nn.SyncBatchNorm; the
    backward pass all-reduces too, so every rank must also backpropagate through it."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, process_group=None, device=None, dtype=None) -> None:
        super().__init__(num_features, eps, momentum, affine, track_running_stats, device=device, dtype=dtype)
        self.process_group = process_group

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"CPUSyncBatchNorm: expected an input of at least 2 dimensions (N x C x ...), "
                             f"got {input.dim()}D")

    def forward(self, input: Tensor) -> Tensor:
        self._check_input_dim(input)
        if input.shape[1] != self.num_features:
            raise ValueError(f"CPUSyncBatchNorm: expected {self.num_features} channels (dimension 1), "
                             f"got input of shape {tuple(input.shape)}")
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        # Running statistics are updated only in training mode with track_running_stats, and used in eval mode.
        use_running = not self.training or self.track_running_stats
        running_mean = self.running_mean if use_running else None
        running_var = self.running_var if use_running else None
        group = self.process_group if self.process_group is not None else (
            dist.group.WORLD if dist.is_available() and dist.is_initialized() else None)
        sync = (bn_training and self.training and group is not None and dist.get_world_size(group) > 1)
        if not sync:
            return nn.functional.batch_norm(input, running_mean, running_var, self.weight, self.bias, bn_training,
                                            factor, self.eps)
        return _SyncBatchNormFunction.apply(input, self.weight, self.bias, running_mean, running_var, self.eps,
                                            factor, group)


def _model_on_cuda(model: nn.Module) -> bool:
    return any(t.is_cuda for t in model.parameters()) or any(t.is_cuda for t in model.buffers())


def _swap(old: _BatchNorm, cls: type, **extra) -> nn.Module:
    new = cls(old.num_features, old.eps, old.momentum, old.affine, old.track_running_stats, **extra)
    # The same Parameter and buffer objects: an optimizer built before the swap keeps updating the live weights.
    if old.affine:
        new.weight = old.weight
        new.bias = old.bias
    new.running_mean = old.running_mean
    new.running_var = old.running_var
    new.num_batches_tracked = old.num_batches_tracked
    new.train(old.training)
    return new


def _replace_modules(model: nn.Module, fn) -> nn.Module:
    replaced = fn(model)
    if replaced is not None:
        return replaced
    for name, child in list(model._modules.items()):
        if child is None:
            continue
        new = _replace_modules(child, fn)
        if new is not child:
            model._modules[name] = new
    return model


def convert_sync_batchnorm(model: nn.Module, process_group=None) -> nn.Module:
    """`model` with every BatchNorm synchronised across the ranks of `process_group` (default: the whole world);
    converted in place, the (possibly new) root returned. Move the model to its device first.

    On CUDA this is torch's nn.SyncBatchNorm.convert_sync_batchnorm; otherwise every nn.BatchNorm1d/2d/3d (and a
    CPU nn.SyncBatchNorm) becomes a CPUSyncBatchNorm sharing its parameters and buffers, so the state_dict keys and
    values are unchanged."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if _model_on_cuda(model):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model, process_group)

    def fn(m):
        if isinstance(m, _BatchNorm) and not isinstance(m, CPUSyncBatchNorm):
            new = _swap(m, CPUSyncBatchNorm, process_group=process_group)
            # Remembered so revert_sync_batchnorm() restores the exact class (BatchNorm1d/2d/3d).
            new._cnnkernels_original_bn = type(m) if type(m) is not nn.SyncBatchNorm else nn.BatchNorm2d
            return new
        return None

    return _replace_modules(model, fn)


def revert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Undoes convert_sync_batchnorm(): every CPUSyncBatchNorm becomes the BatchNorm class it replaced and every
    nn.SyncBatchNorm a BatchNorm2d (torch's does not record the original dimensionality; cnnkernels models only use
    2-D), sharing parameters and buffers. In place; returns the (possibly new) root. The result is a plain model that
    cnnkernels.optimize() folds."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")

    def fn(m):
        if isinstance(m, CPUSyncBatchNorm):
            return _swap(m, getattr(m, "_cnnkernels_original_bn", nn.BatchNorm2d))
        if isinstance(m, nn.SyncBatchNorm):
            return _swap(m, nn.BatchNorm2d)
        return None

    return _replace_modules(model, fn)


MODEL_CHOICES = ("lenet5", "lenet5_bn", "resnet18")


def build_model(name: str, *, num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """A randomly initialised model for the digits demo: "lenet5" (cnnkernels.models.lenet5), "lenet5_bn" (the same
    with a BatchNorm after each convolution, to exercise synchronised BatchNorm) or "resnet18"
    (cnnkernels.models.resnet18; heavy for a CPU)."""
    if name not in MODEL_CHOICES:
        raise ValueError(f"model must be one of {', '.join(MODEL_CHOICES)}, got {name!r}")
    if name == "lenet5_bn":
        return lenet5(num_classes=num_classes, in_channels=in_channels, norm_layer=nn.BatchNorm2d)
    return get_model(name, num_classes=num_classes, in_channels=in_channels)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="torchrun --nproc_per_node N -m cnnkernels.train.distributed",
        description="Data-parallel training on the scikit-learn digits (32x32) with DDP, a DistributedSampler and "
                    "synchronised BatchNorm; rank 0 checkpoints every epoch.")
    p.add_argument("--model", default="lenet5", choices=MODEL_CHOICES)
    p.add_argument("--epochs", type=int, default=10, help="total epochs of the run (the schedule's length)")
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (cosine-annealed over --epochs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="path written by rank 0 after every epoch")
    p.add_argument("--resume", action="store_true", help="continue from --checkpoint")
    p.add_argument("--stop-after", type=int, default=None,
                   help="stop once this many epochs are completed (an interruption, for --resume to continue)")
    p.add_argument("--limit", type=int, default=None, help="use only the first N train and N test images")
    p.add_argument("--augment", action="store_true", help="random affine augmentation (needs torchvision)")
    p.add_argument("--workers", type=int, default=0, help="DataLoader worker processes per rank")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-sync-bn", action="store_true", help="keep per-process BatchNorm statistics")
    return p


def _check_args(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if a.epochs < 1:
        p.error(f"--epochs must be >= 1, got {a.epochs}")
    if a.batch_size < 1:
        p.error(f"--batch-size must be >= 1, got {a.batch_size}")
    if not a.lr > 0:
        p.error(f"--lr must be > 0, got {a.lr}")
    if a.seed < 0:
        p.error(f"--seed must be >= 0, got {a.seed}")
    if a.stop_after is not None and not 1 <= a.stop_after <= a.epochs:
        p.error(f"--stop-after must be in [1, --epochs={a.epochs}], got {a.stop_after}")
    if a.limit is not None and a.limit < 2:
        p.error(f"--limit must be >= 2, got {a.limit}")
    if a.workers < 0:
        p.error(f"--workers must be >= 0, got {a.workers}")
    if a.resume and not a.checkpoint:
        p.error("--resume needs --checkpoint PATH")


def main(argv: Optional[List[str]] = None) -> int:
    """The torchrun entry point (see the module docstring); returns the exit status."""
    p = _parser()
    a = p.parse_args(argv)
    _check_args(p, a)
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        p.error("run under torchrun (RANK / WORLD_SIZE are not set), e.g. "
                "torchrun --nproc_per_node 2 -m cnnkernels.train.distributed ...")
    use_cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    try:
        return _run(a, device)
    finally:
        dist.destroy_process_group()


def _run(a: argparse.Namespace, device: torch.device) -> int:
    rank, world = dist.get_rank(), dist.get_world_size()
    say = (lambda *x: print(*x, flush=True)) if rank == 0 else (lambda *x: None)
    t0 = time.perf_counter()
    train_set = digits("train", transform=digits_augmentation() if a.augment else None)
    test_set = digits("test")
    if a.limit is not None:
        train_set = Subset(train_set, range(min(a.limit, len(train_set))))
        test_set = Subset(test_set, range(min(a.limit, len(test_set))))
    sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=a.seed,
                                 drop_last=False)
    loader = DataLoader(train_set, batch_size=a.batch_size, sampler=sampler, num_workers=a.workers,
                        pin_memory=device.type == "cuda")

    torch.manual_seed(a.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
    model = build_model(a.model).to(device)
    if not a.no_sync_bn:
        model = convert_sync_batchnorm(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=a.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=a.epochs)
    start = 0
    if a.resume:
        if not os.path.isfile(a.checkpoint):
            raise FileNotFoundError(f"--resume: checkpoint {a.checkpoint!r} does not exist")
        # RNG states are not restored: every epoch reseeds from (seed, epoch, rank), see fit(seed=).
        start = load_checkpoint(a.checkpoint, model, optimizer, scheduler, restore_rng=False, map_location=device)
        saved = read_checkpoint(a.checkpoint, map_location="cpu")["extra"]
        if saved.get("world_size") not in (None, world):
            say(f"warning: the checkpoint was written by {saved['world_size']} processes, now {world}: the batches "
                f"differ from the original run's")
        say(f"resuming from epoch {start} of {a.epochs}")
    stop = a.epochs if a.stop_after is None else a.stop_after
    if start >= stop:
        say(f"nothing to do: {start} epochs completed, stopping at {stop}")
        return 0
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    say(f"training {a.model} on {len(train_set)} digits, {world} processes ({dist.get_backend()}), "
        f"batch {a.batch_size} per process, epochs {start + 1}..{stop} of {a.epochs}")

    def report(rec):
        say(f"epoch {rec['epoch']}/{a.epochs} loss {rec['loss']:.4f} train acc {rec['accuracy']:.4f} "
            f"lr {rec['lr']:.2e}")

    extra = {"model": a.model, "world_size": world, "seed": a.seed, "epochs": a.epochs, "args": vars(a)}
    fit(ddp, loader, epochs=stop, optimizer=optimizer, scheduler=scheduler, device=device,
        progress=not a.no_progress, checkpoint=a.checkpoint, start_epoch=start, on_epoch_end=report, seed=a.seed,
        checkpoint_extra=extra, desc=f"train[{world}]")
    if rank == 0:
        # The plain module (not the DDP wrapper, whose forward would wait for the other ranks); eval mode runs no
        # collectives.
        acc = evaluate(model, DataLoader(test_set, batch_size=256), device=device)
        say(f"test accuracy {acc:.4f} ({len(test_set)} images), {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
