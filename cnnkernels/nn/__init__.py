"""cnnkernels.nn: drop-in modules that run plain torch.nn in training mode and the fused cnnkernels ops, with
BatchNorm folded into the convolutions, in eval mode. One file per model family (fused.py: the blocks all of them use;
resnet.py, mobilenet.py, googlenet.py; mbconv.py: EfficientNet's and MobileNet v3's block), attribute names and
state_dicts as torchvision's, so torchvision weights load with strict=True; unet.py: U-Net's levels, which have no
torchvision twin and so plain names of their own; _fold.py: the folding and its cache."""

from cnnkernels.nn._fold import (FoldCacheMixin, activation_name, count_folds, fold_conv_bn, fusion,
                                fusion_enabled, gate_name, refresh_folds)
from cnnkernels.nn.fused import AddReLU, ConvBNAct, FusedSequential, Linear
from cnnkernels.nn.googlenet import BasicConv2d, InceptionAux, InceptionBlock
from cnnkernels.nn.mbconv import MBConv, SqueezeExcitation, StochasticDepth
from cnnkernels.nn.mobilenet import DepthwiseSeparableConv2d, InvertedResidual
from cnnkernels.nn.resnet import BasicBlock, Bottleneck, ZeroPadShortcut, conv1x1, conv3x3
from cnnkernels.nn.unet import UNetDown, UNetUp

__all__ = ["AddReLU", "BasicBlock", "BasicConv2d", "Bottleneck", "ConvBNAct", "DepthwiseSeparableConv2d",
           "FusedSequential", "InceptionAux", "InceptionBlock", "InvertedResidual", "Linear", "MBConv",
           "SqueezeExcitation", "StochasticDepth", "ZeroPadShortcut", "conv1x1", "conv3x3", "FoldCacheMixin",
           "activation_name", "count_folds", "fold_conv_bn", "fusion", "fusion_enabled", "gate_name", "refresh_folds",
           "UNetDown", "UNetUp"]
