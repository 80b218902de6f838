"""U-Net (Ronneberger, Fischer and Brox 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation").

The paper's layout with padded convolutions: a stem level (two 3x3 conv + ReLU, width `base_width`), `depth`
contracting levels (2x2 max pool, two 3x3 conv + ReLU, width doubling each level), `depth` expanding levels (2x2
stride-2 transposed conv halving the width, concatenation with the contracting path's output of the same size, skip
first, two 3x3 conv + ReLU) and a 1x1 classifier to `num_classes` logits per pixel. The paper's unpadded 3x3 convs
shrink every level and need cropped skips; with padding 1 the output has the input's size, for any input whose height
and width are divisible by 2**depth (each pool halves them). depth=4, base_width=64 is the paper's network:
31,031,810 parameters for 3 input channels and 2 classes (batch_norm=False).

`batch_norm=True` puts a BatchNorm after every 3x3 conv (the convs then have no bias), a common modern variant;
`norm_layer` injects another norm, `down_block` / `up_block` other level modules (constructed as UNetDown(in, out,
pool=..., norm_layer=...) and UNetUp(in, skip, out, norm_layer=...)). Eval mode runs the fused ops (see
cnnkernels.nn.unet); the state_dict keys are this module's own (stem, down.i, up.i, classifier).
"""

from __future__ import annotations

from typing import Callable, List, Optional

from torch import Tensor, nn

from cnnkernels.models._registry import register_model
from cnnkernels.nn.unet import UNetDown, UNetUp

__all__ = ["UNet", "unet"]


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"UNet: `{name}` must be an int >= {minimum}, got {value!r}")
    return value


class UNet(nn.Module):
    """U-Net with padded convolutions (see the module docstring). forward(x): x (N, in_channels, H, W) with H and W
    divisible by 2**depth -> per-pixel logits (N, num_classes, H, W)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2, depth: int = 4, base_width: int = 64,
                 batch_norm: bool = False, norm_layer: Optional[Callable[..., nn.Module]] = None,
                 down_block: Optional[Callable[..., nn.Module]] = None,
                 up_block: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        _check_int(in_channels, "in_channels", 1)
        _check_int(num_classes, "num_classes", 1)
        _check_int(depth, "depth", 1)
        _check_int(base_width, "base_width", 1)
        if norm_layer is None and batch_norm:
            norm_layer = nn.BatchNorm2d
        down_block = UNetDown if down_block is None else down_block
        up_block = UNetUp if up_block is None else up_block
        widths = [base_width * 2 ** i for i in range(depth + 1)]
        self.depth = depth
        self.stem = down_block(in_channels, widths[0], pool=False, norm_layer=norm_layer)
        self.down = nn.ModuleList(down_block(widths[i], widths[i + 1], pool=True, norm_layer=norm_layer)
                                  for i in range(depth))
        # up[0] is the deepest level: from the bottom width back to base_width, one level per contracting level.
        self.up = nn.ModuleList(up_block(widths[i + 1], widths[i], widths[i], norm_layer=norm_layer)
                                for i in reversed(range(depth)))
        self.classifier = nn.Conv2d(widths[0], num_classes, kernel_size=1)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                # The paper's initialisation: Gaussian with std sqrt(2 / fan-in).
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"UNet: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = 2 ** self.depth
        if h % m or w % m:
            raise ValueError(f"UNet: input height and width must be divisible by 2**depth = {m} (depth "
                             f"{self.depth}), got {h}x{w}")
        x = self.stem(x)
        skips: List[Tensor] = [x]
        for block in self.down:
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottom level's output is x itself, not a skip
        for block in self.up:
            x = block(x, skips.pop())
        return self.classifier(x)


@register_model(task="segmentation")
def unet(in_channels: int = 3, num_classes: int = 2, depth: int = 4, base_width: int = 64, batch_norm: bool = False,
         **kwargs) -> UNet:
    """U-Net with padded 3x3 convs (output size == input size, H and W divisible by 2**depth); kwargs: norm_layer,
    down_block, up_block. The defaults are the paper's network (2 classes)."""
    return UNet(in_channels=in_channels, num_classes=num_classes, depth=depth, base_width=base_width,
                batch_norm=batch_norm, **kwargs)
