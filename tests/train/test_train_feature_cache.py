"""cnnkernels.train.feature_cache: the cached features are the head's input in eval mode, builds resume after an
interruption and give the same file, a changed backbone (or data set) never reuses stale features, and training a
head on the cache gives the head that end-to-end training with the frozen backbone gives, with one backbone pass
instead of one per epoch."""

import copy
import json
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from cnnkernels import models
from cnnkernels.testing import randomize_bn
from cnnkernels.train.feature_cache import CachedFeatures, FeatureCache, backbone_fingerprint
from cnnkernels.train.transfer import freeze, head_name, replace_head

_DIGITS = load_digits()


def digits(n, size=32, offset=0):
    """The first n scikit-learn digits (8x8, 0..16) as 1 x size x size images in [0, 1], with their labels."""
    x = torch.tensor(_DIGITS.images[offset:offset + n], dtype=torch.float32)[:, None] / 16
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return TensorDataset(x, torch.tensor(_DIGITS.target[offset:offset + n]))


class Recording(Dataset):
    """A dataset that records the indices read and can fail at one of them (an interrupted build)."""

    def __init__(self, base, fail_at=None):
        self.base, self.fail_at, self.seen = base, fail_at, []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        if i == self.fail_at:
            raise RuntimeError(f"simulated failure at item {i}")
        self.seen.append(i)
        return self.base[i]


class Counter:
    """Forward hook counting the samples that went through a module, also in the deep copies FeatureCache runs."""

    def __init__(self):
        self.samples = 0

    def __deepcopy__(self, memo):
        return self

    def __call__(self, module, args, output):
        self.samples += args[0].shape[0]


def head_inputs(model, head, x):
    """The input of `head` in eval mode, by a plain forward of `model` itself."""
    got = []
    handle = model.get_submodule(head).register_forward_pre_hook(lambda m, a: got.append(a[0].clone()))
    training = model.training
    model.eval()
    with torch.no_grad():
        model(x)
    model.train(training)
    handle.remove()
    return got[0]


def lenet():
    torch.manual_seed(0)
    return models.lenet5(num_classes=10)


# ---------------------------------------------------------------------------------------------------------------------
# What is cached


@pytest.mark.parametrize("optimize", [True, False])
def test_features_are_the_head_input(tmp_path, optimize):
    torch.manual_seed(0)
    model = randomize_bn(models.mobilenet_v2(num_classes=4, width_mult=0.35, in_channels=1))
    data = digits(40)
    cache = FeatureCache(model, data, tmp_path, batch_size=16, optimize=optimize, progress=False)
    ds = cache.dataset()
    assert isinstance(ds, CachedFeatures) and len(ds) == 40
    expected = head_inputs(model, "classifier.1", data.tensors[0])
    feats = torch.from_numpy(np.array(ds.features))
    assert feats.shape == expected.shape == (40, model.last_channel)
    if optimize:
        torch.testing.assert_close(feats, expected, rtol=1e-4, atol=1e-4)
    else:
        assert torch.equal(feats, expected)
    assert np.array_equal(ds.labels, data.tensors[1].numpy()) and ds.labels.dtype == np.int64
    meta = json.loads(cache.meta_path.read_text())
    assert meta["completed"] == 40 and meta["length"] == 40 and meta["feature_shape"] == [model.last_channel]
    assert meta["head"] == "classifier.1" and meta["fingerprint"] == backbone_fingerprint(model)
    assert model.training  # the model itself was not switched to eval mode


def test_forward_stops_at_the_head_and_model_is_untouched(tmp_path):
    model = lenet()
    calls = Counter()
    model.classifier[2].register_forward_hook(calls)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    FeatureCache(model, digits(20), tmp_path, batch_size=8, progress=False).build()
    assert calls.samples == 0
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_custom_head_and_dataset_access(tmp_path):
    model = lenet()
    data = digits(30)
    cache = FeatureCache(model, data, tmp_path, head="classifier.0", batch_size=7, progress=False)
    ds = cache.dataset()
    expected = head_inputs(model, "classifier.0", data.tensors[0])
    assert ds.features.shape == (30, 120)
    torch.testing.assert_close(torch.from_numpy(np.array(ds.features)), expected, rtol=1e-4, atol=1e-4)
    x, y = ds[3]
    assert x.shape == (120,) and y.dtype == torch.int64 and int(y) == int(data.tensors[1][3])
    batch = ds.__getitems__([5, 0, 29])
    assert all(torch.equal(b[0], ds[i][0]) and int(b[1]) == int(ds[i][1]) for b, i in zip(batch, [5, 0, 29]))
    xb, yb = next(iter(DataLoader(ds, batch_size=30)))
    assert torch.equal(xb, torch.from_numpy(np.array(ds.features))) and torch.equal(yb, data.tensors[1])
    twin = pickle.loads(pickle.dumps(ds))  # what a DataLoader worker gets: the paths, not the arrays
    assert twin._features is None and torch.equal(twin[7][0], ds[7][0])


def test_workers_and_progress_give_the_same_file(tmp_path, capsys):
    model = lenet()
    data = digits(48)
    a = FeatureCache(model, data, tmp_path / "a", batch_size=16, progress=True).dataset()
    assert "features at classifier.2" in capsys.readouterr().err
    b = FeatureCache(model, data, tmp_path / "b", batch_size=16, num_workers=2, progress=False).dataset()
    assert np.array_equal(a.features, b.features) and np.array_equal(a.labels, b.labels)


# ---------------------------------------------------------------------------------------------------------------------
# Resuming and invalidation


def test_interrupted_build_resumes_and_equals_uninterrupted(tmp_path):
    model = randomize_bn(models.resnet18(num_classes=3, in_channels=1))
    base = digits(40)
    reference = FeatureCache(model, base, tmp_path / "ref", batch_size=16, progress=False).dataset()

    data = Recording(base, fail_at=37)
    cache = FeatureCache(model, data, tmp_path / "run", batch_size=16, progress=False)
    with pytest.raises(RuntimeError, match="simulated failure at item 37"):
        cache.build()
    assert cache.read_meta()["completed"] == 32  # two full batches were written before item 37 failed
    assert not cache.is_complete()

    data.fail_at, data.seen = None, []
    ds = cache.dataset()
    assert sorted(set(data.seen)) == [0] + list(range(32, 40))  # item 0 only to check the image shape
    assert np.array_equal(ds.features, reference.features) and np.array_equal(ds.labels, reference.labels)
    assert cache.is_complete()


def test_changed_backbone_weight_rebuilds(tmp_path):
    model = lenet()
    data = digits(24)
    forwards = Counter()
    model.features.register_forward_hook(forwards)
    cache = FeatureCache(model, data, tmp_path, batch_size=8, progress=False)
    before = np.array(cache.dataset().features)
    fingerprint = cache.fingerprint()
    assert forwards.samples == 24

    # The head's weights and the head itself are what gets trained: they never invalidate the cache.
    with torch.no_grad():
        model.classifier[2].weight.add_(1.0)
    replace_head(model, 3)
    assert cache.fingerprint() == fingerprint and cache.is_complete()
    cache.build()
    assert forwards.samples == 24

    with torch.no_grad():
        model.features[0].weight[0, 0, 0, 0] += 0.5
    assert cache.fingerprint() != fingerprint and not cache.is_complete()
    after = np.array(cache.dataset().features)
    assert forwards.samples == 48  # rebuilt from scratch
    assert np.abs(after - before).max() > 1e-3
    torch.testing.assert_close(torch.from_numpy(after), head_inputs(model, "classifier.2", data.tensors[0]),
                               rtol=1e-4, atol=1e-4)


def test_changed_dataset_length_or_image_size_rebuilds(tmp_path):
    model = lenet()
    forwards = Counter()
    model.features.register_forward_hook(forwards)
    FeatureCache(model, digits(24), tmp_path, batch_size=8, progress=False).build()
    shorter = FeatureCache(model, digits(16), tmp_path, batch_size=8, progress=False).dataset()
    assert len(shorter) == 16 and forwards.samples == 40
    # Same length, same weights, same feature shape (LeNet pools adaptively), other images: rebuilt too.
    bigger = digits(16, size=40)
    ds = FeatureCache(model, bigger, tmp_path, batch_size=8, progress=False).dataset()
    assert forwards.samples == 56
    torch.testing.assert_close(torch.from_numpy(np.array(ds.features)),
                               head_inputs(model, "classifier.2", bigger.tensors[0]), rtol=1e-4, atol=1e-4)


class Pooled(nn.Module):
    """The feature size depends on a plain attribute, which neither the state_dict nor extra_repr() shows (the head
    never runs in FeatureCache, so its in_features need not match)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.grid = 2
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        return self.head(torch.flatten(F.adaptive_avg_pool2d(self.conv(x), self.grid), 1))


def test_resume_with_other_feature_shape_restarts(tmp_path):
    model = Pooled()
    data = Recording(digits(12), fail_at=9)
    cache = FeatureCache(model, data, tmp_path, batch_size=4, progress=False)
    with pytest.raises(RuntimeError, match="simulated failure"):
        cache.build()
    assert cache.read_meta()["completed"] == 8 and cache.read_meta()["feature_shape"] == [8]
    model.grid = 3  # same fingerprint, same images, other features: the 8 rows on disk must not be kept
    data.fail_at, data.seen = None, []
    ds = cache.dataset()
    assert cache.read_meta()["feature_shape"] == [18] and ds.features.shape == (12, 18)
    assert sorted(set(data.seen)) == list(range(12))
    expected = torch.flatten(F.adaptive_avg_pool2d(model.conv(data.base.tensors[0]), 3), 1)
    torch.testing.assert_close(torch.from_numpy(np.array(ds.features)), expected.detach(), rtol=1e-5, atol=1e-5)


def test_rebuild_and_corrupt_files(tmp_path):
    model = lenet()
    forwards = Counter()
    model.features.register_forward_hook(forwards)
    cache = FeatureCache(model, digits(16), tmp_path, batch_size=8, progress=False)
    cache.build()
    cache.build(rebuild=True)
    assert forwards.samples == 32
    np.save(cache.features_path, np.zeros((3, 2), np.float32))  # not what the sidecar describes
    assert not cache.is_complete()
    cache.build()
    assert forwards.samples == 48 and cache.is_complete()
    cache.meta_path.write_text("{not json")
    assert not cache.is_complete()


def test_fingerprint_covers_weights_buffers_and_structure_not_the_head():
    model = randomize_bn(models.resnet18(num_classes=3))
    fp = backbone_fingerprint(model)
    assert backbone_fingerprint(copy.deepcopy(model)) == fp
    assert backbone_fingerprint(freeze(copy.deepcopy(model), until="fc")) == fp
    assert backbone_fingerprint(replace_head(copy.deepcopy(model), 9)) == fp
    changed = copy.deepcopy(model)
    changed.layer2[0].bn1.running_mean[3] += 0.25
    assert backbone_fingerprint(changed) != fp
    changed = copy.deepcopy(model)
    changed.maxpool = nn.MaxPool2d(kernel_size=2, stride=2)
    assert backbone_fingerprint(changed) != fp
    assert backbone_fingerprint(model, head="layer4") != fp
    # GoogLeNet's auxiliary classifiers are replaced with the head: they do not count either.
    g = models.googlenet(num_classes=5, init_weights=False)
    gfp = backbone_fingerprint(g)
    assert backbone_fingerprint(replace_head(g, 2)) == gfp


# ---------------------------------------------------------------------------------------------------------------------
# Cached head training == end-to-end training with the frozen backbone


def train(module, params, dataset, *, epochs, seed, lr=0.05):
    """A minimal deterministic loop: seeded shuffling, SGD with momentum, cross-entropy."""
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=16, shuffle=True, generator=torch.Generator().manual_seed(seed))
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9)
    for _ in range(epochs):
        for x, y in loader:
            opt.zero_grad()
            out = module(x)
            F.cross_entropy(out.logits if isinstance(out, tuple) else out, y).backward()
            opt.step()


@pytest.mark.parametrize("name", ["lenet5", "mobilenet_v2"])
def test_cached_head_equals_end_to_end_head(tmp_path, name):
    torch.manual_seed(0)
    if name == "lenet5":
        model = models.lenet5(num_classes=10)
    else:
        model = randomize_bn(models.mobilenet_v2(num_classes=10, width_mult=0.35, in_channels=1, dropout=0.5))
    head = head_name(model)
    freeze(model, until=head)
    data = digits(64)
    epochs = 3
    body = model.features

    # (a) features cached once, a copy of the head trained on them
    cached_forwards = Counter()
    handle = body.register_forward_hook(cached_forwards)
    cache = FeatureCache(model, data, tmp_path, batch_size=32, progress=False)
    head_a = copy.deepcopy(model.get_submodule(head))
    initial = head_a.weight.detach().clone()
    train(head_a, head_a.parameters(), cache.dataset(), epochs=epochs, seed=1)
    handle.remove()

    # (b) the whole model in training mode, its frozen body included, same seed and order
    model_b = copy.deepcopy(model)
    model_b.train()
    e2e_forwards = Counter()
    model_b.features.register_forward_hook(e2e_forwards)
    train(model_b, [p for p in model_b.parameters() if p.requires_grad], data, epochs=epochs, seed=1)
    head_b = model_b.get_submodule(head)

    assert (head_a.weight - initial).abs().max() > 1e-2  # it did train
    torch.testing.assert_close(head_a.weight, head_b.weight, rtol=0, atol=1e-4)
    torch.testing.assert_close(head_a.bias, head_b.bias, rtol=0, atol=1e-4)
    # One backbone pass over the data for the cache, one per epoch end to end.
    assert cached_forwards.samples == len(data)
    assert e2e_forwards.samples == epochs * len(data)


# ---------------------------------------------------------------------------------------------------------------------
# Bad input


def test_bad_arguments(tmp_path):
    model, data = lenet(), digits(8)
    with pytest.raises(ValueError, match=r"`batch_size` must be an int >= 1, got 0"):
        FeatureCache(model, data, tmp_path, batch_size=0)
    with pytest.raises(ValueError, match=r"`num_workers` must be an int >= 0, got -1"):
        FeatureCache(model, data, tmp_path, num_workers=-1)
    with pytest.raises(ValueError, match=r"`head` must be the qualified name.*'fc'"):
        FeatureCache(model, data, tmp_path, head="fc")
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        FeatureCache("lenet5", data, tmp_path)
    with pytest.raises(TypeError, match="`dataset` must be a map-style dataset"):
        FeatureCache(model, iter([]), tmp_path)
    with pytest.raises(TypeError, match="`path` must be a directory path"):
        FeatureCache(model, data, 3)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="`path` must be a directory"):
        FeatureCache(model, data, tmp_path / "file")
    with pytest.raises(ValueError, match="`dataset` is empty"):
        FeatureCache(model, TensorDataset(torch.zeros(0, 1, 32, 32), torch.zeros(0)), tmp_path).build()


class Items(Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def test_bad_items(tmp_path):
    model = lenet()
    image = torch.zeros(1, 32, 32)
    cases = [
        ([image], TypeError, r"item 0 of `dataset` must be an \(image, label\) pair, got Tensor"),
        ([(image, 1, 2)], TypeError, r"item 0 .* pair, got a tuple of length 3"),
        ([("img", 1)], TypeError, r"item 0 .* image a torch.Tensor .* got an image of type str"),
        ([(image, 0.5)], TypeError, r"item 0 .* label must be an integer class index, got float"),
        ([(image, torch.tensor([1, 2]))], TypeError, r"item 0 .* label must be an integer class index"),
        ([(image, 1), (image, 2), (image, "3")], TypeError, r"item 2 .* label must be an integer"),
        ([(image, 1), (torch.zeros(1, 30, 30), 2)], ValueError, r"item 1 .* shape \(1, 30, 30\).* same shape"),
    ]
    for i, (items, exc, match) in enumerate(cases):
        with pytest.raises(exc, match=match):
            FeatureCache(model, Items(items), tmp_path / str(i), progress=False).build()


def test_head_never_called(tmp_path):
    class Unused(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Flatten()
            self.spare = nn.Linear(4, 2)

        def forward(self, x):
            return self.body(x)

    with pytest.raises(RuntimeError, match="never called its head 'spare'"):
        FeatureCache(Unused(), Items([(torch.zeros(4), 0)]), tmp_path, progress=False).build()
