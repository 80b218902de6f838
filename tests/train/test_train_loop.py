"""cnnkernels.train.loop: fit / evaluate / predict_proba, checkpoints and exact resumption, bad input."""

from __future__ import annotations


import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from cnnkernels.train.loop import (CHECKPOINT_FORMAT, epoch_seed, evaluate, fit, load_checkpoint, predict_proba,
                                   read_checkpoint, save_checkpoint, unwrap_model)


@pytest.fixture(autouse=True)
def _one_thread(restore_num_threads):
    torch.set_num_threads(1)


class _Noisy(Dataset):
    """A 2-class toy problem whose items get fresh random noise (an augmentation drawing from torch's RNG)."""

    def __init__(self, n: int = 48):
        g = torch.Generator().manual_seed(1)
        self.y = torch.arange(n) % 2
        self.x = torch.randn(n, 1, 6, 6, generator=g) * 0.5 + self.y.view(-1, 1, 1, 1).float()

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i] + 0.1 * torch.randn(1, 6, 6), int(self.y[i])


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2),
                         nn.Linear(4 * 4 * 4, 2))


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)
    return model, opt, sched


def _loader(workers: int = 0):
    return DataLoader(_Noisy(), batch_size=8, shuffle=True, num_workers=workers)


def _same_state(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("seed,workers", [(7, 0), (None, 0), (7, 1)],
                         ids=["reseed_per_epoch", "restored_rng", "reseed_per_epoch_worker_process"])
def test_resume_is_exact(tmp_path, seed, workers):
    # The items' noise is drawn where __getitem__ runs: in the main process or in a DataLoader worker.
    ck = tmp_path / "ck.pt"
    straight, opt, sched = _setup()
    h_straight = fit(straight, _loader(workers), epochs=4, optimizer=opt, scheduler=sched, progress=False,
                     seed=seed)

    first, opt1, sched1 = _setup()
    fit(first, _loader(workers), epochs=2, optimizer=opt1, scheduler=sched1, progress=False, seed=seed,
        checkpoint=ck)
    assert read_checkpoint(ck)["epoch"] == 2
    torch.manual_seed(12345)  # whatever ran in between must not matter
    resumed, opt2, sched2 = _setup(seed=99)  # different initial weights, overwritten by the checkpoint
    start = load_checkpoint(ck, resumed, opt2, sched2)
    assert start == 2
    h_resumed = fit(resumed, _loader(workers), epochs=4, optimizer=opt2, scheduler=sched2, progress=False, seed=seed,
                    start_epoch=start, checkpoint=ck)
    assert [r["epoch"] for r in h_resumed] == [3, 4]
    assert _same_state(straight, resumed)
    assert [r["loss"] for r in h_straight[2:]] == [r["loss"] for r in h_resumed]
    assert opt.param_groups[0]["lr"] == opt2.param_groups[0]["lr"]
    assert read_checkpoint(ck)["epoch"] == 4


def test_resume_without_rng_state_differs(tmp_path):
    # The control for test_resume_is_exact: with seed=None the restored RNG state is what makes the run exact.
    ck = tmp_path / "ck.pt"
    straight, opt, sched = _setup()
    fit(straight, _loader(), epochs=3, optimizer=opt, scheduler=sched, progress=False)
    first, opt1, sched1 = _setup()
    fit(first, _loader(), epochs=2, optimizer=opt1, scheduler=sched1, progress=False, checkpoint=ck)
    torch.manual_seed(12345)
    resumed, opt2, sched2 = _setup()
    start = load_checkpoint(ck, resumed, opt2, sched2, restore_rng=False)
    fit(resumed, _loader(), epochs=3, optimizer=opt2, scheduler=sched2, progress=False, start_epoch=start)
    assert not _same_state(straight, resumed)


def test_fit_history_and_learning():
    model, opt, sched = _setup()
    seen = []
    hist = fit(model, _loader(), epochs=5, optimizer=opt, scheduler=sched, progress=False, seed=0,
               on_epoch_end=seen.append)
    assert seen == hist
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5]
    assert [r["lr"] for r in hist] == pytest.approx([0.05 * 0.7 ** i for i in range(5)])
    assert hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert hist[-1]["accuracy"] >= 0.9
    assert model.training
    assert evaluate(model, DataLoader(_Noisy(), batch_size=16)) >= 0.9


def test_fit_custom_loss_is_used():
    model, opt, _ = _setup()
    calls = []

    def loss_fn(out, y):
        calls.append(out.shape[0])
        return nn.functional.cross_entropy(out, y) * 0.0 + 3.0 + out.sum() * 0.0

    hist = fit(model, _loader(), epochs=1, optimizer=opt, loss_fn=loss_fn, progress=False)
    assert sum(calls) == 48
    assert hist[0]["loss"] == pytest.approx(3.0)


class _Oracle(nn.Module):
    """Logits that pick class int(x[..., 0]) (a known accuracy for evaluate / predict_proba)."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        assert torch.is_inference_mode_enabled()
        return nn.functional.one_hot(x[:, 0].long(), 3).float() * 4.0 + self.dummy


def test_evaluate_and_predict_proba():
    x = torch.tensor([[0.], [1.], [2.], [1.], [0.]])
    y = torch.tensor([0, 1, 1, 1, 2])
    loader = DataLoader(TensorDataset(x, y), batch_size=2)
    model = _Oracle()
    model.train()
    assert evaluate(model, loader) == pytest.approx(3 / 5)
    assert model.training and model.modes == [False] * 3  # eval mode inside, training mode restored
    probs, labels = predict_proba(model, loader)
    assert torch.equal(labels, y)
    assert probs.shape == (5, 3)
    torch.testing.assert_close(probs.sum(1), torch.ones(5))
    e4 = torch.exp(torch.tensor(4.0))
    torch.testing.assert_close(probs[0], torch.tensor([e4, 1.0, 1.0]) / (e4 + 2))


def test_checkpoint_contents(tmp_path):
    model, opt, sched = _setup()
    fit(model, _loader(), epochs=1, optimizer=opt, scheduler=sched, progress=False)
    path = tmp_path / "sub" / "ck.pt"
    save_checkpoint(path, model, opt, 1, sched, extra={"note": "x"})
    payload = read_checkpoint(path)
    assert payload["format"] == CHECKPOINT_FORMAT
    assert payload["epoch"] == 1 and payload["extra"] == {"note": "x"}
    assert set(payload["rng"]) >= {"torch", "python", "numpy"}
    plain = _net()
    plain.load_state_dict(payload["model"])  # strict: loads into a plain model
    assert _same_state(plain, model)
    assert [p.name for p in tmp_path.joinpath("sub").iterdir()] == ["ck.pt"]  # no temporary file left behind


def test_unwrap_model():
    inner = _net()
    assert unwrap_model(nn.DataParallel(inner)) is inner
    assert unwrap_model(inner) is inner


def test_epoch_seed_distinct():
    seeds = {epoch_seed(s, e, r) for s in range(3) for e in range(5) for r in range(2)}
    assert len(seeds) == 30
    assert all(0 <= s < 2 ** 63 for s in seeds)
    assert epoch_seed(1, 2, 0) == epoch_seed(1, 2, 0)


def test_progress_bar(capsys):
    model, opt, _ = _setup()
    fit(model, _loader(), epochs=1, optimizer=opt, progress=True, desc="toy")
    assert "toy 1/1" in capsys.readouterr().err
    fit(model, _loader(), epochs=2, optimizer=opt, progress=False, start_epoch=1, desc="toy")
    assert "toy" not in capsys.readouterr().err


def test_bad_input(tmp_path):
    model, opt, sched = _setup()
    loader = _loader()
    with pytest.raises(ValueError, match="epochs must be an int >= 1"):
        fit(model, loader, epochs=0, optimizer=opt)
    with pytest.raises(ValueError, match=r"start_epoch must be an int in \[0, epochs=2\]"):
        fit(model, loader, epochs=2, optimizer=opt, start_epoch=3)
    with pytest.raises(TypeError, match="optimizer must be a torch.optim.Optimizer"):
        fit(model, loader, epochs=1, optimizer="sgd")
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        fit(lambda x: x, loader, epochs=1, optimizer=opt)
    with pytest.raises(TypeError, match="train_loader must be an iterable"):
        fit(model, torch.zeros(3), epochs=1, optimizer=opt)
    with pytest.raises(ValueError, match="seed must be None or an int >= 0"):
        fit(model, loader, epochs=1, optimizer=opt, seed=-1)
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        fit(model, loader, epochs=1, optimizer=opt, loss_fn="ce")
    with pytest.raises(TypeError, match="on_epoch_end must be None or a callable"):
        fit(model, loader, epochs=1, optimizer=opt, on_epoch_end=1)
    with pytest.raises(ValueError, match="device must be None, a torch.device"):
        fit(model, loader, epochs=1, optimizer=opt, device="nonsense")
    with pytest.raises(ValueError, match=r"train_loader must yield \(inputs, labels\) batches"):
        fit(model, [torch.zeros(2, 1, 6, 6)], epochs=1, optimizer=opt, progress=False)
    with pytest.raises(ValueError, match="loader yielded no batches"):
        evaluate(model, [])
    with pytest.raises(TypeError, match="loader must be an iterable"):
        evaluate(model, 3)
    with pytest.raises(ValueError, match="model must output N x C logits"):
        evaluate(nn.Flatten(0), [(torch.zeros(2, 3), torch.zeros(2, dtype=torch.long))])
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        save_checkpoint(tmp_path / "a.pt", model, opt, -1)
    with pytest.raises(TypeError, match="extra must be None or a dict"):
        save_checkpoint(tmp_path / "a.pt", model, opt, 1, extra=[1])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt", model)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a cnnkernels.train checkpoint"):
        load_checkpoint(tmp_path / "other.pt", model)
    save_checkpoint(tmp_path / "noopt.pt", model, None, 1)
    with pytest.raises(ValueError, match="holds no optimizer state, but optimizer was given"):
        load_checkpoint(tmp_path / "noopt.pt", model, opt)
    with pytest.raises(ValueError, match="holds no scheduler state, but scheduler was given"):
        load_checkpoint(tmp_path / "noopt.pt", model, None, sched)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        load_checkpoint(tmp_path / "noopt.pt", nn.Sequential(nn.Linear(2, 2)))
