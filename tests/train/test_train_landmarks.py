"""cnnkernels.train.landmarks and LandmarkNet: crop boxes and normalised crop coordinates round-trip, crops are cut
where the coordinates say, the data set's targets map back onto the scenes' landmarks, a short training run lowers the
loss, and `python -m cnnkernels.train landmarks` runs end to end (main(argv)) at a tiny size."""

import json

import pytest
import torch

pytest.importorskip("torchvision")
pytest.importorskip("tqdm")

from cnnkernels.models import LandmarkNet  # noqa: E402
from cnnkernels.train.__main__ import main  # noqa: E402
from cnnkernels.train.landmarks import (LandmarkCrops, crop_boxes, cut_crops, from_crop, landmark_loss,  # noqa: E402
                                        to_crop)
from cnnkernels.train.loop import fit  # noqa: E402
from cnnkernels.train.scenes import NUM_LANDMARKS, scene_split  # noqa: E402


def test_crop_coordinates_round_trip():
    # Power-of-two box sides: every division and product below is exact in float32.
    crops = torch.tensor([[3.0, 5.0, 35.0, 21.0], [0.5, 10.25, 8.5, 74.25]])
    points = torch.tensor([[[3.0, 5.0], [35.0, 21.0], [19.0, 13.0], [40.0, 1.0]],
                           [[0.5, 10.25], [4.5, 42.25], [8.5, 74.25], [-1.5, 0.25]]])
    norm = to_crop(points, crops)
    assert torch.equal(norm[0, :3], torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.5, 0.5]]))
    assert torch.equal(from_crop(norm, crops), points)
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(50, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 1 + torch.rand(50, 2, generator=g) * 60], dim=1)
    pts = torch.rand(50, NUM_LANDMARKS, 2, generator=g) * 160 - 20
    torch.testing.assert_close(from_crop(to_crop(pts, boxes), boxes), pts, rtol=1e-6, atol=1e-5)
    assert torch.equal(crop_boxes(torch.tensor([[10.0, 20.0, 30.0, 60.0]]), 0.25),
                       torch.tensor([[5.0, 10.0, 35.0, 70.0]]))


def test_cut_crops_follow_the_coordinates():
    # An image whose channels are each pixel centre's x and y: bilinear resampling of a linear ramp is exact, so
    # crop pixel (i, j) must read the scene position from_crop gives its centre ((j + 0.5) / S, (i + 0.5) / S).
    h, w, s = 40, 56, 12
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    image = torch.stack([xs, ys])[None].float()
    boxes = [torch.tensor([[4.0, 6.0, 28.0, 18.0], [10.3, 3.7, 51.1, 35.2]]), torch.tensor([[20.0, 9.0, 33.0, 30.0]])]
    out = cut_crops(torch.cat([image, image]), boxes, s)
    assert out.shape == (3, 2, s, s)
    centres = (torch.stack(torch.meshgrid(torch.arange(s), torch.arange(s), indexing="xy"), -1) + 0.5) / s
    expected = from_crop(centres.reshape(1, -1, 2).expand(3, -1, -1), torch.cat(boxes))
    torch.testing.assert_close(out.permute(0, 2, 3, 1).reshape(3, -1, 2), expected, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="one box tensor per image"):
        cut_crops(image, boxes, s)
    with pytest.raises(ValueError, match="`size` must be a positive int"):
        cut_crops(image, boxes[1], 0)
    with pytest.raises(ValueError, match=r"`crops` must be a floating-point \(M, 4\)"):
        cut_crops(image, torch.zeros(2, 3), s)
    with pytest.raises(ValueError, match="positive widths and heights"):
        to_crop(torch.zeros(1, 4, 2), torch.tensor([[5.0, 5.0, 5.0, 9.0]]))
    with pytest.raises(ValueError, match=r"`points` must be an \(M, K, 2\) tensor with M = 1"):
        to_crop(torch.zeros(2, 4, 2), torch.tensor([[0.0, 0.0, 4.0, 4.0]]))
    with pytest.raises(ValueError, match="`pad` must be a number >= 0"):
        crop_boxes(boxes[1], -0.1)


def test_dataset_targets_map_back_to_the_scenes():
    data = LandmarkCrops("val", 3, size=48, crop_size=16, pad=0.1)
    scenes = scene_split("val", 3, size=48)
    objects = [scenes[i] for i in range(3)]
    assert len(data) == sum(s.labels.shape[0] for s in objects)
    assert torch.equal(data.landmarks, torch.cat([s.landmarks for s in objects]))
    torch.testing.assert_close(from_crop(data.targets, data.crop_boxes), data.landmarks, rtol=1e-6, atol=1e-4)
    first = objects[0]
    torch.testing.assert_close(data.crops[:first.labels.shape[0]],
                               cut_crops(first.image[None], crop_boxes(first.boxes, 0.1), 16))
    crop, target = data[0]
    assert crop.shape == (3, 16, 16) and target.shape == (NUM_LANDMARKS, 2)
    jittered = LandmarkCrops("val", 3, size=48, crop_size=16, pad=0.1, jitter=0.1)
    assert not torch.equal(jittered.crop_boxes, data.crop_boxes)
    torch.testing.assert_close(from_crop(jittered.targets, jittered.crop_boxes), data.landmarks, rtol=1e-6, atol=1e-4)
    with pytest.raises(ValueError, match=r"`jitter` must be a number in \[0, 0.5\)"):
        LandmarkCrops("val", 1, jitter=0.5)


def test_landmark_net_shapes_and_bad_arguments():
    net = LandmarkNet(crop_size=16, width=4, hidden=8).eval()
    assert net(torch.rand(2, 3, 16, 16)).shape == (2, NUM_LANDMARKS, 2)
    with pytest.raises(ValueError, match="`crop_size` must be divisible by 8"):
        LandmarkNet(crop_size=20)
    with pytest.raises(ValueError, match="`width` must be a positive int"):
        LandmarkNet(width=0)
    with pytest.raises(ValueError, match=r"`x` must be \(N, C, 16, 16\) crops"):
        net(torch.rand(2, 3, 24, 24))


def test_short_training_lowers_the_loss():
    torch.manual_seed(0)
    data = LandmarkCrops("train", 40, size=48, crop_size=16)
    net = LandmarkNet(crop_size=16, width=8, hidden=32)
    loader = torch.utils.data.DataLoader(data, batch_size=16, shuffle=True)
    history = fit(net, loader, epochs=6, optimizer=torch.optim.Adam(net.parameters(), lr=1e-3),
                  loss_fn=landmark_loss, progress=False, seed=0)
    assert history[-1]["loss"] < 0.7 * history[0]["loss"], [round(r["loss"], 4) for r in history]


def test_command_end_to_end(tmp_path, capsys):
    argv = ["landmarks", "--train-scenes", "6", "--val-scenes", "3", "--epochs", "2", "--size", "48",
            "--crop-size", "16", "--width", "4", "--batch-size", "8", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "validation mean point error of cnnkernels.optimize(model)" in text and "wall time" in text
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["mean_pixels"] > 0 and 0 < metrics["mean_diagonal"] < 10 and len(metrics["history"]) == 2
    assert metrics["eager_max_difference_pixels"] < 1e-3
    assert main(argv[:-2] + ["--expect-error", "1e-9"]) == 1
    for bad in (["--crop-size", "20"], ["--jitter", "0.5"], ["--size", "16"]):
        with pytest.raises(SystemExit):
            main(["landmarks"] + bad)
