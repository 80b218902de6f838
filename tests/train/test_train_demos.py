"""The end-to-end demonstrations of cnnkernels.train.demos with small budgets, directly and through `python -m
cnnkernels.train transfer|evaluate` (main(argv)): the head trained on cached features is the head trained end to end
through the frozen backbone, with one backbone pass instead of one per epoch; multi-crop and ensemble outputs are
probability rows whose accuracies a working setup reaches."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import Subset

import cnnkernels.train.__main__ as cli
from cnnkernels.train.data import digits
from cnnkernels.train.demos import (MIRROR_NOTE, TRANSFER_CLASSES, format_table, multicrop_demo, stratified_subset,
                                    transfer_demo)


@pytest.fixture(autouse=True)
def _one_thread(restore_num_threads):
    torch.set_num_threads(1)


def _single_threaded(fn, **kwargs):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(**kwargs)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def transfer_metrics(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer")
    return _single_threaded(transfer_demo, epochs_base=4, epochs_head=10, train_fractions=(1.0, 0.25), seed=0,
                            out=str(out), log=None)


@pytest.fixture(scope="module")
def multicrop_metrics():
    return _single_threaded(multicrop_demo, epochs=3, seed=0, log=None, keep_probabilities=True)


def test_cached_head_is_the_end_to_end_head(transfer_metrics):
    for run in transfer_metrics["runs"]:
        # Training moved the head by far more than the two heads differ: they are the same head, not two untrained
        # ones. The features differ by fp32 rounding (fused vs eager backbone), measured ~1e-7 apart.
        assert run["head_max_abs_change"] > 0.05, run
        assert run["head_max_abs_diff"] <= 1e-4, run
        assert run["accuracy"]["cached_head"] == run["accuracy"]["end_to_end_head"]


def test_cached_path_runs_the_backbone_once(transfer_metrics):
    epochs = transfer_metrics["args"]["epochs_head"]
    for run in transfer_metrics["runs"]:
        n = run["train_images"]
        images, calls = run["backbone_images"], run["backbone_calls"]
        assert images["cached"] == n  # the cache build, and nothing while the head trains
        assert images["end_to_end"] == epochs * n
        assert calls["cached"] == math.ceil(n / 256)  # FeatureCache batches of 256
        assert calls["end_to_end"] == epochs * math.ceil(n / 64)
        seconds = run["seconds"]
        assert seconds["cached_total"] == pytest.approx(seconds["cache_build"] + seconds["cached_head"])
        assert run["speedup"]["with_cache_build"] == pytest.approx(seconds["end_to_end_head"] /
                                                                   seconds["cached_total"])


def test_transfer_accuracies_and_fractions(transfer_metrics, tmp_path):
    # Seeds 0-3 measured with these budgets: base 0.91-0.95 on 0-4, head 0.69-0.73 and scratch 0.95-0.97 on 5-9;
    # chance is 0.2.
    assert transfer_metrics["base"]["test_accuracy"] >= 0.85
    full, quarter = transfer_metrics["runs"]
    assert full["accuracy"]["cached_head"] >= 0.6
    assert full["accuracy"]["scratch"] >= 0.85
    assert quarter["accuracy"]["cached_head"] >= 0.35 and quarter["accuracy"]["scratch"] >= 0.35
    train = digits("train", classes=TRANSFER_CLASSES)
    assert full["train_images"] == len(train) and full["test_images"] == len(digits("test", classes=TRANSFER_CLASSES))
    per_class = torch.bincount(train.targets).tolist()
    assert quarter["train_images"] == sum(round(0.25 * c) for c in per_class)
    assert transfer_metrics["args"]["train_fractions"] == [1.0, 0.25]
    json.dumps(transfer_metrics)  # all plain data, as metrics.json needs


def test_stratified_subset():
    train = digits("train", classes=TRANSFER_CLASSES)
    assert stratified_subset(train, 1.0) is train
    part = stratified_subset(train, 0.1, seed=3)
    assert isinstance(part, Subset) and part.indices == sorted(part.indices)
    counts = torch.bincount(train.targets[part.indices], minlength=5).tolist()
    assert counts == [round(0.1 * c) for c in torch.bincount(train.targets).tolist()]
    assert stratified_subset(train, 0.1, seed=3).indices == part.indices
    assert stratified_subset(train, 0.1, seed=4).indices != part.indices
    tiny = stratified_subset(train, 0.001)
    assert torch.bincount(train.targets[tiny.indices]).tolist() == [1] * 5  # at least one image per class


def test_multicrop_probabilities_and_accuracies(multicrop_metrics):
    acc, probs, labels = multicrop_metrics["accuracy"], multicrop_metrics["probabilities"], multicrop_metrics["labels"]
    assert set(acc) == set(probs) == {"model1_centre", "model2_centre", "model1_5crop", "model2_5crop",
                                      "model1_10crop", "model2_10crop", "ensemble_centre", "ensemble_5crop",
                                      "ensemble_10crop"}
    n = multicrop_metrics["test_images"]
    for name, p in probs.items():
        assert p.shape == (n, 10) and p.dtype == torch.float32, name
        assert bool((p >= 0).all()), name
        torch.testing.assert_close(p.sum(1), torch.ones(n), atol=1e-5, rtol=0)
        assert acc[name] == pytest.approx(float((p.argmax(1) == labels).double().mean()))
    for crops in ("centre", "5crop", "10crop"):
        mean = (probs[f"model1_{crops}"] + probs[f"model2_{crops}"]) / 2
        torch.testing.assert_close(probs[f"ensemble_{crops}"], mean, atol=1e-6, rtol=0)
    # Seeds 0-2 measured with 3 epochs: centre and 5 crops 0.81-0.89, 10 crops (with mirrors) 0.73-0.82; chance 0.1.
    for name in ("model1_centre", "model2_centre", "model1_5crop", "model2_5crop", "ensemble_centre",
                 "ensemble_5crop"):
        assert acc[name] >= 0.7, (name, acc[name])
    assert acc["model1_10crop"] >= 0.6 and acc["model2_10crop"] >= 0.6 and acc["ensemble_10crop"] >= 0.6
    # The 5 crops are 5 of the 10; the mirrored ones must have changed the probabilities.
    assert not torch.allclose(probs["model1_5crop"], probs["model1_10crop"], atol=1e-3)
    assert len(multicrop_metrics["train_seconds"]) == 2
    json.dumps({k: v for k, v in multicrop_metrics.items() if k not in ("probabilities", "labels")})


def test_format_table():
    text = format_table(["name", "value"], [["a", "1.5"], ["longer", "10"]])
    assert text.splitlines() == ["name    value", "------  -----", "a         1.5", "longer     10"]


def test_cli_transfer(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    status = cli.main(["transfer", "--epochs-base", "2", "--epochs-head", "2", "--train-fraction", "0.2",
                       "--no-progress", "--out", str(out)])
    text = capsys.readouterr().out
    assert status == 0
    assert "transfer, head on cached features" in text and "LeNet-5 from scratch" in text
    assert "end-to-end time / cached time" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert [r["train_fraction"] for r in metrics["runs"]] == [0.2]
    assert metrics["args"]["epochs_head"] == 2 and metrics["args"]["threads"] == 1
    assert (out / "cache-0.2" / "features.npy").is_file()
    # A head farther from its end-to-end twin than the tolerance fails the run.
    monkeypatch.setattr(cli, "HEAD_TOLERANCE", -1.0)
    status = cli.main(["transfer", "--epochs-base", "1", "--epochs-head", "1", "--train-fraction", "0.1",
                       "--no-progress"])
    assert status == 1 and "the cached head differs from the end-to-end head" in capsys.readouterr().err


def test_cli_evaluate(tmp_path, capsys):
    status = cli.main(["evaluate", "--epochs", "1", "--seed", "2", "--no-progress", "--out", str(tmp_path)])
    text = capsys.readouterr().out
    assert status == 0
    assert "ensemble of the two, 10 crops" in text and MIRROR_NOTE in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["args"]["seed"] == 2 and len(metrics["accuracy"]) == 9
    assert all(0.0 <= a <= 1.0 for a in metrics["accuracy"].values())


def test_cli_help_and_bad_input(capsys):
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "mirrored digit is not a digit" in capsys.readouterr().out.replace("\n", " ")
    with pytest.raises(SystemExit):
        cli.main(["transfer", "--train-fraction", "0"])
    assert "expected a number in (0, 1], got 0.0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["transfer", "--epochs-head", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--head-lr", "1"])
    assert "unrecognized arguments: --head-lr" in capsys.readouterr().err


def test_demo_bad_input():
    with pytest.raises(ValueError, match="epochs_base must be an int >= 1, got 0"):
        transfer_demo(epochs_base=0, log=None)
    with pytest.raises(ValueError, match=r"train_fractions\[1\] must be a number in \(0, 1\], got 1.5"):
        transfer_demo(train_fractions=(0.5, 1.5), log=None)
    with pytest.raises(ValueError, match="train_fractions must be a non-empty sequence"):
        transfer_demo(train_fractions="0.5", log=None)
    with pytest.raises(ValueError, match="head_lr must be a positive number, got 0"):
        transfer_demo(head_lr=0, log=None)
    with pytest.raises(TypeError, match="log must be None or a callable"):
        transfer_demo(log="print")
    with pytest.raises(TypeError, match="out must be None or a directory path"):
        transfer_demo(out=3, log=None)
    with pytest.raises(ValueError, match=r"image_size must be >= crop_size \(32\), got 30"):
        multicrop_demo(image_size=30, log=None)
    with pytest.raises(ValueError, match="seed must be an int >= 0, got -1"):
        multicrop_demo(seed=-1, log=None)
    with pytest.raises(ValueError, match=r"fraction must be a number in \(0, 1\], got 0"):
        stratified_subset(digits("test"), 0)
    with pytest.raises(TypeError, match="dataset must be a DigitsDataset"):
        stratified_subset([1, 2, 3], 0.5)
