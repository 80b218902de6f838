"""The cnnkernels ops: each module holds one op's reference, fake kernel, autograd and Python wrapper."""

from cnnkernels.ops import _flops  # noqa: F401  (registers the ops' MAC formulas with torch.utils.flop_counter)
from cnnkernels.ops.add_relu import add_relu, add_relu_reference
from cnnkernels.ops.boxes import (batched_nms, batched_nms_reference, box_iou, box_iou_reference, nms,
                                  nms_reference)
from cnnkernels.ops.conv2d_act import conv2d_act, conv2d_act_reference
from cnnkernels.ops.dwsep_conv2d import dwsep_conv2d, dwsep_conv2d_reference
from cnnkernels.ops.inception_block import inception_block, inception_block_reference
from cnnkernels.ops.inverted_residual import inverted_residual, inverted_residual_reference
from cnnkernels.ops.mbconv import mbconv, mbconv_reference
from cnnkernels.ops.up_concat_conv import up_concat_conv, up_concat_conv_reference
from cnnkernels.ops.yolo_postprocess import yolo_decode, yolo_postprocess, yolo_postprocess_reference

__all__ = ["add_relu", "add_relu_reference", "conv2d_act", "conv2d_act_reference", "dwsep_conv2d",
           "dwsep_conv2d_reference", "inception_block", "inception_block_reference", "inverted_residual",
           "inverted_residual_reference", "mbconv", "mbconv_reference", "box_iou", "box_iou_reference", "nms",
           "nms_reference", "batched_nms", "batched_nms_reference", "yolo_decode", "yolo_postprocess",
           "yolo_postprocess_reference", "up_concat_conv", "up_concat_conv_reference"]
