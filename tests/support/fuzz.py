"""Property-based tests (hypothesis) of every op against its pure-PyTorch reference, and the long-mode runner.

For each op a strategy draws a random *valid* call: shapes, kernel sizes, stride/padding/dilation, groups, optional
bias/residual/expansion, activations, dtype (fp32/fp16/bf16/fp64), the memory layout of every tensor (contiguous,
channels_last, channel-sliced, transposed view, cropped view with a storage offset, batch-broadcast with stride 0),
the torch thread count, and sometimes NaN/Inf in the input. Tensor values come from samples.Maker seeded by the
drawn case, so a failure printed by hypothesis reproduces exactly. `check_case` then compares the op with the reference
(tolerances per dtype from dtypes.TOLERANCES; NaN and Inf must sit where the reference has them), the output's dtype,
shape and memory format, and the fake kernel's shape and strides.

Used in three ways:
  tests/reliability/test_fuzz_ops.py    CI slice: derandomized, ~40 small cases per op (and `pytest -m fuzz` long mode)
  python tests/support/fuzz.py --cases 10000 [--ops conv2d_act ...] [--size small|large] [--seed N]
                                        long mode: N cases per op, prints counts (per dtype/layout/...) and times;
                                        exit status 1 if any op failed (hypothesis prints the shrunk failing case)
  CNNKERNELS_CPU_ISA=default python tests/support/fuzz.py ...   the same against the generic (non-AVX) kernels

The script tests whichever cnnkernels `import cnnkernels` finds (the installed package); for an in-place build run it
as `PYTHONPATH=$PWD python tests/support/fuzz.py` from the repository root. Its first line names the package and
kernels.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Callable, Dict, Optional

if __name__ == "__main__":
    # As a script, sys.path holds this file's folder (tests/support), not tests/: add tests/ so that the support
    # modules import as `support.<module>`, as they do under pytest (where tests/conftest.py's folder is on sys.path).
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from hypothesis import HealthCheck, given, note, seed, settings
from hypothesis import strategies as st

from torch._prims_common import is_non_overlapping_and_dense_or_false as is_non_overlapping_and_dense

from cnnkernels._library import op_names
from cnnkernels.ops._act import ACTIVATIONS, GATES
from cnnkernels.ops._checks import output_memory_format
from support import oracle
from support.dtypes import DTYPE_IDS, TOLERANCES
from support.helpers import expected_memory_format, map_tensors, op, reference
from support.samples import LAYOUTS, Maker, generic_ops

OPS = generic_ops("fuzz", op_names())
FUZZ_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)
ACTS = ACTIVATIONS
# Layouts of 4-D tensors: samples.LAYOUTS plus a cropped view (storage offset, non-dense, channels_last strides) and a
# batch broadcast (stride 0 over N: every image the same).
LAYOUTS_4D = LAYOUTS + ("crop", "bcast")
WEIGHT_LAYOUTS = ("nchw", "cl", "slice", "tview")
FLAT_LAYOUTS = ("contig", "perm", "strided", "bcast")  # add_relu, any rank
SPECIALS = (None,) * 7 + ("nan", "inf", "mixed")      # NaN/Inf injected into the input in ~30% of the cases

# Bounds of the drawn sizes. "small" is the CI slice; "large" (the long mode's default) reaches several weight panels
# (16 output channels with AVX2, 32 with AVX-512), several pixel tiles per row and several parallel chunks.
SIZES = {
    "small": dict(n=2, c=12, cout=20, hw=9, k=5, s=3, p=2, d=2, hidden=24, branch=12, numel=3000),
    "large": dict(n=3, c=40, cout=72, hw=24, k=7, s=3, p=4, d=3, hidden=96, branch=40, numel=100_000),
}


# ------------------------------------------------------------------------------------------------------------ layouts

def relayout(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A tensor equal to 4-D `t` (same dtype) with the given memory layout."""
    N, C, H, W = t.shape
    if layout == "nchw":
        return t.contiguous()
    if layout == "cl":
        return t.contiguous(memory_format=torch.channels_last)
    if layout == "slice":  # every other channel of a tensor with 2C channels: no dense layout
        buf = torch.full((N, 2 * C, H, W), 7.0, dtype=t.dtype)
        buf[:, ::2] = t
        return buf[:, ::2]
    if layout == "tview":  # dense but neither contiguous nor channels_last
        buf = torch.empty((N, C, W, H), dtype=t.dtype)
        buf.copy_(t.transpose(2, 3))
        return buf.transpose(2, 3)
    if layout == "crop":  # interior of a larger channels_last tensor: storage offset, row gaps
        buf = torch.full((N, C, H + 2, W + 3), -5.0, dtype=t.dtype).contiguous(memory_format=torch.channels_last)
        buf[:, :, 1:H + 1, 2:W + 2] = t
        return buf[:, :, 1:H + 1, 2:W + 2]
    if layout == "bcast":  # image 0 repeated over the batch with stride 0
        return t[:1].contiguous().expand(N, C, H, W)
    raise ValueError(layout)


def relayout_flat(t: torch.Tensor, layout: str) -> torch.Tensor:
    """A tensor equal to `t` (any rank) with the given layout: contiguous, dims stored in reverse order, every other
    element of the last dim, or dim 0 broadcast with stride 0."""
    if layout == "contig" or t.dim() == 0:
        return t.contiguous()
    if layout == "perm":
        rev = list(range(t.dim()))[::-1]
        return t.permute(rev).contiguous().permute(rev)
    if layout == "strided":
        buf = torch.full((*t.shape[:-1], 2 * t.shape[-1]), 3.0, dtype=t.dtype)
        buf[..., ::2] = t
        return buf[..., ::2]
    if layout == "bcast":
        return t[:1].contiguous().expand(t.shape)
    raise ValueError(layout)


def relayout_bias(t: Optional[torch.Tensor], strided: bool) -> Optional[torch.Tensor]:
    if t is None or not strided:
        return t
    buf = torch.zeros(2 * t.shape[0], dtype=t.dtype)
    buf[::2] = t
    return buf[::2]


def inject_specials(t: torch.Tensor, kind: Optional[str], gen: torch.Generator) -> torch.Tensor:
    """`t` with a few elements set to NaN and/or +-Inf (kind "nan", "inf", "mixed"), positions from `gen`."""
    if kind is None or t.numel() == 0:
        return t
    t = t.clone()
    flat = t.view(-1)
    values = {"nan": [math.nan], "inf": [math.inf, -math.inf], "mixed": [math.nan, math.inf, -math.inf]}[kind]
    count = 1 + int(torch.randint(0, 3, (1,), generator=gen))
    for i in range(count):
        flat[int(torch.randint(0, flat.numel(), (1,), generator=gen))] = values[i % len(values)]
    return t


# ------------------------------------------------------------------------------------------------------ strategies

def _common(draw, dtype=True):
    return dict(dtype=draw(st.sampled_from(FUZZ_DTYPES)) if dtype else None,
                threads=draw(st.sampled_from((0, 1, 3))),  # 0: leave torch's thread count as it is
                specials=draw(st.sampled_from(SPECIALS)))


def _conv_hparams(draw, b, odd=False):
    """Kernel size, stride, padding, dilation per axis (kH != kW, sH != sW ... are drawn too)."""
    ks = st.sampled_from([k for k in range(1, b["k"] + 1) if k % 2 == 1]) if odd else st.integers(1, b["k"])
    kH = draw(ks)
    kW = kH if draw(st.booleans()) else draw(ks)
    hp = dict(kH=kH, kW=kW)
    for axis in "HW":
        hp["s" + axis] = draw(st.integers(1, b["s"]))
        hp["p" + axis] = draw(st.integers(0, b["p"]))
        hp["d" + axis] = draw(st.integers(1, b["d"]))
    return hp


def _spatial(draw, b, hp):
    """H and W large enough for the dilated kernel with the drawn padding."""
    out = {}
    for axis in "HW":
        need = max(1, hp["d" + axis] * (hp["k" + axis] - 1) + 1 - 2 * hp["p" + axis])
        out[axis] = need + draw(st.integers(0, max(0, b["hw"] - need)))
    return out


@st.composite
def add_relu_cases(draw, b):
    rank = draw(st.sampled_from((4, 4, 1, 2, 3, 5, 0)))
    if rank == 4:
        shape = [draw(st.integers(1, b["n"] + 1)), draw(st.integers(1, b["c"] * 3)), draw(st.integers(1, b["hw"])),
                 draw(st.integers(1, b["hw"]))]
        layouts = st.sampled_from(LAYOUTS_4D)
    else:
        shape = [draw(st.integers(1, 40)) for _ in range(rank)]
        if rank == 1:
            shape = [draw(st.integers(1, b["numel"]))]
        layouts = st.sampled_from(FLAT_LAYOUTS)
    while math.prod(shape) > b["numel"]:
        shape[shape.index(max(shape))] //= 2
    return dict(op="add_relu", shape=shape, layout=draw(layouts), res_layout=draw(layouts), **_common(draw))


@st.composite
def conv2d_act_cases(draw, b):
    kind = draw(st.sampled_from(("dense", "grouped", "depthwise", "dw_multiplier")))
    if kind == "dense":
        groups, C, Cout = 1, draw(st.integers(1, b["c"])), draw(st.integers(1, b["cout"]))
    elif kind == "grouped":
        groups = draw(st.integers(2, 4))
        C = groups * draw(st.integers(1, max(1, b["c"] // groups)))
        Cout = groups * draw(st.integers(1, max(1, b["cout"] // groups)))
    elif kind == "depthwise":  # groups == C == Cout: the depthwise kernel
        groups = C = Cout = draw(st.integers(1, b["c"] * 2))
    else:  # groups == C, Cout a multiple of C: grouped, not the depthwise kernel
        groups = C = draw(st.integers(1, b["c"]))
        Cout = C * draw(st.integers(2, 3))
    hp = _conv_hparams(draw, b)
    return dict(op="conv2d_act", kind=kind, N=draw(st.integers(1, b["n"])), C=C, Cout=Cout, groups=groups, **hp,
                **_spatial(draw, b, hp), bias=draw(st.booleans()), residual=draw(st.booleans()),
                act=draw(st.sampled_from(ACTS)), layout=draw(st.sampled_from(LAYOUTS_4D)),
                res_layout=draw(st.sampled_from(LAYOUTS_4D)), w_layout=draw(st.sampled_from(WEIGHT_LAYOUTS)),
                strided_bias=draw(st.booleans()), **_common(draw))


@st.composite
def dwsep_conv2d_cases(draw, b):
    hp = _conv_hparams(draw, b)
    return dict(op="dwsep_conv2d", N=draw(st.integers(1, b["n"])), C=draw(st.integers(1, b["c"] * 2)),
                Cout=draw(st.integers(1, b["cout"])), **hp, **_spatial(draw, b, hp), dw_bias=draw(st.booleans()),
                pw_bias=draw(st.booleans()), dw_act=draw(st.sampled_from(ACTS)), pw_act=draw(st.sampled_from(ACTS)),
                layout=draw(st.sampled_from(LAYOUTS_4D)), w_layout=draw(st.sampled_from(WEIGHT_LAYOUTS)),
                strided_bias=draw(st.booleans()), **_common(draw))


@st.composite
def inverted_residual_cases(draw, b):
    C = draw(st.integers(1, b["c"]))
    expand = draw(st.booleans())
    hidden = draw(st.integers(1, b["hidden"])) if expand else C
    stride = draw(st.integers(1, b["s"]))
    residual = stride == 1 and draw(st.booleans())
    Cout = C if residual else draw(st.integers(1, b["cout"]))
    ks = st.sampled_from([k for k in range(1, b["k"] + 1) if k % 2 == 1])
    kH = draw(ks)
    kW = kH if draw(st.booleans()) else draw(ks)
    return dict(op="inverted_residual", N=draw(st.integers(1, b["n"])), C=C, expand=expand, hidden=hidden,
                expand_bias=expand and draw(st.booleans()), kH=kH, kW=kW, stride=stride, Cout=Cout,
                residual=residual, H=draw(st.integers(1, b["hw"])), W=draw(st.integers(1, b["hw"])),
                act=draw(st.sampled_from(ACTS)), layout=draw(st.sampled_from(LAYOUTS_4D)),
                w_layout=draw(st.sampled_from(WEIGHT_LAYOUTS)), strided_bias=draw(st.booleans()), **_common(draw))


@st.composite
def inception_block_cases(draw, b):
    ch = st.integers(1, b["branch"])
    ks = st.sampled_from([k for k in range(1, min(b["k"], 5) + 1) if k % 2 == 1])
    kernels = {}
    for br in ("k2", "k3"):
        kH = draw(ks)
        kernels[br] = (kH, kH if draw(st.booleans()) else draw(ks))
    return dict(op="inception_block", N=draw(st.integers(1, b["n"])), C=draw(st.integers(1, b["c"] * 2)),
                c1=draw(ch), c2r=draw(ch), c2=draw(ch), c3r=draw(ch), c3=draw(ch), c4=draw(ch), **kernels,
                H=draw(st.integers(1, b["hw"])), W=draw(st.integers(1, b["hw"])),
                layout=draw(st.sampled_from(LAYOUTS_4D)), w_layout=draw(st.sampled_from(WEIGHT_LAYOUTS)),
                strided_bias=draw(st.booleans()), **_common(draw))


@st.composite
def mbconv_cases(draw, b):
    C = draw(st.integers(1, b["c"]))
    expand = draw(st.booleans())
    hidden = draw(st.integers(1, b["hidden"])) if expand else C
    stride = draw(st.integers(1, 2))
    residual = stride == 1 and draw(st.booleans())
    Cout = C if residual else draw(st.integers(1, b["cout"]))
    se = draw(st.booleans())
    return dict(op="mbconv", N=draw(st.integers(1, b["n"])), C=C, expand=expand, hidden=hidden,
                k=draw(st.sampled_from([3, 5])), stride=stride, squeeze=draw(st.integers(1, 8)) if se else 0,
                Cout=Cout, residual=residual, H=draw(st.integers(1, b["hw"])), W=draw(st.integers(1, b["hw"])),
                act=draw(st.sampled_from(ACTS)), se_act=draw(st.sampled_from(ACTS)), gate=draw(st.sampled_from(GATES)),
                layout=draw(st.sampled_from(LAYOUTS_4D)), w_layout=draw(st.sampled_from(WEIGHT_LAYOUTS)),
                strided_bias=draw(st.booleans()), **_common(draw))


@st.composite
def up_concat_conv_cases(draw, b):
    return dict(op="up_concat_conv", N=draw(st.integers(1, b["n"])), C=draw(st.integers(1, b["c"] * 2)),
                Cup=draw(st.integers(1, b["c"])), Cskip=draw(st.integers(1, b["c"])),
                Cout=draw(st.integers(1, b["cout"])), H=draw(st.integers(1, (b["hw"] + 1) // 2)),
                W=draw(st.integers(1, (b["hw"] + 1) // 2)), up_bias=draw(st.booleans()), bias=draw(st.booleans()),
                act=draw(st.sampled_from(ACTS)), layout=draw(st.sampled_from(LAYOUTS_4D)),
                skip_layout=draw(st.sampled_from(LAYOUTS_4D)), w_layout=draw(st.sampled_from(WEIGHT_LAYOUTS)),
                strided_bias=draw(st.booleans()), **_common(draw))


STRATEGIES: Dict[str, Callable] = {
    "add_relu": add_relu_cases, "conv2d_act": conv2d_act_cases, "dwsep_conv2d": dwsep_conv2d_cases,
    "inverted_residual": inverted_residual_cases, "inception_block": inception_block_cases, "mbconv": mbconv_cases,
    "up_concat_conv": up_concat_conv_cases,
}


def cases(op_name: str, size: str = "small"):
    return STRATEGIES[op_name](SIZES[size])


# ----------------------------------------------------------------------------------------------- building the args

def build_args(case: dict) -> tuple:
    """The op's positional arguments for a drawn case (values seeded by the case itself)."""
    m = Maker("fuzz:" + repr(sorted(case.items(), key=lambda kv: kv[0])), case["dtype"], "cpu")
    sp = case["specials"]

    def x4(N, C, H, W, layout, specials=None):
        return relayout(inject_specials(m.randn(N, C, H, W), specials, m.gen), layout)

    def w(cout, cin, kh=1, kw=1):
        return relayout(m.weight(cout, cin, kh, kw), case["w_layout"])

    def bias(n, present=True):
        return relayout_bias(m.bias(n, present), case["strided_bias"])

    name = case["op"]
    if name == "add_relu":
        shape = case["shape"]
        if len(shape) == 4:
            return (x4(*shape, case["layout"], sp), x4(*shape, case["res_layout"], sp))
        return (relayout_flat(inject_specials(m.randn(*shape), sp, m.gen), case["layout"]),
                relayout_flat(inject_specials(m.randn(*shape), sp, m.gen), case["res_layout"]))
    if name == "conv2d_act":
        c = case
        Ho = (c["H"] + 2 * c["pH"] - c["dH"] * (c["kH"] - 1) - 1) // c["sH"] + 1
        Wo = (c["W"] + 2 * c["pW"] - c["dW"] * (c["kW"] - 1) - 1) // c["sW"] + 1
        res = x4(c["N"], c["Cout"], Ho, Wo, c["res_layout"]) if c["residual"] else None
        return (x4(c["N"], c["C"], c["H"], c["W"], c["layout"], sp),
                w(c["Cout"], c["C"] // c["groups"], c["kH"], c["kW"]), bias(c["Cout"], c["bias"]), res,
                [c["sH"], c["sW"]], [c["pH"], c["pW"]], [c["dH"], c["dW"]], c["groups"], c["act"])
    if name == "dwsep_conv2d":
        c = case
        return (x4(c["N"], c["C"], c["H"], c["W"], c["layout"], sp), w(c["C"], 1, c["kH"], c["kW"]),
                bias(c["C"], c["dw_bias"]), w(c["Cout"], c["C"]), bias(c["Cout"], c["pw_bias"]), [c["sH"], c["sW"]],
                [c["pH"], c["pW"]], [c["dH"], c["dW"]], c["dw_act"], c["pw_act"])
    if name == "inverted_residual":
        c = case
        hid = c["hidden"]
        ew = w(hid, c["C"]) if c["expand"] else None
        eb = bias(hid, c["expand_bias"]) if c["expand"] else None
        return (x4(c["N"], c["C"], c["H"], c["W"], c["layout"], sp), ew, eb, w(hid, 1, c["kH"], c["kW"]), bias(hid),
                w(c["Cout"], hid), bias(c["Cout"]), c["stride"], c["residual"], c["act"])
    if name == "mbconv":
        c = case
        hid, sq = c["hidden"], c["squeeze"]
        ew, eb = (w(hid, c["C"]), bias(hid)) if c["expand"] else (None, None)
        se = (w(sq, hid), bias(sq), w(hid, sq), bias(hid)) if sq else (None,) * 4
        return (x4(c["N"], c["C"], c["H"], c["W"], c["layout"], sp), ew, eb, w(hid, 1, c["k"], c["k"]), bias(hid),
                *se, w(c["Cout"], hid), bias(c["Cout"]), c["stride"], c["residual"], c["act"], c["se_act"],
                c["gate"])
    if name == "inception_block":
        c = case
        C = c["C"]
        return (x4(c["N"], C, c["H"], c["W"], c["layout"], sp), w(c["c1"], C), bias(c["c1"]), w(c["c2r"], C),
                bias(c["c2r"]), w(c["c2"], c["c2r"], *c["k2"]), bias(c["c2"]), w(c["c3r"], C), bias(c["c3r"]),
                w(c["c3"], c["c3r"], *c["k3"]), bias(c["c3"]), w(c["c4"], C), bias(c["c4"]))
    if name == "up_concat_conv":
        c = case
        return (x4(c["N"], c["C"], c["H"], c["W"], c["layout"], sp),
                x4(c["N"], c["Cskip"], 2 * c["H"], 2 * c["W"], c["skip_layout"]), w(c["C"], c["Cup"], 2, 2),
                bias(c["Cup"], c["up_bias"]), w(c["Cout"], c["Cskip"] + c["Cup"], 3, 3), bias(c["Cout"], c["bias"]),
                c["act"])
    raise ValueError(name)


@contextlib.contextmanager
def num_threads(n: int):
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextlib.contextmanager
def without_onednn():
    """Runs the reference on ATen's own convolution kernels. torch 2.14.1's oneDNN convolution crashes (SIGSEGV) on
    some valid channels_last grouped convolutions with a bias and padding wider than the input, which the strategies
    draw, e.g. F.conv2d(torch.randn(1, 2, 4, 1).contiguous(memory_format=torch.channels_last), torch.randn(4, 1, 1, 2),
    torch.randn(4), (1, 3), (0, 4), (1, 2), 2). (torch.backends.mkldnn.flags() would warn about TF32 on every use.)"""
    enabled = torch._C._get_mkldnn_enabled()
    torch._C._set_mkldnn_enabled(False)
    try:
        yield
    finally:
        torch._C._set_mkldnn_enabled(enabled)


def _meta_like(t: torch.Tensor) -> torch.Tensor:
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def check_case(op_name: str, args: tuple, dtype: torch.dtype) -> None:
    """The op's output vs the reference on the same inputs (in fp32; no oneDNN), or for fp64 inputs vs the float64
    im2col oracle of support/oracle.py (on CPU the fp64 op and the reference both run ATen): values within
    dtypes.TOLERANCES[dtype] with NaN/Inf in the same places, dtype, shape, memory format (channels_last in,
    channels_last out) and the fake kernel's exact shape and strides."""
    out = op(op_name)(*args)
    ref_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    if dtype == torch.float64:
        # The compiled CPU ops hand float64 to ATen, as the reference does: only the im2col oracle is independent.
        expected = oracle.oracle(op_name)(*args)
    else:
        with without_onednn():
            expected = reference(op_name)(*map_tensors(args, lambda t: t.to(ref_dtype)))
    assert out.dtype == dtype, (out.dtype, dtype)
    assert out.shape == expected.shape, (out.shape, expected.shape)
    x = args[0]
    # Inputs in exactly one of the two layouts: the rule the per-op tests check (helpers.expected_memory_format).
    # Views (sliced, cropped, broadcast) and inputs contiguous in both layouts (e.g. a 1x1 crop of a channels_last
    # tensor): the op's rule, torch's suggest_memory_format, as F.conv2d uses it.
    unambiguous = x.dim() == 4 and is_non_overlapping_and_dense(x) and \
        x.is_contiguous() != x.is_contiguous(memory_format=torch.channels_last)
    fmt = expected_memory_format(x) if unambiguous else output_memory_format(x)
    assert out.is_contiguous(memory_format=fmt), f"output strides {out.stride()} are not {fmt}"
    fake = op(op_name)(*map_tensors(args, _meta_like))
    assert fake.shape == out.shape and fake.stride() == out.stride(), (fake.shape, fake.stride(), out.stride())
    torch.testing.assert_close(out.to(ref_dtype), expected, equal_nan=True, **TOLERANCES[dtype])


def describe(case: dict) -> str:
    return ", ".join(f"{k}={DTYPE_IDS.get(v, v) if isinstance(v, torch.dtype) else v}" for k, v in case.items())


# -------------------------------------------------------------------------------------------------------- running

class Stats:
    """Counts of the cases actually run, per op and per value of a few interesting fields."""

    FIELDS = ("dtype", "layout", "kind", "act", "specials", "threads", "residual", "expand")

    def __init__(self):
        self.count = collections.Counter()
        self.by = collections.defaultdict(collections.Counter)

    def add(self, case: dict) -> None:
        name = case["op"]
        self.count[name] += 1
        for f in self.FIELDS:
            if f in case:
                v = case[f]
                self.by[(name, f)][DTYPE_IDS.get(v, v) if isinstance(v, torch.dtype) else v] += 1


def make_runner(op_name: str, size: str, max_examples: int, derandomize: bool, stats: Optional[Stats] = None,
                rng_seed: Optional[int] = None, database=None):
    """A zero-argument function running `max_examples` hypothesis cases of `op_name` (raises on the first failure,
    after shrinking it)."""

    @settings(max_examples=max_examples, derandomize=derandomize, deadline=None, database=database,
              suppress_health_check=list(HealthCheck), print_blob=True)
    @given(case=cases(op_name, size))
    def run(case):
        note(describe(case))
        args = build_args(case)
        with num_threads(case["threads"]):
            check_case(op_name, args, case["dtype"])
        if stats is not None:
            stats.add(case)

    if rng_seed is not None and not derandomize:
        run = seed(rng_seed)(run)
    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Long-mode fuzzing of the cnnkernels ops against their references.")
    ap.add_argument("--cases", type=int, default=10_000, help="cases per op (default 10000)")
    ap.add_argument("--ops", nargs="+", choices=OPS, default=list(OPS))
    ap.add_argument("--size", choices=tuple(SIZES), default="large", help="shape bounds (default large)")
    ap.add_argument("--seed", type=int, default=None, help="hypothesis seed (default: random)")
    args = ap.parse_args(argv)

    import cnnkernels
    import cnnkernels._library as L
    how = f"compiled CPU kernels ({L.cpu_isa()})" if L.STATE.cpu else f"reference fallback ({L.STATE.reason})"
    print(f"cnnkernels fuzz: {Path(cnnkernels.__file__).parent}, {how}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.cases} cases per op, size {args.size}, seed {args.seed}",
          flush=True)
    stats = Stats()
    failed = []
    t_all = time.perf_counter()
    for name in args.ops:
        t0 = time.perf_counter()
        try:
            make_runner(name, args.size, args.cases, derandomize=False, stats=stats, rng_seed=args.seed)()
            status = "ok"
        except Exception:  # noqa: BLE001  (hypothesis re-raises the shrunk failure; report it and go on)
            traceback.print_exc()
            status = "FAILED"
            failed.append(name)
        dt = time.perf_counter() - t0
        print(f"{name:<18} {status:<6} {stats.count[name]:>7} cases in {dt:7.1f} s "
              f"({1000 * dt / max(1, stats.count[name]):.1f} ms/case)", flush=True)
        for f in Stats.FIELDS:
            if (name, f) in stats.by:
                counts = ", ".join(f"{k}: {v}" for k, v in sorted(stats.by[(name, f)].items(), key=str))
                print(f"    {f:<9} {counts}")
    total = sum(stats.count.values())
    print(f"total: {total} cases in {time.perf_counter() - t_all:.1f} s; "
          + (f"FAILED: {', '.join(failed)}" if failed else "all passed"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
