"""cnnkernels.nn modules: training mode == the plain torch.nn / torchvision composition (outputs, gradients, running
stats), eval mode == the same in fp32 tolerance through the fused ops, with state_dicts interchangeable."""

import copy
import importlib

import pytest
import torch
from torch import nn

import cnnkernels
import cnnkernels.nn as cnn

pytest.importorskip("torchvision")
# (import_module: `import torchvision.models.googlenet as m` would bind the googlenet() builder, not the module)
tvr = importlib.import_module("torchvision.models.resnet")
tvg = importlib.import_module("torchvision.models.googlenet")
tvm = importlib.import_module("torchvision.models.mobilenetv2")
from torchvision.ops.misc import Conv2dNormActivation  # noqa: E402
from cnnkernels.testing import randomize_bn  # noqa: E402


def assert_close_scaled(actual, expected, rel=1e-4):
    scale = expected.abs().max().item() + 1e-6
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale + 1e-6, f"max abs error {err} vs scale {scale}"


def check_pair(ref, ours, x, *, train_too=True):
    """ours loads ref's state_dict strictly; eval outputs close, train outputs/grads/running stats identical."""
    randomize_bn(ref)
    ours.load_state_dict(ref.state_dict(), strict=True)
    ref.eval(), ours.eval()
    with torch.no_grad():
        assert_close_scaled(ours(x), ref(x))
        assert_close_scaled(ours(x.contiguous(memory_format=torch.channels_last)), ref(x))
    if not train_too:
        return
    ref.train(), ours.train()
    xr, xo = x.clone().requires_grad_(), x.clone().requires_grad_()
    yr, yo = ref(xr), ours(xo)
    torch.testing.assert_close(yo, yr, rtol=0, atol=0)
    w = torch.randn_like(yr)
    (yr * w).sum().backward()
    (yo * w).sum().backward()
    torch.testing.assert_close(xo.grad, xr.grad, rtol=1e-6, atol=1e-7)
    pr, po = dict(ref.named_parameters()), dict(ours.named_parameters())
    assert pr.keys() == po.keys()
    for k in pr:
        torch.testing.assert_close(po[k].grad, pr[k].grad, rtol=1e-6, atol=1e-7, msg=k)
    for (k, a), (_, b) in zip(ref.state_dict().items(), ours.state_dict().items()):
        torch.testing.assert_close(b, a, rtol=0, atol=0, msg=k)


@pytest.mark.parametrize("stride,inplanes,planes", [(1, 8, 8), (2, 8, 16)])
def test_basic_block_matches_torchvision(stride, inplanes, planes):
    torch.manual_seed(0)
    ds = None if stride == 1 and inplanes == planes else nn.Sequential(tvr.conv1x1(inplanes, planes, stride),
                                                                       nn.BatchNorm2d(planes))
    ref = tvr.BasicBlock(inplanes, planes, stride, ds)
    ds2 = None if ds is None else nn.Sequential(cnn.conv1x1(inplanes, planes, stride), nn.BatchNorm2d(planes))
    check_pair(ref, cnn.BasicBlock(inplanes, planes, stride, ds2), torch.randn(2, inplanes, 9, 11))


@pytest.mark.parametrize("stride,groups,base_width", [(1, 1, 64), (2, 2, 32)])
def test_bottleneck_matches_torchvision(stride, groups, base_width):
    torch.manual_seed(0)
    ds = nn.Sequential(tvr.conv1x1(8, 16, stride), nn.BatchNorm2d(16))
    ref = tvr.Bottleneck(8, 4, stride, ds, groups, base_width)
    ours = cnn.Bottleneck(8, 4, stride, nn.Sequential(cnn.conv1x1(8, 16, stride), nn.BatchNorm2d(16)), groups,
                          base_width)
    check_pair(ref, ours, torch.randn(2, 8, 10, 7))


@pytest.mark.parametrize("inp,oup,stride,t", [(8, 8, 1, 6), (8, 16, 2, 6), (16, 8, 1, 1), (8, 8, 1, 1)])
def test_inverted_residual_matches_torchvision(inp, oup, stride, t):
    torch.manual_seed(0)
    check_pair(tvm.InvertedResidual(inp, oup, stride, t), cnn.InvertedResidual(inp, oup, stride, t),
               torch.randn(2, inp, 9, 8))


def test_inception_and_basic_conv_match_torchvision():
    torch.manual_seed(0)
    check_pair(tvg.Inception(12, 4, 3, 5, 2, 3, 4), cnn.InceptionBlock(12, 4, 3, 5, 2, 3, 4), torch.randn(2, 12, 7, 9))
    check_pair(tvg.BasicConv2d(3, 8, kernel_size=3, stride=2, padding=1),
               cnn.BasicConv2d(3, 8, kernel_size=3, stride=2, padding=1), torch.randn(2, 3, 9, 9))


@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6, None, nn.Hardswish])
def test_conv_bn_act_matches_conv2d_norm_activation(act):
    torch.manual_seed(0)
    check_pair(Conv2dNormActivation(4, 6, 3, stride=2, groups=2, activation_layer=act),
               cnn.ConvBNAct(4, 6, 3, stride=2, groups=2, activation_layer=act), torch.randn(2, 4, 8, 9))


def test_depthwise_separable_matches_plain_composition():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Sequential(nn.Conv2d(6, 6, 3, 2, 1, groups=6, bias=False), nn.BatchNorm2d(6), nn.ReLU()),
                        nn.Sequential(nn.Conv2d(6, 10, 1, bias=False), nn.BatchNorm2d(10), nn.ReLU()))
    ours = cnn.DepthwiseSeparableConv2d(6, 10, 3, stride=2)
    randomize_bn(ref)
    sd = {k.replace("0.", "depthwise.", 1) if k.startswith("0.") else k.replace("1.", "pointwise.", 1): v
          for k, v in ref.state_dict().items()}
    ours.load_state_dict(sd, strict=True)
    x = torch.randn(2, 6, 11, 10)
    for mode in (False, True):
        ref.train(mode), ours.train(mode)
        torch.manual_seed(1)
        assert_close_scaled(ours(x), ref(x))


def test_fused_sequential_keeps_indices_and_fuses_runs():
    torch.manual_seed(0)
    ref = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1), nn.ReLU6(), nn.Conv2d(8, 4, 1), nn.Tanh(),
                        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4))
    ours = cnn.FusedSequential(*copy.deepcopy(list(ref)))
    check_pair(ref, ours, torch.randn(2, 3, 8, 10))
    plan = ours.eval().folded()
    assert [len(s) == 4 for s in plan] == [True, False, True, False, False, True]
    assert [s[3] for s in plan if len(s) == 4] == ["relu", "relu6", "none"]


def test_eval_calls_the_fused_ops(monkeypatch):
    """The eval path really goes through torch.ops.cnnkernels (not a silent fallback to torch.nn)."""
    calls = []
    real = torch.ops.cnnkernels
    for name in ("conv2d_act", "inverted_residual", "inception_block", "dwsep_conv2d", "add_relu"):
        op = getattr(real, name)
        monkeypatch.setattr(torch.ops.cnnkernels, name,
                            lambda *a, _op=op, _n=name: (calls.append(_n), _op(*a))[1], raising=False)
    with torch.no_grad():
        cnn.BasicBlock(4, 4).eval()(torch.randn(1, 4, 5, 5))
        cnn.InvertedResidual(4, 4, 1, 2).eval()(torch.randn(1, 4, 5, 5))
        cnn.InceptionBlock(4, 2, 2, 2, 2, 2, 2).eval()(torch.randn(1, 4, 5, 5))
        cnn.DepthwiseSeparableConv2d(4, 6).eval()(torch.randn(1, 4, 5, 5))
        cnn.AddReLU().eval()(torch.randn(3), torch.randn(3))
    assert calls == ["conv2d_act", "conv2d_act", "inverted_residual", "inception_block", "dwsep_conv2d", "add_relu"]


def test_add_relu_and_zero_pad_shortcut():
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    m = cnn.AddReLU()
    torch.testing.assert_close(m.eval()(a, b), torch.relu(a + b))
    torch.testing.assert_close(m.train()(a, b), torch.relu(a + b))
    s = cnn.ZeroPadShortcut(3, 5, stride=2)
    assert not list(s.parameters())
    y = s(torch.arange(2 * 3 * 5 * 5, dtype=torch.float32).reshape(2, 3, 5, 5))
    assert y.shape == (2, 5, 3, 3)
    torch.testing.assert_close(y[:, :3], torch.arange(150.).reshape(2, 3, 5, 5)[:, :, ::2, ::2])
    assert (y[:, 3:] == 0).all()
    with pytest.raises(ValueError):
        cnn.ZeroPadShortcut(4, 2)


def test_unfusable_parts_fall_back_to_plain_modules():
    """GroupNorm, BatchNorm without running stats, other activations: eval mode runs the plain submodules."""
    torch.manual_seed(0)
    x = torch.randn(2, 8, 6, 6)
    gn = cnn.BasicBlock(8, 8, norm_layer=lambda c: nn.GroupNorm(2, c)).eval()
    assert gn.folded() is None
    with cnn.fusion(False):
        ref = gn(x)
    torch.testing.assert_close(gn(x), ref)
    nostats = cnn.ConvBNAct(8, 8, norm_layer=lambda c: nn.BatchNorm2d(c, track_running_stats=False)).eval()
    assert all(len(s) == 1 for s in nostats.folded())
    torch.testing.assert_close(nostats(x), nn.Sequential.forward(nostats, x))
    ir = cnn.InvertedResidual(8, 8, 1, 2)
    ir.conv[0][2] = nn.Hardswish()  # expand act != depthwise act: not one inverted_residual call
    ir.eval()
    assert ir.folded() is None
    with cnn.fusion(False):
        ref = ir(x)
    torch.testing.assert_close(ir(x), ref)


def test_fold_formula():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, bias=True)
    bn = randomize_bn(nn.Sequential(nn.BatchNorm2d(4, eps=1e-3))).eval()[0]
    w, b = cnn.fold_conv_bn(conv, bn)
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(w, conv.weight * s.reshape(-1, 1, 1, 1))
    torch.testing.assert_close(b, bn.bias + (conv.bias - bn.running_mean) * s)
    assert not w.requires_grad and not b.requires_grad
    # affine=False and conv without bias
    conv2, bn2 = nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4, affine=False).eval()
    bn2.running_mean.fill_(0.5), bn2.running_var.fill_(4.0)
    w2, b2 = cnn.fold_conv_bn(conv2, bn2)
    torch.testing.assert_close(b2, torch.full((4,), -0.5 / (4.0 + 1e-5) ** 0.5))


# ----------------------------------------------------------------------------------------------- folded-weight cache

def _block():
    torch.manual_seed(0)
    m = cnn.BasicBlock(4, 8, 2, nn.Sequential(cnn.conv1x1(4, 8, 2), nn.BatchNorm2d(8)))
    return randomize_bn(m).eval()


def _reference(m, x):
    with torch.no_grad(), cnn.fusion(False):
        return m(x)


def test_cache_not_refolded_when_nothing_changed():
    m, x = _block(), torch.randn(1, 4, 6, 6)
    for _ in range(4):
        m(x)
    m.eval()  # no mode flip
    m(x)
    assert m.fold_count == 1
    assert cnn.count_folds(m) == 1


def test_cache_refreshed_after_optimizer_step():
    m, x = _block(), torch.randn(1, 4, 6, 6)
    before = m(x).detach()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    for p in m.parameters():
        p.grad = torch.randn_like(p)
    opt.step()
    out = m(x)
    assert m.fold_count == 2
    assert not torch.allclose(out, before)
    assert_close_scaled(out, _reference(m, x))


def test_cache_refreshed_after_load_state_dict_and_buffer_update():
    m, x = _block(), torch.randn(1, 4, 6, 6)
    m(x)
    other = randomize_bn(cnn.BasicBlock(4, 8, 2, nn.Sequential(cnn.conv1x1(4, 8, 2), nn.BatchNorm2d(8))), seed=3)
    m.load_state_dict(other.state_dict())
    assert_close_scaled(m(x), _reference(other.eval(), x))
    n = m.fold_count
    with torch.no_grad():
        m.bn2.running_var.mul_(3.0)  # an in-place buffer update
    assert_close_scaled(m(x), _reference(m, x))
    assert m.fold_count == n + 1
    m.conv1.weight = nn.Parameter(torch.randn_like(m.conv1.weight))  # a new Parameter object
    assert_close_scaled(m(x), _reference(m, x))
    m.bn1 = randomize_bn(nn.Sequential(nn.BatchNorm2d(8)), seed=5)[0].eval()  # a new module
    assert_close_scaled(m(x), _reference(m, x))
    m.double()  # dtype change
    y = m(x.double())
    assert y.dtype == torch.float64
    assert_close_scaled(y, _reference(m, x.double()))


def test_cache_refreshed_on_mode_flip():
    m, x = _block(), torch.randn(2, 4, 6, 6)
    m(x)
    m.train()
    m(torch.randn(4, 4, 6, 6) * 3 + 1)  # batch statistics update the running stats
    m.eval()
    assert m.fold_count == 2
    assert_close_scaled(m(x), _reference(m, x))
    assert m.fold_count == 2


def test_cache_is_not_state():
    m = _block()
    keys = set(m.state_dict())
    m(torch.randn(1, 4, 6, 6))
    assert set(m.state_dict()) == keys
    assert len(list(m.buffers())) == 9 and len(list(m.parameters())) == 9
    c = copy.deepcopy(m)
    assert "_fold_value" not in c.__dict__
    torch.testing.assert_close(c(torch.ones(1, 4, 6, 6)), m(torch.ones(1, 4, 6, 6)))


def test_eval_with_grad_enabled_and_channels_last():
    m, x = _block(), torch.randn(2, 4, 7, 6)
    xc = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    y = m(xc)
    assert_close_scaled(y.detach(), _reference(m, x))
    y.sum().backward()  # conv2d_act has autograd: the input gets a gradient
    assert xc.grad is not None and xc.grad.shape == x.shape


def test_inference_mode_models_fold_every_call_without_pinning_weights():
    """Weights that are inference tensors have no version counter: no cache, and the per-call folds must not pile up
    in the ops' packed-weight cache."""
    from cnnkernels import _library
    with torch.inference_mode():
        m = randomize_bn(cnn.BasicBlock(4, 4)).eval()
        x = torch.randn(1, 4, 5, 5)
        with cnn.fusion(False):
            ref = m(x)
        m(x)
        size = _library.weight_cache_size()
        for _ in range(3):
            assert_close_scaled(m(x), ref)
        assert _library.weight_cache_size() == size
    assert m.fold_count == 4


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)],
                         ids=["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("n", [1, 2, 7, 13])
def test_linear_matches_nn_linear(monkeypatch, dtype, tol, n):
    """Eval mode runs conv2d_act over the batch (batches 1, 2 and 13 end in narrow 4-pixel tiles) and matches
    F.linear; the state_dict is nn.Linear's."""
    torch.manual_seed(n)
    ref = nn.Linear(37, 21).to(dtype).eval()
    m = cnn.Linear(37, 21).to(dtype).eval()
    m.load_state_dict(ref.state_dict(), strict=True)
    calls = []
    real = torch.ops.cnnkernels.conv2d_act
    monkeypatch.setattr(torch.ops.cnnkernels, "conv2d_act",
                        lambda *a: (calls.append(1), real(*a))[1], raising=False)
    x = torch.randn(n, 37).to(dtype)
    with torch.no_grad():
        for inp in (x, torch.randn(37, n).to(dtype).t().copy_(x)):  # contiguous and transposed (non-contiguous)
            y = m(inp)
            assert y.shape == (n, 21) and y.dtype == dtype and y.is_contiguous()
            expected = torch.nn.functional.linear(inp.double(), ref.weight.double(), ref.bias.double())
            assert_close_scaled(y.double(), expected, rel=tol)
    assert len(calls) == 2


def test_linear_falls_back_where_the_op_does_not_apply():
    torch.manual_seed(0)
    m = cnn.Linear(6, 4).eval()
    ref = nn.Linear(6, 4).eval()
    ref.load_state_dict(m.state_dict())
    with torch.no_grad():
        for x in (torch.randn(0, 6), torch.randn(2, 3, 6), torch.randn(6), torch.randn(3, 6).double()):
            if x.dtype == torch.float64:
                with pytest.raises(RuntimeError):  # the same dtype error F.linear gives
                    ref(x)
                with pytest.raises(RuntimeError):
                    m(x)
                continue
            torch.testing.assert_close(m(x), ref(x))
        with pytest.raises(RuntimeError):  # wrong feature count: F.linear's own error
            m(torch.randn(2, 5))
    # gradients into the weight (eval-mode fine-tuning, saliency with weight grads) take F.linear
    x = torch.randn(3, 6)
    m(x).sum().backward()
    ref(x).sum().backward()
    torch.testing.assert_close(m.weight.grad, ref.weight.grad)
    m.train()
    torch.testing.assert_close(m(x), ref(x))


def test_linear_sees_weight_updates_and_optimize_converts_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5)).eval()
    opt = cnnkernels.optimize(model, freeze=True)
    assert type(opt[1]) is cnn.Linear and opt[1].weight is not model[1].weight
    x = torch.randn(2, 3, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(opt(x), model(x))
        opt[1].weight.mul_(-1)  # in place: the fold's view and the frozen packed weight must both notice
        opt[1].bias.add_(1)
        torch.testing.assert_close(opt(x), torch.nn.functional.linear(x.flatten(1), opt[1].weight, opt[1].bias))


@pytest.mark.parametrize("trainable", [True, False], ids=["requires_grad", "frozen_params"])
def test_linear_refolds_once_per_weight_change_and_never_writes_into_the_weight(trainable):
    # Linear's fold is a view of the weight: refolding must not copy into it (that would bump the weight's version
    # counter, and every later call would see a "changed" weight and refold again). Parameters with
    # requires_grad=False (a frozen inference model) are the case where such a copy is possible at all.
    torch.manual_seed(0)
    x = torch.randn(3, 8)

    def steady(*mods, calls=3):
        """Runs each module `calls` times; returns the folds it took (0 or 1 each) and checks weights untouched."""
        folds = []
        for m in mods:
            before, version = m.fold_count, m.weight._version
            with torch.no_grad():
                for _ in range(calls):
                    y = m(x)
            torch.testing.assert_close(y, torch.nn.functional.linear(x, m.weight, m.bias), atol=1e-5, rtol=1e-5)
            assert m.weight._version == version, "a forward wrote into the weight"
            folds.append(m.fold_count - before)
        return folds

    lin = cnn.Linear(8, 4).eval().requires_grad_(trainable)
    assert steady(lin) == [1]                      # first call folds
    assert steady(lin) == [0]
    lin.load_state_dict({k: torch.randn_like(t) for k, t in lin.state_dict().items()})
    assert steady(lin) in ([0], [1])               # refolded by load_state_dict's hook or by the first call
    assert steady(lin) == [0]
    if trainable:
        opt = torch.optim.SGD(lin.parameters(), lr=0.1)
        lin(x).square().sum().backward()           # grad enabled: the F.linear path
        opt.step()
    else:
        with torch.no_grad():
            lin.weight.add_(1)
    assert steady(lin) == [1] and steady(lin) == [0]
    lin.weight = nn.Parameter(torch.randn(4, 8), requires_grad=trainable)  # reassignment
    assert steady(lin) == [1] and steady(lin) == [0]
    other = cnn.Linear(8, 4).eval().requires_grad_(trainable)
    other.weight = lin.weight                      # tied weights: two modules fold views of one parameter
    assert steady(lin, other) == [0, 1]
    with torch.no_grad():
        lin.weight.mul_(2)
    assert steady(lin, other) == [1, 1] and steady(lin, other) == [0, 0]
