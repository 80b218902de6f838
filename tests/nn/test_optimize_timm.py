"""cnnkernels.optimize() on timm's models: every block the fused ops can express converted (ResNet blocks, inverted
residuals with and without squeeze-and-excitation, depthwise-separable blocks, conv + BatchNormAct2d stems and heads),
eval outputs as timm's, no unfused convolution left, timm's state_dict keys less the folded BatchNorms."""

import collections
import functools
import subprocess
import sys

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

import cnnkernels
import cnnkernels.nn as cnn
from cnnkernels import _library, _timm
from cnnkernels.testing import randomize_bn

timm = pytest.importorskip("timm")
from timm.layers import activations as timm_act  # noqa: E402
from timm.models import _efficientnet_blocks as eb  # noqa: E402


def assert_close_scaled(actual, expected, rel=1e-4):
    scale = expected.abs().max().item() + 1e-6
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale + 1e-6, f"max abs error {err} vs scale {scale}"


class OpCount(TorchDispatchMode):
    """Counts the cnnkernels ops and the convolutions / batch norms that still run unfused."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        ns, _, name = func.name().partition("::")
        if ns == "cnnkernels" or name in ("convolution", "batch_norm", "_native_batch_norm_legit_no_training"):
            self.calls[name] += 1
        return func(*args, **(kwargs or {}))


def fused_types(model):
    return collections.Counter(type(m).__name__ for m in model.modules() if isinstance(m, cnn.FoldCacheMixin))


# per model: cnnkernels op calls per forward, fused modules
MODELS = {
    # stem, 8 blocks x 2, 3 downsample projections, classifier
    "resnet18": ({"conv2d_act": 21}, {"TimmBasicBlock": 8, "FusedSequential": 3, "ConvNormAct": 1, "Linear": 1}),
    "resnet50": ({"conv2d_act": 54}, {"TimmBottleneck": 16, "FusedSequential": 4, "ConvNormAct": 1, "Linear": 1}),
    # one mbconv per block; stem, head, classifier
    "mobilenetv2_100": ({"mbconv": 17, "conv2d_act": 3},
                        {"TimmInvertedResidual": 16, "TimmDepthwiseSeparable": 1, "ConvNormAct": 2, "Linear": 1}),
    "efficientnet_b0": ({"mbconv": 16, "conv2d_act": 3},
                        {"TimmInvertedResidual": 15, "TimmDepthwiseSeparable": 1, "ConvNormAct": 2, "Linear": 1}),
    # stem, the last stage's ConvBnAct, the head conv after pooling, classifier
    "mobilenetv3_large_100": ({"mbconv": 15, "conv2d_act": 4},
                              {"TimmInvertedResidual": 14, "TimmDepthwiseSeparable": 1, "ConvNormAct": 3,
                               "Linear": 1}),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_optimize_timm_models(name):
    calls, types = MODELS[name]
    torch.manual_seed(0)
    model = randomize_bn(timm.create_model(name, pretrained=False, num_classes=10)).eval()
    opt = cnnkernels.optimize(model)
    assert fused_types(opt) == types
    assert not any(isinstance(m, nn.BatchNorm2d) for m in opt.modules())
    # timm's keys, less the folded BatchNorms, plus the biases the folds gave their convs
    norms = {n for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}
    convs = {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    before, after = set(model.state_dict()), set(opt.state_dict())
    assert {k.rpartition(".")[0] for k in before - after} <= norms
    assert all(k.endswith(".bias") and k[:-5] in convs for k in after - before)

    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        with OpCount() as count:
            out = opt(x)
        assert_close_scaled(out, ref)
        with cnn.fusion(False):  # timm's own forwards, on the folded weights
            assert_close_scaled(opt(x), ref)
    if _library.STATE.cpu:
        assert dict(count.calls) == calls


def test_timm_block_variants():
    """timm's own activation classes and gates fuse too (Swish, HardSigmoid), DropPath and the skip are honoured;
    a block the op cannot run (7x7 depthwise) stays timm's, unfused and correct."""
    torch.manual_seed(0)
    se = functools.partial(eb.SqueezeExcite, gate_layer=timm_act.HardSigmoid)
    fused = eb.InvertedResidual(16, 16, dw_kernel_size=5, exp_ratio=4, act_layer=timm_act.Swish, se_layer=se,
                                drop_path_rate=0.1)
    ds = eb.DepthwiseSeparableConv(16, 24, stride=2, pw_act=True, act_layer=nn.ReLU6)  # MobileNet v1's layer
    big = eb.InvertedResidual(24, 24, dw_kernel_size=7, exp_ratio=2, act_layer=timm_act.HardSwish)
    model = randomize_bn(nn.Sequential(fused, ds, big)).eval()
    opt = cnnkernels.optimize(model)
    assert [type(m).__name__ for m in opt] == ["TimmInvertedResidual", "TimmDepthwiseSeparable", "InvertedResidual"]
    assert opt[0].describe_fusion() == "mbconv" and opt[1].describe_fusion() == "dwsep_conv2d"
    assert sum(isinstance(m, nn.BatchNorm2d) for m in opt.modules()) == 3  # the unfused block's
    x = torch.randn(2, 16, 12, 10)
    with torch.no_grad():
        ref = model(x)
        with OpCount() as count:
            assert_close_scaled(opt(x), ref)
    if _library.STATE.cpu:
        assert count.calls["mbconv"] == 1 and count.calls["dwsep_conv2d"] == 1 and count.calls["convolution"] == 3
    # training mode runs timm's forward (DropPath active) on the converted blocks
    opt.train()
    assert opt(x).shape == (2, 24, 6, 5)


def test_verbose_names_timm_conversions(capsys):
    torch.manual_seed(0)
    model = randomize_bn(timm.create_model("mobilenetv3_large_100", pretrained=False, num_classes=10)).eval()
    cnnkernels.optimize(model, verbose=True)
    out = capsys.readouterr().out
    assert ("conv_stem: timm.models.mobilenetv3.MobileNetV3 conv_stem + bn1 -> cnnkernels._timm.ConvNormAct "
            "[conv2d_act (hardswish), 1 BatchNorm folded]") in out
    assert ("blocks.1.0: timm.models._efficientnet_blocks.InvertedResidual -> cnnkernels._timm.TimmInvertedResidual "
            "[mbconv, 3 BatchNorm folded]") in out
    assert "classifier: timm.layers.linear.Linear -> cnnkernels.nn.Linear" in out


def test_import_cnnkernels_does_not_import_timm():
    code = "import sys, cnnkernels, cnnkernels.optimize; assert 'timm' not in sys.modules; print('ok')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr
    assert _timm.timm_map()  # timm is imported here
