"""cnnkernels.train.averaging: MultiCrop (10crop / 5crop / mirror) and Ensemble, plain and optimize()d."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as F

import cnnkernels
from cnnkernels.models import lenet5
from cnnkernels.train.averaging import Ensemble, MultiCrop


class _Counting(nn.Module):
    """A small position-sensitive classifier (a linear layer over all pixels) that counts its calls and the batch
    sizes it saw."""

    def __init__(self, in_features, classes=5, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(in_features, classes)
        self.calls = []

    def forward(self, x):
        self.calls.append(x.shape[0])
        return self.fc(x.flatten(1))


def _manual(model, crops):
    """Mean softmax over crops run one at a time."""
    with torch.no_grad():
        return torch.stack([torch.softmax(model(c), dim=1) for c in crops]).mean(0)


@pytest.mark.parametrize("image_hw, crop", [((12, 14), (8, 9)), ((11, 11), 6), ((9, 10), (9, 10))])
def test_ten_crop_equals_torchvision_ten_crop(image_hw, crop):
    # (12, 14) -> (8, 9): W - w = 5 is odd, so the mirrored centre crop is not the mirror of the centre crop.
    torch.manual_seed(1)
    x = torch.randn(3, 2, *image_hw)
    size = [crop, crop] if isinstance(crop, int) else list(crop)
    h, w = size
    model = _Counting(2 * h * w)
    mc = MultiCrop(model, crop)
    with torch.no_grad():
        out = mc(x)
    assert model.calls == [30]
    expected = _manual(model, F.ten_crop(x, size))
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out.sum(1), torch.ones(3), atol=1e-6, rtol=0)
    # The batch is crop-major: crop j of image i is row j * N + i.
    crops = F.ten_crop(x, size)
    batch = mc.crop_batch(x)
    for j in range(10):
        assert torch.equal(batch[j * 3:(j + 1) * 3], crops[j])


def test_five_crop_equals_torchvision_five_crop():
    torch.manual_seed(2)
    x = torch.randn(4, 3, 13, 10)
    model = _Counting(3 * 7 * 8)
    out = MultiCrop(model, (7, 8), crops="5crop")(x)
    assert model.calls == [20]
    torch.testing.assert_close(out, _manual(model, F.five_crop(x, [7, 8])), atol=1e-6, rtol=1e-5)
    # Not the same as 10 crops: the mirrors carry information for a position-sensitive model.
    assert (out - MultiCrop(model, (7, 8))(x)).abs().max() > 1e-3


def test_mirror_full_image_and_centre_crop():
    torch.manual_seed(3)
    x = torch.randn(2, 1, 6, 7)
    model = _Counting(42)
    out = MultiCrop(model, None, crops="mirror")(x)
    assert model.calls == [4]
    torch.testing.assert_close(out, _manual(model, [x, x.flip(-1)]), atol=1e-6, rtol=1e-5)
    # With a crop: the centre crop and the centre crop of the mirrored image.
    model2 = _Counting(4 * 4)
    out2 = MultiCrop(model2, 4, crops="mirror")(x)
    expected = _manual(model2, [F.center_crop(x, [4, 4]), F.center_crop(F.horizontal_flip(x), [4, 4])])
    torch.testing.assert_close(out2, expected, atol=1e-6, rtol=1e-5)
    assert MultiCrop(model2, 4, crops="mirror").num_crops == 2


def test_multicrop_with_optimized_lenet():
    torch.manual_seed(0)
    net = lenet5().eval()
    fast = cnnkernels.optimize(net)
    x = torch.randn(1, 1, 36, 36)
    with torch.no_grad():
        ref = MultiCrop(net, 32)(x)
        out = MultiCrop(fast, 32)(x)
        also = cnnkernels.optimize(MultiCrop(net, 32).eval())(x)
        manual = _manual(net, F.ten_crop(x, [32, 32]))
    assert out.shape == (1, 10)
    torch.testing.assert_close(ref, manual, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(also, ref, atol=1e-5, rtol=1e-4)


def test_multicrop_half_logits_give_float32_probabilities():
    model = _Counting(2 * 4 * 4).to(torch.float64)
    x = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    assert MultiCrop(model, 4)(x).dtype == torch.float64
    model16 = _Counting(2 * 4 * 4).to(torch.bfloat16)
    out = MultiCrop(model16, 4)(x.to(torch.bfloat16))
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.sum(1), torch.ones(2), atol=1e-5, rtol=0)


def test_multicrop_bad_arguments():
    model = _Counting(16)
    with pytest.raises(ValueError, match="crops.*'10crop', '5crop', 'mirror'.*'3crop'"):
        MultiCrop(model, 4, crops="3crop")
    with pytest.raises(ValueError, match=r"crop_size.*\(8, 8\).*larger than the image size \(6, 7\)"):
        MultiCrop(model, 8)(torch.zeros(1, 1, 6, 7))
    with pytest.raises(ValueError, match=r"4-D \(N, C, H, W\).*\(1, 6, 7\)"):
        MultiCrop(model, 4)(torch.zeros(1, 6, 7))
    with pytest.raises(ValueError, match="crop_size.*None.*only allowed with crops='mirror'"):
        MultiCrop(model, None)
    with pytest.raises(ValueError, match=r"crop_size.*positive.*\(0, 4\)"):
        MultiCrop(model, (0, 4))
    with pytest.raises(TypeError, match="crop_size.*int, a pair of ints"):
        MultiCrop(model, 4.0)
    with pytest.raises(TypeError, match="model.*nn.Module.*function"):
        MultiCrop(lambda x: x, 4)
    with pytest.raises(ValueError, match=r"\(batch, classes\) logits.*20 crops.*\(20, 1, 4, 4\)"):
        MultiCrop(nn.Identity(), 4, crops="10crop")(torch.zeros(2, 1, 5, 5))


# ------------------------------------------------------------------------------------------------------- Ensemble

def test_ensemble_is_the_mean_of_softmaxes():
    x = torch.randn(4, 2, 3, 3)
    models = [_Counting(18, seed=s) for s in range(3)]
    with torch.no_grad():
        out = Ensemble(models)(x)
        expected = torch.stack([torch.softmax(m(x), 1) for m in models]).mean(0)
    torch.testing.assert_close(out, expected, atol=1e-7, rtol=1e-6)
    assert all(m.calls == [4, 4] for m in models)  # once by the ensemble, once above
    with torch.no_grad():
        one = Ensemble([models[0]])(x)
    torch.testing.assert_close(one, torch.softmax(models[0](x), 1), atol=1e-7, rtol=0)
    assert isinstance(Ensemble(models).models, nn.ModuleList)


def test_ensemble_takes_probability_members_as_they_are():
    x = torch.randn(2, 1, 6, 6)
    a, b, c = (_Counting(16, seed=s) for s in range(3))
    mca, mcb = MultiCrop(a, 4), MultiCrop(b, 4, crops="5crop")
    with torch.no_grad():
        out = Ensemble([mca, mcb])(x)
        expected = (mca(x) + mcb(x)) / 2
        nested = Ensemble([Ensemble([mca, mcb]), MultiCrop(c, 4)])(x)
        nested_expected = (expected + MultiCrop(c, 4)(x)) / 2
    # Applying softmax again to the MultiCrop outputs would flatten them towards uniform: a visible difference.
    torch.testing.assert_close(out, expected, atol=1e-7, rtol=1e-6)
    assert (torch.softmax(expected, 1) - expected).abs().max() > 1e-3
    torch.testing.assert_close(nested, nested_expected, atol=1e-7, rtol=1e-6)


def test_ensemble_of_optimized_models():
    nets = []
    for s in range(2):
        torch.manual_seed(s)
        nets.append(lenet5().eval())
    x = torch.randn(3, 1, 32, 32)
    with torch.no_grad():
        ref = Ensemble(nets)(x)
        out = Ensemble([cnnkernels.optimize(n) for n in nets])(x)
        whole = cnnkernels.optimize(Ensemble(nets).eval())(x)
        crops = Ensemble([MultiCrop(cnnkernels.optimize(n), 28) for n in nets])(x)
        crops_ref = torch.stack([MultiCrop(n, 28)(x) for n in nets]).mean(0)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(whole, ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(crops, crops_ref, atol=1e-5, rtol=1e-4)


def test_ensemble_bad_arguments():
    with pytest.raises(ValueError, match="`models`.*at least one model"):
        Ensemble([])
    with pytest.raises(TypeError, match=r"`models\[1\]`.*nn.Module.*str"):
        Ensemble([nn.Identity(), "net"])
    with pytest.raises(TypeError, match="`models`.*sequence.*single Linear.*list"):
        Ensemble(nn.Linear(2, 2))
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"output shapes differ.*models\[0\] \(Linear\): \(2, 3\).*"
                                         r"models\[1\] \(Linear\): \(2, 5\)"):
        Ensemble([nn.Linear(4, 3), nn.Linear(4, 5)])(x)
    with pytest.raises(ValueError, match=r"\(N, classes\).*models\[0\] \(Flatten\) returned \(8,\)"):
        Ensemble([nn.Flatten(0)])(x)
