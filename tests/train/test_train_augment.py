"""cnnkernels.train.augment: PCAColor / pca_color / rgb_pca, default_augmentation, DataLoader workers, the
augmentation grid and its command."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2

import cnnkernels
from cnnkernels.train.augment import (IMAGENET_EIGVAL, IMAGENET_EIGVEC, PCAColor, default_augmentation, main,
                                      pca_color, rgb_pca, save_augmentation_grid)


def _orthogonal(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    return q


# ---------------------------------------------------------------------------------------------------- pca_color

def test_pca_color_adds_eigvec_times_alpha_eigval_to_every_pixel():
    eigval = torch.tensor([0.3, 0.05, 0.01])
    eigvec = _orthogonal(0).float()
    alpha = torch.tensor([0.5, -1.0, 2.0])
    image = torch.rand(3, 5, 7)
    out = pca_color(image, alpha, eigval, eigvec)
    shift = eigvec @ (alpha * eigval)
    torch.testing.assert_close(out, image + shift[:, None, None], atol=1e-6, rtol=0)


def test_pca_color_uint8_is_scaled_by_255_rounded_and_clamped():
    alpha = torch.tensor([1.0, 0.0, 0.0])
    shift = torch.tensor(IMAGENET_EIGVEC)[:, 0] * IMAGENET_EIGVAL[0]  # first principal axis, all negative entries
    image = torch.full((3, 2, 2), 100, dtype=torch.uint8)
    out = pca_color(image, alpha)
    assert out.dtype == torch.uint8
    expected = (100 + shift * 255).round().to(torch.uint8)  # about 100 - 31
    assert torch.equal(out, expected[:, None, None].expand(3, 2, 2))
    assert int(out[0, 0, 0]) < 75
    # A large shift saturates at 0 and 255 instead of wrapping around.
    dark = pca_color(torch.full((3, 1, 1), 10, dtype=torch.uint8), torch.tensor([10.0, 0.0, 0.0]))
    bright = pca_color(torch.full((3, 1, 1), 250, dtype=torch.uint8), torch.tensor([-10.0, 0.0, 0.0]))
    assert dark.flatten().tolist() == [0, 0, 0]
    assert bright.flatten().tolist() == [255, 255, 255]


def test_pca_color_batch_uses_one_alpha_per_image_and_keeps_tv_image():
    alpha = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-1.0, 2.0, 0.5]])
    image = tv_tensors.Image(torch.zeros(3, 3, 4, 4))
    out = pca_color(image, alpha)
    assert isinstance(out, tv_tensors.Image)
    shifts = (alpha * torch.tensor(IMAGENET_EIGVAL)) @ torch.tensor(IMAGENET_EIGVEC).T
    torch.testing.assert_close(out.as_subclass(torch.Tensor), shifts[:, :, None, None].expand(3, 3, 4, 4),
                               atol=1e-7, rtol=0)


# ----------------------------------------------------------------------------------------------------- PCAColor

@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32, torch.float64, torch.float16])
def test_pca_color_alphastd_zero_is_identity(dtype):
    torch.manual_seed(0)
    image = (torch.rand(2, 3, 5, 6) * 255).to(dtype) if dtype == torch.uint8 else torch.rand(2, 3, 5, 6).to(dtype)
    state = torch.get_rng_state()
    out = PCAColor(0.0)(image)
    assert torch.equal(out, image) and out.dtype == dtype
    assert torch.equal(torch.get_rng_state(), state)  # no draw either


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_pca_color_keeps_float_dtype_and_matches_float32(dtype):
    image = torch.rand(3, 4, 4)
    torch.manual_seed(5)
    ref = PCAColor(0.5)(image)
    torch.manual_seed(5)
    out = PCAColor(0.5)(image.to(dtype))
    assert out.dtype == dtype
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float64: 1e-6}[dtype]
    torch.testing.assert_close(out.float(), ref, atol=tol, rtol=0)
    assert (ref - image).abs().max() > 0.01  # the shift is really there


def test_pca_color_seeded_by_global_rng_and_differs_per_image():
    batch = torch.zeros(6, 3, 2, 2)
    torch.manual_seed(1)
    a = PCAColor()(batch)
    torch.manual_seed(1)
    b = PCAColor()(batch)
    c = PCAColor()(batch)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    shifts = a[:, :, 0, 0]
    # One shift per image, the same on every pixel of the image, different between images.
    assert torch.equal(a, shifts[:, :, None, None].expand_as(a))
    assert torch.cdist(shifts, shifts).add(torch.eye(6)).min() > 1e-4


def test_pca_color_shift_has_the_principal_axes_covariance():
    eigval = torch.tensor([0.4, 0.1, 0.02])
    eigvec = _orthogonal(3).float()
    alphastd = 0.2
    n = 20000
    torch.manual_seed(2)
    out = PCAColor(alphastd, eigval, eigvec)(torch.zeros(n, 3, 1, 1, dtype=torch.float64))
    shifts = out[:, :, 0, 0]
    emp = torch.cov(shifts.T)
    expected = eigvec.double() @ torch.diag((alphastd * eigval.double()) ** 2) @ eigvec.double().T
    # In the eigenbasis: variances (alphastd * eigval)^2 on the diagonal (4.5% ~ 6 standard errors), nothing off it.
    proj = eigvec.double().T @ emp @ eigvec.double()
    std = (alphastd * eigval.double())
    torch.testing.assert_close(proj.diagonal().sqrt(), std, rtol=0.03, atol=0)
    corr = proj / torch.outer(proj.diagonal().sqrt(), proj.diagonal().sqrt())
    assert (corr - torch.eye(3, dtype=torch.float64)).abs().max() < 0.05
    torch.testing.assert_close(emp, expected, rtol=0, atol=0.05 * float(expected.abs().max()))
    assert shifts.mean(0).abs().max() < 4 * float(std.max()) / n ** 0.5


def test_pca_color_composes_and_leaves_boxes_and_labels_alone():
    image = tv_tensors.Image(torch.zeros(3, 8, 8))
    boxes = tv_tensors.BoundingBoxes(torch.tensor([[1.0, 2.0, 5.0, 6.0]]), format="XYXY", canvas_size=(8, 8))
    mask = tv_tensors.Mask(torch.ones(8, 8, dtype=torch.uint8))
    sample = {"image": image, "boxes": boxes, "mask": mask, "label": 3}
    torch.manual_seed(0)
    out = v2.Compose([v2.RandomHorizontalFlip(p=0.0), PCAColor(0.1)])(sample)
    assert isinstance(out["image"], tv_tensors.Image)
    assert out["image"].abs().max() > 1e-4
    assert torch.equal(out["boxes"], boxes) and torch.equal(out["mask"], mask) and out["label"] == 3
    # With an Image in the sample, other plain tensors are data, not images: untouched.
    extra = torch.zeros(3, 8, 8)
    res = PCAColor(0.1)(image, extra)
    assert torch.equal(res[1], extra)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pca_color_cuda_matches_cpu_formula():
    image = torch.rand(4, 3, 5, 5, device="cuda")
    torch.manual_seed(0)
    out = PCAColor(0.3)(image)
    assert out.is_cuda
    shifts = (out - image)[:, :, 0, 0].cpu()
    alpha = (shifts @ torch.tensor(IMAGENET_EIGVEC)) / torch.tensor(IMAGENET_EIGVAL)
    torch.testing.assert_close(pca_color(image.cpu(), alpha), out.cpu(), atol=1e-5, rtol=0)
    u8 = PCAColor(0.3)((image * 255).to(torch.uint8))
    assert u8.is_cuda and u8.dtype == torch.uint8


def test_pca_color_bad_arguments():
    with pytest.raises(ValueError, match="alphastd.*>= 0"):
        PCAColor(-0.1)
    with pytest.raises(ValueError, match="alphastd.*finite"):
        PCAColor(float("nan"))
    with pytest.raises(TypeError, match="alphastd"):
        PCAColor("0.1")
    with pytest.raises(ValueError, match=r"eigval.*shape \(3,\).*\(4,\)"):
        PCAColor(eigval=[1.0, 2.0, 3.0, 4.0])
    with pytest.raises(ValueError, match=r"eigvec.*shape \(3, 3\).*\(3,\)"):
        PCAColor(eigvec=[1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="eigval.*>= 0"):
        PCAColor(eigval=[0.1, -0.2, 0.0])
    with pytest.raises(ValueError, match=r"\(3, H, W\).*got shape \(1, 4, 4\).*pca=False"):
        PCAColor()(torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\).*got shape \(2, 2, 3, 4, 4\)"):
        PCAColor()(torch.zeros(2, 2, 3, 4, 4))
    with pytest.raises(TypeError, match="uint8.*floating point.*torch.int32"):
        PCAColor()(torch.zeros(3, 4, 4, dtype=torch.int32))
    with pytest.raises(TypeError, match="PIL.*ToImage"):
        PCAColor()(PIL.Image.new("RGB", (4, 4)))
    with pytest.raises(ValueError, match=r"alpha.*shape \(2, 3\).*\(3,\)"):
        pca_color(torch.zeros(2, 3, 4, 4), torch.zeros(3))


# ------------------------------------------------------------------------------------------------------ rgb_pca

def _gaussian_images(n_images=40, side=50, seed=0):
    """Images whose pixels are drawn from a Gaussian with a known covariance, and that covariance's eigen pairs."""
    q = _orthogonal(seed + 10)
    eigval = torch.tensor([0.04, 0.01, 0.002], dtype=torch.float64)
    cov = q @ torch.diag(eigval) @ q.T
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n_images * side * side, 3, generator=g, dtype=torch.float64)
    px = z @ torch.linalg.cholesky(cov).T + torch.tensor([0.5, 0.45, 0.4], dtype=torch.float64)
    images = px.reshape(n_images, side, side, 3).permute(0, 3, 1, 2).float().contiguous()
    return images, eigval, q


def test_rgb_pca_recovers_a_known_covariance():
    images, eigval, q = _gaussian_images()
    val, vec = rgb_pca(images)
    assert val.dtype == torch.float32 and vec.shape == (3, 3)
    assert bool((val[:-1] >= val[1:]).all())
    torch.testing.assert_close(val.double(), eigval, rtol=0.02, atol=0)
    # Eigenvectors match up to sign; the sign makes each column's largest-magnitude entry positive.
    dots = (vec.double().T @ q).diagonal().abs()
    assert dots.min() > 0.999
    idx = vec.abs().argmax(0)
    assert bool((vec[idx, torch.arange(3)] > 0).all())
    torch.testing.assert_close(vec.T @ vec, torch.eye(3), atol=1e-5, rtol=0)


def test_rgb_pca_streaming_sources_agree():
    images, _, _ = _gaussian_images(n_images=12, side=20, seed=1)
    val, vec = rgb_pca(images)
    labels = torch.arange(12)
    for source in (list(images), TensorDataset(images, labels), DataLoader(TensorDataset(images, labels),
                                                                           batch_size=5),
                   (x for x in images), [images[:7], images[7:]]):
        v2_, e2 = rgb_pca(source)
        torch.testing.assert_close(v2_, val, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(e2, vec, atol=1e-5, rtol=0)


def test_rgb_pca_map_style_dataset_without_iter():
    images, _, _ = _gaussian_images(n_images=6, side=10, seed=2)

    class Items(Dataset):
        def __len__(self):
            return 6

        def __getitem__(self, i):  # never raises IndexError: iteration must go by len()
            return images[i % 6], 0

    torch.testing.assert_close(rgb_pca(Items())[0], rgb_pca(images)[0], atol=1e-7, rtol=1e-6)


def test_rgb_pca_uint8_is_scaled_to_unit_range():
    g = torch.Generator().manual_seed(0)
    u8 = torch.randint(0, 256, (4, 3, 16, 16), generator=g, dtype=torch.uint8)
    val_u8, vec_u8 = rgb_pca(u8)
    val_f, vec_f = rgb_pca(u8.float() / 255)
    torch.testing.assert_close(val_u8, val_f, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(vec_u8, vec_f, atol=1e-5, rtol=0)
    # Independent uniform channels on [0, 1]: every eigenvalue near 1/12.
    torch.testing.assert_close(val_u8, torch.full((3,), 1 / 12), rtol=0.1, atol=0)
    # PIL images go through the same path.
    pil = [PIL.Image.fromarray(x.permute(1, 2, 0).numpy()) for x in u8]
    torch.testing.assert_close(rgb_pca(pil)[0], val_u8, atol=1e-7, rtol=1e-5)


def test_rgb_pca_bad_arguments():
    with pytest.raises(ValueError, match="at least 2 pixels.*got 0"):
        rgb_pca([])
    with pytest.raises(ValueError, match=r"\(3, H, W\).*\(1, 4, 4\)"):
        rgb_pca([torch.zeros(1, 4, 4)])
    with pytest.raises(ValueError, match=r"`images`.*\(N, 3, H, W\).*\(4, 4\)"):
        rgb_pca(torch.zeros(4, 4))
    with pytest.raises(TypeError, match="uint8 or floating point.*torch.int64"):
        rgb_pca(torch.zeros(3, 4, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="`images` must be a tensor, an iterable or a Dataset.*int"):
        rgb_pca(5)
    with pytest.raises(TypeError, match="tensor or PIL image.*str"):
        rgb_pca(["a"])


# ------------------------------------------------------------------------------------------ default_augmentation

def test_default_augmentation_pipeline_and_output():
    t = default_augmentation(16)
    kinds = [type(x) for x in t.transforms]
    assert kinds[:5] == [v2.ToImage, v2.RandomResizedCrop, v2.RandomHorizontalFlip, v2.RandomRotation,
                         v2.RandomAffine]
    assert isinstance(t.transforms[5], v2.RandomApply)
    assert isinstance(t.transforms[5].transforms[0], v2.ElasticTransform)
    assert kinds[6:] == [v2.ColorJitter, PCAColor]
    assert t.transforms[4].shear is not None
    assert [type(x) for x in default_augmentation(16, pca=False, elastic=False).transforms][-1] is v2.ColorJitter

    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (3, 30, 40), generator=g, dtype=torch.uint8)
    torch.manual_seed(0)
    a = t(image)
    torch.manual_seed(0)
    b = t(image)
    c = t(image)
    assert a.shape == (3, 16, 16) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert default_augmentation((12, 20))(image).shape == (3, 12, 20)
    pil = PIL.Image.fromarray(image.permute(1, 2, 0).numpy())
    assert default_augmentation(8)(pil).shape == (3, 8, 8)


def test_default_augmentation_grayscale_needs_pca_false():
    gray = torch.rand(1, 20, 20)
    out = default_augmentation(12, pca=False)(gray)
    assert out.shape == (1, 12, 12) and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    with pytest.raises(ValueError, match="pca=False"):
        default_augmentation(12)(gray)


def test_default_augmentation_bad_size():
    with pytest.raises(ValueError, match="size.*positive.*\\(0, 0\\)"):
        default_augmentation(0)
    with pytest.raises(TypeError, match="size.*int or a pair of ints"):
        default_augmentation("16")
    with pytest.raises(TypeError, match="size.*int or a pair of ints"):
        default_augmentation((16, 16, 3))


# -------------------------------------------------------------------------------------------- DataLoader workers

class _AugmentedItems(Dataset):
    """A black float image through PCAColor (so the item is its colour shift) and a uint8 image through
    default_augmentation, plus the id of the worker that made them."""

    def __init__(self, n):
        self.n = n
        self.pca = PCAColor(0.1)
        self.aug = default_augmentation(12)
        self.photo = torch.arange(3 * 16 * 16, dtype=torch.int64).remainder(251).to(torch.uint8).view(3, 16, 16)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        info = get_worker_info()
        return (self.pca(torch.zeros(3, 2, 2))[:, 0, 0], self.aug(self.photo).as_subclass(torch.Tensor),
                -1 if info is None else info.id)


def _load(seed):
    torch.manual_seed(seed)
    loader = DataLoader(_AugmentedItems(8), batch_size=2, num_workers=2,
                        generator=torch.Generator().manual_seed(seed))
    shifts, augs, workers = zip(*loader)
    return torch.cat(shifts), torch.cat(augs), torch.cat(workers)


def test_augmentation_runs_in_dataloader_workers_reproducibly():
    shifts, augs, workers = _load(0)
    assert set(workers.tolist()) == {0, 1}
    assert shifts.shape == (8, 3) and augs.shape == (8, 3, 12, 12)
    # Every item, whichever worker made it, got its own alpha and its own augmentation.
    assert torch.cdist(shifts, shifts).add(torch.eye(8)).min() > 1e-5
    flat = augs.flatten(1).float()
    assert torch.cdist(flat, flat).add(torch.eye(8) * 1e9).min() > 0
    again = _load(0)
    assert torch.equal(again[0], shifts) and torch.equal(again[1], augs)
    other = _load(1)
    assert not torch.equal(other[0], shifts)


# ------------------------------------------------------------------------------------------------- the grid

def _png_size(path):
    with PIL.Image.open(path) as im:
        assert im.format == "PNG"
        return im.size, np.asarray(im.convert("RGB"))


def test_save_augmentation_grid_layout_and_determinism(tmp_path):
    g = torch.Generator().manual_seed(0)
    square = torch.randint(0, 256, (3, 16, 16), generator=g, dtype=torch.uint8)
    wide = torch.randint(0, 256, (3, 20, 30), generator=g, dtype=torch.uint8)
    t = default_augmentation(16)
    torch_state, py_state = torch.get_rng_state(), random.getstate()
    grid = save_augmentation_grid(tmp_path / "sub" / "a.grid", [square, wide], t, samples=3, seed=4)
    assert torch.equal(torch.get_rng_state(), torch_state) and random.getstate() == py_state
    size, pixels = _png_size(tmp_path / "sub" / "a.grid")
    assert size == (4 * 18 + 2, 2 * 18 + 2) and grid.shape == (3, 38, 74)
    # The PNG holds the returned grid, and its first tile is the (already tile-sized) original.
    expected = grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    assert np.array_equal(pixels, expected)
    assert np.array_equal(pixels[2:18, 2:18], square.permute(1, 2, 0).numpy())
    # The wide original is letterboxed: black bands above and below, picture in the middle.
    first = grid[:, 20:36, 2:18]
    assert float(first[:, :2].abs().max()) == 0.0 and float(first[:, 7].abs().max()) > 0
    # Augmented tiles differ from each other; the same seed gives the same grid, another seed another one.
    tiles = [grid[:, 2:18, 2 + 18 * j:18 + 18 * j] for j in range(4)]
    assert all(not torch.equal(tiles[i], tiles[j]) for i in range(4) for j in range(i + 1, 4))
    assert torch.equal(save_augmentation_grid(tmp_path / "b.png", [square, wide], t, samples=3, seed=4), grid)
    assert not torch.equal(save_augmentation_grid(tmp_path / "c.png", [square, wide], t, samples=3, seed=5), grid)


def test_save_augmentation_grid_grayscale_batch(tmp_path):
    batch = torch.rand(2, 1, 10, 10)
    grid = save_augmentation_grid(tmp_path / "g.png", batch, default_augmentation(10, pca=False), samples=1)
    assert grid.shape == (3, 2 * 12 + 2, 2 * 12 + 2)
    # Grayscale tiles are shown as gray: the three channels equal.
    assert torch.equal(grid[0], grid[1]) and torch.equal(grid[1], grid[2])
    torch.testing.assert_close(grid[0, 2:12, 2:12], batch[0, 0], atol=0, rtol=0)


def test_save_augmentation_grid_bad_arguments(tmp_path):
    img = torch.zeros(3, 8, 8)
    t = default_augmentation(8)
    with pytest.raises(ValueError, match="samples.*>= 1.*0"):
        save_augmentation_grid(tmp_path / "x.png", img, t, samples=0)
    with pytest.raises(ValueError, match="`images`.*at least one image"):
        save_augmentation_grid(tmp_path / "x.png", [], t)
    with pytest.raises(ValueError, match=r"`images`.*\(C, H, W\).*\(8, 8\)"):
        save_augmentation_grid(tmp_path / "x.png", torch.zeros(8, 8), t)
    with pytest.raises(TypeError, match="transform.*callable"):
        save_augmentation_grid(tmp_path / "x.png", img, "flip")
    with pytest.raises(TypeError, match="seed.*int"):
        save_augmentation_grid(tmp_path / "x.png", img, t, seed=1.5)
    with pytest.raises(ValueError, match=r"C = 1 or 3.*\(2, 8, 8\)"):
        save_augmentation_grid(tmp_path / "x.png", torch.zeros(2, 8, 8), lambda x: x)
    assert not (tmp_path / "x.png").exists()


# ------------------------------------------------------------------------------------------------- the command

def test_main_writes_grid_of_sample_photos(tmp_path, capsys):
    out = tmp_path / "grid.png"
    assert main(["--out", str(out), "--size", "24", "--samples", "2", "--images", "astronaut", "coffee"]) == 0
    size, pixels = _png_size(out)
    assert size == (3 * 26 + 2, 2 * 26 + 2)
    assert pixels[2:26, 2:26].std() > 10  # a photograph, not a blank tile
    assert "80x54" in capsys.readouterr().out


def test_command_line(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(cnnkernels.__file__).resolve().parents[1]))
    out = tmp_path / "cli.png"
    cmd = [sys.executable, "-m", "cnnkernels.train.augment", "--out", str(out), "--size", "16", "--samples", "1",
           "--seed", "3", "--images", "chelsea"]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert _png_size(out)[0] == (2 * 18 + 2, 18 + 2)
    assert "wrote" in res.stdout


@pytest.mark.parametrize("args, message", [(["--size", "0"], "--size must be >= 1"),
                                           (["--samples", "0"], "--samples must be >= 1"),
                                           (["--images", "lena"], "invalid choice: 'lena'")])
def test_main_bad_arguments(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(["--out", str(tmp_path / "x.png")] + args)
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
