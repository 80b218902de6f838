"""U-Net: cnnkernels.models.unet (shapes, size checks, parameters, state_dict names) and its blocks
cnnkernels.nn.UNetDown / UNetUp: the fused eval path (conv2d_act, the up_concat_conv call) and optimize() against the
plain torch.nn path with randomized BatchNorm statistics, channels_last, torch.compile, gradients in training mode."""

import pytest
import torch
from torch import nn

import cnnkernels
import cnnkernels.nn as cnn
from cnnkernels import models
from cnnkernels.nn import unet as unet_blocks
from cnnkernels.testing import randomize_bn
from support.helpers import CountOps, assert_close_scaled


@pytest.fixture(autouse=True)
def _one_thread(restore_num_threads):
    torch.set_num_threads(1)


def small(depth=2, batch_norm=True, seed=0, **kwargs):
    torch.manual_seed(seed)
    m = models.unet(in_channels=3, num_classes=4, depth=depth, base_width=4, batch_norm=batch_norm, **kwargs)
    return randomize_bn(m, seed).eval()


@pytest.mark.parametrize("depth,hw", [(1, (2, 6)), (2, (16, 12)), (3, (8, 24)), (4, (32, 16))])
def test_output_size_equals_input_size(depth, hw):
    m = small(depth)
    assert len(m.down) == len(m.up) == depth
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        assert m(x).shape == (2, 4, *hw)
        m.train()
        assert m(x).shape == (2, 4, *hw)


def test_bad_input_size_and_arguments():
    m = small(3)
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8 .*got 30x32"):
        m(torch.randn(1, 3, 30, 32))
    with pytest.raises(ValueError, match=r"divisible by 2\*\*depth = 8 .*got 16x20"):
        m(torch.randn(1, 3, 16, 20))
    with pytest.raises(ValueError, match="4-D"):
        m(torch.randn(3, 16, 16))
    for kwargs, name in (({"depth": 0}, "depth"), ({"base_width": 0}, "base_width"), ({"num_classes": 1.5},
                                                                                      "num_classes")):
        with pytest.raises(ValueError, match=f"`{name}` must be an int"):
            models.unet(**kwargs)
    up = cnn.UNetUp(8, 4, 4).eval()
    with pytest.raises(ValueError, match="`skip` must have shape"):
        up(torch.randn(1, 8, 4, 4), torch.randn(1, 4, 7, 8))
    with pytest.raises(ValueError, match="`skip` must have shape"):
        up(torch.randn(1, 8, 4, 4), torch.randn(1, 5, 8, 8))
    with pytest.raises(TypeError, match="`skip` must be a 4-D tensor"):
        up(torch.randn(1, 8, 4, 4), None)


def test_paper_network_and_state_dict_names():
    with torch.device("meta"):
        paper = models.get_model("unet")
    assert sum(p.numel() for p in paper.parameters()) == 31_031_810  # 2 classes, no BatchNorm
    # registered as a segmentation model: code for classifiers (heads, crops) selects list_models("classification")
    assert models.model_task("unet") == "segmentation" and models.model_task("resnet18") == "classification"
    assert "unet" in models.list_models(task="segmentation") and "unet" not in models.list_models("classification")
    assert "unet" in models.list_models()
    assert [m.out_channels for m in [paper.stem, *paper.down]] == [64, 128, 256, 512, 1024]
    assert [m.out_channels for m in paper.up] == [512, 256, 128, 64]
    keys = set(small(2).state_dict())
    for k in ("stem.conv1.weight", "stem.norm1.running_var", "down.1.conv2.weight", "up.0.up.weight", "up.0.up.bias",
              "up.1.conv1.weight", "up.1.norm2.weight", "classifier.weight", "classifier.bias"):
        assert k in keys, k
    assert "stem.conv1.bias" not in keys  # a conv before a BatchNorm has no bias
    assert "stem.conv1.bias" in small(2, batch_norm=False).state_dict()


@pytest.mark.parametrize("batch_norm", [True, False])
def test_fused_eval_and_optimize_match_plain(batch_norm):
    m = small(3, batch_norm=batch_norm)
    if not batch_norm:  # zero biases would hide a bias that is dropped or added twice
        with torch.no_grad():
            for mod in m.modules():
                if isinstance(mod, (nn.Conv2d, nn.ConvTranspose2d)):
                    mod.bias.normal_(0, 0.2)
    x = torch.randn(2, 3, 16, 24)
    with torch.no_grad():
        with cnn.fusion(False):
            ref = m(x)
        with CountOps() as counter:
            fused = m(x)
        # stem + 3 down levels: 2 conv2d_act each; 3 up levels: 1 up_concat_conv, then 1 conv2d_act
        assert counter.calls["cnnkernels.conv2d_act"] == 11, counter.calls
        assert counter.calls["cnnkernels.up_concat_conv"] == 3, counter.calls
        assert_close_scaled(fused, ref)
        assert_close_scaled(m(x.contiguous(memory_format=torch.channels_last)), ref)
        opt = cnnkernels.optimize(m)
        assert not any(isinstance(mod, nn.BatchNorm2d) for mod in opt.modules())  # all folded for good
        out = opt(x)
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert_close_scaled(out, ref)


def test_up_block_fused_call_has_the_op_signature(monkeypatch):
    """UNetUp's eval path is one call of the up_concat_conv op, the first conv's BatchNorm folded into
    `weight`/`bias`."""
    assert unet_blocks.up_concat_conv is cnnkernels.up_concat_conv
    block = randomize_bn(cnn.UNetUp(6, 5, 4, norm_layer=nn.BatchNorm2d), seed=3).eval()
    x, skip = torch.randn(2, 6, 3, 5), torch.randn(2, 5, 6, 10)
    seen = []

    def spy(*args):
        seen.append(args)
        return cnnkernels.up_concat_conv(*args)

    monkeypatch.setattr(unet_blocks, "up_concat_conv", spy)
    with torch.no_grad():
        out = block(x, skip)
        with cnn.fusion(False):
            ref = block(x, skip)
    assert len(seen) == 1
    inp, sk, up_w, up_b, w, b, act = seen[0]
    assert inp is x and sk is skip and up_w is block.up.weight and up_b is block.up.bias and act == "relu"
    assert w.shape == (4, 9, 3, 3) and b.shape == (4,)
    assert_close_scaled(out, ref)


def test_compiled_model_matches_eager():
    """The fused eval path traces as one graph (the folds read as inputs, the ops through their fake kernels).
    aot_eager, not inductor: inductor's code generation takes ~40 s here, tests/nn/test_models_compile.py runs it."""
    torch._dynamo.reset()
    m = small(2)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        ref = m(x)
        compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
        assert_close_scaled(compiled(x), ref)


def test_training_mode_gradients_flow_to_every_parameter():
    m = small(2).train()
    x = torch.randn(2, 3, 16, 16, requires_grad=True)
    target = torch.randint(0, 4, (2, 16, 16))
    loss = nn.functional.cross_entropy(m(x), target)
    loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0
    # training mode normalises with batch statistics and updates the running ones
    assert not torch.equal(m.stem.norm1.running_mean, small(2).stem.norm1.running_mean)
