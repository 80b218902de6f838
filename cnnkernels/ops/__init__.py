"""The cnnkernels ops: each module holds one op's reference, fake kernel, autograd and Python wrapper."""

from cnnkernels.ops.add_relu import add_relu, add_relu_reference
from cnnkernels.ops.conv2d_act import conv2d_act, conv2d_act_reference

__all__ = ["add_relu", "add_relu_reference", "conv2d_act", "conv2d_act_reference"]
