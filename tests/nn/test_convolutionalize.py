"""cnnkernels.convolutionalize(): a classifier's head as convolutions scores every window of a larger image in one
pass; the windows' scores equal the classifier's on the crops (exactly for unpadded feature extractors), adaptive
pools are dropped or made fixed only where that is exact, and everything else is refused with a clear error."""

import copy

import pytest
import torch
from torch import nn

import cnnkernels
from cnnkernels.convolutionalize import SlidingWindowClassifier
from cnnkernels.models import VGG, alexnet, lenet5
from cnnkernels.models.vgg import make_layers
from cnnkernels.nn import SqueezeExcitation
from cnnkernels.testing import randomize_bn

torchvision = pytest.importorskip("torchvision")


def assert_close_fp32(actual, expected):
    # Only the summation order differs (a conv over the map against a Linear over the flattened map).
    scale = expected.abs().max().item()
    err = (actual - expected).abs().max().item()
    assert err <= 1e-5 * scale + 1e-7, f"max abs error {err} at scale {scale}"


def assert_windows_match(model, sliding, image, window, stride):
    """Every output position (i, j) against the model on the crop at (stride_h * i, stride_w * j)."""
    with torch.no_grad():
        scores = sliding(image)
        rows, cols = scores.shape[2:]
        assert (rows, cols) == sliding.output_size(*image.shape[2:])
        crops = torch.cat([image[:, :, stride[0] * i:stride[0] * i + window[0], stride[1] * j:stride[1] * j + window[1]]
                           for i in range(rows) for j in range(cols)])
        expected = model(crops).view(rows, cols, image.shape[0], -1).permute(2, 3, 0, 1)
    assert_close_fp32(scores, expected)


def small_vgg(cls=VGG, num_classes=5):
    """A VGG (5 pools, 7x7 at 224) of small widths: built on meta, then given real small features and head."""
    with torch.device("meta"):
        model = cls(make_layers([8, "M", 8, "M", 16, "M", 16, "M", 16, "M"]), num_classes=num_classes)
    model.features = make_layers([8, "M", 8, "M", 16, "M", 16, "M", 16, "M"])
    model.classifier = nn.Sequential(nn.Linear(16 * 7 * 7, 32), nn.ReLU(True), nn.Dropout(), nn.Linear(32, 32),
                                     nn.ReLU(True), nn.Dropout(), nn.Linear(32, num_classes))
    return model.eval()


@pytest.mark.parametrize("variant", ["plain", "max_tanh", "bn", "optimized"])
def test_lenet5_windows_equal_crops(variant):
    torch.manual_seed(0)
    kwargs = {"max_tanh": dict(pool="max", activation="tanh"), "bn": dict(norm_layer=nn.BatchNorm2d),
              "optimized": dict(norm_layer=nn.BatchNorm2d)}.get(variant, {})
    model = randomize_bn(lenet5(**kwargs)).eval()
    source = cnnkernels.optimize(model) if variant == "optimized" else model
    sliding = cnnkernels.convolutionalize(source)
    assert isinstance(sliding, SlidingWindowClassifier)
    assert sliding.window == (32, 32) and sliding.stride == (4, 4)
    assert not any(isinstance(m, (nn.Linear, nn.AdaptiveAvgPool2d)) for m in sliding.modules())
    image = torch.randn(2, 1, 64, 48)
    assert sliding(image).shape == (2, 10, 9, 5)
    assert_windows_match(model, sliding, image, (32, 32), (4, 4))


def test_window_forms_and_original_untouched():
    model = lenet5(num_classes=3).eval()
    before = copy.deepcopy(model.state_dict())
    image = torch.randn(1, 1, 40, 36)
    with torch.no_grad():
        a = cnnkernels.convolutionalize(model)(image)
        b = cnnkernels.convolutionalize(model, 32)(image)
        c = cnnkernels.convolutionalize(model, [32, 32])(image)
    assert torch.equal(a, b) and torch.equal(a, c)
    sliding = cnnkernels.convolutionalize(model)
    with torch.no_grad():
        for p in sliding.parameters():
            p.zero_()
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert isinstance(model.classifier[0], nn.Linear) and isinstance(model.features[6], nn.AdaptiveAvgPool2d)


def test_divisible_pool_becomes_fixed_pool():
    # At 52x52 LeNet-5's adaptive pool gets 10x10 for 5x5: exactly a 2x2 pool of stride 2, so windows step 8 pixels.
    model = lenet5(num_classes=4).eval()
    sliding = cnnkernels.convolutionalize(model, 52)
    assert sliding.stride == (8, 8)
    assert any(type(m) is nn.AvgPool2d and m.kernel_size == (2, 2) for m in sliding.features)
    assert_windows_match(model, sliding, torch.randn(1, 1, 76, 60), (52, 52), (8, 8))


def test_sequential_with_bn1d_softmax_and_adaptive_max_pool():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, stride=2),
                          nn.AdaptiveMaxPool2d((None, 6)), nn.Flatten(), nn.Dropout(), nn.Linear(8 * 5 * 6, 16),
                          nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 4), nn.Softmax(dim=1))
    randomize_bn(model).eval()
    # 24x28 -> 22x26 -> 11x13 -> 5x6: the adaptive max pool is the identity there.
    sliding = cnnkernels.convolutionalize(model, (24, 28))
    assert sliding.stride == (4, 4)
    assert_windows_match(model, sliding, torch.randn(2, 3, 40, 37), (24, 28), (4, 4))


def test_alexnet_and_vgg_at_the_window():
    torch.manual_seed(2)
    with torch.device("meta"):
        model = alexnet(num_classes=5)
    model.features = alexnet().features  # the real feature extractor, a small head
    model.classifier = nn.Sequential(nn.Dropout(), nn.Linear(256 * 6 * 6, 32), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(32, 32), nn.ReLU(True), nn.Linear(32, 5))
    model.eval()
    vgg = small_vgg()
    for m, stride in ((model, (32, 32)), (vgg, (32, 32))):
        sliding = cnnkernels.convolutionalize(m)
        assert sliding.window == (224, 224) and sliding.stride == stride
        assert not hasattr(sliding, "avgpool")  # the identity at 224
        image = torch.randn(1, 3, 224, 224)
        with torch.no_grad():
            assert_close_fp32(sliding(image)[:, :, 0, 0], m(image))
            assert sliding(torch.randn(1, 3, 256, 320)).shape == (1, 5, 2, 4)


def test_torchvision_vgg_same_as_cnnkernels():
    tv_vgg = small_vgg(torchvision.models.VGG)
    ours = small_vgg()
    ours.load_state_dict(tv_vgg.state_dict())
    image = torch.randn(1, 3, 256, 288)
    with torch.no_grad():
        assert_close_fp32(cnnkernels.convolutionalize(ours)(image), cnnkernels.convolutionalize(tv_vgg)(image))


def test_non_identity_pool_is_refused():
    with pytest.raises(ValueError, match=r"features\.6 \(AdaptiveAvgPool2d to 5x5\) gets a 6x6 map at window "
                                         r"36x36: it is not the identity"):
        cnnkernels.convolutionalize(lenet5(), 36)
    with pytest.raises(ValueError, match=r"avgpool \(AdaptiveAvgPool2d to 7x7\) gets a 3x3 map"):
        cnnkernels.convolutionalize(small_vgg(), 96)
    # Squeeze-and-excitation pools its block's whole input: no window could be scored on its own.
    se = nn.Sequential(nn.Conv2d(3, 8, 3), SqueezeExcitation(8, 2), nn.Flatten(), nn.Linear(8 * 6 * 6, 2))
    with pytest.raises(ValueError, match=r"features\.1\.avgpool is an adaptive pool inside a SqueezeExcitation "
                                         r"block \(features\.1\)"):
        cnnkernels.convolutionalize(se, 8)


def test_bad_arguments():
    model = lenet5().eval()
    for window in (True, "32", 32.0, (32,), (32, 32, 1), (32, None)):
        with pytest.raises(TypeError, match="`window` must be an int or an \\(H, W\\) pair of ints"):
            cnnkernels.convolutionalize(model, window)
    with pytest.raises(ValueError, match="`window` must be positive"):
        cnnkernels.convolutionalize(model, (32, 0))
    with pytest.raises(ValueError, match="feature extractor fails on a 1x8x8 input"):
        cnnkernels.convolutionalize(model, 8)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        cnnkernels.convolutionalize("lenet5")
    with pytest.raises(TypeError, match="`model` must be an nn.Sequential with an nn.Flatten"):
        cnnkernels.convolutionalize(cnnkernels.models.resnet18(num_classes=2), 64)
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6 * 6, 3))
    with pytest.raises(ValueError, match="cannot tell which input size a Sequential was built for"):
        cnnkernels.convolutionalize(seq)
    with pytest.raises(ValueError, match="first Linear takes 72 features, but the feature map at the window is "
                                         "2x8x8 = 128"):
        cnnkernels.convolutionalize(seq, 10)
    with pytest.raises(ValueError, match="exactly one nn.Flatten"):
        cnnkernels.convolutionalize(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 3, 6)), 8)
    with pytest.raises(ValueError, match="head holds a LayerNorm"):
        cnnkernels.convolutionalize(nn.Sequential(*seq, nn.LayerNorm(3)), 8)
    with pytest.raises(ValueError, match="head holds a Softmax"):
        cnnkernels.convolutionalize(nn.Sequential(*seq, nn.Softmax(dim=-1)), 8)
    sliding = cnnkernels.convolutionalize(model)
    with pytest.raises(ValueError, match="`input` must be at least the window, 32x32, got 31x40"):
        sliding(torch.randn(1, 1, 31, 40))
    with pytest.raises(ValueError, match="`input` must be a 4-D"):
        sliding(torch.randn(1, 32, 32))
