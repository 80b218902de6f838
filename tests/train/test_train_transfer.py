"""cnnkernels.train.transfer: freeze (parameters and BatchNorm/Dropout behaviour, kept through train(), deepcopy and
pickling), unfreeze by stages, replace_head, head_name, for every model of cnnkernels.models and torchvision's
resnet18, mobilenet_v2, googlenet, alexnet and vgg11.

Layout checks run on every model built on the meta device (no weights to initialise); behaviour checks (outputs,
running statistics, gradients, optimize()) run on one real, randomly initialised model per architecture family at a
small input size (torchvision's vgg11, the slowest to build, only in the layout checks: its layers are those of
AlexNet and vgg11_bn, both checked here)."""

import copy
import pickle

import pytest
import torch
from torch import nn

import cnnkernels
import cnnkernels.nn as cnn
from cnnkernels import models
from cnnkernels.testing import randomize_bn
from cnnkernels.train.transfer import (aux_head_names, freeze, head_name, is_frozen, replace_head, stages,
                                       unfreeze)

torchvision = pytest.importorskip("torchvision")

TORCHVISION = ["resnet18", "mobilenet_v2", "googlenet", "alexnet", "vgg11"]
ALL = [("cnnkernels", n) for n in models.list_models(task="classification")] + [("torchvision", n) for n in TORCHVISION]


def build(source, name, num_classes=3, device=None):
    kwargs = {"num_classes": num_classes}
    if name == "googlenet":
        kwargs["init_weights"] = True
    with torch.device(device) if device else torch.device("cpu"):
        if source == "cnnkernels":
            return models.get_model(name, **kwargs)
        return torchvision.models.get_model(name, weights=None, **kwargs)


def expected_head(name):
    if name.startswith(("resnet", "resnext", "wide_resnet", "googlenet")):
        return "fc"
    if name.startswith(("vgg", "alexnet")):
        return "classifier.6"
    if name.startswith("mobilenet_v3"):
        return "classifier.3"
    if name.startswith(("mobilenet", "efficientnet")):
        return "classifier.1"
    assert name == "lenet5"
    return "classifier.2"


def under(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def ancestors(name):
    parts = name.split(".")
    return {""} | {".".join(parts[:i]) for i in range(1, len(parts))}


# ---------------------------------------------------------------------------------------------------------------------
# Layout on every model (meta device)


@pytest.mark.parametrize("source,name", ALL, ids=[f"{s}-{n}" for s, n in ALL])
def test_layout_every_model(source, name):
    model = build(source, name, device="meta")
    fresh_keys = list(model.state_dict().keys())
    head = head_name(model)
    assert head == expected_head(name)
    names = stages(model)
    modules = dict(model.named_modules())
    assert names[-1] == head and all(n in modules for n in names) and len(names) == len(set(names))
    assert all(next(modules[n].parameters(), None) is not None for n in names)

    freeze(model, until=head)
    model.train()
    for pname, p in model.named_parameters():
        assert p.requires_grad == under(pname, head), pname
    for mname, m in model.named_modules():
        trainable = under(mname, head) or mname in ancestors(head)
        assert m.training == trainable and is_frozen(m) == (not trainable), mname
    assert list(model.state_dict().keys()) == fresh_keys
    other = build(source, name, device="meta")
    other.load_state_dict(model.state_dict(), strict=True)
    model.load_state_dict(other.state_dict(), strict=True)

    twin = copy.deepcopy(model)
    twin.train()
    assert [m.training for m in twin.modules()] == [m.training for m in model.modules()]
    assert [p.requires_grad for p in twin.parameters()] == [p.requires_grad for p in model.parameters()]

    unfreeze(model, 2)
    model.train()
    for pname, p in model.named_parameters():
        assert p.requires_grad == (modules_order(model, pname) >= modules_order(model, names[-2])), pname
    assert not any(p.requires_grad for p in modules[names[-3]].parameters())
    assert modules[names[-2]].training and not modules[names[-3]].training

    old = model.get_submodule(head)
    aux = aux_head_names(model)
    assert aux == (["aux1.fc2", "aux2.fc2"] if name == "googlenet" else [])
    assert replace_head(model, 7) is model
    for n in [head] + aux:
        new = model.get_submodule(n)
        assert new is not old and type(new) is type(old)
        assert (new.in_features, new.out_features) == (old.in_features, 7)
        assert new.weight.requires_grad and new.weight.device.type == "meta" and not is_frozen(new)


def modules_order(model, qualified):
    """Position in named_modules order of the module holding `qualified` (a module or a parameter name)."""
    names = [n for n, _ in model.named_modules()]
    while qualified not in names:
        qualified = qualified.rpartition(".")[0]
    return names.index(qualified)


# ---------------------------------------------------------------------------------------------------------------------
# Behaviour on one real model per family


REAL = [("cnnkernels", "lenet5", (2, 1, 32, 32)), ("cnnkernels", "alexnet", (2, 3, 64, 64)),
        ("cnnkernels", "vgg11_bn", (2, 3, 32, 32)), ("cnnkernels", "resnet18", (2, 3, 32, 32)),
        ("cnnkernels", "mobilenet_v1", (2, 3, 32, 32)),
        ("cnnkernels", "mobilenet_v2", (2, 3, 32, 32)), ("cnnkernels", "googlenet", (2, 3, 32, 32)),
        ("torchvision", "resnet18", (2, 3, 32, 32)), ("torchvision", "mobilenet_v2", (2, 3, 32, 32)),
        ("torchvision", "googlenet", (2, 3, 32, 32)), ("torchvision", "alexnet", (2, 3, 64, 64))]


def logits(out):
    return out.logits if isinstance(out, tuple) else out


def buffers(model):
    return {k: v.clone() for k, v in model.named_buffers()}


@pytest.mark.parametrize("source,name,shape", REAL, ids=[f"{s}-{n}" for s, n, _ in REAL])
def test_frozen_body_behaves_as_in_eval_mode(source, name, shape):
    torch.manual_seed(0)
    model = randomize_bn(build(source, name))
    x = torch.randn(*shape)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    head = head_name(model)
    freeze(model, until=head)
    model.train()
    before = buffers(model)
    out = logits(model(x))
    # Frozen BatchNorms normalise with their running statistics and frozen Dropouts are off, so the training-mode
    # output is the eval-mode one; no running statistic or num_batches_tracked moved.
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    after = buffers(model)
    assert all(torch.equal(before[k], after[k]) for k in before)
    out.square().sum().backward()
    for pname, p in model.named_parameters():
        assert (p.grad is not None) == under(pname, head), pname
    assert model.get_submodule(head).weight.grad.abs().sum() > 0

    model.eval()
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    fused = cnnkernels.optimize(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in fused.modules()) == 0 or n_bn == 0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, rtol=1e-3, atol=1e-3)


def test_unfrozen_model_would_update_statistics():
    # The counterpart of the test above: without freeze() the same model in training mode moves its statistics and
    # gives other outputs, so the equality above is a real check.
    torch.manual_seed(0)
    model = randomize_bn(models.resnet18(num_classes=3))
    x = torch.randn(2, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    model.train()
    before = buffers(model)
    with torch.no_grad():
        out = model(x)
    assert (out - expected).abs().max() > 1e-2
    assert not torch.equal(before["bn1.running_mean"], model.bn1.running_mean)


# ---------------------------------------------------------------------------------------------------------------------
# freeze(): the boundary, modes, copies


def test_freeze_until_a_stage():
    model = models.resnet18(num_classes=3)
    assert freeze(model, until="layer4") is model
    model.train()
    for pname, p in model.named_parameters():
        assert p.requires_grad == pname.startswith(("layer4.", "fc.")), pname
    assert not model.layer3[1].bn2.training and not model.bn1.training and not model.layer1.training
    assert model.training and model.layer4.training and model.layer4[0].bn1.training and model.fc.training
    assert not is_frozen(model) and is_frozen(model.layer3) and not is_frozen(model.layer4)


def test_freeze_moves_the_boundary_both_ways():
    model = models.resnet18(num_classes=3)
    freeze(model, until="layer4")
    freeze(model, until="fc")
    assert not any(p.requires_grad for p in model.layer4.parameters()) and model.fc.weight.requires_grad
    freeze(model, until="layer3.1")
    model.train()
    assert all(p.requires_grad for p in model.layer3[1].parameters())
    assert all(p.requires_grad for p in model.layer4.parameters())
    assert not any(p.requires_grad for p in model.layer3[0].parameters())
    assert model.layer3.training and model.layer3[1].bn1.training and not model.layer3[0].bn1.training
    freeze(model)
    model.train()
    assert not any(p.requires_grad for p in model.parameters())
    assert not any(m.training for m in model.modules())


def test_freeze_inside_a_block():
    # until inside a block: the block (an ancestor) keeps its normal mode and runs its plain training path, its earlier
    # convolution and BatchNorm are frozen.
    torch.manual_seed(0)
    model = randomize_bn(models.resnet18(num_classes=3))
    freeze(model, until="layer4.0.conv2")
    model.train()
    block = model.layer4[0]
    assert block.training and not block.bn1.training and block.bn2.training
    assert not block.conv1.weight.requires_grad and block.conv2.weight.requires_grad
    mean1, mean2 = block.bn1.running_mean.clone(), block.bn2.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert torch.equal(block.bn1.running_mean, mean1) and not torch.equal(block.bn2.running_mean, mean2)


def test_freeze_direct_parameters_of_an_ancestor():
    class WithToken(nn.Module):
        def __init__(self):
            super().__init__()
            self.token = nn.Parameter(torch.zeros(4))
            self.body = nn.Linear(4, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x):
            return self.head(self.body(x + self.token))

    model = freeze(WithToken(), until="head")
    assert not model.token.requires_grad and not model.body.weight.requires_grad and model.head.weight.requires_grad
    assert not is_frozen(model)


def test_frozen_dropout_is_off_and_trainable_dropout_is_on():
    torch.manual_seed(0)
    model = models.mobilenet_v2(num_classes=3, width_mult=0.25)
    x = torch.randn(4, 3, 32, 32)
    freeze(model, until="classifier.1")
    model.train()
    assert not model.classifier[0].training
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x), rtol=0, atol=0)
    unfreeze(model, 1)  # the last stage only: the Dropout before it stays frozen
    assert not model.classifier[0].training
    freeze(model, until="classifier.0")
    model.train()
    assert model.classifier[0].training
    with torch.no_grad():
        assert (model(x) - model(x)).abs().max() > 0


def test_mode_asked_while_frozen_is_restored():
    model = models.resnet18(num_classes=3)
    model.eval()
    freeze(model)
    model.train()
    assert not any(m.training for m in model.modules())
    unfreeze(model, 100)
    assert all(m.training for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    freeze(model, until="fc")
    model.eval()
    unfreeze(model, 1000)
    assert not any(m.training for m in model.modules())


def test_freeze_survives_pickle_and_deepcopy():
    model = freeze(models.lenet5(), until="classifier.2")
    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        twin.train()
        assert not twin.features.training and not twin.classifier[0].training and twin.classifier[2].training
        assert is_frozen(twin.features[0]) and not is_frozen(model.classifier[2])
        # the copy's modules answer for themselves, not for the original's
        assert twin.classifier[0].__dict__["train"].module is twin.classifier[0]
    model.train()
    assert model.classifier[2].training and not model.classifier[0].training


def test_freeze_keeps_train_return_value_and_checks_mode():
    model = freeze(models.lenet5(), until="classifier.2")
    assert model.features.train() is model.features
    with pytest.raises(ValueError, match="mode"):
        model.features.train("yes")


def test_freeze_bad_until():
    model = models.resnet18(num_classes=3)
    with pytest.raises(ValueError, match=r"`until`.*'layer5'.*did you mean.*'layer4'"):
        freeze(model, until="layer5")
    with pytest.raises(TypeError, match="until"):
        freeze(model, until=4)
    with pytest.raises(TypeError, match="model"):
        freeze("resnet18")
    assert all(p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------------
# stages() and unfreeze()


def test_stages_names():
    assert stages(models.lenet5()) == ["features.0", "features.3", "features.7", "classifier.0", "classifier.2"]
    r = stages(models.resnet18(num_classes=3))
    assert r == ["conv1", "bn1"] + [f"layer{i}.{j}" for i in range(1, 5) for j in range(2)] + ["fc"]
    m = stages(models.mobilenet_v2(num_classes=3, width_mult=0.25))
    assert m == [f"features.{i}" for i in range(19)] + ["classifier.1"]
    g = stages(models.googlenet(num_classes=3, init_weights=False))
    assert g[:3] == ["conv1", "conv2", "conv3"] and g[-3:] == ["aux1", "aux2", "fc"] and len(g) == 15
    v = stages(torchvision.models.vgg11(weights=None, num_classes=3))
    assert v == [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)] + ["classifier.0", "classifier.3",
                                                                           "classifier.6"]
    assert stages(nn.Linear(3, 2)) == [""]
    assert stages(nn.ReLU()) == []


def test_unfreeze_progressively():
    torch.manual_seed(0)
    model = randomize_bn(models.resnet18(num_classes=3))
    names = stages(model)
    freeze(model)
    for k in range(1, 5):
        unfreeze(model, k)
        model.train()
        for i, n in enumerate(names):
            sub = model.get_submodule(n)
            trainable = i >= len(names) - k
            assert all(p.requires_grad == trainable for p in sub.parameters()), (k, n)
            assert all(m.training == trainable for m in sub.modules()), (k, n)
    # layer3.1 (stage -4) now trains: its BatchNorm updates its statistics, layer3.0's does not
    mean31, mean30 = model.layer3[1].bn1.running_mean.clone(), model.layer3[0].bn1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    assert not torch.equal(model.layer3[1].bn1.running_mean, mean31)
    assert torch.equal(model.layer3[0].bn1.running_mean, mean30)


def test_unfreeze_zero_and_all():
    model = freeze(models.lenet5())
    assert unfreeze(model, 0) is model
    assert not any(p.requires_grad for p in model.parameters())
    unfreeze(model, len(stages(model)) + 5)
    model.train()
    assert all(p.requires_grad for p in model.parameters()) and all(m.training for m in model.modules())
    assert not any(is_frozen(m) for m in model.modules())


def test_unfreeze_bad_n():
    model = freeze(models.lenet5())
    with pytest.raises(ValueError, match=r"`n` must be >= 0.*-1"):
        unfreeze(model, -1)
    with pytest.raises(TypeError, match="`n` must be an int"):
        unfreeze(model, 1.5)
    with pytest.raises(TypeError, match="`n` must be an int"):
        unfreeze(model, True)


# ---------------------------------------------------------------------------------------------------------------------
# replace_head() and head_name()


def test_replace_head_after_freeze_trains_and_follows_mode():
    torch.manual_seed(0)
    model = freeze(models.lenet5())
    replace_head(model, 4)
    head = model.classifier[2]
    assert head.out_features == 4 and head.weight.requires_grad and head.bias.requires_grad
    model.train()
    assert head.training and not model.classifier.training and not model.classifier[0].training
    out = model(torch.randn(3, 1, 32, 32))
    assert out.shape == (3, 4)
    out.sum().backward()
    assert head.weight.grad is not None and model.classifier[0].weight.grad is None
    model.eval()
    assert not head.training


def test_replace_head_keeps_class_dtype_and_bias():
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 5), nn.ReLU(), cnn.Linear(5, 3, bias=False)).double()
    replace_head(model, 6)
    assert type(model[3]) is cnn.Linear and model[3].bias is None and model[3].weight.dtype == torch.float64
    assert model(torch.randn(2, 8, dtype=torch.float64)).shape == (2, 6)
    # an optimize()d model (whose Linears became cnnkernels.nn.Linear) keeps that class
    fused = cnnkernels.optimize(models.lenet5().eval())
    replace_head(fused, 2)
    assert type(fused.classifier[2]) is cnn.Linear and fused.classifier[2].out_features == 2


def test_replace_head_googlenet_aux_heads():
    torch.manual_seed(0)
    model = models.googlenet(num_classes=5, init_weights=False)
    freeze(model, until="fc")
    replace_head(model, 2)
    model.train()
    out = model(torch.randn(2, 3, 32, 32))
    assert [t.shape for t in out] == [(2, 2)] * 3
    assert model.aux1.fc2.weight.requires_grad and not model.aux1.fc1.weight.requires_grad


def test_replace_head_bad_input():
    with pytest.raises(ValueError, match=r"`num_classes` must be >= 1, got 0"):
        replace_head(models.lenet5(), 0)
    with pytest.raises(TypeError, match="`num_classes` must be an int"):
        replace_head(models.lenet5(), 2.0)
    with pytest.raises(ValueError, match="no nn.Linear"):
        replace_head(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), 3)
    with pytest.raises(ValueError, match="itself the nn.Linear"):
        replace_head(nn.Linear(3, 4), 2)


def test_head_name_bad_input():
    with pytest.raises(ValueError, match="no nn.Linear"):
        head_name(nn.Conv2d(3, 4, 3))
    with pytest.raises(TypeError, match="model"):
        head_name(None)
    with pytest.raises(ValueError, match=r"`head`.*'nope'"):
        aux_head_names(models.lenet5(), "nope")
