"""The building blocks every model family uses: FusedSequential (runs of Conv2d [BatchNorm] [activation] as one
conv2d_act), ConvBNAct (torchvision's Conv2dNormActivation), AddReLU and Linear, and the helpers the family modules
share.

Like every cnnkernels.nn module: in training mode each runs its plain torch.nn submodules (BatchNorm with batch
statistics, the same autograd graph and the same results as the torch.nn / torchvision composition); in eval mode it
calls the fused ops with BatchNorm folded into the convolutions (cached, see cnnkernels/nn/_fold.py), through the same
wrappers as cnnkernels.<op>(), so cnnkernels.use_backend() and CNNKERNELS_CUDA_BACKEND choose their CUDA backend too.
When a module holds something the ops cannot run (GroupNorm, a BatchNorm without running statistics, an activation
activation_name does not know, a conv with padding_mode="reflect", ...) its eval mode runs the plain submodules
instead.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkernels import ops
from cnnkernels.nn._fold import (FoldCacheMixin, activation_name, conv_is_fusable, fold_conv_bn, is_batchnorm,
                                 is_foldable_norm, _FUSION)
from cnnkernels.ops._checks import pair

__all__ = ["FusedSequential", "ConvBNAct", "AddReLU", "Linear"]

IntOr2 = Union[int, Tuple[int, int]]


def conv_act(x: Tensor, conv: nn.Conv2d, w: Tensor, b: Optional[Tensor], act: str,
              residual: Optional[Tensor] = None) -> Tensor:
    return ops.conv2d_act(x, w, b, residual, conv.stride, conv.padding, conv.dilation, conv.groups, act)


def bias_or_zeros(w: Tensor, b: Optional[Tensor]) -> Tensor:
    return b if b is not None else w.new_zeros(w.shape[0])


def is_1x1(conv: nn.Conv2d) -> bool:
    return (tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1)


def is_same_odd(conv: nn.Conv2d) -> bool:
    """Odd kernel, padding K//2, dilation 1: the geometry the block ops assume for their KxK convs."""
    kh, kw = conv.kernel_size
    return (kh % 2 == 1 and kw % 2 == 1 and tuple(conv.padding) == (kh // 2, kw // 2)
            and tuple(conv.dilation) == (1, 1))


class FusedSequential(FoldCacheMixin, nn.Sequential):
    """An nn.Sequential whose eval mode runs every `Conv2d [BatchNorm2d] [ReLU|ReLU6|SiLU|Hardswish]` run of children
    as one conv2d_act with the BatchNorm folded. Children and their indices are unchanged (same state_dict as
    nn.Sequential); other children run as they are. Training mode is nn.Sequential.forward."""

    def describe_fusion(self):
        with torch.no_grad():
            fused = [step for step in (self._compute_fold() or ()) if len(step) > 1]
        return f"{len(fused)}x conv2d_act ({', '.join(step[3] for step in fused)})" if fused else None

    def conv_bn_pairs(self):
        keys = list(self._modules)
        for a, b in zip(keys, keys[1:]):
            conv, norm = self._modules[a], self._modules[b]
            if conv_is_fusable(conv) and norm is not None and is_batchnorm(norm):
                yield conv, self, b

    def _compute_fold(self):
        mods = list(self._modules.values())
        steps = []
        i = 0
        while i < len(mods):
            m = mods[i]
            if conv_is_fusable(m):
                j, norm = i + 1, None
                if j < len(mods) and (is_batchnorm(mods[j]) or type(mods[j]) is nn.Identity):
                    norm = mods[j]
                    j += 1
                act = "none"
                if j < len(mods) and activation_name(mods[j]) not in (None, "none"):
                    act = activation_name(mods[j])
                    j += 1
                if is_foldable_norm(norm) and (type(norm) is not nn.Identity and norm is not None or act != "none"):
                    w, b = fold_conv_bn(m, norm)
                    steps.append((m, w, b, act))
                    i = j
                    continue
            steps.append((m,))
            i += 1
        return tuple(steps)

    def forward(self, input):
        if self.training or not _FUSION["enabled"]:
            return super().forward(input)
        for step in self.folded():
            if len(step) == 1:
                input = step[0](input)
            else:
                conv, w, b, act = step
                input = conv_act(input, conv, w, b, act)
        return input


class ConvBNAct(FusedSequential):
    """Conv2d -> norm -> activation with the constructor and state_dict of torchvision's Conv2dNormActivation
    (children 0, 1, 2); eval mode is one conv2d_act with the norm folded. activation_layer: nn.ReLU, nn.ReLU6, nn.SiLU
    and nn.Hardswish are fused, anything else is applied after the fused conv+norm, None for none."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntOr2 = 3, stride: IntOr2 = 1,
                 padding: Optional[IntOr2] = None, groups: int = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
                 activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU, dilation: IntOr2 = 1,
                 inplace: Optional[bool] = True, bias: Optional[bool] = None) -> None:
        if padding is None:
            k, d = pair(kernel_size), pair(dilation)
            padding = ((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1])
            if isinstance(kernel_size, int) and isinstance(dilation, int):
                padding = padding[0]
        if bias is None:
            bias = norm_layer is None
        layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            params = {} if inplace is None else {"inplace": inplace}
            layers.append(activation_layer(**params))
        super().__init__(*layers)
        self.out_channels = out_channels


class AddReLU(nn.Module):
    """relu(x + residual): plain torch in training mode, the fused add_relu op in eval mode."""

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        if self.training or not _FUSION["enabled"]:
            return torch.relu(x + residual)
        return ops.add_relu(x, residual)


class Linear(FoldCacheMixin, nn.Linear):
    """nn.Linear (same constructor, attributes and state_dict). Eval mode on CPU, for a 2-D input of the weight's dtype
    with gradients off: the batch runs as one 1x1 conv2d_act over N pixels. A classifier at batch 1 is a matrix-vector
    product bound by reading the weight once (5 MB for MobileNet v2's), which the conv kernel splits over the threads
    by output channel. Everything else (training, autograd into the weight, other shapes or devices) is F.linear."""

    FUSED_DESCRIPTION = "conv2d_act (1x1 over the batch)"

    def _compute_fold(self):
        # A cached view, so the packed-weight cache sees the same tensor every call (a frozen hit requires that).
        return self.weight[:, :, None, None]

    def forward(self, input: Tensor) -> Tensor:
        w = self.weight
        if (not self.training and _FUSION["enabled"] and input.dim() == 2 and input.shape[0] > 0
                and input.shape[1] == self.in_features and input.device.type == "cpu" and w.device.type == "cpu"
                and input.dtype == w.dtype and w.dtype in (torch.float32, torch.bfloat16, torch.float16)
                and not (torch.is_grad_enabled() and (w.requires_grad or input.requires_grad))):
            w4 = self.folded()
            # [N, C] row-major is exactly a channels_last [1, C, 1, N] image: N pixels in one row. The output is then
            # channels_last too, i.e. a row-major [N, out_features], as F.linear returns it.
            n, c = input.shape
            x = input.contiguous().view(1, 1, n, c).permute(0, 3, 1, 2)
            y = torch.ops.cnnkernels.conv2d_act(x, w4, self.bias, None, [1, 1], [0, 0], [1, 1], 1, "none")
            return y[0, :, 0, :].t()
        return F.linear(input, w, self.bias)
