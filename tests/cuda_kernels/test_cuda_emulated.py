"""The CUDA ops' own code, run on the CPU: wrappers (validation, weight packing, slices), launchers (tile plans,
grids, shared-memory sizes) and kernels (producers, WMMA / CUDA-core tiles, epilogues), compiled by the host compiler
against the emulation in csrc/cuda/emu/shim.h and registered as torch.ops.cnnkernels_emu.<op> for CPU tensors.

The emulation runs every CUDA thread of a block as a host thread with a real barrier for __syncthreads, poisons
shared memory before each block, checks WMMA's alignment rules and shared-memory overruns. It cannot show warp-timing
or memory-model effects, tensor-core numerics or performance: tests/cuda_kernels/test_cuda_gpu.py covers those on a GPU.

Built on first use with torch.utils.cpp_extension (C++ compiler, ninja and the CUDA headers for the fp16/bf16 types;
about a minute, then cached under build/cuda_emu).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
import torchvision
from torchvision.ops.boxes import _batched_nms_coordinate_trick, _batched_nms_vanilla

import cnnkernels
from cnnkernels import _library

from support.buildutil import REPO, skip_or_fail
from support.cuda_cases import (BOX_CASES, BOX_THRESHOLDS, CASES, DTYPES, FORMATS, assert_close_to_reference, box_set,
                                cast, empty_batch, output_format, reference)
from support.dtypes import DTYPE_IDS
from support.valid_args import AT_WINDOW_MAX
from support.valid_args import call_args as _catalogue_args

ROOT = REPO
EMU_SRC = ROOT / "csrc" / "cuda" / "emu"
BUILD_DIR = ROOT / "build" / "cuda_emu"
NS = "cnnkernels_emu"
KIB = 1024
DEFAULT_DEVICE = (4, 99 * KIB)  # SMs, opt-in shared memory per block
_SCHEMAS = None  # the cnnkernels_emu schema library; lives as long as the process


def _cuda_include():
    cands = [Path(os.environ[v]) / "include" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    cands.append(Path("/usr/local/cuda/include"))
    try:
        import nvidia  # the CUDA runtime wheel torch depends on ships the headers
        for p in nvidia.__path__:
            cands += sorted(Path(p).glob("cu*/include")) + [Path(p) / "cuda_runtime" / "include"]
    except ImportError:
        pass
    for c in cands:
        if (c / "cuda_fp16.h").exists() and (c / "cuda_runtime_api.h").exists():
            return c
    return None


class Emu:
    def __init__(self, path):
        self.handle = ctypes.CDLL(path)
        self.handle.cnnk_emu_configure.argtypes = [ctypes.c_int, ctypes.c_int64]
        self.handle.cnnk_emu_last_launch.argtypes = [ctypes.POINTER(ctypes.c_int64)]
        self.handle.cnnk_emu_add_relu.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                                  ctypes.c_int64]
        self.configure(*DEFAULT_DEVICE)

    def configure(self, sms, smem):
        self.handle.cnnk_emu_configure(sms, smem)

    def async_copies(self, on):
        """cp.async emulated as on sm_80+ (True) or copies completed at once, as the sm_75 build makes them (False)."""
        self.handle.cnnk_emu_async_copies(int(on))

    def last_launch(self):
        buf = (ctypes.c_int64 * 4)()
        self.handle.cnnk_emu_last_launch(buf)
        return dict(zip(["grid_x", "grid_y", "smem", "launches"], buf))

    @staticmethod
    def op(name):
        return getattr(getattr(torch.ops, NS), name)


@pytest.fixture(scope="module")
def emu():
    global _SCHEMAS
    if not (EMU_SRC / "emu_ops.cpp").exists():
        skip_or_fail("the CUDA sources are not here (tests run outside a source checkout)")
    from torch.utils import cpp_extension
    inc = _cuda_include()
    if inc is None:
        skip_or_fail("no CUDA headers (cuda_fp16.h) for the emulation build")
    if not cpp_extension.is_ninja_available() or not (shutil.which("c++") or shutil.which("g++")):
        skip_or_fail("the emulation build needs ninja and a C++ compiler")
    if not _library.STATE.cpu:
        skip_or_fail("the emulation links the compiled CPU library (the CUDA wrappers pack weights through its cache): "
                     f"{_library.STATE.reason}")
    if _SCHEMAS is None:
        _SCHEMAS = torch.library.Library(NS, "DEF")
        for schema in _library.read_schemas().values():
            _SCHEMAS.define(schema)
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    path = cpp_extension.load(
        name="cnnkernels_cuda_emu", sources=[str(EMU_SRC / "emu_kernels.cpp"), str(EMU_SRC / "emu_ops.cpp")],
        extra_include_paths=[str(ROOT / "csrc"), str(inc)],
        extra_cflags=["-O2", "-fvisibility=hidden", "-Wno-unknown-pragmas"],
        extra_ldflags=[str(_library.CPU_LIB), f"-Wl,-rpath,{_library.CPU_LIB.parent}"],
        build_directory=str(BUILD_DIR), is_python_module=False, verbose=False)
    e = Emu(path)
    yield e
    e.configure(*DEFAULT_DEVICE)
    e.async_copies(True)


ALL_CASES = [(op, cid) for op, cases in CASES.items() for cid, _ in cases]


def _args(op, case):
    return dict(CASES[op])[case]


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("op,case", ALL_CASES, ids=[f"{o}-{c}" for o, c in ALL_CASES])
def test_matches_reference(emu, op, case, dtype, fmt):
    args = cast(_args(op, case), dtype, fmt=FORMATS[fmt])
    assert_close_to_reference(op, emu.op(op)(*args), args, dtype)


# Launch variants: (SMs, shared memory) -> the path the GEMM kernels take.
#   one_sm:     grid.y = 1, a block walks every column tile with its A tile resident (when it fits)
#   many_sms:   column tiles spread over grid.y, one per block, A produced chunk by chunk
#   small_smem: no opt-in (48 KiB): A chunked; the inverted residual falls back to smaller output tiles
DEVICES = {"one_sm": (1, 227 * KIB), "many_sms": (512, 227 * KIB), "small_smem": (1, 48 * KIB)}
MULTI_TILE = [("conv2d_act", "3x3_res_relu6_2coltiles"), ("conv2d_act", "1x1_s2_nobias"),
              ("conv2d_act", "grouped"), ("dwsep_conv2d", "s2_2coltiles"), ("dwsep_conv2d", "rect"),
              ("inverted_residual", "expand_s2_2coltiles"), ("inverted_residual", "k5_residual"),
              ("inverted_residual", "no_expand_2coltiles"),
              ("inception_block", "wide"), ("mbconv", "se_2coltiles"), ("mbconv", "se_k5_s2_hardswish"),
              ("up_concat_conv", "2coltiles_silu")]


@pytest.mark.parametrize("device", list(DEVICES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("op,case", MULTI_TILE, ids=[f"{o}-{c}" for o, c in MULTI_TILE])
def test_launch_variants(emu, op, case, dtype, device):
    sms, smem = DEVICES[device]
    emu.configure(sms, smem)
    try:
        args = cast(_args(op, case), dtype, fmt=torch.channels_last)
        y = emu.op(op)(*args)
        rec = emu.last_launch()
    finally:
        emu.configure(*DEFAULT_DEVICE)
    assert_close_to_reference(op, y, args, dtype)
    assert rec["smem"] <= smem
    if device == "one_sm":  # every case has at least 2 pixel tiles: 2 blocks for the SM without splitting columns
        assert rec["grid_y"] == 1
    if device == "many_sms" and op != "inception_block":
        assert rec["grid_y"] > 1 or y.shape[1] <= 64


# The GEMM kernels on a device without cp.async, what the sm_75 build runs: compat.cuh's async_copy is a plain load and
# store, and conv_gemm_kernel's launchers plan single buffers (gemm_tiles' unpipelined loop; the inverted residual and
# up_concat_conv keep their pipelined loop, with synchronous copies). One case per producer; fp16 (WMMA) with A chunked,
# fp64 with A resident where it fits (DEVICES).
SYNC_COPY_CASES = [("conv2d_act", "3x3_res_relu6_2coltiles"), ("conv2d_act", "7x7_s2_stem"),
                   ("conv2d_act", "grouped"), ("dwsep_conv2d", "s2_2coltiles"), ("inception_block", "wide"),
                   ("inverted_residual", "expand_s2_2coltiles"), ("mbconv", "se_2coltiles"),
                   ("up_concat_conv", "2coltiles_silu")]


@pytest.mark.parametrize("dtype,device", [(torch.float16, "many_sms"), (torch.float64, "one_sm")],
                         ids=["fp16-many_sms", "fp64-one_sm"])
@pytest.mark.parametrize("op,case", SYNC_COPY_CASES, ids=[f"{o}-{c}" for o, c in SYNC_COPY_CASES])
def test_synchronous_copies(emu, op, case, dtype, device):
    emu.configure(*DEVICES[device])
    emu.async_copies(False)
    try:
        args = cast(_args(op, case), dtype, fmt=torch.channels_last)
        y = emu.op(op)(*args)
    finally:
        emu.async_copies(True)
        emu.configure(*DEFAULT_DEVICE)
    assert_close_to_reference(op, y, args, dtype)


# ---- the emulation of cp.async itself (csrc/cuda/emu/async_copy_probe.cpp) -------------------------------------------
PROBE_N = 64
POISON_F32 = torch.tensor([0x7F7F7F7F], dtype=torch.int32).view(torch.float32).item()  # shim.h's poison byte 0x7f


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    src = EMU_SRC / "async_copy_probe.cpp"
    if not src.exists():
        skip_or_fail("the CUDA sources are not here (tests run outside a source checkout)")
    inc = _cuda_include()
    cxx = shutil.which(os.environ.get("CXX", "")) or shutil.which("c++") or shutil.which("g++")
    if inc is None or cxx is None:
        skip_or_fail("the cp.async probe needs a C++ compiler and the CUDA headers")
    out = tmp_path_factory.mktemp("cuda_emu_probe") / "libcnnk_async_copy_probe.so"
    subprocess.run([cxx, "-std=c++17", "-O1", "-shared", "-fPIC", "-fvisibility=hidden", f"-I{ROOT / 'csrc'}",
                    f"-I{inc}", str(src), "-o", str(out)], check=True)
    lib = ctypes.CDLL(str(out))
    lib.cnnk_probe_async_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.cnnk_probe_async_copy.restype = ctypes.c_int

    def run(mode, asynchronous=True):
        src_vals = torch.arange(1, 2 * PROBE_N + 1, dtype=torch.float32)
        out = torch.zeros(2 * PROBE_N, dtype=torch.float32)
        err = lib.cnnk_probe_async_copy(src_vals.data_ptr(), out.data_ptr(), mode, int(asynchronous))
        return err, out, src_vals
    return run


PROBE_MODES = {"correct": 0, "no_wait": 1, "no_barrier": 2, "wait_leaves_newest": 3, "overwrite_while_read": 4,
               "exit_pending": 5, "zero_fill": 6}


def _neighbours(v):
    return torch.roll(v, -1)


@pytest.mark.parametrize("asynchronous", [True, False], ids=["sm80", "sm75"])
def test_emulated_cp_async_correct_use(probe, asynchronous):
    err, out, src = probe(PROBE_MODES["correct"], asynchronous)
    assert err == 0 and torch.equal(out[:PROBE_N], _neighbours(src[:PROBE_N]))
    err, out, src = probe(PROBE_MODES["zero_fill"], asynchronous)
    want = _neighbours(torch.where(torch.arange(PROBE_N) % 2 == 0, src[:PROBE_N], 0.0))
    assert err == 0 and torch.equal(out[:PROBE_N], want)
    err, out, src = probe(PROBE_MODES["wait_leaves_newest"], asynchronous)
    assert err == 0 and torch.equal(out[:PROBE_N], _neighbours(src[:PROBE_N]))  # the older group has landed
    if not asynchronous:
        assert torch.equal(out[PROBE_N:], src[PROBE_N:])


def test_emulated_cp_async_shows_misuse(probe):
    # Each of these is a bug on a GPU with cp.async; the emulation must turn it into poison or a fault.
    err, out, _ = probe(PROBE_MODES["no_wait"])
    assert err == 0 and torch.all(out[:PROBE_N] == POISON_F32)  # every thread read its copy before waiting
    err, out, src = probe(PROBE_MODES["wait_leaves_newest"])
    assert err == 0 and torch.all(out[PROBE_N:] == POISON_F32)  # async_wait<1>: the newest group still pending
    for mode in ["no_barrier", "overwrite_while_read"]:
        err, out, _ = probe(PROBE_MODES[mode])
        poisoned = int((out[:PROBE_N] == POISON_F32).sum())
        assert err == 0 and poisoned >= PROBE_N // 2, (mode, poisoned)
    err, _, _ = probe(PROBE_MODES["exit_pending"])
    assert err != 0  # a copy still queued when its thread exits


@pytest.mark.parametrize("op", list(CASES))
def test_empty_batch(emu, op):
    args = empty_batch(op, cast(CASES[op][0][1], torch.float32, fmt=torch.channels_last))
    y = emu.op(op)(*args)
    assert y.shape == reference(op, args).shape and y.numel() == 0
    assert y.is_contiguous(memory_format=output_format(args[0]))


@pytest.mark.parametrize("op", list(CASES))
def test_noncontiguous_input(emu, op):
    args = list(cast(CASES[op][0][1], torch.float32))
    wide = torch.zeros(*args[0].shape[:3], 2 * args[0].shape[3])
    wide[..., ::2] = args[0]
    args[0] = wide[..., ::2]
    assert_close_to_reference(op, emu.op(op)(*args), args, torch.float32)


def test_no_launch_plan_is_a_clear_error(emu):
    # A device whose blocks get 2 KiB of shared memory: no GEMM tile fits, and the error says what can cause that.
    args = cast(_args("conv2d_act", "3x3_relu"), torch.float32, fmt=torch.channels_last)
    emu.configure(1, 2 * KIB)
    try:
        with pytest.raises(RuntimeError, match=r"cnnkernels.conv2d_act: CUDA kernel launch failed: .*no launch plan"):
            emu.op("conv2d_act")(*args)
    finally:
        emu.configure(*DEFAULT_DEVICE)


def test_no_input_channels_is_rejected(emu):
    # As on CPU (tests/reliability/test_bad_input_catalogue.py): zero input channels are an error naming the argument.
    x = torch.randn(2, 0, 5, 4)
    w = torch.randn(6, 0, 3, 3)
    b = torch.randn(6)
    with pytest.raises(ValueError, match=r"cnnkernels.conv2d_act: input must have at least one channel"):
        emu.op("conv2d_act")(x, w, b, None, [1, 1], [1, 1], [1, 1], 1, "relu")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=DTYPE_IDS.get)
@pytest.mark.parametrize("op,overrides", [pytest.param(o, ov, id=f"{o}-{i}") for i, (o, ov) in enumerate(AT_WINDOW_MAX)])
def test_window_param_at_int32_max(emu, op, overrides, dtype):
    # Stride, padding and dilation at their cap, 2**31 - 1: the kernels hold them in 32 bits and index in 64.
    args = cast(_catalogue_args(op, **overrides), dtype, fmt=torch.channels_last)
    assert_close_to_reference(op, emu.op(op)(*args), args, dtype)


@pytest.mark.parametrize("op,case", [("conv2d_act", "3x3_relu"), ("conv2d_act", "depthwise_res"),
                                     ("dwsep_conv2d", "3x3_relu"), ("inverted_residual", "expand_residual"),
                                     ("inception_block", "odd_sizes"), ("mbconv", "se_silu_residual"),
                                     ("mbconv", "no_se_k5_silu_residual")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=DTYPE_IDS.get)
def test_nan_and_inf_propagate(emu, op, case, dtype):
    args = list(cast(_args(op, case), dtype))
    x = args[0].clone()
    x[0, 0, 1, 2] = float("nan")
    x[-1, -1, -1, -1] = float("inf")
    args[0] = x
    assert_close_to_reference(op, emu.op(op)(*args), args, dtype)


# ---- add_relu: 16-byte vectors when input, residual and output share their offset from a 16-byte boundary -----------

_DTYPE_ID = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2, torch.float64: 3}  # cuda::DType
# (input, residual, output) offsets in elements from a 16-byte boundary (torch's CPU allocator aligns to 64 bytes):
# equal ones (the vector path, with a scalar head of 0 .. 7 elements) and unequal ones (the scalar kernel).
_ADD_RELU_OFFSETS = [(o, o, o) for o in range(8)] + [(0, 1, 0), (1, 0, 0), (0, 0, 1), (3, 3, 5), (2, 6, 2),
                                                     (7, 5, 3), (4, 0, 4), (1, 1, 0)]
_ADD_RELU_SIZES = [0, 1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 33, 100, 255, 257, 301]
_SENTINEL = -7.0  # never a relu output


def _add_relu_operands(dtype, length):
    g = torch.Generator().manual_seed(17)
    a, b = (torch.randn(length, generator=g, dtype=torch.float64) for _ in range(2))
    a[5::37], b[11::41], a[13::43], b[13::43] = float("nan"), float("inf"), float("inf"), -float("inf")
    return a.to(dtype), b.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
def test_add_relu_every_alignment_is_exact(emu, dtype):
    # Exactly torch.relu(a + b) in the dtype (fp16/bf16: the sum in fp32, rounded once, as torch's CPU add does),
    # NaN and inf included, nothing written outside the output, for every head length and odd tails. Above 256
    # elements the grid shows the path: one block of vector threads, or two blocks of the scalar kernel.
    pool = 8 + max(_ADD_RELU_SIZES)
    a_buf, b_buf = _add_relu_operands(dtype, pool)
    for oa, ob, oo in _ADD_RELU_OFFSETS:
        for n in _ADD_RELU_SIZES:
            out_buf = torch.full((pool,), _SENTINEL, dtype=dtype)
            a, b, out = a_buf[oa:oa + n], b_buf[ob:ob + n], out_buf[oo:oo + n]
            rc = emu.handle.cnnk_emu_add_relu(_DTYPE_ID[dtype], a.data_ptr(), b.data_ptr(), out.data_ptr(), n)
            where = f"offsets {oa, ob, oo}, n {n}"
            assert rc == 0, where
            torch.testing.assert_close(out, torch.relu(a + b), rtol=0, atol=0, equal_nan=True, msg=where)
            assert (out_buf[:oo] == _SENTINEL).all() and (out_buf[oo + n:] == _SENTINEL).all(), where
            if n > 256:
                same_phase = len({t.data_ptr() % 16 for t in (a, b, out)}) == 1
                assert emu.last_launch()["grid_x"] == (1 if same_phase else 2), where


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
def test_add_relu_op_on_offset_inputs_is_exact(emu, dtype):
    # Through the op's wrapper: inputs that are views at an offset, the output it allocates aligned.
    a_buf, b_buf = _add_relu_operands(dtype, 300)
    for oa, ob in [(0, 0), (1, 1), (2, 5), (8, 8)]:
        a, b = a_buf[oa:oa + 280].view(7, 40), b_buf[ob:ob + 280].view(7, 40)
        torch.testing.assert_close(emu.op("add_relu")(a, b), torch.relu(a + b), rtol=0, atol=0, equal_nan=True)


# ---- depthwise: which kernel runs -------------------------------------------------------------------------------------

def _out_hw(x, w, stride, padding, dilation):
    return [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1
            for i in range(2)]


# (conv2d_act case, dtype, (th, tw, cc) of the tiled kernel or None for the direct one) under the default device
# (plan_depthwise: the halo in the accumulation type within 24 KiB and smaller than the tile's windows).
DEPTHWISE_PATHS = [
    ("depthwise_tiles_res", torch.float32, (8, 8, 32)),
    ("depthwise_tiles_res", torch.float16, (8, 8, 32)),
    ("depthwise_tiles_res", torch.float64, (4, 8, 32)),  # 8x8: a 10 x 10 fp64 halo of 32 channels is 25 KiB
    ("depthwise_k5_s2_d2", torch.float32, (2, 4, 32)),  # the 8x8 .. 4x4 halos are over 24 KiB
    ("depthwise_k5_s2_d2", torch.float64, None),        # even the 1x2 tile's 9 x 11 fp64 halo is
    ("depthwise_6ch", torch.float32, (8, 8, 8)),
    ("depthwise_rect", torch.bfloat16, (8, 8, 16)),
    ("depthwise_1x1", torch.float32, None),             # a 1x1 window: the halo is no smaller than the windows
    ("depthwise_d9", torch.float32, None),              # dilation 9: the halo is larger than the windows
]


@pytest.mark.parametrize("case,dtype,tile", DEPTHWISE_PATHS,
                         ids=[f"{c}-{DTYPE_IDS[d]}" for c, d, _ in DEPTHWISE_PATHS])
def test_depthwise_kernel_choice(emu, case, dtype, tile):
    args = cast(_args("conv2d_act", case), dtype, fmt=torch.channels_last)
    assert_close_to_reference("conv2d_act", emu.op("conv2d_act")(*args), args, dtype)
    rec = emu.last_launch()
    x, w, (sh, sw), (dh, dw) = args[0], args[1], args[4], args[6]
    Ho, Wo = _out_hw(x, w, args[4], args[5], args[6])
    N, C, kh, kw = x.shape[0], x.shape[1], w.shape[2], w.shape[3]
    if tile is None:
        assert rec["smem"] == 0 and rec["grid_x"] == min(-(-N * Ho * Wo * C // 256), DEFAULT_DEVICE[0] * 16)
        return
    th, tw, cc = tile
    halo = ((th - 1) * sh + (kh - 1) * dh + 1) * ((tw - 1) * sw + (kw - 1) * dw + 1)
    assert rec["smem"] == halo * cc * (8 if dtype == torch.float64 else 4)
    assert (rec["grid_x"], rec["grid_y"]) == (N * -(-Ho // th) * -(-Wo // tw), -(-C // cc))


# (dwsep_conv2d case, th x tw tile of GEMM rows, or None: 64 flattened pixels), fp32 under the default device.
DWSEP_PATHS = [("tiles_s2_odd", (8, 8)), ("tiles_k5_d2", (8, 8)), ("s2_2coltiles", (8, 8)), ("flat_1x1", None)]


@pytest.mark.parametrize("case,tile", DWSEP_PATHS, ids=[c for c, _ in DWSEP_PATHS])
def test_dwsep_rows(emu, case, tile):
    args = cast(_args("dwsep_conv2d", case), torch.float32, fmt=torch.channels_last)
    assert_close_to_reference("dwsep_conv2d", emu.op("dwsep_conv2d")(*args), args, torch.float32)
    x = args[0]
    Ho, Wo = _out_hw(x, args[1], args[5], args[6], args[7])
    N = x.shape[0]
    want = -(-N * Ho * Wo // 64) if tile is None else N * -(-Ho // tile[0]) * -(-Wo // tile[1])
    assert emu.last_launch()["grid_x"] == want


def _bad_inputs():
    conv = list(CASES["conv2d_act"][0][1])
    dws = list(CASES["dwsep_conv2d"][0][1])
    ir = list(CASES["inverted_residual"][0][1])
    inc = list(CASES["inception_block"][0][1])
    pair = list(CASES["add_relu"][0][1])
    mb = list(CASES["mbconv"][0][1])
    up = list(CASES["up_concat_conv"][0][1])
    yield "add_relu", "shape", [pair[0], pair[1][:, :2]]
    yield "add_relu", "dtype", [pair[0], pair[1].float()]
    yield "conv2d_act", "weight_cin", conv[:1] + [conv[1][:, :3]] + conv[2:]
    yield "conv2d_act", "activation", conv[:8] + ["gelu"]
    yield "conv2d_act", "residual_shape", conv[:3] + [torch.zeros(2, 12, 3, 3, dtype=torch.float64)] + conv[4:]
    yield "conv2d_act", "int_input", [conv[0].int()] + conv[1:]
    yield "conv2d_act", "weight_dtype", conv[:1] + [conv[1].float()] + conv[2:]
    yield "dwsep_conv2d", "dw_channels", dws[:1] + [dws[1][:4]] + dws[2:]
    yield "dwsep_conv2d", "pw_shape", dws[:3] + [dws[3][..., :0, :]] + dws[4:]
    yield "inverted_residual", "residual_stride2", ir[:7] + [2] + ir[8:]
    yield "inverted_residual", "even_kernel", ir[:3] + [ir[3][..., :2, :2]] + ir[4:]
    yield "inverted_residual", "expand_bias_without_weight", ir[:1] + [None] + ir[2:]
    yield "inception_block", "w2_cin", inc[:5] + [inc[5][:, :2]] + inc[6:]
    yield "inception_block", "b4_shape", inc[:12] + [inc[12][:2]]
    yield "mbconv", "se_partial", mb[:8] + [None] + mb[9:]
    yield "mbconv", "se_activation", mb[:14] + ["gelu"] + mb[15:]
    yield "mbconv", "se_gate", mb[:15] + ["tanh"]
    yield "mbconv", "k4", mb[:3] + [mb[3].new_zeros(mb[3].shape[0], 1, 4, 4)] + mb[4:]
    yield "up_concat_conv", "skip_not_2x", up[:1] + [up[1][..., :-1]] + up[2:]
    yield "up_concat_conv", "weight_channels", up[:4] + [up[4][:, 1:]] + up[5:]
    yield "up_concat_conv", "activation", up[:6] + ["gelu"]


BAD = list(_bad_inputs())


def _assert_raises_like_the_cpu_kernel(emu, op, args):
    if not _library.STATE.cpu:
        skip_or_fail(f"compiled CPU library not loaded: {_library.STATE.reason}")
    with pytest.raises(Exception) as cpu:
        getattr(torch.ops.cnnkernels, op)(*args)
    assert isinstance(cpu.value, (ValueError, TypeError)), cpu.value
    with pytest.raises(type(cpu.value)) as emulated:
        emu.op(op)(*args)
    assert str(emulated.value).splitlines()[0] == str(cpu.value).splitlines()[0]


@pytest.mark.parametrize("op,what,args", BAD, ids=[f"{o}-{w}" for o, w, _ in BAD])
def test_bad_input_raises_like_the_cpu_kernel(emu, op, what, args):
    _assert_raises_like_the_cpu_kernel(emu, op, args)


# ---- detection ops: exactly the CPU op's results (which are torchvision.ops') ----------------------------------------

def _require_cpu_op():
    if not _library.STATE.cpu:
        skip_or_fail(f"compiled CPU library not loaded: {_library.STATE.reason}")


def _exact(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


# torchvision's CPU nms takes float32 and float64 only
_TORCHVISION_NMS_DTYPES = (torch.float32, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("case", list(BOX_CASES))
def test_box_iou_exact(emu, case, dtype):
    _require_cpu_op()
    boxes, _, _ = BOX_CASES[case]
    a, b = boxes.to(dtype), boxes.flip(0)[: max(len(boxes) - 7, 1)].to(dtype)
    got = emu.op("box_iou")(a, b)
    _exact(got, torch.ops.cnnkernels.box_iou(a, b))
    _exact(got, torchvision.ops.box_iou(a, b))


@pytest.mark.parametrize("thr", BOX_THRESHOLDS)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("case", list(BOX_CASES))
def test_nms_exact(emu, case, dtype, thr):
    _require_cpu_op()
    boxes, scores, _ = BOX_CASES[case]
    b, s = boxes.to(dtype), scores.to(dtype)
    got = emu.op("nms")(b, s, thr)
    _exact(got, torch.ops.cnnkernels.nms(b, s, thr))
    if dtype in _TORCHVISION_NMS_DTYPES:
        _exact(got, torchvision.ops.nms(b, s, thr))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=DTYPE_IDS.get)
def test_nms_threshold_equal_to_an_iou(emu, dtype):
    # A box pair whose IoU in the box dtype is the threshold exactly: not suppressed (IoU > threshold), and one ulp
    # of float64 below the threshold it is (float32 IoUs compared in float64, as torchvision compares them).
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.3, 0.7, 10.1, 9.9], [20.0, 20.0, 21.0, 21.0]], dtype=dtype)
    scores = torch.tensor([0.9, 0.8, 0.7], dtype=dtype)
    iou = float(torchvision.ops.box_iou(boxes[:1], boxes[1:2])[0, 0])
    below = torch.tensor(iou, dtype=torch.float64).nextafter(torch.tensor(0.0, dtype=torch.float64)).item()
    for thr, kept in [(iou, 3), (below, 2)]:
        got = emu.op("nms")(boxes, scores, thr)
        assert got.numel() == kept
        _exact(got, torchvision.ops.nms(boxes, scores, thr))


@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS.get)
@pytest.mark.parametrize("case", list(BOX_CASES))
def test_batched_nms_coordinate_trick_exact(emu, case, dtype):
    # <= 1000 boxes: the coordinate trick on CPU and on CUDA
    _require_cpu_op()
    boxes, scores, idxs = BOX_CASES[case]
    b, s = boxes.to(dtype), scores.to(dtype)
    got = emu.op("batched_nms")(b, s, idxs, 0.5)
    _exact(got, torch.ops.cnnkernels.batched_nms(b, s, idxs, 0.5))
    if dtype in _TORCHVISION_NMS_DTYPES:
        _exact(got, torchvision.ops.batched_nms(b, s, idxs, 0.5))


def test_batched_nms_cuda_keeps_the_coordinate_trick_above_the_cpu_switch(emu):
    # 1500 boxes (6000 coordinates): torchvision runs nms per class on the CPU but still the coordinate trick on CUDA.
    # Negative coordinates make the two differ (the shifted classes overlap), so this shows which one ran.
    boxes, scores, idxs = _box_set_large(1500, offset=-60.0, classes=5)
    got = emu.op("batched_nms")(boxes, scores, idxs, 0.5)
    _exact(got, _batched_nms_coordinate_trick(boxes, scores, idxs, 0.5))
    assert not torch.equal(got, _batched_nms_vanilla(boxes, scores, idxs, 0.5))


def test_batched_nms_per_class_exact(emu):
    # More than 100,000 coordinates: per class on CUDA as on the CPU (one mask segment per class).
    _require_cpu_op()
    boxes, scores, idxs = _box_set_large(25_001, offset=-60.0, classes=97)
    got = emu.op("batched_nms")(boxes, scores, idxs, 0.5)
    _exact(got, torch.ops.cnnkernels.batched_nms(boxes, scores, idxs, 0.5))
    _exact(got, torchvision.ops.batched_nms(boxes, scores, idxs, 0.5))


def _box_set_large(n, offset, classes):
    """float32 boxes and scores, int64 classes."""
    boxes, scores, idxs = box_set(87, n, offset=offset, classes=classes)
    return boxes.float(), scores.float(), idxs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=DTYPE_IDS.get)
def test_box_ops_empty(emu, dtype):
    some = BOX_CASES["random_150"][0][:5].to(dtype)
    none = some[:0]
    for a, b in [(none, some), (some, none), (none, none)]:
        y = emu.op("box_iou")(a, b)
        assert y.shape == (len(a), len(b)) and y.dtype == torch.ops.cnnkernels.box_iou(a, b).dtype
    empty_scores = torch.empty(0, dtype=dtype)
    for y in (emu.op("nms")(none, empty_scores, 0.5),
              emu.op("batched_nms")(none, empty_scores, torch.empty(0, dtype=torch.int64), 0.5)):
        assert y.shape == (0,) and y.dtype == torch.int64


def test_box_ops_noncontiguous(emu):
    _require_cpu_op()
    boxes, scores, idxs = BOX_CASES["random_150"]
    wide = torch.zeros(len(boxes), 8, dtype=torch.float32)
    wide[:, 1::2] = boxes.float()
    b = wide[:, 1::2]
    s, i = torch.stack([scores.float(), scores.float()], 1)[:, 1], torch.stack([idxs, idxs], 1)[:, 0]
    assert not (b.is_contiguous() or s.is_contiguous() or i.is_contiguous())
    _exact(emu.op("box_iou")(b, b[::3]), torch.ops.cnnkernels.box_iou(b, b[::3]))
    _exact(emu.op("nms")(b, s, 0.5), torch.ops.cnnkernels.nms(b, s, 0.5))
    _exact(emu.op("batched_nms")(b, s, i, 0.5), torch.ops.cnnkernels.batched_nms(b, s, i, 0.5))


def _bad_box_inputs():
    boxes, scores, idxs = (t[:6] for t in BOX_CASES["random_150"])
    yield "box_iou", "shape", [boxes[:, :3], boxes]
    yield "box_iou", "dtype", [boxes, boxes.float()]
    yield "box_iou", "int_boxes", [boxes.int(), boxes.int()]
    yield "nms", "scores_length", [boxes, scores[:5], 0.5]
    yield "nms", "nan_threshold", [boxes, scores, float("nan")]
    yield "batched_nms", "float_idxs", [boxes, scores, idxs.double(), 0.5]
    yield "batched_nms", "idxs_shape", [boxes, scores, idxs[:, None], 0.5]


BAD_BOX = list(_bad_box_inputs())


@pytest.mark.parametrize("op,what,args", BAD_BOX, ids=[f"{o}-{w}" for o, w, _ in BAD_BOX])
def test_box_bad_input_raises_like_the_cpu_kernel(emu, op, what, args):
    _assert_raises_like_the_cpu_kernel(emu, op, args)
