"""cnnkernels.models vs torchvision: identical state_dicts (strict load both ways), eval outputs within fp32
tolerance through the fused ops, identical training-mode outputs, running stats and gradients."""

import warnings

import pytest
import torch
from torch import nn

import cnnkernels
from cnnkernels import models
from cnnkernels.testing import randomize_bn

torchvision = pytest.importorskip("torchvision")

def tv_model(name, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # googlenet's init_weights FutureWarning
        return getattr(torchvision.models, name)(weights=None, **kwargs)


def build_uninitialised(fn, **kwargs):
    """A model built without running its weight init (it is about to load a state_dict anyway)."""
    with torch.device("meta"):
        m = fn(**kwargs)
    return m.to_empty(device="cpu")


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def assert_close_scaled(actual, expected, rel=1e-4):
    scale = expected.abs().max().item() + 1e-6
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale + 1e-6, f"max abs error {err} vs scale {scale}"


def assert_grad_close(a, b, name, rel=1e-5):
    """Cheap on 100M-element tensors (torch.testing.assert_close allocates several temporaries)."""
    err = (a - b).abs().max().item()
    assert err <= rel * b.abs().max().item() + 1e-7, f"{name}: max abs error {err}"


def as_tuple(y):
    return tuple(y) if isinstance(y, tuple) else (y,)


# name, input (N, C, H, W), kwargs shared by both builders
SHARED = [
    ("resnet18", (2, 3, 48, 40), {}),
    ("resnet50", (2, 3, 40, 40), {}),
    ("mobilenet_v2", (2, 3, 48, 56), {}),
    ("googlenet", (2, 3, 48, 48), {}),
    ("vgg11_bn", (2, 3, 32, 32), {"num_classes": 10}),
    ("alexnet", (2, 3, 64, 64), {"num_classes": 10}),
    ("efficientnet_b0", (2, 3, 48, 40), {}),  # training mode: stochastic depth draws as torchvision's
    ("mobilenet_v3_large", (2, 3, 48, 40), {}),
    ("mobilenet_v3_small", (2, 3, 40, 48), {"num_classes": 10}),
]


@pytest.mark.parametrize("name,shape,kwargs", SHARED, ids=[s[0] for s in SHARED])
def test_matches_torchvision_eval_train_and_grads(name, shape, kwargs):
    torch.manual_seed(0)
    if name == "googlenet":
        kwargs = dict(kwargs, init_weights=False)  # torchvision's trunc_normal_ init is slow; the default is fine
    ref = randomize_bn(tv_model(name, **kwargs))
    ours = build_uninitialised(getattr(models, name), **kwargs)
    assert n_params(ours) == n_params(ref)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(*shape)

    # eval mode: the fused path
    ref.eval(), ours.eval()
    with torch.no_grad():
        yr = ref(x)
        yo = ours(x)
        assert isinstance(yo, torch.Tensor)  # googlenet: plain logits in eval mode
        assert_close_scaled(yo, yr)
        assert cnnkernels.nn.count_folds(ours) > 0

    # training mode: the plain modules, bit for bit (same seed, same dropout masks)
    ref.train(), ours.train()
    torch.manual_seed(1)
    yr = as_tuple(ref(x))
    torch.manual_seed(1)
    yo = as_tuple(ours(x))
    assert len(yo) == len(yr)
    for a, b in zip(yo, yr):
        assert torch.equal(a, b)
    w = [torch.randn_like(t) for t in yr]
    sum((t * wi).sum() for t, wi in zip(yr, w)).backward()
    sum((t * wi).sum() for t, wi in zip(yo, w)).backward()
    pr = dict(ref.named_parameters())
    for k, p in ours.named_parameters():
        assert_grad_close(p.grad, pr[k].grad, k)
    br = dict(ref.named_buffers())
    for k, v in ours.named_buffers():  # running stats updated identically
        assert torch.equal(v, br[k]), k


DEEP = ["resnet34", "resnet101", "resnet152", "resnext50_32x4d", "wide_resnet50_2", "vgg11", "vgg13", "vgg13_bn",
        "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
        "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7"]


@pytest.mark.parametrize("name", DEEP)
def test_deeper_variants_construct_load_and_count(name):
    with torch.device("meta"):  # no memory, no init cost: keys, shapes and counts only
        ref = tv_model(name)
        ours = getattr(models, name)()
    assert n_params(ours) == n_params(ref)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.load_state_dict(ours.state_dict(), strict=True)


@pytest.mark.parametrize("kwargs", [{"aux_logits": False}, {"width_mult": 0.5}, {"width_mult": 0.75},
                                    {"width_mult": 1.4, "num_classes": 7}, {"dropout": 0.0}])
def test_variant_kwargs_match_torchvision(kwargs):
    name = "googlenet" if "aux_logits" in kwargs else "mobilenet_v2"
    with torch.device("meta"):
        ref, ours = tv_model(name, **kwargs), getattr(models, name)(**kwargs)
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in ref.state_dict().items()]
    ours.load_state_dict(ref.state_dict(), strict=True)


def test_known_parameter_counts():
    with torch.device("meta"):
        assert n_params(models.resnet18()) == 11_689_512
        assert n_params(models.resnet50()) == 25_557_032
        assert n_params(models.mobilenet_v2()) == 3_504_872
        assert n_params(models.googlenet()) == 13_004_888  # with the aux heads (6,624,904 without)
        assert n_params(models.googlenet(aux_logits=False)) == 6_624_904
        assert n_params(models.alexnet()) == 61_100_840
        assert n_params(models.efficientnet_b0()) == 5_288_548
        assert n_params(models.efficientnet_b7()) == 66_347_960
        assert n_params(models.mobilenet_v3_large()) == 5_483_032
        assert n_params(models.mobilenet_v3_small()) == 2_542_856
        assert n_params(models.vgg16()) == 138_357_544
        # MobileNet v1, width 1.0, 1000 classes: 4.2M as the paper says; conv weights + FC 4,210,088 plus
        # BatchNorm gamma/beta 21,888 (the running mean/var, another 21,888, are buffers).
        v1 = models.mobilenet_v1()
        assert n_params(v1) == 4_231_976
        bn = sum(p.numel() for m in v1.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
        assert bn == 21_888
        assert n_params(models.mobilenet_v1(width_mult=0.5)) == 1_331_592
        # LeNet-5 (C3 fully connected, parameter-free pooling, linear output): 61,706
        assert n_params(models.lenet5()) == 61_706


def test_lenet5_layer_sizes():
    m = models.lenet5().eval()
    convs = [c for c in m.modules() if isinstance(c, nn.Conv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(6, 1, 5, 5), (16, 6, 5, 5), (120, 16, 5, 5)]
    fcs = [c for c in m.modules() if isinstance(c, nn.Linear)]
    assert [tuple(c.weight.shape) for c in fcs] == [(84, 120), (10, 84)]
    x = torch.randn(2, 1, 32, 32)
    shapes = []
    h = x
    for layer in m.features:
        h = layer(h)
        shapes.append(tuple(h.shape[1:]))
    assert shapes == [(6, 28, 28), (6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 10, 10), (16, 5, 5), (16, 5, 5),
                      (120, 1, 1), (120, 1, 1)]
    with torch.no_grad():
        y = m(x)
        assert y.shape == (2, 10)
        with cnnkernels.nn.fusion(False):
            assert_close_scaled(y, m(x))
        assert m(torch.randn(1, 1, 28, 28)).shape == (1, 10)  # MNIST size without padding
    assert models.lenet5(activation="tanh", pool="max", num_classes=5, in_channels=3)(
        torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_mobilenet_v1_structure():
    m = models.mobilenet_v1()
    dw = [b for b in m.modules() if isinstance(b, cnnkernels.nn.DepthwiseSeparableConv2d)]
    assert len(dw) == 13
    assert [b.depthwise[0].stride[0] for b in dw] == [1, 2, 1, 2, 1, 2, 1, 1, 1, 1, 1, 2, 1]
    assert [b.out_channels for b in dw] == [64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    with torch.device("meta"):
        assert models.mobilenet_v1().train().features(torch.empty(1, 3, 224, 224)).shape == (1, 1024, 7, 7)
    assert [b.out_channels for b in models.mobilenet_v1(width_mult=0.25).modules()
            if isinstance(b, cnnkernels.nn.DepthwiseSeparableConv2d)][-1] == 256


# every model on small, non-square, non-224 inputs (and grayscale), eval (fused) == unfused reference
SMALL = [("lenet5", (1, 1, 36, 30), {}), ("alexnet", (1, 1, 63, 80), {"in_channels": 1}),
         ("vgg11", (2, 3, 32, 48), {}), ("resnet18", (1, 1, 33, 47), {"in_channels": 1}),
         ("googlenet", (1, 1, 40, 56), {"in_channels": 1}), ("mobilenet_v1", (1, 3, 35, 50), {"width_mult": 0.5}),
         ("mobilenet_v2", (2, 1, 35, 50), {"in_channels": 1, "width_mult": 0.5}),
         ("efficientnet_b0", (2, 1, 35, 50), {"in_channels": 1}),
         ("mobilenet_v3_small", (2, 1, 35, 50), {"in_channels": 1, "width_mult": 0.75})]


@pytest.mark.parametrize("name,shape,kwargs", SMALL, ids=[s[0] for s in SMALL])
def test_small_inputs_and_in_channels(name, shape, kwargs):
    torch.manual_seed(0)
    m = randomize_bn(models.get_model(name, num_classes=7, **kwargs)).eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        y = m(x)
        with cnnkernels.nn.fusion(False):
            ref = m(x)
    assert y.shape == (shape[0], 7)
    assert_close_scaled(y, ref)
    if name != "lenet5" and shape[0] > 1:
        m.train()
        assert as_tuple(m(x))[0].shape == (shape[0], 7)


def test_googlenet_aux_logits_and_transform_input():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 48, 48)  # the shape of the test above: oneDNN's primitives for it are already built
    for kwargs in ({"transform_input": True}, {"aux_logits": False}):
        ref = randomize_bn(tv_model("googlenet", init_weights=False, **kwargs))
        ours = build_uninitialised(models.googlenet, **kwargs)
        ours.load_state_dict(ref.state_dict(), strict=True)
        assert ours.aux_logits == ref.aux_logits and ours.transform_input == ref.transform_input
        ref.eval(), ours.eval()
        with torch.no_grad():
            yo, yr = ours(x), ref(x)
        assert isinstance(yo, torch.Tensor)
        assert_close_scaled(yo, yr)
        ref.train(), ours.train()
        torch.manual_seed(2)
        yr = ref(x)
        torch.manual_seed(2)
        yo = ours(x)
        if ref.aux_logits:
            assert type(yo).__name__ == "GoogLeNetOutputs" and yo._fields == yr._fields
            for a, b in zip(yo, yr):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
        else:
            assert isinstance(yo, torch.Tensor)
            torch.testing.assert_close(yo, yr, rtol=0, atol=0)
    with pytest.raises(ValueError, match="transform_input"):
        models.googlenet(transform_input=True, in_channels=1)


def test_resnet_zero_pad_shortcut():
    torch.manual_seed(0)
    proj, zp = models.resnet18(), models.resnet18(shortcut="zero_pad")
    ds = sum(n_params(b.downsample) for b in proj.modules()
             if isinstance(b, cnnkernels.nn.BasicBlock) and b.downsample is not None)
    assert ds == 8192 + 256 + 32768 + 512 + 131072 + 1024
    assert n_params(zp) == n_params(proj) - ds
    assert not any(k.startswith("layer2.0.downsample") for k in zp.state_dict())
    x = torch.randn(2, 3, 40, 36)
    randomize_bn(zp).eval()
    with torch.no_grad():
        y = zp(x)
        with cnnkernels.nn.fusion(False):
            assert_close_scaled(y, zp(x))
    zp.train()(x).sum().backward()
    with torch.device("meta"):
        r50 = models.resnet50(shortcut="zero_pad", num_classes=3)
        assert isinstance(r50.layer1[0].downsample, cnnkernels.nn.ZeroPadShortcut)
        assert r50.train()(torch.empty(2, 3, 32, 32)).shape == (2, 3)
    with pytest.raises(ValueError, match="shortcut"):
        models.resnet18(shortcut="identity")


def test_resnet_injected_block_and_norm_layer():
    tvr = __import__("importlib").import_module("torchvision.models.resnet")
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    m = randomize_bn(models.ResNet(tvr.BasicBlock, [1, 1, 1, 1], num_classes=5)).eval()  # torchvision's block
    ref = randomize_bn(tvr.ResNet(tvr.BasicBlock, [1, 1, 1, 1], num_classes=5)).eval()
    m.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        assert_close_scaled(m(x), ref(x))
    gn = models.resnet18(norm_layer=lambda c: nn.GroupNorm(4, c), num_classes=5).eval()  # unfusable: plain path
    with torch.no_grad():
        y = gn(x)
        with cnnkernels.nn.fusion(False):
            torch.testing.assert_close(y, gn(x))
    z = models.resnet18(zero_init_residual=True)
    assert all((b.bn2.weight == 0).all() for b in z.modules() if isinstance(b, cnnkernels.nn.BasicBlock))


def test_registry():
    names = models.list_models()
    for n in ["lenet5", "alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
              "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "googlenet", "mobilenet_v1",
              "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small"] + [f"efficientnet_b{i}" for i in range(8)]:
        assert n in names
    assert names == sorted(names)
    m = models.get_model("resnet18", num_classes=3, in_channels=1)
    assert m.fc.out_features == 3 and m.conv1.in_channels == 1
    with pytest.raises(ValueError, match="unknown model"):
        models.get_model("resnet19")
