"""cnnkernels.cost: the hand-computed oracles of the case studies, the MAC formulas (conv, linear, every fused op's
registered FLOP formula against its decomposed reference), whole models against torchvision's `_ops` metadata, fused
and plain models costing the same, the per-layer attribution, the command, dwsep_ratio and bad input."""

from __future__ import annotations

import re
import textwrap

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, flop_registry

import cnnkernels
import cnnkernels.nn as cnn
from cnnkernels import _library, backends, cost, models
from cnnkernels.ops import _flops
from cnnkernels.testing import randomize_bn
from support.buildutil import REPO, TESTS_DIR, run_python, subprocess_env
from support.samples import DETECTION_OPS, OPS, sample_inputs

torchvision = pytest.importorskip("torchvision")

# The whole-model checks: torchvision's `_ops` (GMACs at 224x224) must be matched within 1%.
TORCHVISION_MODELS = ("resnet18", "resnet50", "mobilenet_v2", "googlenet", "alexnet", "vgg16", "efficientnet_b0",
                      "mobilenet_v3_large")


def torchvision_model(name, device="meta"):
    kwargs = {"init_weights": False} if name == "googlenet" else {}  # skips scipy's slow truncated-normal init
    with torch.device(device):
        return torchvision.models.get_model(name, weights=None, **kwargs)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def flops_of(fn, *args):
    with FlopCounterMode(display=False) as fc:
        fn(*args)
    return fc.get_total_flops()


# ------------------------------------------------------------------------------------------------------- oracles

def test_oracle_5x5_same_conv():
    """28x28x192 -> 28x28x32 with a 5x5 'same' conv: 28 * 28 * 32 * 5 * 5 * 192 multiplications."""
    conv = nn.Conv2d(192, 32, 5, padding=2)
    c = cost.count(conv, (192, 28, 28))
    assert c.macs == 120_422_400
    assert c.layers[0].output_shape == (1, 32, 28, 28)
    # The fused op and a fused module count the same.
    x, w = torch.zeros(1, 192, 28, 28), torch.zeros(32, 192, 5, 5)
    assert _flops.op_macs("conv2d_act", x, w, None, None, [1, 1], [2, 2], [1, 1], 1, "relu") == 120_422_400
    assert cost.count(cnn.ConvBNAct(192, 32, 5).eval(), (192, 28, 28)).macs == 120_422_400


def test_oracle_1x1_bottleneck():
    """The same conv behind a 1x1 bottleneck to 16 channels: 2,408,448 + 10,035,200 = 12,443,648 in total."""
    net = nn.Sequential(nn.Conv2d(192, 16, 1), nn.ReLU(), nn.Conv2d(16, 32, 5, padding=2), nn.ReLU())
    c = cost.count(net, (192, 28, 28))
    assert c.macs == 12_443_648
    assert [r.macs for r in c.layers] == [2_408_448, 0, 10_035_200, 0]
    assert c.params == n_params(net) == 192 * 16 + 16 + 16 * 32 * 25 + 32


# ------------------------------------------------------------------------------------------------------ formulas

@pytest.mark.parametrize("cin,cout,k,stride,padding,dilation,groups,hw", [
    (8, 16, 3, 1, 1, 1, 1, (9, 11)),     # padded
    (8, 16, 3, 2, 1, 1, 1, (9, 11)),     # strided
    (8, 12, 3, 1, 2, 2, 4, (13, 10)),    # dilated, grouped
    (16, 16, 5, 2, 2, 1, 16, (15, 15)),  # depthwise
    (6, 4, (3, 1), (2, 1), (1, 0), 1, 2, (7, 5)),  # rectangular kernel, grouped
    (3, 5, 3, 1, 0, 1, 1, (7, 7)),       # no padding
], ids=["padded", "strided", "dilated-grouped", "depthwise", "rect-grouped", "valid"])
def test_conv_formula(cin, cout, k, stride, padding, dilation, groups, hw):
    """MACs = output elements x kernel volume x input channels per group (the output shape from torch itself)."""
    conv = nn.Conv2d(cin, cout, k, stride, padding, dilation, groups)
    x = torch.randn(2, cin, *hw)
    out = conv(x)
    kh, kw = conv.kernel_size
    expected = out.numel() * kh * kw * cin // groups
    c = cost.count(conv, tuple(x.shape))
    assert c.macs == expected and c.layers[0].output_shape == tuple(out.shape)
    assert c.activation_bytes == out.numel() * 4
    # The fused conv2d_act over the same geometry.
    args = (x, conv.weight, None, None, list(conv.stride), list(conv.padding), list(conv.dilation), groups, "none")
    assert _flops.op_macs("conv2d_act", *args) == expected
    assert flops_of(torch.ops.cnnkernels.conv2d_act, *args) == 2 * expected


def test_conv_counts_padding_taps():
    """A 3x3 'same' conv on a 1x1 map reads 1 real tap of 9: the convention counts all 9."""
    c = cost.count(nn.Conv2d(4, 6, 3, padding=1), (4, 1, 1))
    assert c.macs == 9 * 4 * 6


def test_linear_formula():
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 5 * 7, 11))
    assert cost.count(net, (3, 5, 7)).macs == 105 * 11
    assert cost.count(net, (4, 3, 5, 7)).macs == 4 * 105 * 11  # per row of the batch
    # cnnkernels.nn.Linear runs a 1x1 conv2d_act over the batch in eval mode: the same count.
    fused = nn.Sequential(nn.Flatten(), cnn.Linear(105, 11))
    c = cost.count(fused, (4, 3, 5, 7))
    assert c.macs == 4 * 105 * 11 and c.layers[-1].output_shape == (4, 11)


def test_every_op_has_a_formula():
    assert set(_library.read_schemas()) <= set(_flops.MAC_FORMULAS), "a cnnkernels op has no MAC formula"
    for op in _flops.MAC_FORMULAS:
        assert getattr(torch.ops.cnnkernels, op) in flop_registry


@pytest.mark.parametrize("op,label,args", [(op, label, args) for op in OPS for label, args in sample_inputs(op)],
                         ids=lambda v: v if isinstance(v, str) else "")
def test_op_formula_matches_decomposed_reference(op, label, args):
    """Under FlopCounterMode each fused op counts exactly what its reference (aten convs, adds, pooling) counts."""
    fused = flops_of(getattr(torch.ops.cnnkernels, op), *args)
    decomposed = flops_of(getattr(cnnkernels, f"{op}_reference"), *args)
    assert fused == decomposed == 2 * _flops.op_macs(op, *args)
    assert (fused > 0) == (op not in ("add_relu", *DETECTION_OPS))


def test_op_macs_bad_name():
    with pytest.raises(ValueError, match="no MAC formula for op 'nope'"):
        _flops.op_macs("nope")


@pytest.mark.skipif(not backends.triton_available(), reason="triton is not installed")
def test_triton_variants_get_formulas(tmp_path):
    """The `<op>_triton` ops exist only once cnnkernels.triton is imported: count() registers their formulas then.
    In a child with TRITON_INTERPRET=1 (the interpreter is chosen at import), on CPU tensors."""
    code = textwrap.dedent("""
        import sys
        sys.path.insert(0, sys.argv[1])
        import torch
        import cnnkernels.cost  # registers the CPU ops' formulas; the Triton ops do not exist yet
        import cnnkernels.triton
        from torch.utils.flop_counter import FlopCounterMode
        from cnnkernels.ops._flops import op_macs, register_flop_formulas
        from cnnkernels.backends import NO_TRITON_OPS
        from support.samples import OPS, sample_inputs
        ops = [op for op in OPS if op not in NO_TRITON_OPS]
        assert sorted(register_flop_formulas()) == sorted(f"{op}_triton" for op in ops)
        for op in ops:
            label, args = next(sample_inputs(op))
            with FlopCounterMode(display=False) as fc:
                getattr(torch.ops.cnnkernels, f"{op}_triton")(*args)
            assert fc.get_total_flops() == 2 * op_macs(op, *args), (op, fc.get_total_flops())
        print("ok")
    """)
    proc = run_python(["-c", code, str(TESTS_DIR)], cwd=tmp_path, env=subprocess_env(TRITON_INTERPRET="1"))
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


# ---------------------------------------------------------------------------------------------------- whole models

@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_torchvision_ops_metadata(name):
    """torchvision's `_ops` (GMACs at 224x224) within 1%, for its model and for ours of the same name (eval mode:
    the fused ops); parameters: the model as it is (torchvision's googlenet here keeps its auxiliary classifiers,
    which its metadata leaves out)."""
    ref = torchvision.models.get_model_weights(name).DEFAULT.meta
    tv = torchvision_model(name)
    c = cost.count(tv, 224)
    assert abs(c.macs / 1e9 - ref["_ops"]) <= 0.01 * ref["_ops"], (c.macs, ref["_ops"])
    assert c.params == n_params(tv)
    aux = sum(n_params(m) for n, m in tv.named_children() if n.startswith("aux"))
    assert c.params - aux == ref["num_params"]
    with torch.device("meta"):
        ours = models.get_model(name).eval()
    c2 = cost.count(ours, 224)
    assert c2.macs == c.macs and c2.params == c.params


def test_fused_and_plain_models_cost_the_same():
    """count(torchvision resnet18) == count(cnnkernels resnet18, eval: fused) == count(optimize(...)) in MACs, on real
    CPU tensors (the compiled kernels); the optimize()d model has BatchNorm folded into the convs, so fewer
    parameters, and count() reports the model as it is."""
    torch.manual_seed(0)
    tv = torchvision_model("resnet18", "cpu")
    ours = randomize_bn(models.resnet18())
    ours.load_state_dict(tv.state_dict())
    ours.eval()
    opt = cnnkernels.optimize(ours)
    a, b, c = (cost.count(m, 224) for m in (tv, ours, opt))
    assert a.macs == b.macs == c.macs == 1_814_073_344
    assert a.params == b.params == n_params(tv)
    assert c.params == n_params(opt) < a.params
    # The layers differ: torchvision's run Conv2d / BatchNorm / ReLU leaves, ours whole fused blocks.
    assert "layer1.0.conv1" in {r.name for r in a.layers}
    assert {"layer1.0", "layer4.1"} <= {r.name for r in b.layers} and "layer1.0.conv1" not in {r.name for r in b.layers}
    # Summed to the model's children, the tables agree from the max pool on (ours has no conv1/bn1/relu rows: its
    # stem runs in the model's own forward, the "<model>" row).
    stem = {"<model>", "conv1", "bn1", "relu"}
    agg = [[(r.name, r.output_shape, r.macs) for r in x.aggregate(1) if r.name not in stem] for x in (a, b, c)]
    assert agg[0] == agg[1] == agg[2] and agg[0][0][0] == "maxpool" and len(agg[0]) == 7
    assert sum(r.macs for r in a.layers if r.name in stem) == b.layers[0].macs == c.layers[0].macs


@pytest.mark.parametrize("name", ["mobilenet_v2", "googlenet", "mobilenet_v1", "vgg11_bn"])
def test_optimize_keeps_macs(name):
    with torch.device("meta"):
        model = models.get_model(name).eval()
    opt = cnnkernels.optimize(model)
    a, b = cost.count(model, 224), cost.count(opt, 224)
    assert a.macs == b.macs
    assert a.params == n_params(model) and b.params == n_params(opt)


def test_meta_and_cpu_counts_agree():
    torch.manual_seed(0)
    on_cpu = cost.count(models.mobilenet_v2().eval(), 96)
    with torch.device("meta"):
        on_meta = cost.count(models.mobilenet_v2().eval(), 96)
    assert [(r.name, r.output_shape, r.params, r.macs, r.activation_bytes) for r in on_cpu.layers] == \
        [(r.name, r.output_shape, r.params, r.macs, r.activation_bytes) for r in on_meta.layers]


def test_flop_counter_mode_counts_fused_models():
    """FlopCounterMode alone (no count()) sees the fused ops: 2 FLOPs per MAC."""
    with torch.device("meta"):
        model = models.googlenet().eval()
        x = torch.zeros(1, 3, 224, 224)
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(x)
    assert fc.get_total_flops() == 2 * cost.count(model, 224).macs
    assert torch.ops.cnnkernels.inception_block in fc.get_flop_counts()["Global"]


# ------------------------------------------------------------------------------------------------------ attribution

def test_layers_of_a_fused_model():
    with torch.device("meta"):
        c = cost.count(models.resnet18().eval(), 224)
    rows = {r.name: r for r in c.layers}
    # The stem (conv1 + bn1 + relu fused) runs in ResNet.forward itself: the model's own row, with their parameters
    # and the output of the conv it ran.
    stem = rows["<model>"]
    assert stem.type == "ResNet" and stem.output_shape == (1, 64, 112, 112)
    assert stem.macs == 112 * 112 * 64 * 7 * 7 * 3 and stem.params == 64 * 3 * 49 + 2 * 64
    assert stem.activation_bytes == 64 * 112 * 112 * 4
    block = rows["layer1.0"]
    assert block.type == "BasicBlock" and block.output_shape == (1, 64, 56, 56)
    assert block.macs == 2 * 56 * 56 * 64 * 9 * 64 and block.params == 2 * (64 * 64 * 9 + 2 * 64)
    assert block.activation_bytes == 64 * 56 * 56 * 4  # only what the fused block writes
    assert rows["layer2.0"].params == 128 * 64 * 9 + 128 * 128 * 9 + 64 * 128 + 3 * 2 * 128  # with the downsample
    assert sum(r.params for r in c.layers) == c.params == 11_689_512
    assert c.aggregate(1)[0] == stem  # summed to depth 1 the stem row stays as it is (not the model's 1x1000 output)


def test_layers_of_a_plain_model():
    c = cost.count(torchvision_model("resnet18"), 224)
    rows = {r.name: r for r in c.layers}
    assert rows["conv1"].macs == 118_013_952 and rows["conv1"].output_shape == (1, 64, 112, 112)
    assert rows["bn1"].macs == 0 and rows["bn1"].params == 128
    assert rows["layer1.0.conv1"].macs == 56 * 56 * 64 * 9 * 64
    # BasicBlock.relu runs twice per block.
    assert rows["layer1.0.relu"].calls == 2 and rows["layer1.0.relu"].activation_bytes == 2 * 64 * 56 * 56 * 4
    assert "<model>" not in rows and "layer1.0" not in rows  # containers only
    assert [r.name for r in c.layers][:4] == ["conv1", "bn1", "relu", "maxpool"]  # in the order they ran


def test_modules_that_did_not_run():
    """GoogLeNet's auxiliary classifiers only run in training mode: their parameters are "(not run)" rows."""
    c = cost.count(torchvision_model("googlenet"), 224)
    rows = {r.name: r for r in c.layers}
    assert rows["aux1"].output_shape is None and rows["aux1"].macs == 0 and rows["aux1"].calls == 0
    assert rows["aux1"].params == 3_188_968
    assert "(not run)" in c.table()


def test_shared_module_and_parameters_counted_once():
    lin = nn.Linear(8, 8)
    net = nn.Sequential(nn.Flatten(), lin, nn.ReLU(), lin)
    c = cost.count(net, (2, 2, 2))
    assert c.params == n_params(net) == 72
    rows = {r.name: r for r in c.layers}
    assert rows["1"].calls == 2 and rows["1"].macs == 2 * 64


def test_modes_and_state_are_restored():
    model = randomize_bn(models.resnet18(num_classes=10))
    model.train()
    model.layer1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cost.count(model, 32)
    assert model.training and not model.layer1.training and model.layer2.training
    assert all(not m.training for m in model.layer1.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics untouched (eval mode)


def test_aggregate_and_table():
    with torch.device("meta"):
        c = cost.count(models.mobilenet_v2(), 224)
    for depth in (0, 1, 2):
        rows = c.aggregate(depth)
        assert sum(r.macs for r in rows) == c.macs and sum(r.params for r in rows) == c.params
        assert sum(r.activation_bytes for r in rows) == c.activation_bytes
    (whole,) = c.aggregate(0)
    assert whole.name == "<model>" and whole.type == "MobileNetV2" and whole.output_shape == (1, 1000)
    assert [r.name for r in c.aggregate(1)] == ["features", "classifier"]
    assert c.aggregate(2)[1].name == "features.1" and c.aggregate(2)[1].type == "InvertedResidual"
    text = c.table(depth=1)
    assert text.splitlines()[0].split() == ["layer", "type", "output", "params", "MACs", "activations"]
    assert f"{c.macs:,}" in text and "0.301 GMACs" in text and "3.505 M params" in text
    assert str(c) == c.table()
    with pytest.raises(ValueError, match="`depth`"):
        c.aggregate(-1)


# ------------------------------------------------------------------------------------------------------ dwsep_ratio

def test_dwsep_ratio_values():
    assert cost.dwsep_ratio(32, 3) == pytest.approx(1 / 32 + 1 / 9)
    assert cost.dwsep_ratio(512, 5) == pytest.approx(1 / 512 + 1 / 25)
    assert cost.dwsep_ratio(64, (3, 5)) == pytest.approx(1 / 64 + 1 / 15)


@pytest.mark.skipif(not (REPO / "README.md").exists(), reason="no README.md next to tests")
def test_readme_dwsep_table():
    text = (REPO / "README.md").read_text()
    section = text.split("## Cost: `cnnkernels.cost`", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| ([0-9.]+) \((?:[0-9.]+)x[^|]*\| ([0-9.]+) \(", section, re.M)
    assert [int(n) for n, _, _ in rows] == [32, 64, 128, 256, 512]
    for n, k3, k5 in rows:
        assert float(k3) == round(cost.dwsep_ratio(int(n), 3), 3) and float(k5) == round(cost.dwsep_ratio(int(n), 5), 3)


@pytest.mark.parametrize("n,k", [(32, 3), (64, 5), (256, 3)])
def test_dwsep_ratio_is_the_counted_ratio(n, k):
    """A (fused, eval) depthwise-separable block against a normal conv, both without BatchNorm: exactly the ratio."""
    m = 16
    sep = cnn.DepthwiseSeparableConv2d(m, n, k, norm_layer=None, activation_layer=None).eval()
    full = nn.Conv2d(m, n, k, padding=k // 2, bias=False)
    a, b = cost.count(sep, (m, 14, 14)), cost.count(full, (m, 14, 14))
    assert a.layers[0].type == "DepthwiseSeparableConv2d"  # ran the fused dwsep_conv2d
    assert a.macs / b.macs == pytest.approx(cost.dwsep_ratio(n, k), rel=1e-12)


@pytest.mark.parametrize("args,exc,arg", [
    ((0, 3), ValueError, "out_channels"), ((32, 0), ValueError, "kernel_size"), ((32.0, 3), TypeError, "out_channels"),
    ((True, 3), TypeError, "out_channels"), ((32, "3"), TypeError, "kernel_size"), ((32, (3, 3, 3)), ValueError,
                                                                                    "kernel_size"),
])
def test_dwsep_ratio_bad_args(args, exc, arg):
    with pytest.raises(exc, match=f"`{arg}`"):
        cost.dwsep_ratio(*args)


# ------------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("model", ["resnet18", None, torch.zeros(3)])
def test_count_rejects_non_modules(model):
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        cost.count(model, 224)


@pytest.mark.parametrize("size,exc", [
    (0, ValueError), (-3, ValueError), ((3, 0, 4), ValueError), ((3, 224), ValueError), ((1, 1, 3, 8, 8), ValueError),
    (2.5, TypeError), ("224", TypeError), (True, TypeError), ((3, 224.0, 224), TypeError), (None, TypeError),
])
def test_count_rejects_bad_input_size(size, exc):
    with pytest.raises(exc, match="`input_size`"):
        cost.count(nn.Conv2d(3, 4, 3), size)


def test_count_input_size_forms():
    conv = nn.Conv2d(5, 4, 3)
    assert cost.count(conv, 8).input_shape == (1, 5, 8, 8)  # channels of the first Conv2d
    assert cost.count(conv, (5, 8, 9)).input_shape == (1, 5, 8, 9)
    assert cost.count(conv, torch.Size([2, 5, 8, 9])).input_shape == (2, 5, 8, 9)


# ----------------------------------------------------------------------------------------------------------- command

def test_command_prints_the_table(capsys):
    assert cost.main(["resnet18"]) == 0
    out = capsys.readouterr().out
    assert "layer1.0" in out and "BasicBlock" in out and "11,689,512" in out
    assert "cnnkernels resnet18, input 1x3x224x224: 1.814 GMACs" in out and "11.690 M params" in out


def test_command_options(capsys):
    assert cost.main(["mobilenet_v2", "--torchvision", "--size", "112", "--batch", "2", "--depth", "1"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines[2:4]] == ["features", "classifier"]
    assert "torchvision mobilenet_v2, input 2x3x112x112" in out
    assert cost.main(["lenet5"]) == 0
    assert "input 1x1x32x32" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["resnet7"], "argument MODEL: unknown model 'resnet7'"),
    (["mobilenet_v1", "--torchvision"], "argument MODEL: unknown torchvision classification model 'mobilenet_v1'"),
    (["resnet18", "--size", "0"], "argument --size: expected a positive integer"),
    (["resnet18", "--depth", "x"], "argument --depth: expected an integer >= 0"),
])
def test_command_bad_arguments(capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        cost.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
