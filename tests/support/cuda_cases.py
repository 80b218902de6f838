"""Cases and references shared by the CUDA kernel tests (tests/cuda_kernels/test_cuda_emulated.py runs them through the host
emulation, tests/cuda_kernels/test_cuda_gpu.py on a GPU). Tolerances: dtypes.CUDA_TOLERANCES.

The references are plain torch.nn.functional compositions evaluated in fp64 on the inputs already rounded to the
dtype under test, so a comparison measures the kernel's arithmetic only. The cases cover each kernel's paths: several
K chunks and column tiles, groups, depthwise and channel multipliers, stride / padding / dilation / rectangular
kernels, sizes that are not multiples of the tiles, residuals, every activation, absent optional arguments.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import torch
import torch.nn.functional as F

from support.dtypes import CUDA_TOLERANCES

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]  # every dtype the CUDA kernels take
FORMATS = {"nchw": torch.contiguous_format, "nhwc": torch.channels_last}


def act(x: torch.Tensor, a: str) -> torch.Tensor:
    return {"none": lambda t: t, "relu": torch.relu, "relu6": F.relu6, "silu": F.silu, "hardswish": F.hardswish}[a](x)


def gate(x: torch.Tensor, g: str) -> torch.Tensor:
    return {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}[g](x)


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _randn(gen, *shape, scale=1.0):
    return torch.randn(*shape, generator=gen, dtype=torch.float64) * scale


def _weight(gen, cout, cin, kh, kw):
    return _randn(gen, cout, cin, kh, kw, scale=1.0 / math.sqrt(max(cin * kh * kw, 1)))


# ---- references (fp64) ------------------------------------------------------------------------------------------------

def ref_conv2d_act(x, w, b, r, stride, padding, dilation, groups, a):
    y = F.conv2d(x, w, b, tuple(stride), tuple(padding), tuple(dilation), groups)
    return act(y if r is None else y + r, a)


def ref_dwsep_conv2d(x, dw, dwb, pw, pwb, stride, padding, dilation, dw_act, pw_act):
    h = act(F.conv2d(x, dw, dwb, tuple(stride), tuple(padding), tuple(dilation), x.shape[1]), dw_act)
    return act(F.conv2d(h, pw, pwb), pw_act)


def ref_inverted_residual(x, ew, eb, dw, db, pw, pb, stride, residual, a):
    h = x if ew is None else act(F.conv2d(x, ew, eb), a)
    h = act(F.conv2d(h, dw, db, stride, (dw.shape[2] // 2, dw.shape[3] // 2), 1, h.shape[1]), a)
    y = F.conv2d(h, pw, pb)
    return y + x if residual else y


def ref_inception_block(x, w1, b1, w2r, b2r, w2, b2, w3r, b3r, w3, b3, w4, b4):
    def cr(t, w, b):
        return torch.relu(F.conv2d(t, w, b, 1, (w.shape[2] // 2, w.shape[3] // 2)))
    return torch.cat([cr(x, w1, b1), cr(cr(x, w2r, b2r), w2, b2), cr(cr(x, w3r, b3r), w3, b3),
                      cr(F.max_pool2d(x, 3, 1, 1), w4, b4)], 1)


def ref_mbconv(x, ew, eb, dw, db, srw, srb, sew, seb, pw, pb, stride, residual, a, se_act, se_gate):
    h = x if ew is None else act(F.conv2d(x, ew, eb), a)
    h = act(F.conv2d(h, dw, db, stride, dw.shape[2] // 2, 1, h.shape[1]), a)
    if srw is not None:
        s = act(F.conv2d(h.mean((2, 3), keepdim=True), srw, srb), se_act)
        h = h * gate(F.conv2d(s, sew, seb), se_gate)
    y = F.conv2d(h, pw, pb)
    return y + x if residual else y


def ref_up_concat_conv(x, skip, uw, ub, w, b, a):
    return act(F.conv2d(torch.cat([skip, F.conv_transpose2d(x, uw, ub, stride=2)], 1), w, b, padding=1), a)


def ref_add_relu(x, r):
    return torch.relu(x + r)


REFERENCES: Dict[str, Callable] = {
    "add_relu": ref_add_relu,
    "conv2d_act": ref_conv2d_act,
    "dwsep_conv2d": ref_dwsep_conv2d,
    "inverted_residual": ref_inverted_residual,
    "inception_block": ref_inception_block,
    "mbconv": ref_mbconv,
    "up_concat_conv": ref_up_concat_conv,
}


# ---- cases: op -> [(id, fp64 args)] ----------------------------------------------------------------------------------

def _conv(seed, N, C, H, W, Cout, k, s=1, p=0, d=1, groups=1, bias=True, res=False, a="none"):
    g = _g(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    s, p, d = [(v, v) if isinstance(v, int) else tuple(v) for v in (s, p, d)]
    x = _randn(g, N, C, H, W)
    w = _weight(g, Cout, C // groups, kh, kw)
    b = _randn(g, Cout, scale=0.5) if bias else None
    Ho = (H + 2 * p[0] - d[0] * (kh - 1) - 1) // s[0] + 1
    Wo = (W + 2 * p[1] - d[1] * (kw - 1) - 1) // s[1] + 1
    r = _randn(g, N, Cout, Ho, Wo) if res else None
    return (x, w, b, r, list(s), list(p), list(d), groups, a)


def _dwsep(seed, N, C, H, W, Cout, k, s=1, p=0, d=1, bias=True, dw_act="relu", pw_act="relu"):
    g = _g(seed)
    kh, kw = (k, k) if isinstance(k, int) else k
    s, p, d = [[v, v] if isinstance(v, int) else list(v) for v in (s, p, d)]
    x = _randn(g, N, C, H, W)
    dw = _weight(g, C, 1, kh, kw)
    pw = _weight(g, Cout, C, 1, 1)
    dwb, pwb = (_randn(g, C, scale=0.5), _randn(g, Cout, scale=0.5)) if bias else (None, None)
    return (x, dw, dwb, pw, pwb, s, p, d, dw_act, pw_act)


def _ir(seed, N, C, H, W, hidden, Cout, k=3, s=1, residual=False, a="relu6", expand=True, expand_bias=True):
    g = _g(seed)
    x = _randn(g, N, C, H, W)
    ew = _weight(g, hidden, C, 1, 1) if expand else None
    eb = _randn(g, hidden, scale=0.5) if expand and expand_bias else None
    dw = _weight(g, hidden, 1, k, k)
    db = _randn(g, hidden, scale=0.5)
    pw = _weight(g, Cout, hidden, 1, 1)
    pb = _randn(g, Cout, scale=0.5)
    return (x, ew, eb, dw, db, pw, pb, s, residual, a)


def _mbconv(seed, N, C, H, W, hidden, Cout, squeeze=0, k=3, s=1, residual=False, a="silu", se_act="silu",
            se_gate="sigmoid", expand=True):
    g = _g(seed)
    x = _randn(g, N, C, H, W)
    ew, eb = (_weight(g, hidden, C, 1, 1), _randn(g, hidden, scale=0.5)) if expand else (None, None)
    dw = _weight(g, hidden, 1, k, k)
    db = _randn(g, hidden, scale=0.5)
    se = [None] * 4
    if squeeze:
        # se_expand_bias around 1: the hardsigmoid gate stays mostly inside (0, 1) instead of cutting channels to 0.
        se = [_weight(g, squeeze, hidden, 1, 1), _randn(g, squeeze, scale=0.5), _weight(g, hidden, squeeze, 1, 1),
              _randn(g, hidden, scale=0.5) + 1]
    pw = _weight(g, Cout, hidden, 1, 1)
    pb = _randn(g, Cout, scale=0.5)
    return (x, ew, eb, dw, db, *se, pw, pb, s, residual, a, se_act, se_gate)


def _inception(seed, N, C, H, W, c1, c2r, c2, c3r, c3, c4, k2=3, k3=5):
    g = _g(seed)
    x = _randn(g, N, C, H, W)
    out = [x]
    for cout, cin, k in [(c1, C, 1), (c2r, C, 1), (c2, c2r, k2), (c3r, C, 1), (c3, c3r, k3), (c4, C, 1)]:
        out += [_weight(g, cout, cin, k, k), _randn(g, cout, scale=0.5)]
    return tuple(out)


def _up(seed, N, C, H, W, Cup, Cskip, Cout, up_bias=True, bias=True, a="relu"):
    g = _g(seed)
    x, skip = _randn(g, N, C, H, W), _randn(g, N, Cskip, 2 * H, 2 * W)
    uw = _randn(g, C, Cup, 2, 2, scale=1.0 / math.sqrt(C))
    ub = _randn(g, Cup, scale=0.5) if up_bias else None
    b = _randn(g, Cout, scale=0.5) if bias else None
    return (x, skip, uw, ub, _weight(g, Cout, Cskip + Cup, 3, 3), b, a)


def _pair(seed, *shape):
    g = _g(seed)
    return (_randn(g, *shape), _randn(g, *shape))


CASES: Dict[str, List[Tuple[str, tuple]]] = {
    "add_relu": [
        ("4d", _pair(61, 2, 5, 7, 3)),
        ("1d_odd", _pair(62, 1001)),
        ("3d", _pair(63, 3, 70, 9)),
    ],
    "conv2d_act": [
        ("3x3_relu", _conv(1, 2, 8, 9, 7, 12, 3, p=1, a="relu")),
        ("3x3_res_relu6_2coltiles", _conv(2, 1, 40, 10, 13, 80, 3, p=1, res=True, a="relu6")),
        ("1x1_s2_nobias", _conv(3, 3, 33, 11, 9, 70, 1, s=2)),
        ("7x7_s2_stem", _conv(4, 1, 3, 23, 19, 16, 7, s=2, p=3, a="relu")),
        ("grouped", _conv(5, 2, 12, 8, 8, 18, 3, p=1, groups=3, a="relu")),
        ("rect_dilated", _conv(6, 1, 6, 13, 11, 10, (3, 5), s=(2, 1), p=(2, 3), d=(2, 1))),
        ("depthwise_res", _conv(7, 2, 24, 10, 9, 24, 3, p=1, groups=24, res=True, a="relu6")),
        ("depthwise_5x5_s2", _conv(8, 1, 16, 15, 15, 16, 5, s=2, p=2, groups=16, bias=False, a="relu")),
        ("channel_multiplier", _conv(9, 1, 4, 6, 6, 8, 3, p=1, groups=4, a="relu")),
        ("many_pixel_tiles", _conv(10, 3, 16, 20, 20, 32, 3, p=1, a="relu")),
        ("1x1_pixel", _conv(11, 1, 5, 1, 1, 3, 1, res=True, a="relu")),
        ("3x3_res_silu", _conv(12, 2, 8, 9, 7, 12, 3, p=1, res=True, a="silu")),
        ("depthwise_hardswish", _conv(13, 1, 16, 7, 7, 16, 3, p=1, groups=16, a="hardswish")),
        # The tiled depthwise kernel (plan_depthwise): several tiles per image both ways with partial tiles at the
        # right and bottom, a channel chunk of 32 plus a partial one; k5 / s2 / d2 with smaller tiles (fp64: the direct
        # kernel, no tile fits 24 KiB); 6 channels (8-wide chunk, 32 pixels per thread group); rectangular window;
        # 1x1 (never tiled) and dilation 9 (halo larger than the windows: direct).
        ("depthwise_tiles_res", _conv(14, 1, 36, 12, 11, 36, 3, p=1, groups=36, res=True, a="relu6")),
        ("depthwise_k5_s2_d2", _conv(15, 1, 20, 17, 14, 20, 5, s=2, p=4, d=2, groups=20, a="silu")),
        ("depthwise_6ch", _conv(16, 1, 6, 17, 18, 6, 3, p=1, groups=6, bias=False, res=True)),
        ("depthwise_rect", _conv(17, 1, 9, 11, 20, 9, (3, 5), s=(1, 2), p=(1, 2), d=(2, 1), groups=9, a="relu")),
        ("depthwise_1x1", _conv(18, 1, 12, 9, 10, 12, 1, groups=12, res=True, a="relu")),
        ("depthwise_d9", _conv(19, 1, 8, 20, 20, 8, 3, p=9, d=9, groups=8, a="relu")),
    ],
    "dwsep_conv2d": [
        ("3x3_relu", _dwsep(21, 2, 8, 9, 7, 12, 3, p=1)),
        ("s2_2coltiles", _dwsep(22, 1, 40, 24, 24, 80, 3, s=2, p=1, dw_act="relu6", pw_act="none")),
        ("5x5_dilated_nobias", _dwsep(23, 1, 20, 11, 13, 7, 5, p=4, d=2, bias=False, dw_act="none")),
        ("one_channel", _dwsep(24, 2, 1, 5, 5, 3, 3)),
        ("rect", _dwsep(25, 3, 33, 6, 9, 65, (1, 3), s=(1, 2), p=(0, 1), pw_act="relu6")),
        ("silu_hardswish", _dwsep(26, 1, 8, 7, 7, 12, 3, p=1, dw_act="silu", pw_act="hardswish")),
        # Halo tiles (plan_dwsep): partial tiles at the right and bottom, several per image, K chunks with a partial
        # last one; k5 dilated; a 1x1 window (flattened rows, windows read from global memory).
        ("tiles_s2_odd", _dwsep(27, 1, 37, 19, 21, 70, 3, s=2, p=1, dw_act="relu6")),
        ("tiles_k5_d2", _dwsep(28, 1, 17, 13, 15, 20, 5, p=4, d=2, dw_act="hardswish", pw_act="none")),
        ("flat_1x1", _dwsep(29, 2, 10, 9, 11, 12, 1)),
    ],
    "inverted_residual": [
        ("expand_residual", _ir(31, 2, 8, 9, 7, 24, 8, residual=True)),
        ("expand_s2_2coltiles", _ir(32, 1, 12, 19, 19, 40, 70, s=2, a="relu")),
        ("no_expand", _ir(33, 2, 24, 8, 8, 24, 16, expand=False)),
        ("k5_residual", _ir(34, 1, 8, 10, 13, 48, 8, k=5, residual=True, a="relu")),
        ("k5_s2_linear", _ir(35, 1, 6, 9, 9, 36, 12, k=5, s=2, a="none", expand_bias=False)),
        ("single_pixel", _ir(36, 1, 3, 1, 1, 6, 3, residual=True)),
        ("wide_hidden", _ir(37, 1, 16, 7, 7, 96, 24, s=1)),
        ("no_expand_2coltiles", _ir(38, 1, 40, 16, 16, 40, 80, expand=False, a="relu")),
        ("expand_silu_residual", _ir(39, 1, 8, 7, 7, 24, 8, residual=True, a="silu")),
        ("k5_s2_hardswish", _ir(40, 1, 6, 9, 9, 24, 12, k=5, s=2, a="hardswish")),
    ],
    "inception_block": [
        ("odd_sizes", _inception(41, 2, 12, 9, 7, 5, 6, 7, 3, 4, 6)),
        ("wide", _inception(42, 1, 40, 9, 8, 70, 33, 40, 8, 16, 20)),
    ],
    # Every activation and gate, with and without expansion and SE, k 3 / 5, stride 1 / 2, residual. The SE cases
    # cover the gate kernel's pixel-sum split (hidden < 256: several threads per channel; 272: one) and the
    # projection's K chunks and column tiles.
    "mbconv": [
        ("se_silu_residual", _mbconv(71, 2, 8, 7, 6, 24, 8, squeeze=4, residual=True)),
        ("se_k5_s2_hardswish", _mbconv(72, 1, 6, 9, 9, 36, 12, squeeze=6, k=5, s=2, a="hardswish", se_act="relu",
                                       se_gate="hardsigmoid")),
        ("se_no_expand_s2", _mbconv(73, 2, 16, 8, 7, 16, 24, squeeze=4, s=2, a="relu6", se_act="relu")),
        ("se_2coltiles", _mbconv(74, 1, 12, 10, 13, 40, 80, squeeze=10, a="none", se_act="hardswish",
                                 se_gate="hardsigmoid")),
        ("se_wide_hidden", _mbconv(75, 1, 8, 5, 5, 272, 16, squeeze=8, k=5, a="relu", se_act="relu6")),
        ("se_single_pixel", _mbconv(76, 1, 3, 1, 1, 12, 3, squeeze=2, residual=True, se_act="none")),
        ("no_se_k5_silu_residual", _mbconv(77, 1, 8, 9, 7, 32, 8, k=5, residual=True)),
        ("no_se_no_expand_s2", _mbconv(78, 2, 12, 7, 7, 12, 20, s=2, a="hardswish", expand=False)),
    ],
    # K = 9 * (Cskip + Cup) over several chunks, a K chunk that straddles the skip / upsampled boundary, two column
    # tiles, a 1x1 input, absent biases, every activation.
    "up_concat_conv": [
        ("odd_sizes_relu", _up(81, 2, 6, 3, 4, 5, 3, 7)),
        ("2coltiles_silu", _up(82, 1, 8, 5, 4, 6, 4, 70, a="silu")),
        ("single_pixel_nobias", _up(83, 1, 5, 1, 1, 2, 3, 4, up_bias=False, bias=False, a="none")),
        ("hardswish_relu6", _up(84, 1, 3, 2, 5, 1, 1, 5, a="hardswish")),
    ],
}


# ---- detection ops (box_iou, nms, batched_nms): compared exactly with the CPU op and torchvision.ops -----------------
# Kept out of CASES: those are 4-D convolution-style cases with an fp64 reference and tolerances.

def box_set(seed, n, grid=0, nan=False, offset=0.0, classes=4):
    """(boxes [n, 4], scores [n], idxs [n]) in fp64, with what makes nms decisions delicate: duplicate boxes, zero-area
    boxes (points and lines), inverted boxes, scores with ties. grid > 0: integer corners in [0, grid], so many IoUs are
    exactly 1/2 (and 1/3, 2/3): at a threshold of 0.5, ties with the threshold. nan: NaN and inf coordinates and NaN
    scores."""
    g = _g(seed)
    if grid:
        lo = torch.randint(0, grid, (n, 2), generator=g).double()
        boxes = torch.cat([lo, lo + torch.randint(0, 3, (n, 2), generator=g).double()], 1).clamp(max=grid)
    else:
        lo = torch.rand(n, 2, generator=g, dtype=torch.float64) * 100
        boxes = torch.cat([lo, lo + torch.rand(n, 2, generator=g, dtype=torch.float64) * 30], 1)
    boxes += offset
    boxes[1::9] = boxes[0::9][:len(boxes[1::9])]   # duplicates
    boxes[2::11, 2] = boxes[2::11, 0]              # zero width
    boxes[3::13, 2:] = boxes[3::13, :2]            # points
    boxes[4::17] = boxes[4::17][:, [2, 3, 0, 1]]   # inverted (negative area)
    scores = torch.randint(0, max(n // 4, 2), (n,), generator=g).double() / 8  # ties
    if nan:
        boxes[5::19, 1] = float("nan")
        boxes[6::23, 2] = float("inf")
        scores[7::29] = float("nan")
    idxs = torch.randint(0, classes, (n,), generator=g)
    return boxes, scores, idxs


# id -> (boxes, scores, idxs); n > 64 spans several 64-box mask words.
BOX_CASES: Dict[str, tuple] = {
    "random_150": box_set(81, 150),
    "grid_130": box_set(82, 130, grid=6),
    "nan_inf_70": box_set(83, 70, nan=True),
    "one_past_a_word_65": box_set(84, 65, grid=4, classes=2),
    "exactly_a_word_64": box_set(85, 64),
    "one_box": box_set(86, 1),
}
BOX_THRESHOLDS = [0.0, 0.5, 0.7]


def cast(args, dtype, device="cpu", fmt=torch.contiguous_format):
    """The args in `dtype` on `device`, every 4-D tensor (input, residual, weights) in memory format `fmt`."""
    out = []
    for a in args:
        if isinstance(a, torch.Tensor):
            a = a.to(device=device, dtype=dtype)
            if a.dim() == 4:
                a = a.contiguous(memory_format=fmt)
        out.append(a)
    return tuple(out)


def reference(op: str, args) -> torch.Tensor:
    """The fp64 reference on the (possibly rounded) args."""
    return REFERENCES[op](*[a.detach().cpu().double() if isinstance(a, torch.Tensor) else a for a in args])


def output_format(x: torch.Tensor):
    from torch._prims_common import suggest_memory_format
    return suggest_memory_format(x)


def empty_batch(op: str, args) -> list:
    """`args` with the batch dimension of the input (and of add_relu's residual) emptied."""
    args = list(args)
    args[0] = args[0][:0]
    if op in ("add_relu", "up_concat_conv"):  # the residual / the skip tensor is batched too
        args[1] = args[1][:0]
    return args


def assert_close_to_reference(op: str, y: torch.Tensor, args, dtype) -> None:
    want = reference(op, args)
    assert y.dtype == dtype and tuple(y.shape) == tuple(want.shape)
    assert y.is_contiguous(memory_format=output_format(args[0]))
    torch.testing.assert_close(y.detach().cpu().double(), want, equal_nan=True, **CUDA_TOLERANCES[dtype])


# Small fp64 cases for gradcheck (every differentiable argument on).
GRAD_CASES: Dict[str, tuple] = {
    "add_relu": _pair(50, 2, 3, 4, 5),
    "conv2d_act": _conv(51, 1, 3, 5, 6, 4, 3, p=1, res=True, a="relu"),
    "dwsep_conv2d": _dwsep(52, 1, 3, 5, 6, 4, 3, p=1, dw_act="relu6", pw_act="relu"),
    "inverted_residual": _ir(53, 1, 4, 5, 6, 8, 4, residual=True, a="relu6"),
    "inception_block": _inception(54, 1, 4, 5, 6, 2, 2, 3, 2, 2, 2),
    "mbconv": _mbconv(55, 1, 4, 5, 6, 8, 4, squeeze=2, residual=True),
    "up_concat_conv": _up(56, 1, 3, 2, 3, 2, 2, 3, a="silu"),
}
