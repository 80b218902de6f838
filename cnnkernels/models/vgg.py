"""VGG 11/13/16/19 with and without BatchNorm, as torchvision defines them (same state_dict). `features` is a
FusedSequential: each conv [+BN] + ReLU is one conv2d_act in eval mode."""

from __future__ import annotations

from typing import Dict, List, Union

import torch
from torch import Tensor, nn

from cnnkernels.models._registry import register_model
from cnnkernels.nn import FusedSequential

__all__ = ["VGG", "make_layers", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


class VGG(nn.Module):
    def __init__(self, features: nn.Module, num_classes: int = 1000, init_weights: bool = True,
                 dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )
        if init_weights:
            for m in self.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.constant_(m.weight, 1)
                    nn.init.constant_(m.bias, 0)
                elif isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, 0, 0.01)
                    nn.init.constant_(m.bias, 0)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


def make_layers(cfg: List[Union[str, int]], batch_norm: bool = False, in_channels: int = 3) -> FusedSequential:
    layers: List[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers += [nn.MaxPool2d(kernel_size=2, stride=2)]
        else:
            conv2d = nn.Conv2d(in_channels, v, kernel_size=3, padding=1)
            if batch_norm:
                layers += [conv2d, nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
            else:
                layers += [conv2d, nn.ReLU(inplace=True)]
            in_channels = v
    return FusedSequential(*layers)


cfgs: Dict[str, List[Union[str, int]]] = {
    "A": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "B": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "D": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "E": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


def _vgg(cfg: str, batch_norm: bool, in_channels: int = 3, **kwargs) -> VGG:
    return VGG(make_layers(cfgs[cfg], batch_norm=batch_norm, in_channels=in_channels), **kwargs)


_DOC = "; kwargs: num_classes=1000, in_channels=3, dropout=0.5, init_weights=True. Needs inputs of at least 32x32."


@register_model
def vgg11(**kwargs) -> VGG:
    return _vgg("A", False, **kwargs)


@register_model
def vgg11_bn(**kwargs) -> VGG:
    return _vgg("A", True, **kwargs)


@register_model
def vgg13(**kwargs) -> VGG:
    return _vgg("B", False, **kwargs)


@register_model
def vgg13_bn(**kwargs) -> VGG:
    return _vgg("B", True, **kwargs)


@register_model
def vgg16(**kwargs) -> VGG:
    return _vgg("D", False, **kwargs)


@register_model
def vgg16_bn(**kwargs) -> VGG:
    return _vgg("D", True, **kwargs)


@register_model
def vgg19(**kwargs) -> VGG:
    return _vgg("E", False, **kwargs)


@register_model
def vgg19_bn(**kwargs) -> VGG:
    return _vgg("E", True, **kwargs)


for _f, _n in ((vgg11, "11"), (vgg11_bn, "11 with BatchNorm"), (vgg13, "13"), (vgg13_bn, "13 with BatchNorm"),
               (vgg16, "16"), (vgg16_bn, "16 with BatchNorm"), (vgg19, "19"), (vgg19_bn, "19 with BatchNorm")):
    _f.__doc__ = f"VGG-{_n} (torchvision's layout){_DOC}"
