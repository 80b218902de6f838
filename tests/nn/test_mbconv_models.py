"""cnnkernels.nn.MBConv against torchvision's EfficientNet MBConv and MobileNetV3 InvertedResidual (state_dicts,
eval outputs through one mbconv call, training mode bit for bit with stochastic depth), SiLU/hardswish fusion in
ConvBNAct, EfficientNet's compound scaling against the published B0-B7, and optimize() on torchvision's EfficientNet
and MobileNet v3. Whole-model eval/train/gradient checks against torchvision are in test_models_torchvision.py."""

import importlib
from functools import partial

import pytest
import torch
from torch import nn

import cnnkernels
import cnnkernels.nn as cnn
from cnnkernels import models
from cnnkernels.models.efficientnet import PUBLISHED, stage_layout
from cnnkernels.testing import randomize_bn
from support.helpers import assert_close_scaled

torchvision = pytest.importorskip("torchvision")
tve = importlib.import_module("torchvision.models.efficientnet")
tv3 = importlib.import_module("torchvision.models.mobilenetv3")
from torchvision.ops.misc import Conv2dNormActivation  # noqa: E402


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def layout(m):
    return [(k, v.shape) for k, v in m.state_dict().items()]


@pytest.fixture
def mbconv_calls(monkeypatch):
    """The list of mbconv calls made through torch.ops.cnnkernels (the op, not a silent fallback to torch.nn)."""
    calls = []
    real = torch.ops.cnnkernels.mbconv
    monkeypatch.setattr(torch.ops.cnnkernels, "mbconv", lambda *a: (calls.append(a[11:]), real(*a))[1],
                        raising=False)
    return calls


def check_block(ref, ours, x, calls):
    """ours loads ref's state_dict strictly; eval: one mbconv call, close to ref (NCHW and channels_last); training:
    outputs, input and parameter gradients and running statistics identical under the same seed."""
    randomize_bn(ref)
    assert layout(ours) == layout(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), ours.eval()
    with torch.no_grad():
        yr = ref(x)
        del calls[:]
        assert_close_scaled(ours(x), yr, rel=2e-5)
        assert len(calls) == 1
        assert_close_scaled(ours(x.contiguous(memory_format=torch.channels_last)), yr, rel=2e-5)
    assert ours.describe_fusion() == "mbconv"
    ref.train(), ours.train()
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    torch.manual_seed(5)
    yr = ref(xr)
    torch.manual_seed(5)
    yo = ours(xo)
    torch.testing.assert_close(yo, yr, rtol=0, atol=0)
    w = torch.randn_like(yr)
    (yr * w).sum().backward()
    (yo * w).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, rtol=0, atol=0)
    pr = dict(ref.named_parameters())
    for k, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, pr[k].grad, rtol=0, atol=0, msg=k)
    for (k, a), (_, b) in zip(ref.state_dict().items(), ours.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


# (expand ratio, kernel, stride, in, out, stochastic depth p)
EFFICIENTNET_BLOCKS = [(1, 3, 1, 16, 16, 0.0), (6, 3, 2, 16, 24, 0.1), (6, 5, 1, 24, 24, 0.5), (4, 5, 2, 8, 16, 0.0)]


@pytest.mark.parametrize("t,k,s,cin,cout,p", EFFICIENTNET_BLOCKS)
def test_mbconv_matches_efficientnet_block(t, k, s, cin, cout, p, mbconv_calls):
    torch.manual_seed(0)
    cnf = tve.MBConvConfig(t, k, s, cin, cout, 1)
    ref = tve.MBConv(cnf, p, nn.BatchNorm2d)
    ours = cnn.MBConv(cin, cout, cnf.adjust_channels(cin, t), k, s, squeeze_channels=max(1, cin // 4),
                      stochastic_depth_prob=p)
    assert ours.use_res_connect == ref.use_res_connect
    # batch 8: stochastic depth keeps some rows and drops others
    check_block(ref, ours, torch.randn(8, cin, 9, 11), mbconv_calls)
    assert mbconv_calls[-1][1:] == (ref.use_res_connect, "silu", "silu", "sigmoid")


# (in, kernel, expanded, out, SE, activation, stride)
MOBILENET_V3_BLOCKS = [(16, 3, 16, 16, False, "RE", 1), (16, 3, 16, 16, True, "RE", 2), (24, 5, 72, 40, True, "RE", 2),
                       (40, 3, 240, 80, False, "HS", 2), (40, 5, 120, 40, True, "HS", 1)]


@pytest.mark.parametrize("cin,k,exp,cout,se,act,s", MOBILENET_V3_BLOCKS)
def test_mbconv_matches_mobilenet_v3_block(cin, k, exp, cout, se, act, s, mbconv_calls):
    torch.manual_seed(0)
    norm = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
    ref = tv3.InvertedResidual(tv3.InvertedResidualConfig(cin, k, exp, cout, se, act, s, 1, 1.0), norm)
    ours = cnn.MBConv(cin, cout, exp, k, s, squeeze_channels=models._make_divisible(exp // 4, 8) if se else None,
                      activation_layer=nn.Hardswish if act == "HS" else nn.ReLU, se_activation_layer=nn.ReLU,
                      se_gate_layer=nn.Hardsigmoid, norm_layer=norm, stochastic_depth_prob=None)
    assert not hasattr(ours, "stochastic_depth")
    check_block(ref, ours, torch.randn(2, cin, 10, 7), mbconv_calls)
    want = (ref.use_res_connect, "hardswish" if act == "HS" else "relu", "relu" if se else "none",
            "hardsigmoid" if se else "sigmoid")
    assert mbconv_calls[-1][1:] == want


def test_models_call_mbconv_once_per_block(mbconv_calls):
    torch.manual_seed(0)
    for build, blocks in ((models.efficientnet_b0, 16), (models.mobilenet_v3_small, 11)):
        m = randomize_bn(build(num_classes=5)).eval()
        x = torch.randn(1, 3, 32, 40)
        with torch.no_grad():
            del mbconv_calls[:]
            y = m(x)
            assert len(mbconv_calls) == blocks == sum(isinstance(b, cnn.MBConv) for b in m.modules())
            with cnn.fusion(False):
                assert_close_scaled(y, m(x))
        assert len(mbconv_calls) == blocks


def test_unfusable_blocks_run_their_submodules():
    """Dilation (MobileNet v3's dilated tail), a kernel the op lacks, mismatched or unknown activations, a stochastic
    depth left in training mode: eval runs the plain submodules, with the same result as without fusion."""
    torch.manual_seed(0)
    dilated = randomize_bn(models.mobilenet_v3_large(dilated=True, reduced_tail=True, num_classes=4)).eval()
    tail = [b for b in dilated.features if isinstance(b, cnn.MBConv)][-3:]
    assert all(b.block[1][0].dilation == (2, 2) and b.describe_fusion() is None for b in tail)
    assert dilated.features[1].describe_fusion() == "mbconv"
    x = torch.randn(1, 3, 40, 40)
    with torch.no_grad():
        y = dilated(x)
        with cnn.fusion(False):
            torch.testing.assert_close(y, dilated(x))

    def block(**kwargs):
        return randomize_bn(cnn.MBConv(8, 8, 16, squeeze_channels=4, stochastic_depth_prob=0.2, **kwargs)).eval()

    cases = [block(kernel_size=7), block(activation_layer=nn.Mish), block(se_activation_layer=nn.GELU),
             block(se_gate_layer=nn.Tanh), block()]
    cases[-1].block[0][2] = nn.ReLU()  # expand ReLU, depthwise SiLU: not one mbconv
    sd = block()
    sd.stochastic_depth.train()
    cases.append(sd)
    x = torch.randn(2, 8, 6, 6)
    for m in cases:
        assert m.folded() is None and m.describe_fusion() is None
        with torch.no_grad():
            y = m(x)
            with cnn.fusion(False):
                torch.testing.assert_close(y, m(x))


def test_silu_and_hardswish_fuse_into_conv2d_act():
    assert cnn.activation_name(nn.SiLU()) == "silu" and cnn.activation_name(nn.Hardswish(inplace=True)) == "hardswish"
    assert cnn.activation_name(nn.GELU()) is None and cnn.activation_name(nn.Hardsigmoid()) is None
    assert cnn.gate_name(nn.Sigmoid()) == "sigmoid" and cnn.gate_name(nn.Hardsigmoid()) == "hardsigmoid"
    assert cnn.gate_name(nn.SiLU()) is None
    torch.manual_seed(0)
    x = torch.randn(2, 4, 8, 9)
    for act, name in ((nn.SiLU, "silu"), (nn.Hardswish, "hardswish")):
        ref = randomize_bn(Conv2dNormActivation(4, 6, 3, stride=2, activation_layer=act))
        ours = cnn.ConvBNAct(4, 6, 3, stride=2, activation_layer=act)
        ours.load_state_dict(ref.state_dict(), strict=True)
        ref.eval(), ours.eval()
        assert ours.describe_fusion() == f"1x conv2d_act ({name})"
        assert [len(s) for s in ours.folded()] == [4]  # conv + norm + activation in one step
        with torch.no_grad():
            assert_close_scaled(ours(x), ref(x))
        ref.train(), ours.train()
        torch.testing.assert_close(ours(x), ref(x), rtol=0, atol=0)


def test_mobilenet_v3_variants_match_torchvision():
    for name, kwargs in (("mobilenet_v3_large", {"width_mult": 0.75, "reduced_tail": True}),
                         ("mobilenet_v3_large", {"dilated": True, "dropout": 0.0}),
                         ("mobilenet_v3_small", {"width_mult": 1.25, "num_classes": 7}),
                         ("mobilenet_v3_small", {"reduced_tail": True, "dilated": True})):
        with torch.device("meta"):
            ref, ours = getattr(torchvision.models, name)(weights=None, **kwargs), getattr(models, name)(**kwargs)
        assert layout(ours) == layout(ref)
        ours.load_state_dict(ref.state_dict(), strict=True)
        ref.load_state_dict(ours.state_dict(), strict=True)
        # the same modules, hyperparameters included (eps, momentum, dilation, inplace, dropout)
        assert str(ours).replace("ConvBNAct", "Conv2dNormActivation").replace("MBConv", "InvertedResidual") == \
            str(ref)


@pytest.mark.parametrize("phi", range(8))
def test_published_efficientnets_are_torchvisions(phi):
    name = f"efficientnet_b{phi}"
    with torch.device("meta"):
        ref, ours = getattr(torchvision.models, name)(weights=None), getattr(models, name)()
    assert layout(ours) == layout(ref) and n_params(ours) == n_params(ref)
    assert str(ours).replace("ConvBNAct", "Conv2dNormActivation") == str(ref)  # eps 1e-3 for B5-B7, p of every block
    assert ours.scaling == models.compound_scaling(phi, published=True) and ours.resolution == ours.scaling.resolution
    assert ours.classifier[0].p == ours.scaling.dropout


# Stage depths and output widths the formula gives for phi = 0..7 (module docstring of cnnkernels.models.efficientnet)
FORMULA_BLOCKS = [16, 23, 26, 31, 39, 42, 48, 61]
PUBLISHED_BLOCKS = [16, 23, 23, 26, 32, 39, 45, 55]
FORMULA_RESOLUTION = [224, 258, 296, 341, 392, 451, 518, 596]
PUBLISHED_RESOLUTION = [224, 240, 260, 300, 380, 456, 528, 600]


def test_compound_scaling_formula_and_published_table():
    for phi in range(8):
        f, p = models.compound_scaling(phi), models.compound_scaling(phi, published=True)
        assert f.width_mult == pytest.approx(1.1 ** phi) and f.depth_mult == pytest.approx(1.2 ** phi)
        assert (f.resolution, p.resolution) == (FORMULA_RESOLUTION[phi], PUBLISHED_RESOLUTION[phi])
        lf, lp = stage_layout(f.width_mult, f.depth_mult), stage_layout(p.width_mult, p.depth_mult)
        assert (sum(s[5] for s in lf), sum(s[5] for s in lp)) == (FORMULA_BLOCKS[phi], PUBLISHED_BLOCKS[phi])
        assert (lf == lp) == (phi == 0)
        assert not f.published and p.published and f.dropout == 0.2
    # the documented off-by-one: the formula's phi = 1 and 2 are exactly B2's and B3's networks
    for phi, b in ((1, 2), (2, 3)):
        f, p = models.compound_scaling(phi), models.compound_scaling(b, published=True)
        assert stage_layout(f.width_mult, f.depth_mult) == stage_layout(p.width_mult, p.depth_mult)
    assert [d for *_, d in PUBLISHED] == [0.2, 0.2, 0.3, 0.3, 0.4, 0.4, 0.5, 0.5]
    custom = models.compound_scaling(2, alpha=1.0, beta=2.0, gamma=1.0)
    assert (custom.depth_mult, custom.width_mult, custom.resolution) == (1.0, 4.0, 224)
    for bad in (1.5, 8, -1, True):
        with pytest.raises(ValueError, match="published=True"):
            models.compound_scaling(bad, published=True)
    with pytest.raises(ValueError, match="phi"):
        models.compound_scaling(-0.5)


def test_efficientnet_builder():
    with torch.device("meta"):
        b0, f0 = models.efficientnet_b0(), models.efficientnet(0)
        assert str(f0) == str(b0) and layout(f0) == layout(b0) and f0.resolution == 224
        f3, b3 = models.efficientnet(3), models.efficientnet(3, published=True)
        assert layout(b3) == layout(models.efficientnet_b3())
        assert f3.resolution == 341 and b3.resolution == 300 and layout(f3) != layout(b3)
        assert f3.classifier[0].p == 0.2 and b3.classifier[0].p == 0.3
        f6 = models.efficientnet(6)
        assert f6.features[1][0].block[0][1].eps == 1e-5  # PyTorch's BatchNorm: the published B6 has 1e-3
        assert models.efficientnet(6, published=True).features[1][0].block[0][1].eps == 1e-3
        half = models.efficientnet(0.5, dropout=0.1, num_classes=3, stochastic_depth_prob=0.0)
        assert half.scaling.phi == 0.5 and half.classifier[0].p == 0.1 and half.classifier[1].out_features == 3
        assert half.resolution == round(224 * 1.15 ** 0.5)
        assert all(b.stochastic_depth.p == 0.0 for b in half.modules() if isinstance(b, cnn.MBConv))
    torch.manual_seed(0)
    m = randomize_bn(models.efficientnet(1, num_classes=4, in_channels=1)).eval()
    x = torch.randn(1, 1, 33, 29)
    with torch.no_grad():
        y = m(x)
        with cnn.fusion(False):
            assert_close_scaled(y, m(x))
    assert y.shape == (1, 4)


@pytest.mark.parametrize("name,blocks", [("efficientnet_b0", 16), ("mobilenet_v3_large", 15),
                                         ("mobilenet_v3_small", 11)])
def test_optimize_torchvision_mbconv_models(name, blocks, mbconv_calls, capsys):
    torch.manual_seed(0)
    model = randomize_bn(getattr(torchvision.models, name)(weights=None, num_classes=10)).eval()
    opt = cnnkernels.optimize(model, verbose=True)
    assert sum(isinstance(m, cnn.MBConv) for m in opt.modules()) == blocks
    assert sum(isinstance(m, nn.BatchNorm2d) for m in opt.modules()) == 0
    assert "-> cnnkernels.nn.MBConv [mbconv, " in capsys.readouterr().out
    x = torch.randn(2, 3, 40, 48)
    with torch.no_grad():
        ref = model(x)
        del mbconv_calls[:]
        assert_close_scaled(opt(x), ref)
        assert len(mbconv_calls) == blocks


def test_inverted_residual_fuses_silu_and_hardswish():
    """MobileNet v2's block with another activation the ops have (both convs alike) is still one inverted_residual."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 7, 6)
    for act in (nn.SiLU, nn.Hardswish):
        ir = cnn.InvertedResidual(8, 8, 1, 3)
        ir.conv[0][2], ir.conv[1][2] = act(), act()
        randomize_bn(ir).eval()
        assert ir.describe_fusion() == "inverted_residual"
        with torch.no_grad():
            y = ir(x)
            with cnn.fusion(False):
                assert_close_scaled(y, ir(x))
