"""cnnkernels.models: classic CNNs built from the fused cnnkernels.nn modules. Models torchvision also has use its
exact layout, so `model.load_state_dict(torchvision_model.state_dict())` works (strict) and the outputs match."""

from cnnkernels.models._registry import get_model, list_models
from cnnkernels.models._utils import _make_divisible
from cnnkernels.models.alexnet import AlexNet, alexnet
from cnnkernels.models.googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from cnnkernels.models.lenet import LeNet5, lenet5
from cnnkernels.models.mobilenet import MobileNetV1, MobileNetV2, mobilenet_v1, mobilenet_v2
from cnnkernels.models.resnet import (ResNet, resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d,
                                      resnext101_32x8d, wide_resnet50_2, wide_resnet101_2)
from cnnkernels.models.vgg import (VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn)

__all__ = ["get_model", "list_models", "AlexNet", "GoogLeNet", "GoogLeNetOutputs", "LeNet5", "MobileNetV1",
           "MobileNetV2", "ResNet", "VGG", "alexnet", "googlenet", "lenet5", "mobilenet_v1", "mobilenet_v2",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "wide_resnet50_2", "wide_resnet101_2", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
           "vgg19", "vgg19_bn"]
