"""A valid call of every op, built from keyword overrides, and the window-parameter cases at the int32 cap.

The bad-input tests (the per-op files in tests/ops/, the catalogue in tests/reliability/) break one argument of a
valid call at a time: `<op>_args(**overrides)` gives the op's full positional arguments, in schema order, with
`overrides` (keyed by the schema's argument names) replaced. AT_WINDOW_MAX holds calls with stride, padding or
dilation at 2**31 - 1, which the CPU (catalogue), CUDA (emulated) and Triton (interpreter) tests all run.
"""

from __future__ import annotations

import torch

from support.helpers import schema_args


def add_relu_args(**overrides):
    values = dict(input=torch.randn(2, 3, 4, 5), residual=torch.randn(2, 3, 4, 5))
    values.update(overrides)
    return schema_args("add_relu", values)


def conv2d_act_args(**overrides):
    """Valid arguments (input [2, 4, 5, 5], 3x3 conv to 6 channels, 'same' padding), with `overrides` replaced."""
    values = dict(input=torch.randn(2, 4, 5, 5), weight=torch.randn(6, 4, 3, 3), bias=torch.randn(6),
                  residual=torch.randn(2, 6, 5, 5), stride=[1, 1], padding=[1, 1], dilation=[1, 1], groups=1,
                  activation="relu")
    values.update(overrides)
    return schema_args("conv2d_act", values)


def dwsep_conv2d_args(**overrides):
    """Valid arguments (input [2, 4, 5, 5], 3x3 depthwise 'same', 1x1 to 6 channels), with `overrides` replaced."""
    values = dict(input=torch.randn(2, 4, 5, 5), dw_weight=torch.randn(4, 1, 3, 3), dw_bias=torch.randn(4),
                  pw_weight=torch.randn(6, 4, 1, 1), pw_bias=torch.randn(6), stride=[1, 1], padding=[1, 1],
                  dilation=[1, 1], dw_activation="relu", pw_activation="relu6")
    values.update(overrides)
    return schema_args("dwsep_conv2d", values)


def inverted_residual_args(**overrides):
    """Valid arguments (input [2, 4, 5, 5], expand to 12, 3x3 depthwise, project back to 4, residual), with
    `overrides` replaced."""
    values = dict(input=torch.randn(2, 4, 5, 5), expand_weight=torch.randn(12, 4, 1, 1), expand_bias=torch.randn(12),
                  dw_weight=torch.randn(12, 1, 3, 3), dw_bias=torch.randn(12),
                  project_weight=torch.randn(4, 12, 1, 1), project_bias=torch.randn(4), stride=1, residual=True,
                  activation="relu6")
    values.update(overrides)
    return schema_args("inverted_residual", values)


def inception_block_args(**overrides):
    """Valid arguments (input [2, 4, 5, 5]; branches 3 | 2->5 (3x3) | 2->3 (5x5) | 2), with `overrides` replaced."""
    r = torch.randn
    values = dict(input=r(2, 4, 5, 5), w1=r(3, 4, 1, 1), b1=r(3), w2_reduce=r(2, 4, 1, 1), b2_reduce=r(2),
                  w2=r(5, 2, 3, 3), b2=r(5), w3_reduce=r(2, 4, 1, 1), b3_reduce=r(2), w3=r(3, 2, 5, 5), b3=r(3),
                  w4=r(2, 4, 1, 1), b4=r(2))
    values.update(overrides)
    return schema_args("inception_block", values)


def mbconv_args(**overrides):
    """Valid arguments (input [2, 4, 5, 5], expand to 12, 3x3 depthwise, SE 12 -> 3 -> 12, project back to 4,
    residual), with `overrides` replaced."""
    r = torch.randn
    values = dict(input=r(2, 4, 5, 5), expand_weight=r(12, 4, 1, 1), expand_bias=r(12), dw_weight=r(12, 1, 3, 3),
                  dw_bias=r(12), se_reduce_weight=r(3, 12, 1, 1), se_reduce_bias=r(3), se_expand_weight=r(12, 3, 1, 1),
                  se_expand_bias=r(12), project_weight=r(4, 12, 1, 1), project_bias=r(4), stride=1, residual=True,
                  activation="silu", se_activation="silu", se_gate="sigmoid")
    values.update(overrides)
    return schema_args("mbconv", values)


def up_concat_conv_args(**overrides):
    """Valid arguments (input [2, 4, 3, 5] upsampled to 6 channels, skip [2, 5, 6, 10], 3x3 conv of the 11 to 7
    channels), with `overrides` replaced."""
    r = torch.randn
    values = dict(input=r(2, 4, 3, 5), skip=r(2, 5, 6, 10), up_weight=r(4, 6, 2, 2), up_bias=r(6),
                  weight=r(7, 11, 3, 3), bias=r(7), activation="relu")
    values.update(overrides)
    return schema_args("up_concat_conv", values)


def _boxes(n):
    xy = torch.rand(n, 2) * 20
    return torch.cat((xy, xy + 1 + torch.rand(n, 2) * 10), 1)


def box_iou_args(**overrides):
    values = dict(boxes1=_boxes(5), boxes2=_boxes(3))
    values.update(overrides)
    return schema_args("box_iou", values)


def nms_args(**overrides):
    values = dict(boxes=_boxes(6), scores=torch.rand(6), iou_threshold=0.5)
    values.update(overrides)
    return schema_args("nms", values)


def batched_nms_args(**overrides):
    values = dict(boxes=_boxes(6), scores=torch.rand(6), idxs=torch.tensor([0, 1, 0, 2, 1, 0]), iou_threshold=0.5)
    values.update(overrides)
    return schema_args("batched_nms", values)


def yolo_postprocess_args(**overrides):
    """Valid arguments (2 images, 3 anchors, 2 classes, a 4x5 grid on 32x40 pixels), with `overrides` replaced."""
    values = dict(head=torch.randn(2, 3 * 7, 4, 5), anchors=torch.tensor([[4.0, 6.0], [10.0, 8.0], [20.0, 16.0]]),
                  image_size=[32, 40], score_threshold=0.25, iou_threshold=0.45, max_detections=10)
    values.update(overrides)
    return schema_args("yolo_postprocess", values)


VALID = {"add_relu": add_relu_args, "conv2d_act": conv2d_act_args, "dwsep_conv2d": dwsep_conv2d_args,
         "inverted_residual": inverted_residual_args, "inception_block": inception_block_args,
         "mbconv": mbconv_args, "up_concat_conv": up_concat_conv_args, "box_iou": box_iou_args, "nms": nms_args,
         "batched_nms": batched_nms_args, "yolo_postprocess": yolo_postprocess_args}


def call_args(op_name, **overrides):
    """The valid arguments of `op_name` with `overrides` replaced."""
    return VALID[op_name](**overrides)


# Stride, padding and dilation are capped at 2**31 - 1 (the CUDA and Triton kernels hold them in 32 bits): a
# ValueError above (the catalogue's test_window_param_over_int32), exact results at the cap (these cases, as overrides
# of call_args).
WINDOW_MAX = 2 ** 31 - 1
M = WINDOW_MAX
AT_WINDOW_MAX = [
    # one output row: only row 0 is read
    ("conv2d_act", dict(stride=[M, 1], residual=None)),
    # 3x3 output: padding, then the image's first rows/columns, then padding again
    ("conv2d_act", dict(stride=[M, M], padding=[M, M], residual=None)),
    ("conv2d_act", dict(stride=[M, 2], padding=[M, 1], weight=torch.randn(4, 1, 3, 3), groups=4, bias=torch.randn(4),
                        residual=None)),  # the depthwise kernel
    # a two-tap kernel M apart: every tap of every output pixel falls in the padding
    ("conv2d_act", dict(weight=torch.randn(6, 4, 2, 3), padding=[2 ** 30, 1], dilation=[M, 1], residual=None)),
    ("dwsep_conv2d", dict(stride=[M, M], padding=[M, M])),
    ("dwsep_conv2d", dict(stride=[1, M], padding=[1, M], dw_weight=torch.randn(4, 1, 5, 5))),
    ("inverted_residual", dict(stride=M, residual=False)),
    ("inverted_residual", dict(stride=M, residual=False, dw_weight=torch.randn(12, 1, 5, 5))),
]
