"""A landmark head: a small CNN that regresses K points of the object shown in a crop, as (x, y) normalised to the
crop ((0, 0) its top-left corner, (1, 1) its bottom-right; points outside the crop are allowed, the output is
linear). Three stages of two ConvBNAct 3x3 convolutions each (the second of stride 2) take a crop_size x crop_size
crop to a (crop_size / 8)^2 map, flattened into two Linear layers: keeping the map, not pooling it, keeps where
things are, which is what the points need. Eval mode runs every conv + BatchNorm + ReLU as one fused conv2d_act.
cnnkernels.train.landmarks cuts the crops from scenes and trains it."""

from __future__ import annotations

from typing import Callable, Optional

from torch import Tensor, nn

from cnnkernels.nn import ConvBNAct

__all__ = ["LandmarkNet", "landmark_net"]


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"LandmarkNet: `{name}` must be a positive int, got {value!r}")
    return value


class LandmarkNet(nn.Module):
    """num_points (x, y) pairs per crop: input (N, in_channels, crop_size, crop_size), output (N, num_points, 2),
    normalised to the crop. crop_size must be divisible by 8; width is the first stage's channels (doubling per
    stage), hidden the first Linear's outputs; norm_layer (None for none) follows every convolution."""

    def __init__(self, num_points: int = 4, in_channels: int = 3, crop_size: int = 48, width: int = 16,
                 hidden: int = 128, norm_layer: Optional[Callable[[int], nn.Module]] = nn.BatchNorm2d) -> None:
        super().__init__()
        for name, value in (("num_points", num_points), ("in_channels", in_channels), ("crop_size", crop_size),
                            ("width", width), ("hidden", hidden)):
            _check_positive(name, value)
        if crop_size % 8:
            raise ValueError(f"LandmarkNet: `crop_size` must be divisible by 8 (three stride-2 stages), "
                             f"got {crop_size}")
        self.num_points, self.crop_size = num_points, crop_size
        layers = []
        cin = in_channels
        for stage in range(3):
            cout = width << stage
            layers += [ConvBNAct(cin, cout, 3, norm_layer=norm_layer),
                       ConvBNAct(cout, cout, 3, stride=2, norm_layer=norm_layer)]
            cin = cout
        self.features = nn.Sequential(*layers)
        side = crop_size // 8
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, hidden), nn.ReLU(inplace=True),
                                  nn.Linear(hidden, num_points * 2))
        # Start at the crop's centre, where the points are on average, rather than at its corner.
        nn.init.zeros_(self.head[-1].weight)
        nn.init.constant_(self.head[-1].bias, 0.5)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[-2:] != (self.crop_size, self.crop_size):
            raise ValueError(f"LandmarkNet: `x` must be (N, C, {self.crop_size}, {self.crop_size}) crops, "
                             f"got shape {tuple(x.shape)}")
        return self.head(self.features(x)).view(x.shape[0], self.num_points, 2)


def landmark_net(**kwargs) -> LandmarkNet:
    """LandmarkNet; kwargs: num_points=4, in_channels=3, crop_size=48, width=16, hidden=128,
    norm_layer=nn.BatchNorm2d."""
    return LandmarkNet(**kwargs)
