"""cnnkernels.models: classic CNNs built from the fused cnnkernels.nn modules. Models torchvision also has use its
exact layout, so `model.load_state_dict(torchvision_model.state_dict())` works (strict) and the outputs match."""

from cnnkernels.models._registry import get_model, list_models, model_task
from cnnkernels.models._utils import _make_divisible
from cnnkernels.models.alexnet import AlexNet, alexnet
from cnnkernels.models.efficientnet import (EfficientNet, EfficientNetScaling, compound_scaling, efficientnet,
                                            efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3,
                                            efficientnet_b4, efficientnet_b5, efficientnet_b6, efficientnet_b7)
from cnnkernels.models.googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from cnnkernels.models.landmarks import LandmarkNet, landmark_net
from cnnkernels.models.lenet import LeNet5, lenet5
from cnnkernels.models.mobilenet import MobileNetV1, MobileNetV2, mobilenet_v1, mobilenet_v2
from cnnkernels.models.mobilenet_v3 import MobileNetV3, mobilenet_v3_large, mobilenet_v3_small
from cnnkernels.models.resnet import (ResNet, resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d,
                                      resnext101_32x8d, wide_resnet50_2, wide_resnet101_2)
from cnnkernels.models.unet import UNet, unet
from cnnkernels.models.vgg import (VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn)
from cnnkernels.models.yolo import YOLODetector, yolo_mobilenet_v2

__all__ = ["get_model", "list_models", "model_task", "AlexNet", "EfficientNet", "EfficientNetScaling", "GoogLeNet",
           "GoogLeNetOutputs", "LandmarkNet", "LeNet5", "MobileNetV1", "MobileNetV2", "MobileNetV3", "ResNet", "VGG",
           "alexnet", "compound_scaling", "efficientnet", "efficientnet_b0", "efficientnet_b1", "efficientnet_b2",
           "efficientnet_b3", "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7", "googlenet",
           "landmark_net", "lenet5", "mobilenet_v1", "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
           "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "resnext50_32x4d", "resnext101_32x8d",
           "wide_resnet50_2", "wide_resnet101_2", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
           "vgg19", "vgg19_bn", "UNet", "unet", "YOLODetector", "yolo_mobilenet_v2"]
