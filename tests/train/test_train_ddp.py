"""cnnkernels.train.distributed: CPU-synchronised BatchNorm (2 gloo processes vs one process on the whole batch),
conversion to and from it, and `torchrun --nproc_per_node 2 -m cnnkernels.train.distributed` training, checkpointing
and resuming exactly."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import cnnkernels
from cnnkernels.models import lenet5
from cnnkernels.train.distributed import (CPUSyncBatchNorm, build_model, convert_sync_batchnorm, main,
                                          revert_sync_batchnorm)
from cnnkernels.train.loop import read_checkpoint

WORLD = 2


def _close(a, b, what):
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=lambda m: f"{what}: {m}")


def _check_syncbn(rank: int, bn_cls, shape, split, momentum) -> None:
    """One rank's part of the comparison: CPUSyncBatchNorm on this rank's rows of the batch vs bn_cls on all of it,
    over two training steps and an eval step."""
    g = torch.Generator().manual_seed(11)
    c = shape[1]
    ref = bn_cls(c, momentum=momentum)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(c, generator=g) + 0.5)
        ref.bias.copy_(torch.randn(c, generator=g))
    sync = convert_sync_batchnorm(copy.deepcopy(ref))
    assert type(sync) is CPUSyncBatchNorm
    lo, hi = (0, split) if rank == 0 else (split, shape[0])
    for step in range(2):
        x = (torch.randn(shape, generator=g) * 3.0 + 2.0).requires_grad_(True)
        r = torch.randn(shape, generator=g)  # makes the loss weight every output differently
        y_ref = ref(x)
        (y_ref * r).sum().backward()
        x_mine = x.detach()[lo:hi].clone().requires_grad_(True)
        y = sync(x_mine)
        (y * r[lo:hi]).sum().backward()
        _close(y, y_ref[lo:hi], f"output, step {step}")
        _close(x_mine.grad, x.grad[lo:hi], f"input gradient, step {step}")
        # The parameter gradients are this rank's share; their sum over the ranks is the whole batch's.
        gw, gb = sync.weight.grad.clone(), sync.bias.grad.clone()
        dist.all_reduce(gw)
        dist.all_reduce(gb)
        _close(gw, ref.weight.grad, f"weight gradient, step {step}")
        _close(gb, ref.bias.grad, f"bias gradient, step {step}")
        _close(sync.running_mean, ref.running_mean, f"running_mean, step {step}")
        _close(sync.running_var, ref.running_var, f"running_var, step {step}")
        assert torch.equal(sync.num_batches_tracked, ref.num_batches_tracked)
        for m in (ref, sync):
            m.weight.grad = m.bias.grad = None
    ref.eval()
    sync.eval()
    x = torch.randn(shape, generator=g)
    _close(sync(x[lo:hi]), ref(x)[lo:hi], "eval output")


def _check_ddp_step(rank: int) -> None:
    """One SGD step of LeNet-5 with BatchNorm under DDP with synchronised BN on half of a batch each == one step of the plain model
    on the whole batch."""
    torch.manual_seed(0)
    plain = lenet5(norm_layer=nn.BatchNorm2d)
    model = convert_sync_batchnorm(copy.deepcopy(plain))
    ddp = nn.parallel.DistributedDataParallel(model)
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(8, 1, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)
    for net, xs, ys in ((plain, x, y), (ddp, x[rank * 4:rank * 4 + 4], y[rank * 4:rank * 4 + 4])):
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        nn.functional.cross_entropy(net(xs), ys).backward()
        opt.step()
    got, want = model.state_dict(), plain.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        _close(got[k].float(), want[k].float(), f"DDP step: {k}")


def _worker(rank: int, init_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        _check_syncbn(rank, nn.BatchNorm2d, (6, 3, 4, 5), split=3, momentum=0.1)
        _check_syncbn(rank, nn.BatchNorm2d, (8, 2, 3, 3), split=3, momentum=None)  # uneven halves, cumulative avg
        _check_syncbn(rank, nn.BatchNorm1d, (10, 4), split=5, momentum=0.3)
        _check_ddp_step(rank)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_cpu_sync_batchnorm_matches_whole_batch(tmp_path):
    mp.spawn(_worker, args=(str(tmp_path / "rendezvous"),), nprocs=WORLD, join=True)


def test_cpu_sync_batchnorm_single_process_is_batchnorm():
    torch.manual_seed(0)
    ref = nn.BatchNorm2d(3)
    sync = convert_sync_batchnorm(copy.deepcopy(ref))
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(sync(x), ref(x))
    torch.testing.assert_close(sync.running_var, ref.running_var)


def test_convert_and_revert_keep_state_and_fold():
    torch.manual_seed(0)
    model = lenet5(norm_layer=nn.BatchNorm2d)
    keys = list(model.state_dict())
    bn_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    conv = convert_sync_batchnorm(model)
    assert conv is model
    syncs = [m for m in model.modules() if isinstance(m, CPUSyncBatchNorm)]
    assert len(syncs) == 3 and not any(type(m) is nn.BatchNorm2d for m in model.modules())
    assert {id(m.weight) for m in syncs} == bn_params  # the same Parameters: an existing optimizer still works
    assert list(model.state_dict()) == keys
    # A few training steps so the running statistics are not the initial ones.
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(3):
        nn.functional.cross_entropy(model(torch.rand(6, 1, 32, 32)), torch.arange(6)).backward()
        opt.step()
        opt.zero_grad()
    plain = lenet5(norm_layer=nn.BatchNorm2d)
    plain.load_state_dict(model.state_dict())  # strict: a checkpoint of the converted model loads into the plain one
    back = revert_sync_batchnorm(model)
    assert sum(type(m) is nn.BatchNorm2d for m in back.modules()) == 3
    assert not any(isinstance(m, CPUSyncBatchNorm) for m in back.modules())
    back.eval()
    fused = cnnkernels.optimize(back)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())  # folded into the convolutions
    x = torch.rand(5, 1, 32, 32)
    with cnnkernels.nn.fusion(False), torch.no_grad():
        want = plain.eval()(x)
    torch.testing.assert_close(fused(x), want, atol=1e-4, rtol=1e-4)
    bn1d = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm1d(3)))
    assert type(revert_sync_batchnorm(bn1d)[0]) is nn.BatchNorm1d


def test_distributed_bad_input():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        convert_sync_batchnorm("lenet5")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        revert_sync_batchnorm(3)
    with pytest.raises(ValueError, match="model must be one of lenet5, lenet5_bn, resnet18"):
        build_model("vgg11")
    bn = CPUSyncBatchNorm(3)
    with pytest.raises(ValueError, match="expected an input of at least 2 dimensions"):
        bn(torch.zeros(3))
    with pytest.raises(ValueError, match="expected 3 channels"):
        bn(torch.zeros(2, 4, 1, 1))


def test_cli_bad_input(capsys, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(SystemExit):
        main(["--epochs", "1"])
    assert "run under torchrun" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--epochs", "0"])
    assert "--epochs must be >= 1, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--epochs", "2", "--stop-after", "3"])
    assert "--stop-after must be in [1, --epochs=2], got 3" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--resume"])
    assert "--resume needs --checkpoint PATH" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--model", "vgg11"])
    assert "invalid choice: 'vgg11'" in capsys.readouterr().err


def _torchrun(*args: str) -> str:
    env = dict(os.environ)
    root = str(Path(cnnkernels.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--standalone",
           "-m", "cnnkernels.train.distributed", "--model", "lenet5_bn", "--epochs", "3", "--batch-size", "16",
           "--limit", "160", "--no-progress", *args]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"exit status {proc.returncode}\n{proc.stdout}\n{proc.stderr[-4000:]}"
    return proc.stdout


def test_torchrun_checkpoint_and_exact_resume(tmp_path):
    interrupted, straight = tmp_path / "interrupted.pt", tmp_path / "straight.pt"
    out = _torchrun("--checkpoint", str(interrupted), "--stop-after", "2")
    assert "2 processes (gloo)" in out and "epoch 2/3" in out and "epoch 3/3" not in out
    first = read_checkpoint(interrupted)
    assert first["epoch"] == 2 and first["extra"]["world_size"] == WORLD
    lenet5(norm_layer=nn.BatchNorm2d).load_state_dict(first["model"])  # strict: plain BatchNorm2d keys

    out = _torchrun("--checkpoint", str(interrupted), "--resume")
    assert "resuming from epoch 2 of 3" in out
    assert "epoch 3/3" in out and "epoch 1/3" not in out and "epoch 2/3" not in out
    assert "test accuracy" in out
    resumed = read_checkpoint(interrupted)
    assert resumed["epoch"] == 3

    _torchrun("--checkpoint", str(straight))
    whole = read_checkpoint(straight)
    assert whole["epoch"] == 3
    # Same processes, threads and backend: every epoch's data order and RNG derive from (seed, epoch, rank), so the
    # interrupted run ends bit-identical to the uninterrupted one.
    assert resumed["model"].keys() == whole["model"].keys()
    for k in whole["model"]:
        assert torch.equal(resumed["model"][k], whole["model"][k]), k
    assert not torch.equal(first["model"]["features.0.weight"], whole["model"]["features.0.weight"])
