"""LeNet-5 (LeCun et al. 1998, "Gradient-based learning applied to document recognition").

Layer sizes as in the paper: C1 6@5x5 (on a 32x32 input), S2 2x2 subsampling, C3 16@5x5, S4 2x2 subsampling,
C5 120@5x5, F6 84, output 10. The common modern variant: C3 fully connected to S2 (the paper's partial connection
table gives 1,516 parameters instead of 2,416), S2/S4 parameter-free average (or max) pooling (the paper's have a
trainable coefficient and bias per map, 12 + 32 parameters), and a linear output layer instead of the RBF units.
Parameters: 156 + 2,416 + 48,120 + 10,164 + 850 = 61,706 for 1 input channel and 10 classes.

An adaptive average pool to 5x5 before C5 (the identity on the paper's 32x32 input, where S4 is 5x5) lets the model
run on other input sizes, e.g. 28x28 MNIST without padding. `norm_layer` (e.g. nn.BatchNorm2d) puts a norm after each
of the three convolutions, which then have no bias; eval mode folds it into the fused conv.
"""

from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import Tensor, nn

from cnnkernels.models._registry import register_model
from cnnkernels.nn import FusedSequential

__all__ = ["LeNet5", "lenet5"]


class LeNet5(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 1, activation: str = "relu",
                 pool: str = "avg", norm_layer: Optional[Callable[[int], nn.Module]] = None) -> None:
        super().__init__()
        acts = {"relu": nn.ReLU, "tanh": nn.Tanh}
        pools = {"avg": nn.AvgPool2d, "max": nn.MaxPool2d}
        if activation not in acts:
            raise ValueError(f"activation must be 'relu' or 'tanh', got {activation!r}")
        if pool not in pools:
            raise ValueError(f"pool must be 'avg' or 'max', got {pool!r}")
        act, pl = acts[activation], pools[pool]

        def conv(cin: int, cout: int) -> List[nn.Module]:
            if norm_layer is None:
                return [nn.Conv2d(cin, cout, kernel_size=5), act()]
            return [nn.Conv2d(cin, cout, kernel_size=5, bias=False), norm_layer(cout), act()]

        self.features = FusedSequential(
            *conv(in_channels, 6),                               # C1: 6@28x28
            pl(kernel_size=2, stride=2),                         # S2: 6@14x14
            *conv(6, 16),                                        # C3: 16@10x10
            pl(kernel_size=2, stride=2),                         # S4: 16@5x5
            nn.AdaptiveAvgPool2d((5, 5)),                        # identity at 32x32 input
            *conv(16, 120),                                      # C5: 120@1x1
        )
        self.classifier = nn.Sequential(
            nn.Linear(120, 84), act(),                           # F6
            nn.Linear(84, num_classes),                          # output
        )

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


@register_model
def lenet5(**kwargs) -> LeNet5:
    """LeNet-5; kwargs: num_classes=10, in_channels=1, activation="relu"|"tanh", pool="avg"|"max", norm_layer=None."""
    return LeNet5(**kwargs)
