"""ResNet 18/34/50/101/152 as torchvision defines them (v1.5: stride on the Bottleneck's 3x3 conv; same state_dict),
built from the fused cnnkernels.nn BasicBlock / Bottleneck. Extra keyword arguments:

- in_channels: input channels (1 for grayscale).
- shortcut: "projection" (torchvision's 1x1 conv + norm wherever the shape changes, option B of He et al. 2015) or
  "zero_pad" (option A: parameter-free strided subsampling with zero channels appended; see ZeroPadShortcut).
- block / norm_layer: injected like torchvision's ResNet (any block with torchvision's constructor and `expansion`).
"""

from __future__ import annotations

from typing import Callable, List, Optional, Type, Union

import torch
from torch import Tensor, nn

from cnnkernels._optional import loaded_class
from cnnkernels.models._registry import register_model
from cnnkernels.nn import BasicBlock, Bottleneck, FoldCacheMixin, ZeroPadShortcut, conv1x1
from cnnkernels.nn._fold import _FUSION, conv_is_fusable, fold_conv_bn, is_foldable_norm
from cnnkernels.nn.fused import conv_act

__all__ = ["ResNet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d",
           "resnext101_32x8d", "wide_resnet50_2", "wide_resnet101_2"]


def _residual_block_types():
    """(block class, its last BatchNorm) for zero_init_residual; torchvision's blocks when they can be in the model."""
    types = [(Bottleneck, "bn3"), (BasicBlock, "bn2")]
    for name, bn in (("Bottleneck", "bn3"), ("BasicBlock", "bn2")):
        cls = loaded_class("torchvision.models.resnet", name)
        if cls is not None:
            types.append((cls, bn))
    return types


class ResNet(FoldCacheMixin, nn.Module):
    CONV_BN_PAIRS = (("conv1", "bn1"),)
    FUSED_DESCRIPTION = "stem conv+bn+relu -> conv2d_act"

    def __init__(self, block: Type[Union[BasicBlock, Bottleneck]], layers: List[int], num_classes: int = 1000,
                 zero_init_residual: bool = False, groups: int = 1, width_per_group: int = 64,
                 replace_stride_with_dilation: Optional[List[bool]] = None,
                 norm_layer: Optional[Callable[..., nn.Module]] = None, in_channels: int = 3,
                 shortcut: str = "projection") -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if shortcut not in ("projection", "zero_pad"):
            raise ValueError(f"shortcut must be 'projection' or 'zero_pad', got {shortcut!r}")
        self._norm_layer = norm_layer
        self.shortcut = shortcut
        self.inplanes = 64
        self.dilation = 1
        if replace_stride_with_dilation is None:
            replace_stride_with_dilation = [False, False, False]
        if len(replace_stride_with_dilation) != 3:
            raise ValueError("replace_stride_with_dilation should be None "
                             f"or a 3-element tuple, got {replace_stride_with_dilation}")
        self.groups = groups
        self.base_width = width_per_group
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = norm_layer(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2, dilate=replace_stride_with_dilation[0])
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=replace_stride_with_dilation[1])
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=replace_stride_with_dilation[2])
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * block.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, (nn.BatchNorm2d, nn.GroupNorm)):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
        if zero_init_residual:
            types = _residual_block_types()
            for m in self.modules():
                for t, bn in types:
                    if isinstance(m, t) and getattr(m, bn).weight is not None:
                        nn.init.constant_(getattr(m, bn).weight, 0)
                        break

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        norm_layer = self._norm_layer
        downsample = None
        previous_dilation = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        if stride != 1 or self.inplanes != planes * block.expansion:
            if self.shortcut == "projection":
                downsample = nn.Sequential(conv1x1(self.inplanes, planes * block.expansion, stride),
                                           norm_layer(planes * block.expansion))
            else:
                downsample = ZeroPadShortcut(self.inplanes, planes * block.expansion, stride)
        layers = [block(self.inplanes, planes, stride, downsample, self.groups, self.base_width, previous_dilation,
                        norm_layer)]
        self.inplanes = planes * block.expansion
        for _ in range(1, blocks):
            layers.append(block(self.inplanes, planes, groups=self.groups, base_width=self.base_width,
                                dilation=self.dilation, norm_layer=norm_layer))
        return nn.Sequential(*layers)

    # The stem conv1 -> bn1 -> relu is fused here (one conv2d_act in eval mode); the blocks fuse themselves.
    def _fold_scope(self):
        return (self.conv1, self.bn1, self.relu)

    def _compute_fold(self):
        if type(self.relu) is not nn.ReLU or not conv_is_fusable(self.conv1) or not is_foldable_norm(self.bn1):
            return None
        return fold_conv_bn(self.conv1, self.bn1)

    def _stem(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return conv_act(x, self.conv1, f[0], f[1], "relu")
        return self.relu(self.bn1(self.conv1(x)))

    def forward(self, x: Tensor) -> Tensor:
        x = self._stem(x)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


_DOC = ("; kwargs: num_classes=1000, in_channels=3, shortcut='projection'|'zero_pad', zero_init_residual, groups, "
        "width_per_group, replace_stride_with_dilation, norm_layer, block")


def _resnet(default_block, layers, **kwargs) -> ResNet:
    block = kwargs.pop("block", default_block)
    return ResNet(block, layers, **kwargs)


@register_model
def resnet18(**kwargs) -> ResNet:
    return _resnet(BasicBlock, [2, 2, 2, 2], **kwargs)


@register_model
def resnet34(**kwargs) -> ResNet:
    return _resnet(BasicBlock, [3, 4, 6, 3], **kwargs)


@register_model
def resnet50(**kwargs) -> ResNet:
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model
def resnet101(**kwargs) -> ResNet:
    return _resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model
def resnet152(**kwargs) -> ResNet:
    return _resnet(Bottleneck, [3, 8, 36, 3], **kwargs)


@register_model
def resnext50_32x4d(**kwargs) -> ResNet:
    kwargs.setdefault("groups", 32)
    kwargs.setdefault("width_per_group", 4)
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model
def resnext101_32x8d(**kwargs) -> ResNet:
    kwargs.setdefault("groups", 32)
    kwargs.setdefault("width_per_group", 8)
    return _resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


@register_model
def wide_resnet50_2(**kwargs) -> ResNet:
    kwargs.setdefault("width_per_group", 128)
    return _resnet(Bottleneck, [3, 4, 6, 3], **kwargs)


@register_model
def wide_resnet101_2(**kwargs) -> ResNet:
    kwargs.setdefault("width_per_group", 128)
    return _resnet(Bottleneck, [3, 4, 23, 3], **kwargs)


for _f in (resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d, wide_resnet50_2,
           wide_resnet101_2):
    _f.__doc__ = f"{_f.__name__} (torchvision's layout){_DOC}"
