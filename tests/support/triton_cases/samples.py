"""Argument builders and geometries for the Triton op tests (interpreter modules and tests/triton_ops/test_triton_gpu.py).

Each `<op>_args(geom, dtype, channels_last, device)` returns the op's full positional argument tuple; weights are
scaled down so fp16 outputs stay small. Geometries use odd sizes (7x7, 5x9 maps, 3 or 13 channels), stride 2, and
one "multi-tile" case large enough to span several tiles of every block dimension in the first (interpreter) config.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from cnnkernels._library import op_names
from support.samples import DETECTION_OPS

# The conv ops' cases. Of the detection ops only box_iou has a Triton kernel; its cases are in
# tests/triton_ops/test_triton_box_iou.py (interpreter only so far).
OPS = tuple(op for op in op_names() if op not in DETECTION_OPS)


def make(shape: Sequence[int], dtype: torch.dtype = torch.float32, channels_last: bool = False, scale: float = 1.0,
         device="cpu", gen: Optional[torch.Generator] = None) -> torch.Tensor:
    t = (torch.randn(tuple(shape), generator=gen) * scale).to(device=device, dtype=dtype)
    if channels_last and len(shape) == 4:
        t = t.contiguous(memory_format=torch.channels_last)
    return t


# ---- add_relu: shapes
ADD_RELU = {"2x3x7x7": (2, 3, 7, 7), "1x13x5x9": (1, 13, 5, 9)}


def add_relu_args(shape, dtype=torch.float32, channels_last=False, device="cpu"):
    return (make(shape, dtype, channels_last, device=device), make(shape, dtype, channels_last, device=device))


# ---- conv2d_act: N, C, H, W, Cout, (kH, kW), stride, padding, dilation, groups, bias, residual, activation
CONV2D_ACT = {
    "3x3-c3-7x7": (2, 3, 7, 7, 13, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, True, "relu"),
    "3x3-s2-c13-5x9": (1, 13, 5, 9, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1, True, False, "relu6"),
    "1x1-5x9": (2, 3, 5, 9, 5, (1, 1), (1, 1), (0, 0), (1, 1), 1, False, True, "none"),
    "depthwise-s2": (1, 13, 7, 7, 13, (3, 3), (2, 2), (1, 1), (1, 1), 13, True, True, "relu6"),
    "depthwise-x2": (1, 4, 5, 9, 8, (3, 3), (1, 1), (1, 1), (1, 1), 4, False, False, "relu"),
    "grouped-dilated": (1, 6, 7, 7, 12, (3, 3), (1, 1), (2, 2), (2, 2), 3, False, False, "relu"),
    "1x3-s2x1-pad0x1": (1, 3, 5, 9, 7, (1, 3), (2, 1), (0, 1), (1, 1), 1, True, False, "none"),
    "3x3-s2-silu": (1, 6, 7, 7, 5, (3, 3), (2, 2), (1, 1), (1, 1), 1, True, False, "silu"),
    "depthwise-hardswish": (1, 8, 5, 9, 8, (5, 5), (1, 1), (2, 2), (1, 1), 8, True, True, "hardswish"),
    "multi-tile": (1, 40, 5, 5, 70, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, True, "relu"),
}


def conv2d_act_args(geom, dtype=torch.float32, channels_last=False, device="cpu", res_channels_last=None):
    N, C, H, W, Cout, (kh, kw), stride, padding, dilation, groups, bias, residual, act = geom
    x = make((N, C, H, W), dtype, channels_last, device=device)
    w = make((Cout, C // groups, kh, kw), dtype, scale=0.3, device=device)
    b = make((Cout,), dtype, device=device) if bias else None
    Ho = (H + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (W + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    rcl = channels_last if res_channels_last is None else res_channels_last
    r = make((N, Cout, Ho, Wo), dtype, rcl, device=device) if residual else None
    return (x, w, b, r, list(stride), list(padding), list(dilation), groups, act)


# ---- dwsep_conv2d: N, C, H, W, Cout, (kH, kW), stride, padding, dilation, dw_bias, pw_bias, dw_act, pw_act
DWSEP_CONV2D = {
    "c3-7x7": (2, 3, 7, 7, 13, (3, 3), (1, 1), (1, 1), (1, 1), True, True, "relu", "relu6"),
    "c13-5x9-s2": (1, 13, 5, 9, 8, (3, 3), (2, 2), (1, 1), (1, 1), False, True, "relu6", "none"),
    "5x5": (1, 13, 7, 7, 3, (5, 5), (1, 1), (2, 2), (1, 1), True, False, "none", "relu"),
    "s2x1-dil2x1": (1, 6, 5, 9, 7, (3, 3), (2, 1), (2, 1), (2, 1), True, True, "relu", "relu"),
    "s2-relu6": (2, 13, 7, 7, 13, (3, 3), (2, 2), (1, 1), (1, 1), True, True, "relu6", "relu6"),
    "silu-hardswish": (2, 6, 5, 9, 7, (3, 3), (1, 1), (1, 1), (1, 1), True, True, "silu", "hardswish"),
    "multi-tile": (1, 40, 5, 5, 70, (3, 3), (1, 1), (1, 1), (1, 1), True, True, "relu", "none"),
}


def dwsep_conv2d_args(geom, dtype=torch.float32, channels_last=False, device="cpu"):
    N, C, H, W, Cout, (kh, kw), stride, padding, dilation, dw_bias, pw_bias, dw_act, pw_act = geom
    return (make((N, C, H, W), dtype, channels_last, device=device),
            make((C, 1, kh, kw), dtype, scale=0.4, device=device),
            make((C,), dtype, device=device) if dw_bias else None,
            make((Cout, C, 1, 1), dtype, scale=0.3, device=device),
            make((Cout,), dtype, device=device) if pw_bias else None,
            list(stride), list(padding), list(dilation), dw_act, pw_act)


# ---- inverted_residual: N, C, H, W, hidden (None: no expansion), Cout, k, stride, residual, activation, expand_bias
INVERTED_RESIDUAL = {
    "expand-c3-7x7-res": (2, 3, 7, 7, 18, 3, 3, 1, True, "relu6", True),
    "expand-c13-5x9-s2": (1, 13, 5, 9, 20, 8, 3, 2, False, "relu", True),
    "noexpand-c13-res": (1, 13, 7, 7, None, 13, 3, 1, True, "relu6", False),
    "noexpand-5x9-s2": (1, 13, 5, 9, None, 7, 3, 2, False, "none", False),
    "expand-5x5-nobias": (1, 5, 7, 7, 16, 5, 5, 1, True, "relu", False),
    "expand-5x5-s2-hardswish": (1, 6, 7, 7, 16, 9, 5, 2, False, "hardswish", True),
    "noexpand-silu-res": (2, 7, 5, 9, None, 7, 3, 1, True, "silu", False),
    "multi-tile": (1, 20, 5, 5, 40, 36, 3, 1, False, "relu6", True),
}


def inverted_residual_args(geom, dtype=torch.float32, channels_last=False, device="cpu"):
    N, C, H, W, hid, Cout, k, stride, residual, act, expand_bias = geom
    expand = hid is not None
    hid = hid if expand else C
    return (make((N, C, H, W), dtype, channels_last, device=device),
            make((hid, C, 1, 1), dtype, scale=0.4, device=device) if expand else None,
            make((hid,), dtype, device=device) if expand and expand_bias else None,
            make((hid, 1, k, k), dtype, scale=0.4, device=device), make((hid,), dtype, device=device),
            make((Cout, hid, 1, 1), dtype, scale=0.3, device=device), make((Cout,), dtype, device=device),
            stride, residual, act)


# ---- inception_block: N, C, H, W, c1, c2_reduce, c2, k2 (kH, kW), c3_reduce, c3, k3, c4
INCEPTION_BLOCK = {
    "c3-7x7": (2, 3, 7, 7, 4, 3, 5, (3, 3), 2, 3, (5, 5), 6),
    "c13-5x9": (1, 13, 5, 9, 8, 6, 7, (3, 3), 3, 4, (5, 5), 3),
    "1x1-and-3x5": (1, 3, 5, 9, 2, 2, 3, (1, 1), 2, 2, (3, 5), 2),
    "multi-tile": (1, 40, 5, 5, 36, 20, 34, (3, 3), 8, 16, (5, 5), 33),
}


def inception_block_args(geom, dtype=torch.float32, channels_last=False, device="cpu"):
    N, C, H, W, c1, c2r, c2, k2, c3r, c3, k3, c4 = geom

    def wb(cout, cin, k):
        return make((cout, cin, *k), dtype, scale=0.3, device=device), make((cout,), dtype, device=device)

    return (make((N, C, H, W), dtype, channels_last, device=device), *wb(c1, C, (1, 1)), *wb(c2r, C, (1, 1)),
            *wb(c2, c2r, k2), *wb(c3r, C, (1, 1)), *wb(c3, c3r, k3), *wb(c4, C, (1, 1)))


# ---- mbconv: N, C, H, W, hidden (None: no expansion), k, stride, squeeze (None: no SE), Cout, residual, activation,
# se_activation, se_gate. "multi-tile" spans several tiles of every block dimension of the three SE-path kernels in
# their first config (pixel tiles, hidden, input and output channel blocks), "noexpand-17x17" several blocks of the SE
# kernel's loop over the pixel tiles' sums (more than 8 tiles), more cheaply without the expansion.
MBCONV = {
    "x12-k3-se3-res-silu": (2, 4, 7, 7, 12, 3, 1, 3, 4, True, "silu", "silu", "sigmoid"),
    "x20-k5-s2-se5-hardswish": (1, 6, 5, 9, 20, 5, 2, 5, 7, False, "hardswish", "relu", "hardsigmoid"),
    "noexpand-k3-se2-res-silu": (1, 8, 7, 7, None, 3, 1, 2, 8, True, "silu", "silu", "sigmoid"),
    "noexpand-k5-s2-se1-relu": (2, 5, 5, 9, None, 5, 2, 1, 6, False, "relu", "hardswish", "hardsigmoid"),
    "x16-k3-nose-res-hardswish": (2, 5, 7, 7, 16, 3, 1, None, 5, True, "hardswish", "relu", "sigmoid"),
    "noexpand-k5-s2-nose-relu6": (1, 13, 5, 9, None, 5, 2, None, 6, False, "relu6", "relu", "sigmoid"),
    "noexpand-17x17-se2-res-hardswish": (1, 8, 17, 17, None, 3, 1, 2, 8, True, "hardswish", "relu", "hardsigmoid"),
    "multi-tile": (1, 20, 9, 9, 40, 3, 1, 10, 36, False, "silu", "silu", "sigmoid"),
}


def mbconv_args(geom, dtype=torch.float32, channels_last=False, device="cpu"):
    N, C, H, W, hid, k, stride, squeeze, Cout, residual, act, se_act, se_gate = geom
    expand = hid is not None
    hid = hid if expand else C

    def pw(cout, cin, scale):
        return make((cout, cin, 1, 1), dtype, scale=scale, device=device), make((cout,), dtype, device=device)

    se = (*pw(squeeze, hid, 0.4), *pw(hid, squeeze, 0.4)) if squeeze is not None else (None,) * 4
    return (make((N, C, H, W), dtype, channels_last, device=device), *(pw(hid, C, 0.4) if expand else (None, None)),
            make((hid, 1, k, k), dtype, scale=0.4, device=device), make((hid,), dtype, device=device), *se,
            *pw(Cout, hid, 0.3), stride, residual, act, se_act, se_gate)


# ---- up_concat_conv: N, C_in, H, W, C_up, C_skip, C_out, up_bias, bias, activation. "multi-tile" spans two pixel
# blocks (per phase: 5 x 7 = 35 pixels) and two input-channel blocks of the first config.
UP_CONCAT_CONV = {
    "c6-3x4-up5-skip3-relu": (2, 6, 3, 4, 5, 3, 7, True, True, "relu"),
    "c3-1x1-up2-skip1-nobias-silu": (1, 3, 1, 1, 2, 1, 4, False, False, "silu"),
    "c5-2x3-up1-skip4-hardswish": (1, 5, 2, 3, 1, 4, 5, True, False, "hardswish"),
    "multi-tile": (1, 17, 5, 7, 9, 5, 20, True, True, "relu6"),
}


def up_concat_conv_args(geom, dtype=torch.float32, channels_last=False, device="cpu"):
    N, C, H, W, cup, cskip, cout, up_bias, bias, act = geom
    return (make((N, C, H, W), dtype, channels_last, device=device),
            make((N, cskip, 2 * H, 2 * W), dtype, channels_last, device=device),
            make((C, cup, 2, 2), dtype, scale=0.4, device=device),
            make((cup,), dtype, device=device) if up_bias else None,
            make((cout, cskip + cup, 3, 3), dtype, scale=0.2, device=device),
            make((cout,), dtype, device=device) if bias else None, act)


GEOMETRIES = {"add_relu": ADD_RELU, "conv2d_act": CONV2D_ACT, "dwsep_conv2d": DWSEP_CONV2D,
              "inverted_residual": INVERTED_RESIDUAL, "inception_block": INCEPTION_BLOCK, "mbconv": MBCONV,
              "up_concat_conv": UP_CONCAT_CONV}
ARGS = {"add_relu": add_relu_args, "conv2d_act": conv2d_act_args, "dwsep_conv2d": dwsep_conv2d_args,
        "inverted_residual": inverted_residual_args, "inception_block": inception_block_args, "mbconv": mbconv_args,
        "up_concat_conv": up_concat_conv_args}
