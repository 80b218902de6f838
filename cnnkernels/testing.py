"""Helpers for checking models built with cnnkernels, shared by the test suite and the benchmarks."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_bn"]


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Gives every BatchNorm of `model` random running statistics and affine parameters, in place; returns `model`.

    Fresh BatchNorms are identities (mean 0, var 1, gamma 1, beta 0), so a model straight from its constructor hides
    any bug in folding them into the convolutions. The draws come from a generator seeded with `seed`, so two models
    with the same layout get the same values."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model
