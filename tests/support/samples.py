"""Sample inputs for every op, shared by the correctness, gradient and opcheck tests.

`sample_inputs(op_name, dtype, device)` yields `(label, args)` with `args` the op's full positional arguments (as
torch.ops.cnnkernels.<op> and <op>_reference take them). Labels spell out what makes a sample awkward (odd channel
counts, 1x1 / 13x17 maps, stride, kernel, layout, activations) and become the test ids.

Tensors are drawn in fp32 from a generator seeded by the label and rounded once to `dtype`, so every dtype sees the same
values (up to that rounding) and a failing id reproduces exactly. Weights are scaled by 2/sqrt(fan_in) so outputs have
a spread of about 2: relu6 then clamps some values at 6 and relu zeroes about half.

Layouts of the op's main input:
  nchw  contiguous            cl     channels_last
  slice x[:, ::2] of a tensor with twice the channels (non-contiguous, no dense layout)
  tview x.transpose(2, 3) of an [N, C, W, H] tensor (dense but neither contiguous nor channels_last)
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Iterator, List, Optional, Tuple

import torch

LAYOUTS = ("nchw", "cl", "slice", "tview")


class Maker:
    """Builds the tensors of one sample: deterministic per label, in the requested dtype, device and layout."""

    def __init__(self, label: str, dtype: torch.dtype, device):
        self.gen = torch.Generator().manual_seed(zlib.crc32(label.encode()))
        self.dtype, self.device = dtype, torch.device(device)

    def randn(self, *shape, scale: float = 1.0) -> torch.Tensor:
        t = torch.randn(shape, generator=self.gen) * scale
        return t.to(device=self.device, dtype=self.dtype)

    def input(self, N, C, H, W, layout="nchw") -> torch.Tensor:
        if layout == "nchw":
            return self.randn(N, C, H, W)
        if layout == "cl":
            return self.randn(N, C, H, W).contiguous(memory_format=torch.channels_last)
        if layout == "slice":
            return self.randn(N, 2 * C, H, W)[:, ::2]
        if layout == "tview":
            return self.randn(N, C, W, H).transpose(2, 3)
        raise ValueError(layout)

    def weight(self, cout, cin, kh=1, kw=None) -> torch.Tensor:
        kw = kh if kw is None else kw
        return self.randn(cout, cin, kh, kw, scale=2.0 / (cin * kh * kw) ** 0.5)

    def bias(self, n, present=True) -> Optional[torch.Tensor]:
        return self.randn(n, scale=0.5) if present else None

    def boxes(self, n, scale=50.0) -> torch.Tensor:
        """[n, 4] xyxy boxes in [0, 1.33 scale], overlapping often enough for nms to suppress some."""
        xy = torch.rand(n, 2, generator=self.gen) * scale
        wh = torch.rand(n, 2, generator=self.gen) * scale / 3
        return torch.cat((xy, xy + wh), 1).to(device=self.device, dtype=self.dtype)

    def tied_scores(self, n, levels=4) -> torch.Tensor:
        """Scores with many ties: the order of equal scores is part of what nms must reproduce."""
        return (torch.randint(0, levels, (n,), generator=self.gen) / levels).to(device=self.device, dtype=self.dtype)

    def labels(self, n, classes, dtype=torch.int64) -> torch.Tensor:
        return torch.randint(0, classes, (n,), generator=self.gen, dtype=dtype).to(self.device)


@dataclass(frozen=True)
class Spec:
    label: str
    build: Callable[[Maker], tuple]
    tags: FrozenSet[str] = field(default_factory=frozenset)  # "grad": used by gradcheck, "opcheck": by opcheck
    dtypes: Optional[FrozenSet[torch.dtype]] = None  # the dtypes the op accepts for this sample; None: all


def _tags(*t):
    return frozenset(t)


# ---------------------------------------------------------------------------------------------------------------- ops

def _add_relu_specs() -> List[Spec]:
    def four_d(N, C, H, W, layout, res_layout):
        return lambda m: (m.input(N, C, H, W, layout), m.input(N, C, H, W, res_layout))

    def flat(*shape):
        return lambda m: (m.randn(*shape), m.randn(*shape))

    return [
        Spec("n2-c13-7x7-nchw", four_d(2, 13, 7, 7, "nchw", "nchw"), _tags("grad", "opcheck")),
        Spec("n1-c37-13x17-cl", four_d(1, 37, 13, 17, "cl", "cl"), _tags("opcheck")),
        Spec("n2-c3-1x1-cl-res_nchw", four_d(2, 3, 1, 1, "cl", "nchw")),
        Spec("n3-c5-7x7-slice-res_cl", four_d(3, 5, 7, 7, "slice", "cl"), _tags("grad")),
        Spec("n2-c13-13x17-tview", four_d(2, 13, 13, 17, "tview", "nchw"), _tags("opcheck")),
        Spec("1d-len1031", flat(1031)),
        Spec("3d-5x7x3", flat(5, 7, 3)),
    ]


def _conv2d_act_specs() -> List[Spec]:
    def conv(N, C, H, W, Cout, k, s, p, d, groups, bias, residual, act, layout):
        def build(m: Maker):
            x = m.input(N, C, H, W, layout)
            w = m.weight(Cout, C // groups, k)
            Ho = (H + 2 * p - d * (k - 1) - 1) // s + 1
            Wo = (W + 2 * p - d * (k - 1) - 1) // s + 1
            r = m.input(N, Cout, Ho, Wo, layout) if residual else None
            return (x, w, m.bias(Cout, bias), r, [s, s], [p, p], [d, d], groups, act)
        return build

    return [
        Spec("n1-c3-7x7-k3-s1-nchw-bias-relu", conv(1, 3, 7, 7, 13, 3, 1, 1, 1, 1, True, False, "relu", "nchw"),
             _tags("grad", "opcheck")),
        Spec("n2-c13-13x17-k5-s2-cl-relu6", conv(2, 13, 13, 17, 37, 5, 2, 2, 1, 1, False, False, "relu6", "cl"),
             _tags("opcheck")),
        Spec("n2-c37-1x1-k1-slice-bias-res-none", conv(2, 37, 1, 1, 13, 1, 1, 0, 1, 1, True, True, "none", "slice")),
        Spec("n3-c16-7x7-k3-s1-depthwise-cl-bias-res-relu",
             conv(3, 16, 7, 7, 16, 3, 1, 1, 1, 16, True, True, "relu", "cl")),
        Spec("n2-c6-5x6-k3-s2-depthwise-tview-bias-res-relu6",
             conv(2, 6, 5, 6, 6, 3, 2, 1, 1, 6, True, True, "relu6", "tview"), _tags("grad")),
        Spec("n2-c8-13x17-k3-s2-d2-g4-tview-bias-relu6",
             conv(2, 8, 13, 17, 12, 3, 2, 2, 2, 4, True, False, "relu6", "tview"), _tags("opcheck")),
        Spec("n1-c3-1x1-k3-s1-pad1-nchw-res-relu6", conv(1, 3, 1, 1, 5, 3, 1, 1, 1, 1, False, True, "relu6", "nchw")),
        Spec("n2-c5-9x9-k5-s1-nopad-cl-bias-none", conv(2, 5, 9, 9, 7, 5, 1, 0, 1, 1, True, False, "none", "cl")),
        Spec("n2-c3-9x11-k3-s2-cl-bias-silu", conv(2, 3, 9, 11, 17, 3, 2, 1, 1, 1, True, False, "silu", "cl"),
             _tags("grad", "opcheck")),
        Spec("n1-c24-7x7-k1-s1-slice-bias-res-hardswish",
             conv(1, 24, 7, 7, 13, 1, 1, 0, 1, 1, True, True, "hardswish", "slice"), _tags("grad", "opcheck")),
        Spec("n2-c16-9x9-k5-s2-depthwise-nchw-bias-silu",
             conv(2, 16, 9, 9, 16, 5, 2, 2, 1, 16, True, False, "silu", "nchw")),
        Spec("n1-c12-13x17-k3-s1-depthwise-tview-bias-hardswish",
             conv(1, 12, 13, 17, 12, 3, 1, 1, 1, 12, True, False, "hardswish", "tview")),
    ]


def _dwsep_conv2d_specs() -> List[Spec]:
    def dwsep(N, C, H, W, k, s, p, d, dw_bias, Cout, pw_bias, dw_act, pw_act, layout):
        def build(m: Maker):
            return (m.input(N, C, H, W, layout), m.weight(C, 1, k), m.bias(C, dw_bias), m.weight(Cout, C),
                    m.bias(Cout, pw_bias), [s, s], [p, p], [d, d], dw_act, pw_act)
        return build

    return [
        Spec("n1-c3-7x7-k3-s1-nchw-bias-relu-none",
             dwsep(1, 3, 7, 7, 3, 1, 1, 1, True, 13, True, "relu", "none", "nchw"), _tags("grad", "opcheck")),
        Spec("n2-c13-13x17-k5-s2-cl-pwbias-relu6-relu",
             dwsep(2, 13, 13, 17, 5, 2, 2, 1, False, 37, True, "relu6", "relu", "cl"), _tags("opcheck")),
        Spec("n2-c37-1x1-k3-s1-slice-dwbias-none-relu6",
             dwsep(2, 37, 1, 1, 3, 1, 1, 1, True, 3, False, "none", "relu6", "slice")),
        Spec("n3-c16-7x7-k3-s2-tview-bias-relu-relu",
             dwsep(3, 16, 7, 7, 3, 2, 1, 1, True, 24, True, "relu", "relu", "tview"), _tags("opcheck")),
        Spec("n1-c8-13x17-k3-s1-d2-cl-nobias-relu6-none",
             dwsep(1, 8, 13, 17, 3, 1, 2, 2, False, 16, False, "relu6", "none", "cl")),
        Spec("n2-c5-7x7-k5-s2-nopad-nchw-bias-none-relu",
             dwsep(2, 5, 7, 7, 5, 2, 0, 1, True, 7, True, "none", "relu", "nchw")),
        Spec("n2-c5-5x6-k3-s2-cl-bias-relu6-relu",
             dwsep(2, 5, 5, 6, 3, 2, 1, 1, True, 7, True, "relu6", "relu", "cl"), _tags("grad")),
        Spec("n2-c13-9x11-k3-s1-cl-bias-silu-hardswish",
             dwsep(2, 13, 9, 11, 3, 1, 1, 1, True, 21, True, "silu", "hardswish", "cl"), _tags("grad", "opcheck")),
        Spec("n1-c8-7x7-k5-s2-tview-bias-hardswish-silu",
             dwsep(1, 8, 7, 7, 5, 2, 2, 1, True, 11, True, "hardswish", "silu", "tview")),
    ]


def _inverted_residual_specs() -> List[Spec]:
    def block(N, C, H, W, hidden, expand_bias, k, s, Cout, residual, act, layout):
        """hidden=None: no expansion stage (the depthwise conv reads the input directly)."""
        def build(m: Maker):
            x = m.input(N, C, H, W, layout)
            if hidden is None:
                ew, eb, hid = None, None, C
            else:
                ew, eb, hid = m.weight(hidden, C), m.bias(hidden, expand_bias), hidden
            return (x, ew, eb, m.weight(hid, 1, k), m.bias(hid), m.weight(Cout, hid), m.bias(Cout), s, residual, act)
        return build

    return [
        Spec("n1-c13-7x7-x37-k3-s1-nchw-res-relu6", block(1, 13, 7, 7, 37, True, 3, 1, 13, True, "relu6", "nchw"),
             _tags("opcheck")),
        Spec("n1-c5-5x6-x11-k3-s1-nchw-res-relu6", block(1, 5, 5, 6, 11, True, 3, 1, 5, True, "relu6", "nchw"),
             _tags("grad")),
        Spec("n2-c4-5x5-noexpand-k5-s2-cl-relu", block(2, 4, 5, 5, None, False, 5, 2, 6, False, "relu", "cl"),
             _tags("grad")),
        Spec("n2-c8-13x17-x48-k3-s2-cl-relu", block(2, 8, 13, 17, 48, True, 3, 2, 16, False, "relu", "cl"),
             _tags("opcheck")),
        Spec("n2-c16-7x7-noexpand-k3-s1-cl-res-relu6",
             block(2, 16, 7, 7, None, False, 3, 1, 16, True, "relu6", "cl"), _tags("opcheck")),
        Spec("n2-c3-1x1-x18-noexpandbias-k5-s1-slice-none",
             block(2, 3, 1, 1, 18, False, 5, 1, 5, False, "none", "slice")),
        Spec("n1-c24-13x17-x37-k5-s2-tview-relu6", block(1, 24, 13, 17, 37, True, 5, 2, 13, False, "relu6", "tview")),
        Spec("n2-c13-1x1-noexpand-k3-s2-nchw-relu", block(2, 13, 1, 1, None, False, 3, 2, 7, False, "relu", "nchw")),
        Spec("n2-c5-13x17-x15-k3-s1-tview-res-relu", block(2, 5, 13, 17, 15, True, 3, 1, 5, True, "relu", "tview")),
        Spec("n1-c6-7x9-x20-k3-s1-cl-res-silu", block(1, 6, 7, 9, 20, True, 3, 1, 6, True, "silu", "cl"),
             _tags("grad", "opcheck")),
        Spec("n2-c8-9x9-x24-k5-s2-nchw-hardswish", block(2, 8, 9, 9, 24, True, 5, 2, 12, False, "hardswish", "nchw"),
             _tags("grad")),
    ]


def _inception_block_specs() -> List[Spec]:
    def block(N, C, H, W, c1, c2r, c2, k2, c3r, c3, k3, c4, layout):
        def build(m: Maker):
            return (m.input(N, C, H, W, layout), m.weight(c1, C), m.bias(c1), m.weight(c2r, C), m.bias(c2r),
                    m.weight(c2, c2r, k2), m.bias(c2), m.weight(c3r, C), m.bias(c3r), m.weight(c3, c3r, k3),
                    m.bias(c3), m.weight(c4, C), m.bias(c4))
        return build

    return [
        Spec("n1-c3-7x7-k3k5-nchw", block(1, 3, 7, 7, 4, 3, 5, 3, 2, 3, 5, 4, "nchw"), _tags("grad", "opcheck")),
        Spec("n2-c13-13x17-k3k5-cl", block(2, 13, 13, 17, 8, 6, 13, 3, 3, 7, 5, 5, "cl"), _tags("opcheck")),
        Spec("n2-c37-1x1-k3k5-slice", block(2, 37, 1, 1, 5, 4, 6, 3, 2, 3, 5, 3, "slice")),
        Spec("n1-c16-7x7-k3k5-tview", block(1, 16, 7, 7, 16, 16, 24, 3, 4, 8, 5, 8, "tview")),
        Spec("n2-c8-13x17-k1k3-cl", block(2, 8, 13, 17, 3, 3, 5, 1, 2, 3, 3, 5, "cl"), _tags("opcheck")),
        Spec("n1-c6-5x6-k3k3-cl", block(1, 6, 5, 6, 3, 2, 4, 3, 3, 2, 3, 3, "cl"), _tags("grad")),
    ]


def _mbconv_specs() -> List[Spec]:
    def block(N, C, H, W, hidden, k, s, squeeze, Cout, residual, act, se_act, gate, layout):
        """hidden=None: no expansion stage; squeeze=None: no squeeze-and-excitation stage."""
        def build(m: Maker):
            x = m.input(N, C, H, W, layout)
            if hidden is None:
                ew, eb, hid = None, None, C
            else:
                ew, eb, hid = m.weight(hidden, C), m.bias(hidden), hidden
            if squeeze is None:
                se = (None, None, None, None)
            else:
                se = (m.weight(squeeze, hid), m.bias(squeeze), m.weight(hid, squeeze), m.bias(hid))
            return (x, ew, eb, m.weight(hid, 1, k), m.bias(hid), *se, m.weight(Cout, hid), m.bias(Cout), s, residual,
                    act, se_act, gate)
        return build

    return [
        # EfficientNet: SiLU everywhere, sigmoid gate
        Spec("n2-c8-9x11-x32-k3-s1-se8-nchw-res-silu", block(2, 8, 9, 11, 32, 3, 1, 8, 8, True, "silu", "silu",
                                                               "sigmoid", "nchw"), _tags("opcheck")),
        Spec("n1-c6-7x7-x24-k5-s2-se4-cl-silu", block(1, 6, 7, 7, 24, 5, 2, 4, 10, False, "silu", "silu", "sigmoid",
                                                      "cl"), _tags("grad", "opcheck")),
        Spec("n2-c16-13x17-noexpand-k3-s1-se4-cl-silu", block(2, 16, 13, 17, None, 3, 1, 4, 8, False, "silu",
                                                              "silu", "sigmoid", "cl"), _tags("opcheck")),
        Spec("n1-c5-6x5-noexpand-k3-s1-se2-tview-res-silu", block(1, 5, 6, 5, None, 3, 1, 2, 5, True, "silu",
                                                                  "silu", "sigmoid", "tview"), _tags("grad")),
        # MobileNet v3: ReLU or hard-swish, SE reduce ReLU, hard-sigmoid gate; blocks without SE
        Spec("n2-c13-13x17-x37-k5-s2-se9-slice-hardswish", block(2, 13, 13, 17, 37, 5, 2, 9, 17, False, "hardswish",
                                                                 "relu", "hardsigmoid", "slice")),
        Spec("n1-c7-7x9-x21-k3-s1-se5-nchw-res-relu", block(1, 7, 7, 9, 21, 3, 1, 5, 7, True, "relu", "relu",
                                                             "hardsigmoid", "nchw"), _tags("grad", "opcheck")),
        Spec("n2-c8-9x9-x20-k3-s2-nose-cl-hardswish", block(2, 8, 9, 9, 20, 3, 2, None, 12, False, "hardswish",
                                                            "relu", "hardsigmoid", "cl"), _tags("grad")),
        Spec("n1-c24-1x1-x72-k5-s1-se18-nchw-res-hardswish", block(1, 24, 1, 1, 72, 5, 1, 18, 24, True, "hardswish",
                                                                    "relu", "hardsigmoid", "nchw")),
        Spec("n2-c4-2x3-x12-k5-s2-se3-tview-relu6", block(2, 4, 2, 3, 12, 5, 2, 3, 6, False, "relu6", "none",
                                                          "sigmoid", "tview")),
    ]


def _up_concat_conv_specs() -> List[Spec]:
    def up(N, C, H, W, Cup, Cskip, Cout, up_bias, bias, act, layout, skip_layout=None):
        def build(m: Maker):
            x = m.input(N, C, H, W, layout)
            skip = m.input(N, Cskip, 2 * H, 2 * W, skip_layout or layout)
            # nn.ConvTranspose2d's layout [C_in, C_up, 2, 2]; each upsampled pixel sums C_in products.
            up_weight = m.randn(C, Cup, 2, 2, scale=2.0 / C ** 0.5)
            return (x, skip, up_weight, m.bias(Cup, up_bias), m.weight(Cout, Cskip + Cup, 3), m.bias(Cout, bias), act)
        return build

    return [
        Spec("n1-c4-3x4-up3-skip2-o5-nchw-bias-relu", up(1, 4, 3, 4, 3, 2, 5, True, True, "relu", "nchw"),
             _tags("grad", "opcheck")),
        Spec("n2-c13-3x5-up7-skip5-o37-cl-bias-relu6", up(2, 13, 3, 5, 7, 5, 37, True, True, "relu6", "cl"),
             _tags("opcheck")),
        Spec("n2-c5-1x1-up1-skip3-o4-nchw-noupbias-none", up(2, 5, 1, 1, 1, 3, 4, False, True, "none", "nchw"),
             _tags("grad")),
        Spec("n1-c6-4x3-up3-skip1-o5-slice-skip_cl-nobias-silu",
             up(1, 6, 4, 3, 3, 1, 5, True, False, "silu", "slice", "cl"), _tags("grad", "opcheck")),
        Spec("n2-c16-7x9-up8-skip8-o35-tview-skip_nchw-bias-hardswish",
             up(2, 16, 7, 9, 8, 8, 35, True, True, "hardswish", "tview", "nchw")),
        Spec("n1-c40-8x8-up20-skip20-o33-cl-nobiases-relu", up(1, 40, 8, 8, 20, 20, 33, False, False, "relu", "cl"),
             _tags("opcheck")),
    ]


def _box_iou_specs() -> List[Spec]:
    return [
        Spec("n7-m5", lambda m: (m.boxes(7), m.boxes(5)), _tags("grad", "opcheck")),
        Spec("n0-m3", lambda m: (m.boxes(0), m.boxes(3))),
        Spec("n13-m9-strided", lambda m: (m.boxes(26)[::2], m.boxes(9).t().contiguous().t()), _tags("opcheck")),
    ]


def _nms_specs() -> List[Spec]:
    return [
        Spec("n40-tied-t0.5", lambda m: (m.boxes(40), m.tied_scores(40), 0.5), _tags("opcheck")),
        Spec("n1-t0.5", lambda m: (m.boxes(1), m.tied_scores(1), 0.5)),
        Spec("n0-t0.5", lambda m: (m.boxes(0), m.tied_scores(0), 0.5)),
        Spec("n31-strided-t0", lambda m: (m.boxes(62)[::2], m.tied_scores(62)[1::2], 0.0)),
    ]


def _batched_nms_specs() -> List[Spec]:
    return [
        Spec("n40-c3-tied-t0.4", lambda m: (m.boxes(40), m.tied_scores(40), m.labels(40, 3), 0.4), _tags("opcheck")),
        Spec("n0-t0.5", lambda m: (m.boxes(0), m.tied_scores(0), m.labels(0, 3), 0.5)),
        Spec("n25-c2-int32-strided-t0.6",
             lambda m: (m.boxes(50)[::2], m.tied_scores(25), m.labels(25, 2, torch.int32), 0.6)),
    ]


_YOLO_DTYPES = frozenset((torch.float32, torch.float64))
_YOLO_ANCHORS = ((10.0, 13.0), (30.0, 20.0), (40.0, 60.0))


def _yolo_postprocess_specs() -> List[Spec]:
    def yolo(N, A, C, Sh, Sw, layout, image_size, score_t, iou_t, k):
        def build(m: Maker):
            anchors = torch.tensor(_YOLO_ANCHORS[:A], dtype=m.dtype, device=m.device)
            return (m.input(N, A * (5 + C), Sh, Sw, layout) * 2, anchors, list(image_size), score_t, iou_t, k)
        return build

    return [
        Spec("n2-a3-c2-4x5-nchw", yolo(2, 3, 2, 4, 5, "nchw", (32, 40), 0.2, 0.5, 10), _tags("opcheck"),
             _YOLO_DTYPES),
        Spec("n1-a2-c4-6x6-cl-k3", yolo(1, 2, 4, 6, 6, "cl", (48, 48), 0.1, 0.45, 3), dtypes=_YOLO_DTYPES),
        Spec("n0-a1-c1-3x3-slice", yolo(0, 1, 1, 3, 3, "slice", (24, 24), 0.3, 0.5, 5), dtypes=_YOLO_DTYPES),
    ]


# The detection ops: results are indices and exactly reproduced values (torchvision.ops is their oracle, in
# tests/ops/test_boxes.py and test_yolo_postprocess.py), inputs are box lists and a YOLO head, not images. The generic
# suites compare them exactly with their references; what in a generic suite is about convolutions (layouts of
# [N, C, H, W] outputs, fp32 tolerances, the conv oracle, activations, window parameters) skips them (or the ones in
# NOT_APPLICABLE_OPS) for the reason in NOT_APPLICABLE, the one place those reasons are written.
DETECTION_OPS = ("box_iou", "nms", "batched_nms", "yolo_postprocess")
NOT_APPLICABLE_OPS: Dict[str, Tuple[str, ...]] = {
    "leaks": ("yolo_postprocess",),
    "leaks_autograd": ("nms", "batched_nms", "yolo_postprocess"),
    "cuda": ("yolo_postprocess",),
}
NOT_APPLICABLE: Dict[str, str] = {
    "oracle": "no conv: torchvision.ops is the oracle of the detection ops (tests/ops/test_boxes.py, "
              "test_yolo_postprocess.py)",
    "precision": "exact results: the references compute what torchvision computes, in the same dtype, no fp32 "
                 "tolerance to measure",
    "fuzz": "fuzzed against torchvision in their own test files; the conv fuzz strategies draw images and weights",
    "cuda": "yolo_postprocess has no CUDA kernel of its own (it composes yolo_decode and the batched_nms op)",
    "conv_shapes": "no channels or spatial maps (zero boxes are a valid, empty call)",
    "nan": "NaN/Inf in boxes and heads: tests/ops/test_boxes.py and test_yolo_postprocess.py check torchvision's "
           "behaviour (a NaN IoU never suppresses, a NaN score passes no threshold)",
    "tiny_net": "TinyNet is an image network; torch.compile of the detection ops: tests/ops/test_boxes.py",
    "leaks": "yolo_postprocess has no compiled kernel, whose scratch the RSS tests watch (it composes yolo_decode "
             "and the batched_nms op, which is tested)",
    "leaks_autograd": "indices and detections: no gradient to take",
}


def generic_ops(suite: str, ops=None) -> Tuple[str, ...]:
    """The ops (of `ops`, default every op with samples) a generic suite named in NOT_APPLICABLE applies to: all but
    NOT_APPLICABLE_OPS[suite], by default all but the detection ops."""
    ops = tuple(SPECS) if ops is None else tuple(ops)
    if suite not in NOT_APPLICABLE:
        raise KeyError(suite)
    skipped = NOT_APPLICABLE_OPS.get(suite, DETECTION_OPS)
    return tuple(o for o in ops if o not in skipped)


SPECS: Dict[str, List[Spec]] = {
    "add_relu": _add_relu_specs(),
    "conv2d_act": _conv2d_act_specs(),
    "dwsep_conv2d": _dwsep_conv2d_specs(),
    "inverted_residual": _inverted_residual_specs(),
    "inception_block": _inception_block_specs(),
    "mbconv": _mbconv_specs(),
    "up_concat_conv": _up_concat_conv_specs(),
    "box_iou": _box_iou_specs(),
    "nms": _nms_specs(),
    "batched_nms": _batched_nms_specs(),
    "yolo_postprocess": _yolo_postprocess_specs(),
}
OPS = tuple(SPECS)


def sample_inputs(op_name: str, dtype: torch.dtype = torch.float32, device="cpu",
                  tag: Optional[str] = None) -> Iterator[Tuple[str, tuple]]:
    """(label, args) for op `op_name`; `tag` keeps only the samples marked for that use ("grad", "opcheck")."""
    for spec in SPECS[op_name]:
        if spec.dtypes is not None and dtype not in spec.dtypes:
            continue
        if tag is None or tag in spec.tags:
            yield spec.label, spec.build(Maker(spec.label, dtype, device))
