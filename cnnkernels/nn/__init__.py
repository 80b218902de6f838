"""cnnkernels.nn: drop-in modules that run plain torch.nn in training mode and the fused torch.ops.cnnkernels ops,
with BatchNorm folded into the convolutions, in eval mode."""

from cnnkernels.nn._fold import (FoldCacheMixin, activation_name, count_folds, fold_conv_bn, fusion,
                                fusion_enabled, refresh_folds)
from cnnkernels.nn.modules import (AddReLU, BasicBlock, BasicConv2d, Bottleneck, ConvBNAct, DepthwiseSeparableConv2d,
                                   FusedSequential, InceptionAux, InceptionBlock, InvertedResidual, Linear,
                                   ZeroPadShortcut, conv1x1, conv3x3)

__all__ = ["AddReLU", "BasicBlock", "BasicConv2d", "Bottleneck", "ConvBNAct", "DepthwiseSeparableConv2d",
           "FusedSequential", "InceptionAux", "InceptionBlock", "InvertedResidual", "Linear", "ZeroPadShortcut",
           "conv1x1", "conv3x3", "FoldCacheMixin", "activation_name", "count_folds", "fold_conv_bn", "fusion",
           "fusion_enabled", "refresh_folds"]
