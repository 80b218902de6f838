"""The index math, activations and launch plans of the CUDA kernels, checked on the host against Python and torch.

csrc/cuda/device_math.h and csrc/cuda/tiling.h are the __host__ __device__ helpers every CUDA kernel uses for output
sizes, NHWC offsets, im2col index splits, halo windows, activations and shared-memory plans. This test compiles them
for the CPU (csrc/cuda/emu/host_helpers.cpp, no CUDA or torch headers: needs only a C++ compiler, so it runs in every CI
configuration) and calls them through ctypes.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import random
import shutil
import subprocess

import pytest
import torch
import torch.nn.functional as F

from support.buildutil import REPO, skip_or_fail

ROOT = REPO
SRC = ROOT / "csrc" / "cuda" / "emu" / "host_helpers.cpp"

I64, I32, F32, F64 = ctypes.c_int64, ctypes.c_int, ctypes.c_float, ctypes.c_double
P64, P32 = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_int)

PLAN_FIELDS = ["bk", "lda", "ldb", "ldc", "lde", "ldx", "ldw", "ldce", "rows", "a", "b", "e", "c", "x", "w", "ce",
               "a2", "b2", "p", "bytes"]
LAUNCH_LEN = 6 + len(PLAN_FIELDS)  # ok, resident, grid_x, grid_y, th, tw, then the plan
ACT = {"none": 0, "relu": 1, "relu6": 2, "silu": 3, "hardswish": 4}  # cuda::Act
GATE = {"sigmoid": 0, "hardsigmoid": 1}  # cuda::Gate
KIB = 1024
# Opt-in shared memory per block of the architectures the wheel targets (sm_75, sm_86/89, sm_80, sm_90).
DEVICE_SMEM = {"sm75": 64 * KIB, "sm86": 99 * KIB, "sm80": 163 * KIB, "sm90": 227 * KIB}
DTYPES = {"fp16": (2, 4), "bf16": (2, 4), "fp32": (4, 4), "fp64": (8, 8)}  # element, accumulator bytes


def _compiler():
    for c in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if c and shutil.which(c):
            return shutil.which(c)
    return None


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    if not SRC.exists():
        skip_or_fail("the CUDA sources are not here (tests run outside a source checkout)")
    cxx = _compiler()
    if cxx is None:
        skip_or_fail("no C++ compiler to build the host helpers")
    out = tmp_path_factory.mktemp("cuda_host_helpers") / "libcnnk_host_helpers.so"
    subprocess.run([cxx, "-std=c++20", "-O1", "-shared", "-fPIC", f"-I{ROOT / 'csrc'}", str(SRC), "-o", str(out)],
                   check=True)
    L = ctypes.CDLL(str(out))
    sig = {
        "cnnk_conv_out_size": (I64, [I64] * 5),
        "cnnk_nhwc_offset": (I64, [I64] * 7),
        "cnnk_split_pixel": (None, [I64, I64, I64, P64]),
        "cnnk_split_k": (None, [I32, I32, I32, P32]),
        "cnnk_row_info": (None, [I64, I64, I64, I64, P64]),
        "cnnk_gather_offset": (None, [I64, I64, I64, I64, I32, I32, I64, I64, I64] + [I32] * 8 + [P64]),
        "cnnk_halo_origin": (I64, [I64] * 3),
        "cnnk_halo_extent": (I64, [I64] * 4),
        "cnnk_clamp_range": (None, [I64, I64, I64, P64]),
        "cnnk_act_f32": (F32, [I32, F32]),
        "cnnk_act_f64": (F64, [I32, F64]),
        "cnnk_gate_f32": (F32, [I32, F32]),
        "cnnk_gate_f64": (F64, [I32, F64]),
        "cnnk_max_nan_f32": (F32, [F32, F32]),
        "cnnk_chunk_k": (I32, [I32]),
        "cnnk_constants": (None, [P64]),
        "cnnk_plan_smem": (None, [I32, I32, I64, I64, I32, I32, I32, I64, P64]),
        "cnnk_plan_gemm": (None, [I64, I64, I64, I32, I32, I32, I64, I64, I32, I32, I64, I32, P64]),
        "cnnk_plan_inverted_residual": (None, [I64, I64, I64, I32, I32, I32, I64, I64, I32, I32, I32, I32, I64, P64]),
        "cnnk_plan_depthwise": (None, [I64, I64, I64, I64] + [I32] * 7 + [I64, P64]),
        "cnnk_plan_dwsep": (None, [I64] * 5 + [I32] * 9 + [I64, P64]),
    }
    for name, (res, args) in sig.items():
        f = getattr(L, name)
        f.restype, f.argtypes = res, args
    return L


def _out(lib, name, n, *args, ctype=ctypes.c_int64):
    buf = (ctype * n)()
    getattr(lib, name)(*args, buf)
    return list(buf)


def _plan(values):
    return dict(zip(PLAN_FIELDS, values))


@pytest.fixture(scope="module")
def consts(lib):
    v = _out(lib, "cnnk_constants", 7)
    return dict(zip(["threads", "bm", "bn", "align", "resident_cap", "rowinfo", "gatherrow"], v))


# ---- index math ------------------------------------------------------------------------------------------------------

def test_conv_out_size_matches_torch(lib):
    for n, k, s, p, d in itertools.product([1, 2, 5, 7, 14, 224], [1, 3, 5, 7], [1, 2, 3], [0, 1, 3], [1, 2]):
        got = lib.cnnk_conv_out_size(n, k, s, p, d)
        if n + 2 * p - d * (k - 1) - 1 < 0:
            assert got == 0
            continue
        x = torch.empty(1, 1, n, 1, device="meta")
        w = torch.empty(1, 1, k, 1, device="meta")
        want = F.conv2d(x, w, stride=(s, 1), padding=(p, 0), dilation=(d, 1)).shape[2]
        assert got == want, (n, k, s, p, d)


def test_nhwc_offset_matches_channels_last_strides(lib):
    t = torch.empty(3, 5, 4, 6).contiguous(memory_format=torch.channels_last)
    sn, sc, sh, sw = t.stride()
    for n, c, h, w in itertools.product(range(3), range(5), range(4), range(6)):
        assert lib.cnnk_nhwc_offset(n, h, w, c, 4, 6, 5) == n * sn + c * sc + h * sh + w * sw
    # a channel slice [c0, c0 + 3) of a 9-channel tensor: pixel stride 9, offsets shifted by c0 (the OutSlice rule)
    y = torch.empty(2, 9, 3, 3).contiguous(memory_format=torch.channels_last)
    c0 = 4
    for n, c, h, w in itertools.product(range(2), range(3), range(3), range(3)):
        assert lib.cnnk_nhwc_offset(n, h, w, c, 3, 3, 9) + c0 == (
            n * y.stride(0) + (c0 + c) * y.stride(1) + h * y.stride(2) + w * y.stride(3))


def test_nhwc_offset_is_64_bit(lib):
    # 3 x 40000 x 40000 pixels x 1024 channels: offsets far beyond 2**31 (and 2**32)
    N, H, W, C = 3, 40000, 40000, 1024
    for n, h, w, c in [(2, 39999, 39999, 1023), (1, 12345, 54, 7), (2, 0, 0, 0)]:
        want = ((n * H + h) * W + w) * C + c
        assert want > 2**31
        assert lib.cnnk_nhwc_offset(n, h, w, c, H, W, C) == want


def test_split_pixel_inverts_linear_index(lib):
    rng = random.Random(0)
    for Ho, Wo in [(1, 1), (7, 7), (13, 5), (112, 112), (40000, 40000)]:
        for m in [0, 1, Ho * Wo - 1, Ho * Wo, 5 * Ho * Wo + 3] + [rng.randrange(10 * Ho * Wo) for _ in range(50)]:
            n, r = divmod(m, Ho * Wo)
            assert _out(lib, "cnnk_split_pixel", 3, m, Ho, Wo) == [n, r // Wo, r % Wo]


def test_split_k_matches_packed_weight_layout(lib):
    # The wrappers pack a conv weight [Cout, Cg, kH, kW] as [groups][kH][kW][Cg][Cog] (csrc/cuda/common.h,
    # pack_gemm_weight); the kernels read row k of a group as the (kh, kw, c) that split_k gives.
    for groups, Cg, Cog, kH, kW in [(1, 3, 4, 7, 7), (2, 5, 3, 3, 3), (4, 1, 2, 1, 5), (1, 33, 2, 3, 1)]:
        w = torch.arange(groups * Cog * Cg * kH * kW, dtype=torch.float64).reshape(groups * Cog, Cg, kH, kW)
        packed = w.reshape(groups, Cog, Cg, kH, kW).permute(0, 3, 4, 2, 1).reshape(groups, kH * kW * Cg, Cog)
        for g, k, j in itertools.product(range(groups), range(kH * kW * Cg), range(Cog)):
            kh, kw, c = _out(lib, "cnnk_split_k", 3, k, Cg, kW, ctype=ctypes.c_int)
            assert packed[g, k, j] == w[g * Cog + j, c, kh, kw]


def test_halo_window_and_clamped_rows(lib):
    # The input rows (or columns) read by output positions [o0, o0 + tile) of a window k, stride s, padding p,
    # dilation d: brute force against halo_origin / halo_extent / clamp_range.
    for size, k, s, p, d in itertools.product([1, 5, 8, 13], [1, 3, 5], [1, 2], [0, 1, 2], [1, 2]):
        out = lib.cnnk_conv_out_size(size, k, s, p, d)
        for tile in [1, 2, 4, 8]:
            for o0 in range(0, max(out, 1), tile):
                read = [o * s - p + kk * d for o in range(o0, o0 + tile) for kk in range(k)]
                origin = lib.cnnk_halo_origin(o0, s, p)
                extent = lib.cnnk_halo_extent(tile, s, k, d)
                assert origin == min(read) and origin + extent - 1 == max(read)
                inside = [i for i in read if 0 <= i < size]
                lo, hi = _out(lib, "cnnk_clamp_range", 2, origin, extent, size)
                assert all(lo <= i < hi for i in inside)  # every in-image read lies in the clamped window
                assert (lo, hi) == ((max(origin, 0), min(origin + extent, size)) if hi > lo else (lo, hi))
                if d == 1 and (s <= k or tile == 1):  # the reads are contiguous: the window is exactly them
                    assert (lo, hi) == ((min(inside), max(inside) + 1) if inside else (lo, lo))
    assert _out(lib, "cnnk_clamp_range", 2, -5, 3, 10) == [0, 0]
    assert _out(lib, "cnnk_clamp_range", 2, 12, 3, 10)[0] == _out(lib, "cnnk_clamp_range", 2, 12, 3, 10)[1]


# ---- activations ------------------------------------------------------------------------------------------------------

VALUES = [float("nan"), float("inf"), float("-inf"), -0.0, 0.0, -1.5, 1e-30, 3.0, 5.999, 6.0, 6.001, 1e30]


@pytest.mark.parametrize("act", ["none", "relu", "relu6"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_activation_matches_torch_incl_nan(lib, act, dtype):
    x = torch.tensor(VALUES, dtype=dtype)
    want = {"none": x, "relu": torch.relu(x), "relu6": F.relu6(x)}[act]
    f = lib.cnnk_act_f32 if dtype == torch.float32 else lib.cnnk_act_f64
    got = torch.tensor([f(ACT[act], v) for v in VALUES], dtype=dtype)
    torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)


# Around the kinks of hardswish / hardsigmoid (+-3) and where e**-x overflows (silu, sigmoid), plus VALUES.
SMOOTH_VALUES = VALUES + [-1e30, -100.0, -20.0, -3.0, -2.5, -0.5, 0.5, 2.5, 20.0, 100.0, 88.5, -88.5, -745.0, 710.0]
# silu and sigmoid go through exp, whose last bit differs between libm / CUDA and torch's vectorized exp.
SMOOTH_TOL = {torch.float32: dict(rtol=4 * 2**-24, atol=1e-37), torch.float64: dict(rtol=4 * 2**-53, atol=1e-300)}


def test_activation_ids_follow_the_op_activations():
    from cnnkernels.ops._act import ACTIVATIONS, GATES
    assert tuple(ACT) == ACTIVATIONS and tuple(GATE) == GATES
    assert list(ACT.values()) == list(range(len(ACT))) and list(GATE.values()) == list(range(len(GATE)))


@pytest.mark.parametrize("act", ["silu", "hardswish"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_smooth_activation_matches_torch_incl_nan_and_inf(lib, act, dtype):
    x = torch.tensor(SMOOTH_VALUES, dtype=dtype)
    want = {"silu": F.silu, "hardswish": F.hardswish}[act](x)
    f = lib.cnnk_act_f32 if dtype == torch.float32 else lib.cnnk_act_f64
    got = torch.tensor([f(ACT[act], v) for v in x.tolist()], dtype=dtype)
    torch.testing.assert_close(got, want, equal_nan=True, **SMOOTH_TOL[dtype])


@pytest.mark.parametrize("gate", list(GATE))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gate_matches_torch_incl_nan_and_inf(lib, gate, dtype):
    x = torch.tensor(SMOOTH_VALUES, dtype=dtype)
    want = {"sigmoid": torch.sigmoid, "hardsigmoid": F.hardsigmoid}[gate](x)
    f = lib.cnnk_gate_f32 if dtype == torch.float32 else lib.cnnk_gate_f64
    got = torch.tensor([f(GATE[gate], v) for v in x.tolist()], dtype=dtype)
    torch.testing.assert_close(got, want, equal_nan=True, **SMOOTH_TOL[dtype])


def test_max_nan_propagates_like_max_pool2d(lib):
    rng = random.Random(1)
    for _ in range(200):
        vals = [rng.choice([rng.uniform(-5, 5), float("nan"), float("-inf"), float("inf")]) for _ in range(9)]
        m = vals[0]
        for v in vals[1:]:
            m = lib.cnnk_max_nan_f32(m, v)
        want = F.max_pool2d(torch.tensor(vals, dtype=torch.float32).reshape(1, 1, 3, 3), 3).item()
        assert (math.isnan(m) and math.isnan(want)) or m == want, vals


# ---- shared-memory plans ----------------------------------------------------------------------------------------------

def _regions(p, consts, t_bytes, acc_bytes, halo, expand, scratch=0):
    bm = consts["bm"]
    r = {"rows": (p["rows"], bm * consts["rowinfo"]), "a": (p["a"], bm * p["lda"] * t_bytes),
         "b": (p["b"], p["bk"] * p["ldb"] * t_bytes)}
    if p["a2"] != p["a"]:
        r["a2"] = (p["a2"], bm * p["lda"] * t_bytes)
    if p["b2"] != p["b"]:
        r["b2"] = (p["b2"], p["bk"] * p["ldb"] * t_bytes)
    if scratch:
        r["p"] = (p["p"], scratch)
    if halo:
        r["e"] = (p["e"], halo * p["lde"] * acc_bytes)
    staging = {}
    if t_bytes == 2:
        staging["c"] = (p["c"], bm * p["ldc"] * 4)
    if expand:
        staging["x"] = (p["x"], bm * p["ldx"] * t_bytes)
        staging["w"] = (p["w"], p["bk"] * p["ldw"] * t_bytes)
        if t_bytes == 2:
            staging["ce"] = (p["ce"], bm * p["ldce"] * 4)
    return r, staging


def _disjoint(a, b):
    return a[0] + a[1] <= b[0] or b[0] + b[1] <= a[0]


# (A buffers, B buffers, producer scratch bytes): the single-buffer layout, and the pipelined one with the gather's rows
BUFFERS = {"single": (1, 1, 0), "double": (2, 2, 64 * 24)}


@pytest.mark.parametrize("bufs", list(BUFFERS))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("k_resident", [0, 1, 31, 32, 33, 576, 960])
@pytest.mark.parametrize("halo,expand", [(0, False), (100, False), (100, True), (289, True)])
def test_smem_plan_layout(lib, consts, dtype, k_resident, halo, expand, bufs):
    t_bytes, acc_bytes = DTYPES[dtype]
    a_bufs, b_bufs, scratch = BUFFERS[bufs]
    p = _plan(_out(lib, "cnnk_plan_smem", len(PLAN_FIELDS), t_bytes, acc_bytes, k_resident, halo, int(expand), a_bufs,
                   b_bufs, scratch))
    # a second A buffer only for A per chunk (a resident A holds every chunk already)
    assert (p["a2"] != p["a"]) == (a_bufs == 2 and k_resident == 0)
    assert (p["b2"] != p["b"]) == (b_bufs == 2)
    assert p["bk"] == lib.cnnk_chunk_k(t_bytes) == (16 if t_bytes == 8 else 32)
    k_cols = p["bk"] if k_resident == 0 else math.ceil(k_resident / p["bk"]) * p["bk"]
    assert p["lda"] >= k_cols  # the A tile holds every K column it is given
    assert p["ldb"] >= consts["bn"] and p["ldc"] >= consts["bn"]
    assert min(p["lde"], p["ldx"], p["ldw"], p["ldce"]) >= p["bk"]
    persistent, staging = _regions(p, consts, t_bytes, acc_bytes, halo, expand, scratch)
    for off, _ in list(persistent.values()) + list(staging.values()):
        assert off % consts["align"] == 0
    for (na, ra), (nb, rb) in itertools.combinations(persistent.items(), 2):
        assert _disjoint(ra, rb), (na, nb)
    for ra in persistent.values():
        for rb in staging.values():
            assert _disjoint(ra, rb)
    # the expansion tiles are live together; the epilogue staging c may overlap them (never live at the same time)
    exp = [v for k, v in staging.items() if k != "c"]
    for ra, rb in itertools.combinations(exp, 2):
        assert _disjoint(ra, rb)
    assert p["bytes"] >= max(o + n for o, n in list(persistent.values()) + list(staging.values()))
    if t_bytes == 2:  # WMMA: ldm a multiple of 16 bytes, fragment starts (every 16 rows / 16 columns) 32-byte aligned
        for ld, es in [(p["lda"], 2), (p["ldb"], 2), (p["ldx"], 2), (p["ldw"], 2), (p["ldc"], 4), (p["ldce"], 4)]:
            assert (ld * es) % 16 == 0 and (16 * ld * es) % 32 == 0
        for k0 in range(0, k_cols, p["bk"]):  # resident A: each chunk's fragments start 32-byte aligned
            assert (k0 * 2) % 32 == 0


def test_gemm_plan_grid_and_residency(lib, consts):
    def plan(row_tiles, col_tiles, K, sms, smem, t_bytes=2, acc=4):
        v = _out(lib, "cnnk_plan_gemm", LAUNCH_LEN, row_tiles, col_tiles, K, t_bytes, acc, sms, smem, 0, 0, 0, 0, 1)
        return dict(ok=v[0], resident=v[1], gx=v[2], gy=v[3], plan=_plan(v[6:]))

    big = plan(10000, 8, 576, 132, 227 * KIB)  # plenty of pixel tiles: no column split, the block walks all 8 tiles
    assert big["ok"] and big["gx"] == 10000 and big["gy"] == 1 and big["resident"]
    small = plan(2, 16, 576, 132, 227 * KIB)  # few pixel tiles: columns spread over grid.y, one tile per block
    assert small["ok"] and small["gy"] == 16 and not small["resident"]
    assert plan(4, 16, 576, 8, 227 * KIB)["gy"] == 4  # 2 blocks per SM: ceil(16 / 4)
    one = plan(10000, 1, 576, 132, 227 * KIB)  # a single column tile: nothing to reuse A for
    assert one["ok"] and not one["resident"]
    huge_k = plan(10000, 8, 9 * 1024, 132, 227 * KIB)  # resident A would pass kResidentCap: chunked
    assert huge_k["ok"] and not huge_k["resident"]
    assert huge_k["plan"]["bytes"] <= 48 * KIB  # chunked blocks fit without an opt-in
    tight = plan(10000, 8, 576, 132, 30 * KIB)  # chunked fp16 needs ~29 KiB, resident K=576 ~100 KiB
    assert tight["ok"] and not tight["resident"]
    assert not plan(10000, 8, 576, 132, 4 * KIB)["ok"]
    assert plan(10000, 2**20, 576, 132, 227 * KIB)["gy"] == 1
    assert plan(1, 2**20, 576, 132, 227 * KIB)["gy"] == 264
    assert plan(1, 2**20, 576, 100000, 227 * KIB)["gy"] == 65535  # grid.y limit; blocks then walk several tiles


# MobileNetV2's inverted residual blocks at 224x224: (C, hidden, Cout, H, stride); hidden == C: no expansion.
MBV2 = [(32, 32, 16, 112, 1), (16, 96, 24, 112, 2), (24, 144, 24, 56, 1), (24, 144, 32, 56, 2), (32, 192, 32, 28, 1),
        (32, 192, 64, 28, 2), (64, 384, 64, 14, 1), (64, 384, 96, 14, 1), (96, 576, 96, 14, 1), (96, 576, 160, 14, 2),
        (160, 960, 160, 7, 1), (160, 960, 320, 7, 1)]


@pytest.mark.parametrize("device", list(DEVICE_SMEM))
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("k", [3, 5, 7])
def test_inverted_residual_plan_fits_every_target(lib, consts, device, dtype, k):
    t_bytes, acc_bytes = DTYPES[dtype]
    limit = DEVICE_SMEM[device]
    for C, hidden, Cout, H, s in MBV2:
        Ho = (H - 1) // s + 1
        v = _out(lib, "cnnk_plan_inverted_residual", LAUNCH_LEN, 1, Ho, Ho, s, k, k, hidden, Cout, int(hidden != C),
                 t_bytes, acc_bytes, 80, limit)
        ok, resident, gx, gy, th, tw = v[:6]
        p = _plan(v[6:])
        assert ok, (C, hidden, Cout, H, s)
        assert 1 <= th * tw <= consts["bm"]
        assert gx == math.ceil(Ho / th) * math.ceil(Ho / tw)
        assert p["bytes"] <= limit
        halo = lib.cnnk_halo_extent(th, s, k, 1) * lib.cnnk_halo_extent(tw, s, k, 1)
        assert p["c"] >= p["e"] + halo * p["lde"] * acc_bytes  # the expanded halo tile fits before the staging union
        if resident:
            assert p["lda"] >= hidden
        if dtype != "fp64" and k == 3 and device != "sm75":
            assert (th, tw) == (8, 8) or s == 2  # the full 8x8 tile where shared memory allows


def test_inverted_residual_plan_falls_back_to_smaller_tiles(lib):
    sizes = []
    for limit in [227, 64, 40, 30, 24]:
        v = _out(lib, "cnnk_plan_inverted_residual", LAUNCH_LEN, 1, 56, 56, 2, 7, 7, 144, 32, 1, 8, 8, 80, limit * KIB)
        if v[0]:
            sizes.append(v[4] * v[5])
            assert v[6 + PLAN_FIELDS.index("bytes")] <= limit * KIB
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) > 1


@pytest.mark.parametrize("stride", [2 ** 20, 2 ** 26, 2 ** 31 - 1])
def test_inverted_residual_plan_with_huge_stride(lib, stride):
    # Stride up to its cap (2**31 - 1): the halo of an 8x8 output tile spans ~7 * stride rows and columns, whose product
    # overflowed int64 (2**26 and up) and could wrap to a size that "fit". Only the 1x1 tile fits; one output pixel.
    for dtype, (t_bytes, acc_bytes) in DTYPES.items():
        v = _out(lib, "cnnk_plan_inverted_residual", LAUNCH_LEN, 1, 1, 1, stride, 5, 5, 24, 8, 1, t_bytes, acc_bytes,
                 80, DEVICE_SMEM["sm90"])
        ok, resident, gx, gy, th, tw = v[:6]
        p = _plan(v[6:])
        assert ok and (th, tw) == (1, 1) and gx == 1, (dtype, v[:6])
        assert 0 < p["bytes"] <= DEVICE_SMEM["sm90"]
        assert p["c"] >= p["e"] + 25 * p["lde"] * acc_bytes



# ---- depthwise tiles with a shared-memory halo (plan_depthwise, plan_dwsep) -------------------------------------------

DW_SMEM_CAP = 24 * KIB  # plan_depthwise's own cap (kDwSmemCap)


def _plan_depthwise(lib, N, Ho, Wo, C, k, s, d, acc_bytes, limit):
    v = _out(lib, "cnnk_plan_depthwise", 9, N, Ho, Wo, C, k[0], k[1], s[0], s[1], d[0], d[1], acc_bytes, limit)
    return dict(zip(["ok", "th", "tw", "cc", "IH", "IW", "gx", "gy", "bytes"], v))


def _check_depthwise_plan(lib, p, N, Ho, Wo, C, k, s, d, acc_bytes, limit):
    th, tw, cc = p["th"], p["tw"], p["cc"]
    assert cc == min(32, 1 << max(C - 1, 0).bit_length())
    assert th in (1, 2, 4, 8) and tw in (1, 2, 4, 8) and th * tw <= (256 // cc) * 8  # kDwPix sums per thread
    assert th < 2 * Ho and tw < 2 * Wo  # no tile twice the output's size
    assert (p["IH"], p["IW"]) == (lib.cnnk_halo_extent(th, s[0], k[0], d[0]), lib.cnnk_halo_extent(tw, s[1], k[1], d[1]))
    assert p["IH"] * p["IW"] < th * tw * k[0] * k[1]  # the halo is smaller than the windows it replaces
    assert p["bytes"] == p["IH"] * p["IW"] * cc * acc_bytes <= min(limit, DW_SMEM_CAP)
    assert (p["gx"], p["gy"]) == (N * math.ceil(Ho / th) * math.ceil(Wo / tw), math.ceil(C / cc))


# MobileNet v2's depthwise convs at 224x224 (channels, output size, stride), 3x3, and EfficientNet-B0's 5x5 ones.
DW_LAYERS = [(32, 112, 1, 3), (96, 56, 2, 3), (144, 56, 1, 3), (144, 28, 2, 3), (192, 28, 1, 3), (384, 14, 1, 3),
             (576, 7, 2, 3), (960, 7, 1, 3), (144, 28, 2, 5), (240, 28, 1, 5), (672, 7, 2, 5), (1152, 7, 1, 5)]


@pytest.mark.parametrize("device", list(DEVICE_SMEM))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_depthwise_plan_tiles_the_mobilenet_layers(lib, device, dtype):
    _, acc_bytes = DTYPES[dtype]
    limit = DEVICE_SMEM[device]
    for C, Ho, s, k in DW_LAYERS:
        p = _plan_depthwise(lib, 2, Ho, Ho, C, (k, k), (s, s), (1, 1), acc_bytes, limit)
        assert p["ok"], (C, Ho, s, k)
        _check_depthwise_plan(lib, p, 2, Ho, Ho, C, (k, k), (s, s), (1, 1), acc_bytes, limit)
        if acc_bytes == 4 and k == 3 and s == 1:
            assert (p["th"], p["tw"]) == (8, 8)


def test_depthwise_plan_edges(lib):
    # Few channels: a narrower chunk, more pixels per thread group; a 3-row output: no 8-row tile.
    p = _plan_depthwise(lib, 1, 3, 50, 6, (3, 3), (1, 1), (1, 1), 4, 99 * KIB)
    assert p["ok"] and p["cc"] == 8 and p["th"] == 4
    _check_depthwise_plan(lib, p, 1, 3, 50, 6, (3, 3), (1, 1), (1, 1), 4, 99 * KIB)
    # The direct kernel: a 1x1 window, a single output pixel, a dilation whose gaps make the halo larger than the
    # windows, shared memory too small for any halo.
    for args in [(1, 56, 56, 32, (1, 1), (1, 1), (1, 1)), (1, 1, 1, 32, (3, 3), (1, 1), (1, 1)),
                 (1, 20, 20, 8, (3, 3), (1, 1), (9, 9))]:
        assert not _plan_depthwise(lib, *args, 4, 99 * KIB)["ok"], args
    assert not _plan_depthwise(lib, 1, 56, 56, 32, (3, 3), (1, 1), (1, 1), 4, 1 * KIB)["ok"]


@pytest.mark.parametrize("big", [2 ** 20, 2 ** 26, 2 ** 31 - 1])
def test_depthwise_plans_with_huge_window_params(lib, big):
    # Strides / dilations up to 2**31 - 1: halo extents near 2**34 whose product overflows int64; never a tile that
    # "fits" through a wrapped-around size. A huge stride leaves one output row (column): a 1 x 8 (8 x 1) tile is
    # still worth it; one output pixel or huge dilations take the direct kernel.
    for s, d in [((big, big), (1, 1)), ((1, 1), (big, big)), ((big, 2), (1, 1)), ((1, big), (1, 1))]:
        for acc_bytes in (4, 8):
            p = _plan_depthwise(lib, 1, 1 if s[0] == big else 9, 1 if s[1] == big else 9, 4, (3, 3), s, d, acc_bytes,
                                DEVICE_SMEM["sm90"])
            if p["ok"]:
                _check_depthwise_plan(lib, p, 1, 1 if s[0] == big else 9, 1 if s[1] == big else 9, 4, (3, 3), s, d,
                                      acc_bytes, DEVICE_SMEM["sm90"])
            assert p["ok"] == (s in [(big, 2), (1, big)]), (s, d, acc_bytes)
            for dtype, (t_bytes, acc) in DTYPES.items():
                v = _out(lib, "cnnk_plan_dwsep", LAUNCH_LEN, 1, 1, 1, 4, 70, 3, 3, s[0], s[1], d[0], d[1], t_bytes, acc, 80,
                         DEVICE_SMEM["sm90"])
                assert v[0] and v[4] == v[5] == 0 and v[2] == 1, (s, d, dtype)  # one pixel: flattened rows


# MobileNet v1's depthwise-separable layers at 224x224: (C, Cout, output size, stride).
MBV1 = [(32, 64, 112, 1), (64, 128, 56, 2), (128, 128, 56, 1), (128, 256, 28, 2), (256, 256, 28, 1),
        (256, 512, 14, 2), (512, 512, 14, 1), (512, 1024, 7, 2), (1024, 1024, 7, 1)]


@pytest.mark.parametrize("device", list(DEVICE_SMEM))
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_dwsep_plan_fits_every_target(lib, consts, device, dtype):
    t_bytes, acc_bytes = DTYPES[dtype]
    limit = DEVICE_SMEM[device]
    for C, Cout, Ho, s in MBV1:
        for k, d in [(3, 1), (5, 1), (3, 2)]:
            v = _out(lib, "cnnk_plan_dwsep", LAUNCH_LEN, 2, Ho, Ho, C, Cout, k, k, s, s, d, d, t_bytes, acc_bytes, 80, limit)
            ok, resident, gx, gy, th, tw = v[:6]
            p = _plan(v[6:])
            assert ok and p["bytes"] <= limit, (C, Cout, Ho, s, k, d)
            flat = math.ceil(2 * Ho * Ho / consts["bm"])
            if th == 0:
                assert gx == flat
                continue
            assert 1 <= th * tw <= consts["bm"] and gx == 2 * math.ceil(Ho / th) * math.ceil(Ho / tw) <= 2 * flat
            halo = lib.cnnk_halo_extent(th, s, k, d) * lib.cnnk_halo_extent(tw, s, k, d)
            assert halo < th * tw * k * k
            assert p["c"] >= p["e"] + halo * p["lde"] * acc_bytes  # the halo fits before the epilogue staging
            if resident:
                assert p["lda"] >= C
        if dtype != "fp64" and device != "sm75":  # the MobileNet v1 3x3 layers all get 8x8 tiles where memory allows
            v = _out(lib, "cnnk_plan_dwsep", LAUNCH_LEN, 2, Ho, Ho, C, Cout, 3, 3, s, s, 1, 1, t_bytes, acc_bytes, 80, limit)
            assert (v[4], v[5]) == (8, 8), (C, Ho, s)


# ---- the GEMM pipeline's buffers and the 64-bit gather ---------------------------------------------------------------

def _gemm_plan(lib, row_tiles, col_tiles, K, dtype, sms, smem, async_a=False, scratch=0, pipelined=True):
    t_bytes, acc_bytes = DTYPES[dtype]
    v = _out(lib, "cnnk_plan_gemm", LAUNCH_LEN, row_tiles, col_tiles, K, t_bytes, acc_bytes, sms, smem, 0, 0,
             int(async_a), scratch, int(pipelined))
    p = _plan(v[6:])
    return dict(ok=v[0], resident=v[1], a2=p["a2"] != p["a"], b2=p["b2"] != p["b"], bytes=p["bytes"])


@pytest.mark.parametrize("dtype", list(DTYPES))
def test_gemm_plan_double_buffers(lib, consts, dtype):
    gather = dict(async_a=True, scratch=consts["bm"] * consts["gatherrow"])  # the im2col gather (conv2d_act_kernel.cu)
    # A per chunk: both buffers doubled for the gather, only B for a producer that computes A; also without an opt-in
    # (48 KiB, test_launch_variants' small_smem device), fp64 included
    for smem in [48 * KIB, 227 * KIB]:
        p = _gemm_plan(lib, 10000, 1, 576, dtype, 132, smem, **gather)
        assert p["ok"] and not p["resident"] and p["a2"] and p["b2"] and p["bytes"] <= smem
        p = _gemm_plan(lib, 10000, 1, 576, dtype, 132, smem)
        assert p["ok"] and not p["resident"] and not p["a2"] and p["b2"]
    # resident A: one A buffer, two B buffers
    p = _gemm_plan(lib, 10000, 8, 96, dtype, 132, 227 * KIB, **gather)
    assert p["ok"] and p["resident"] and not p["a2"] and p["b2"]
    # no cp.async (sm_75): single buffers, resident or not (a second one would only cost blocks per SM)
    for cols in [1, 8]:
        p = _gemm_plan(lib, 10000, cols, 96, dtype, 132, 99 * KIB, pipelined=False, **gather)
        assert p["ok"] and p["resident"] == (cols > 1) and not p["a2"] and not p["b2"]
    # too tight for the second buffers: the single-buffer layout, still a valid plan
    single = _plan(_out(lib, "cnnk_plan_smem", len(PLAN_FIELDS), *DTYPES[dtype], 0, 0, 0, 1, 1, gather["scratch"]))
    p = _gemm_plan(lib, 10000, 1, 576, dtype, 132, single["bytes"], **gather)
    assert p["ok"] and not p["a2"] and not p["b2"] and p["bytes"] == single["bytes"]
    assert not _gemm_plan(lib, 10000, 1, 576, dtype, 132, single["bytes"] - 1, **gather)["ok"]


def test_gemm_plan_rejects_what_32_bit_grids_and_k_cannot_hold(lib):
    # grid.x is one block per 64 output pixels (at most 2**31 - 1 blocks) and K is split in 32-bit ints: the launchers
    # fail (cudaErrorInvalidConfiguration) instead of launching a truncated grid. Plans only: nothing is allocated.
    assert _gemm_plan(lib, 2**31 - 1, 1, 9, "fp16", 132, 227 * KIB)["ok"]
    assert not _gemm_plan(lib, 2**31, 1, 9, "fp16", 132, 227 * KIB)["ok"]
    assert _gemm_plan(lib, 100, 1, 2**31 - 1, "fp32", 132, 227 * KIB)["ok"]
    assert not _gemm_plan(lib, 100, 1, 2**31, "fp32", 132, 227 * KIB)["ok"]


def test_inverted_residual_plan_rejects_rows_or_columns_past_int32(lib):
    # The expansion + depthwise tile state (expand_depthwise.cuh) holds output rows and columns in 32 bits, to stay
    # within its register budget: larger outputs get no plan (the launch fails) instead of wrapped coordinates.
    for Ho, Wo, ok in [(2**31 - 1, 1, True), (2**31, 1, False), (1, 2**31 - 1, True), (1, 2**31, False)]:
        v = _out(lib, "cnnk_plan_inverted_residual", LAUNCH_LEN, 1, Ho, Wo, 1, 3, 3, 96, 16, 1, 2, 4, 132, 227 * KIB)
        assert bool(v[0]) == ok, (Ho, Wo)


def test_row_info_holds_rows_and_columns_past_int32(lib):
    # RowInfo keeps the output row and column in 64 bits: outputs 2**31 + 5 rows high or wide
    big = 2**31 + 5
    for N, Ho, Wo in [(1, big, 1), (2, 1, big), (3, big, 2), (1, 3, 2**33 + 1)]:
        M = N * Ho * Wo
        for m in [0, 1, M // 2 + 7, M - 2, M - 1]:
            n, rem = divmod(m, Ho * Wo)
            assert _out(lib, "cnnk_row_info", 4, m, M, Ho, Wo) == [m, n, rem // Wo, rem % Wo], (N, Ho, Wo, m)
        assert _out(lib, "cnnk_row_info", 4, M, M, Ho, Wo)[0] == -1  # past the output: marked
        assert _out(lib, "cnnk_row_info", 4, M + 63, M, Ho, Wo)[0] == -1


def _gather_ref(n, h, w, k, g, H, W, ld, Cg, kW, s, p, d):
    """Offset and inside-ness of the im2col element (row (n, h, w), column k of group g), in Python integers."""
    t, c = divmod(k, Cg)
    kh, kw = divmod(t, kW)
    ih, iw = h * s[0] - p[0] + kh * d[0], w * s[1] - p[1] + kw * d[1]
    inside = 0 <= ih < H and 0 <= iw < W
    return ((n * H + ih) * W + iw) * ld + g * Cg + c, inside


def _gather(lib, n, h, w, k, g, H, W, ld, Cg, kW, s, p, d, m=0):
    off, inside = _out(lib, "cnnk_gather_offset", 2, m, n, h, w, k, g, H, W, ld, Cg, kW, s[0], s[1], p[0], p[1], d[0],
                       d[1])
    return off, bool(inside)


def test_gather_offsets_match_the_im2col_element(lib):
    # The hoisted gather (row base + column delta, no division per element) against the element it must read.
    rng = random.Random(3)
    for _ in range(400):
        H, W, Cg, groups = rng.randint(1, 9), rng.randint(1, 9), rng.randint(1, 7), rng.randint(1, 3)
        kH, kW = rng.randint(1, 4), rng.randint(1, 4)
        s, p, d = [(rng.randint(1, 3), rng.randint(1, 3)) for _ in range(3)]
        p = (p[0] - 1, p[1] - 1)
        ld = groups * Cg + rng.randint(0, 3)  # a channel slice of a wider tensor
        n, h, w = rng.randint(0, 3), rng.randint(0, 5), rng.randint(0, 5)
        k, g = rng.randrange(kH * kW * Cg), rng.randrange(groups)
        want_off, want_in = _gather_ref(n, h, w, k, g, H, W, ld, Cg, kW, s, p, d)
        off, inside = _gather(lib, n, h, w, k, g, H, W, ld, Cg, kW, s, p, d)
        assert inside == want_in
        if inside:
            assert off == want_off


def test_gather_offsets_past_int32_and_with_huge_windows(lib):
    # Offsets past 2**31 and 2**32 stay exact; strides, padding and dilation at 2**31 - 1 make the row base or the
    # column delta overflow on its own (they are kept modulo 2**64), yet every element inside the input gets its exact
    # offset and every one outside is recognised.
    mx = 2**31 - 1
    cases = [
        # (n, h, w, k, g, H, W, ld, Cg, kW, stride, padding, dilation)
        (2, 39999, 39999, 1023, 0, 40000, 40000, 1024, 1024, 1, (1, 1), (0, 0), (1, 1)),
        (0, 2**31 + 3, 0, 0, 0, 2**31 + 9, 1, 1, 1, 1, (1, 1), (0, 0), (1, 1)),      # output row past int32
        (0, 0, 2**32 + 1, 5, 1, 1, 2**32 + 2, 16, 8, 1, (1, 1), (0, 0), (1, 1)),     # output column past 2**32
        (1, 1, 1, 0, 0, 7, 5, 3, 3, 1, (mx, mx), (0, 0), (1, 1)),                     # stride: far outside
        (1, 0, 0, 2 * 3 + 1, 0, 7, 5, 3, 3, 3, (mx, mx), (mx, mx), (mx, mx)),         # padding cancelled by dilation
        (0, 0, 0, 4 * 3, 0, 7, 5, 3, 3, 3, (1, 1), (mx, mx), (mx, mx)),
        (0, 3, 2, 8, 0, 9, 9, 3, 3, 3, (mx, 1), (mx - 1, 0), (1, 1)),
        (0, 2**31 + 3, 0, 0, 0, 7, 5, 3, 3, 1, (mx, 1), (0, 0), (1, 1)),              # row base past 2**64: outside
    ]
    seen_inside = seen_outside = 0
    for (n, h, w, k, g, H, W, ld, Cg, kW, s, p, d) in cases:
        want_off, want_in = _gather_ref(n, h, w, k, g, H, W, ld, Cg, kW, s, p, d)
        off, inside = _gather(lib, n, h, w, k, g, H, W, ld, Cg, kW, s, p, d)
        assert inside == want_in, (n, h, w, k, H, W, s, p, d)
        if inside:
            assert off == want_off
            seen_inside += 1
        else:
            seen_outside += 1
    assert seen_inside >= 4 and seen_outside >= 2
    # a row outside the output (m < 0) reads nothing
    assert not _gather(lib, 0, 0, 0, 0, 0, 7, 5, 3, 3, 1, (1, 1), (0, 0), (1, 1), m=-1)[1]
