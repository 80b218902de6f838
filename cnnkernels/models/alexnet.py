"""AlexNet as torchvision defines it (the one-GPU variant of Krizhevsky et al. 2014, "One weird trick"): same
state_dict. The conv+ReLU runs of `features` are fused conv2d_act calls in eval mode."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from cnnkernels.models._registry import register_model
from cnnkernels.nn import FusedSequential

__all__ = ["AlexNet", "alexnet"]


class AlexNet(nn.Module):
    def __init__(self, num_classes: int = 1000, dropout: float = 0.5, in_channels: int = 3) -> None:
        super().__init__()
        self.features = FusedSequential(
            nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(256 * 6 * 6, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model
def alexnet(**kwargs) -> AlexNet:
    """AlexNet; kwargs: num_classes=1000, dropout=0.5, in_channels=3. Needs inputs of at least 63x63."""
    return AlexNet(**kwargs)
