"""cnnkernels.optimize(): torchvision and cnnkernels models in, fused inference models out (BatchNorm folded,
known blocks replaced, channels_last), same outputs; refuses training mode; leaves unknown modules alone."""

import copy
import importlib

import pytest
import torch
from torch import nn

import cnnkernels
import cnnkernels.nn as cnn
from cnnkernels import _library, models

torchvision = pytest.importorskip("torchvision")
tvr = importlib.import_module("torchvision.models.resnet")
from torchvision.ops.misc import Conv2dNormActivation  # noqa: E402
from cnnkernels.testing import randomize_bn

def assert_close_scaled(actual, expected, rel=1e-4):
    scale = expected.abs().max().item() + 1e-6
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale + 1e-6, f"max abs error {err} vs scale {scale}"


def snapshot(model):
    return [type(m) for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, snap):
    types, sd = snap
    assert [type(m) for m in model.modules()] == types
    now = model.state_dict()
    assert now.keys() == sd.keys()
    for k in sd:
        assert torch.equal(now[k], sd[k]), k


def n_bn(model):
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def check(model, shapes):
    """optimize(model) matches model on every input shape, NCHW and channels_last; model itself untouched."""
    model.eval()
    snap = snapshot(model)
    opt = cnnkernels.optimize(model)
    assert_unchanged(model, snap)
    assert opt is not model
    for shape in shapes:
        x = torch.randn(*shape)
        with torch.no_grad():
            ref = model(x)
            for inp in (x, x.contiguous(memory_format=torch.channels_last)):
                assert_close_scaled(opt(inp), ref)
    return opt


@pytest.mark.parametrize("name,shapes", [
    ("resnet18", [(2, 3, 40, 56), (1, 3, 33, 33)]),
    ("mobilenet_v2", [(1, 3, 48, 40), (2, 3, 32, 32)]),
    ("googlenet", [(2, 3, 48, 48), (1, 3, 35, 60)]),
    ("vgg11_bn", [(1, 3, 32, 48)]),
], ids=lambda v: v if isinstance(v, str) else "")
def test_optimize_torchvision_models(name, shapes):
    torch.manual_seed(0)
    kwargs = {"init_weights": False} if name == "googlenet" else {}
    model = randomize_bn(getattr(torchvision.models, name)(weights=None, num_classes=10, **kwargs))
    opt = check(model, shapes)
    assert n_bn(opt) == 0  # every BatchNorm follows a conv in a known block: all folded
    fused = [m for m in opt.modules() if isinstance(m, cnn.FoldCacheMixin)]
    assert fused
    conv = next(m for m in opt.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    if name == "resnet18":
        assert isinstance(opt, models.ResNet) and isinstance(opt.layer2[0], cnn.BasicBlock)
    if name == "mobilenet_v2":
        assert sum(isinstance(m, cnn.InvertedResidual) for m in opt.modules()) == 17
    if name == "googlenet":
        assert sum(isinstance(m, cnn.InceptionBlock) for m in opt.modules()) == 9


def test_optimize_torchvision_bottleneck_and_mobilenet_v3():
    """Bottleneck blocks (resnet-style tree of 2 layers), and MobileNetV3, whose blocks become MBConv (sharing their
    SE modules; see test_mbconv_models.py)."""
    torch.manual_seed(0)
    r = randomize_bn(tvr.ResNet(tvr.Bottleneck, [1, 1, 1, 1], num_classes=10))
    opt = check(r, [(2, 3, 32, 40)])
    assert isinstance(opt.layer1[0], cnn.Bottleneck) and n_bn(opt) == 0
    v3 = randomize_bn(torchvision.models.mobilenet_v3_small(weights=None, num_classes=10))
    opt = check(v3, [(2, 3, 40, 32)])
    se = importlib.import_module("torchvision.ops.misc").SqueezeExcitation
    assert sum(isinstance(m, se) for m in opt.modules()) == sum(isinstance(m, se) for m in v3.modules()) > 0
    assert sum(isinstance(m, cnn.MBConv) for m in opt.modules()) == 11
    assert n_bn(opt) == 0


@pytest.mark.parametrize("name,kwargs,shapes", [
    ("resnet18", {"num_classes": 10}, [(2, 3, 36, 44), (1, 3, 32, 32)]),
    ("resnet18", {"shortcut": "zero_pad", "in_channels": 1}, [(1, 1, 40, 32)]),
    ("mobilenet_v1", {"width_mult": 0.25}, [(2, 3, 48, 40)]),
    ("lenet5", {}, [(2, 1, 32, 32), (1, 1, 28, 28)]),
    ("alexnet", {"num_classes": 10}, [(1, 3, 64, 72)]),
])
def test_optimize_cnnkernels_models(name, kwargs, shapes):
    torch.manual_seed(0)
    model = randomize_bn(models.get_model(name, **kwargs))
    opt = check(model, shapes)
    assert n_bn(opt) == 0
    assert type(opt) is type(model)


class BNFirst(nn.Module):
    """Unknown module with conv/bn attributes but BN *before* the conv: folding it into the conv would be wrong."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)

    def forward(self, x):
        return torch.relu(self.conv(self.bn(x)))


class MyConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 2


def test_unknown_modules_untouched_and_nested_blocks_fused(capsys):
    torch.manual_seed(0)
    model = nn.Sequential(
        Conv2dNormActivation(3, 8, stride=2),
        BNFirst(),
        nn.Sequential(tvr.BasicBlock(8, 8)),
        nn.Sequential(MyConv(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU()),  # conv subclass: not fusable
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(8)),
        nn.GroupNorm(2, 8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    randomize_bn(model)
    opt = check(model, [(2, 3, 20, 24)])
    assert type(opt[0]) is cnn.ConvBNAct and type(opt[2][0]) is cnn.BasicBlock
    assert type(opt[1]) is BNFirst and type(opt[1].bn) is nn.BatchNorm2d  # untouched
    assert type(opt[3]) is nn.Sequential and type(opt[3][1]) is nn.BatchNorm2d
    assert type(opt[4]) is nn.Sequential and type(opt[4][1]) is nn.BatchNorm2d
    assert type(opt[5]) is nn.GroupNorm and type(opt[8]) is cnn.Linear
    cnnkernels.optimize(model, verbose=True)
    out = capsys.readouterr().out
    assert "cnnkernels.optimize" in out and "BatchNorm" in out
    assert "0: torchvision.ops.misc.Conv2dNormActivation -> cnnkernels.nn.ConvBNAct" in out
    assert "2.0: torchvision.models.resnet.BasicBlock -> cnnkernels.nn.BasicBlock" in out
    assert "BNFirst" not in out and "MyConv" not in out


def test_refuses_training_mode():
    model = models.resnet18(num_classes=2)
    with pytest.raises(ValueError, match=r"`model` is in training mode.*call model\.eval\(\)"):
        cnnkernels.optimize(model)
    model.eval()
    model.layer1[0].bn1.train()  # one submodule left in training mode is refused too
    with pytest.raises(ValueError, match=r"layer1\.0\.bn1.*model\.eval\(\)"):
        cnnkernels.optimize(model)
    with pytest.raises(TypeError):
        cnnkernels.optimize(lambda x: x)


def test_inplace_and_memory_format_options():
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(tvr.BasicBlock(4, 4), Conv2dNormActivation(4, 6))).eval()
    x = torch.randn(2, 4, 9, 7)
    with torch.no_grad():
        ref = model(x)
    keep = copy.deepcopy(model)
    opt = cnnkernels.optimize(model, memory_format=None)
    assert not opt[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert_unchanged(model, snapshot(keep))
    same = cnnkernels.optimize(model, inplace=True)
    assert same is model and type(model[0]) is cnn.BasicBlock and n_bn(model) == 0
    with torch.no_grad():
        assert_close_scaled(same(x), ref)
        assert_close_scaled(opt(x), ref)
    # optimizing an optimized model changes nothing
    again = cnnkernels.optimize(same)
    with torch.no_grad():
        assert_close_scaled(again(x), ref)


def test_optimized_model_saves_and_loads(tmp_path):
    # The whole module with torch.save, as people ship models: the input-format hook goes along and still works.
    torch.manual_seed(0)
    model = randomize_bn(nn.Sequential(tvr.BasicBlock(4, 4), Conv2dNormActivation(4, 6))).eval()
    opt = cnnkernels.optimize(model)
    x = torch.randn(2, 4, 9, 7)
    torch.save(opt, tmp_path / "model.pt")
    loaded = torch.load(tmp_path / "model.pt", weights_only=False)
    with torch.no_grad():
        assert torch.equal(loaded(x), opt(x))
    assert loaded[0].conv1.weight.is_contiguous(memory_format=torch.channels_last)


def _small_resnet():
    return randomize_bn(tvr.ResNet(tvr.BasicBlock, [1, 1, 1, 1], num_classes=10)).eval()


@pytest.mark.skipif(not _library.STATE.cpu, reason="the compiled CPU library is not loaded")
@pytest.mark.parametrize("source", ["normal", "inference_tensors", "inplace"])
def test_freeze_under_inference_mode(empty_cache, source):
    """optimize(freeze=True) called under inference_mode freezes for real: normal tensors (version counters) in the
    result, frozen in the packed-weight cache, fused modules frozen and never refolding; same outputs as optimizing
    outside inference_mode. A model built under inference_mode (inference tensors) is copied into normal tensors."""
    torch.manual_seed(0)
    if source == "inference_tensors":
        with torch.inference_mode():
            model = _small_resnet()
        assert all(p.is_inference() for p in model.parameters())
    else:
        model = _small_resnet()
    x = torch.randn(2, 3, 32, 40)
    want = cnnkernels.optimize(model, freeze=True)
    with torch.no_grad():
        ref = model(x)
        want_out = want(x)
    target = copy.deepcopy(model) if source == "inplace" else model
    _library.weight_cache_clear()
    with torch.inference_mode():
        opt = cnnkernels.optimize(target, inplace=source == "inplace", freeze=True)
    tensors = list(opt.parameters()) + list(opt.buffers())
    assert tensors and not any(t.is_inference() for t in tensors)
    assert _library.weight_cache_frozen_count() >= len(list(opt.parameters()))
    fused = [m for m in opt.modules() if isinstance(m, cnn.FoldCacheMixin)]
    assert fused and all(m.fold_frozen for m in fused)
    with torch.inference_mode():
        out = opt(x)
        folds = cnn.count_folds(opt)
        for _ in range(2):
            torch.testing.assert_close(opt(x), out, rtol=0, atol=0)
        assert cnn.count_folds(opt) == folds  # frozen fold cache hits, no refold per call
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    assert_close_scaled(out, ref)
    # the freeze trusts version counters, so an in-place update (under inference_mode too) is still seen
    with torch.inference_mode():
        opt.fc.weight.mul_(-1.0)
        out2 = opt(x)
    with torch.no_grad():
        want.fc.weight.mul_(-1.0)
        assert_close_scaled(out2, want(x))


def test_refuses_inplace_on_inference_tensors():
    with torch.inference_mode():
        model = _small_resnet()
    snap = snapshot(model)
    for mode in (torch.inference_mode(), torch.no_grad()):
        with mode, pytest.raises(ValueError, match=r"`model` holds inference tensors \(\d+, e\.g\. conv1\.weight.*"
                                                   r"torch\.inference_mode\(\).*Drop inplace=True"):
            cnnkernels.optimize(model, inplace=True, freeze=True)
    assert_unchanged(model, snap)
