"""Compiles the Triton kernels for an sm_90 GPU (H100) ahead of time, without a GPU: Triton lowers them to PTX with
its bundled LLVM and assembles them with its bundled ptxas. That catches what the interpreter cannot -- type errors,
tl.dot shape/dtype constraints, layout and lowering failures -- on a CPU-only machine. One config per kernel and
dot mode keeps it to ~1 min; the full set (every autotune config x dtype, 138 compiles) passed the same way by
hand. The inverted_residual halo kernel is also compiled for sm_80 and checked for spills (ptxas -v). Whether the
compiled kernels run correctly is tests/triton_ops/test_triton_gpu.py's job, on a GPU."""

import os
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET", "0") == "1",
                                reason="TRITON_INTERPRET=1: the kernels are interpreted, not compiled")

triton = pytest.importorskip("triton")

POINTERS = {"X", "Wt", "B", "R", "Y", "WE", "BE", "WD", "BD", "WP", "BP", "D", "WR", "BR", "WX", "BX", "SCR"}
# Buffers in the accumulation type whatever the input dtype: mbconv's SE partial sums and gate.
ACC_POINTERS = {"P", "G"}
PTR_TYPES = {"fp32": "*fp32", "fp16": "*fp16", "bf16": "*bf16", "fp64": "*fp64"}


def _arg_type(name, dtype, consts):
    if name in consts:
        return "constexpr"
    if name in POINTERS:
        return PTR_TYPES[dtype]
    if name in ACC_POINTERS:
        return "*fp64" if dtype == "fp64" else "*fp32"
    return "i32"


def _kernels():
    import cnnkernels.triton as ct
    from cnnkernels.triton import add_relu, conv2d_act, dwsep_conv2d, inverted_residual, mbconv
    if ct.INTERPRET:
        pytest.skip("cnnkernels.triton was imported with TRITON_INTERPRET=1")
    gemm = dict(KH=3, KW=3, HAS_BIAS=True, HAS_RES=True, ACT=1, POOL=False, HAS_GATE=False, F64=False)
    dw_pw = dict(KH=3, KW=3, HAS_BD=True, HAS_BP=True, HAS_RES=True, DW_ACT=2, PW_ACT=0, F64=False)
    expand = dict(KH=3, KW=3, HAS_BE=True, HAS_RES=True, ACT=2, F64=False)
    dw_sum = dict(KH=5, HAS_EXPAND=True, HAS_BE=True, ACT=3, F64=False)
    se = dict(SE_ACT=3, GATE=0, F64=False, BLOCK_T=8, BLOCK_H=32, BLOCK_S=64)
    return {
        "add_relu-bf16": (add_relu._add_relu_kernel, "bf16", dict(F64=False)),
        "conv_gemm-fp16": (conv2d_act._conv_gemm_kernel, "fp16", dict(gemm, DOT=0)),
        "conv_gemm-fp32-pool": (conv2d_act._conv_gemm_kernel, "fp32", dict(gemm, KH=1, KW=1, POOL=True, DOT=1)),
        "conv_gemm-fp64": (conv2d_act._conv_gemm_kernel, "fp64", dict(gemm, DOT=3, F64=True)),
        "conv_dw-fp16": (conv2d_act._conv_dw_kernel, "fp16",
                         dict(KH=3, KW=3, HAS_BIAS=True, HAS_RES=True, ACT=2, F64=False)),
        "dw_pw-bf16": (dwsep_conv2d._dw_pw_kernel, "bf16", dict(dw_pw, DOT=0)),
        "dw_pw-fp32": (dwsep_conv2d._dw_pw_kernel, "fp32", dict(dw_pw, HAS_RES=False, DOT=1)),
        "dw_pw-fp16-hardswish": (dwsep_conv2d._dw_pw_kernel, "fp16", dict(dw_pw, DW_ACT=3, PW_ACT=4, DOT=0)),
        "expand_dw_pw-bf16": (inverted_residual._expand_dw_pw_kernel, "bf16", dict(expand, DOT=0)),
        "expand_dw_pw-fp64-k5-hardswish": (inverted_residual._expand_dw_pw_kernel, "fp64",
                                           dict(expand, KH=5, KW=5, HAS_BE=False, HAS_RES=False, ACT=4, DOT=3,
                                                F64=True)),
        "conv_gemm-fp16-gate": (conv2d_act._conv_gemm_kernel, "fp16", dict(gemm, KH=1, KW=1, HAS_GATE=True, ACT=0,
                                                                                  DOT=0)),
        "dw_sum-bf16": (mbconv._dw_sum_kernel, "bf16", dict(dw_sum, DOT=0)),
        "dw_sum-fp64-noexpand": (mbconv._dw_sum_kernel, "fp64", dict(dw_sum, HAS_EXPAND=False, HAS_BE=False, ACT=4,
                                                                            DOT=3, F64=True)),
        "se_gate-fp16-sigmoid": (mbconv._se_gate_kernel, "fp16", se),
        "se_gate-fp64-hardsigmoid": (mbconv._se_gate_kernel, "fp64", dict(se, SE_ACT=1, GATE=1, F64=True)),
    }


CASES = ["add_relu-bf16", "conv_gemm-fp16", "conv_gemm-fp32-pool", "conv_gemm-fp64", "conv_dw-fp16", "dw_pw-bf16",
         "dw_pw-fp32", "dw_pw-fp16-hardswish", "expand_dw_pw-bf16", "expand_dw_pw-fp64-k5-hardswish",
         "conv_gemm-fp16-gate", "dw_sum-bf16", "dw_sum-fp64-noexpand", "se_gate-fp16-sigmoid",
         "se_gate-fp64-hardsigmoid"]


def _compile(kernel, dtype, constexprs, config=None, arch=90):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    # an autotuned kernel compiles with its first config (unless told), a plain one's case gives its block sizes
    autotuned = hasattr(kernel, "configs")
    if config is None:
        config = kernel.configs[0] if autotuned else triton.Config({}, num_warps=4, num_stages=2)
    consts = dict(constexprs, **config.kwargs)
    fn = kernel.fn if autotuned else kernel
    signature = {name: _arg_type(name, dtype, consts) for name in fn.arg_names}
    return triton.compile(ASTSource(fn, signature, constexprs=consts), target=GPUTarget("cuda", arch, 32),
                          options=dict(num_warps=config.num_warps, num_stages=config.num_stages))


@pytest.mark.parametrize("case", CASES)
def test_compiles_for_sm90(case):
    kernel, dtype, constexprs = _kernels()[case]
    assert _compile(kernel, dtype, constexprs).asm.get("cubin")


@pytest.mark.parametrize("config", [0, 1], ids=["tile4x8", "tile8x8"])
def test_halo_kernel_has_no_spills_on_sm80(config):
    # The expansion computed once per tile halo must not cost spills (recomputing it at each tap did: 2.2 KB of spill
    # stores per thread for the 8x8-pixel config, fp16, sm_80). ptxas -v on the PTX Triton generated, with the
    # ptxas Triton bundles and uses.
    import re
    import subprocess
    from cnnkernels.triton import inverted_residual
    from triton.backends.nvidia.compiler import get_ptxas
    kernel = inverted_residual._expand_dw_pw_kernel
    compiled = _compile(kernel, "fp16", dict(KH=3, KW=3, HAS_BE=True, HAS_RES=True, ACT=2, F64=False, DOT=0),
                        config=kernel.configs[config], arch=80)
    ptx = compiled.asm["ptx"]
    path = Path(tempfile.mkdtemp()) / "kernel.ptx"
    path.write_text(ptx)
    log = subprocess.run([get_ptxas(80).path, "-v", "-arch=sm_80", str(path), "-o", os.devnull], capture_output=True,
                         text=True, check=True).stderr
    spills = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", log)
    assert spills, log
    assert (int(spills[1]), int(spills[2])) == (0, 0), log
    # the taps read what the same program wrote: never through the non-coherent read-only path
    assert "ld.global.nc" not in ptx
