"""How the ops were loaded: compiled kernels vs the reference fallback, and which CPU kernel ISA is in use."""

import os

import pytest
import torch

from cnnkernels import _library
from cnnkernels._library import DISABLE_ENV, KERNEL_SOURCES, STATE
from support.samples import OPS

EXPECT_ENV = "CNNKERNELS_EXPECT_COMPILED"


@pytest.mark.skipif(os.environ.get(EXPECT_ENV) != "1", reason=f"{EXPECT_ENV}=1 not set (CI sets it)")
def test_compiled_library_loaded_when_expected():
    # CI builds the library and sets CNNKERNELS_EXPECT_COMPILED=1, so a silent fallback to the references fails CI.
    assert STATE.cpu, f"the compiled CPU library is not loaded: {STATE.reason}"


@pytest.mark.correctness
def test_every_op_registered_for_cpu():
    assert set(OPS) == set(_library.op_names()) == set(KERNEL_SOURCES)
    for name in OPS:
        assert KERNEL_SOURCES[name]["CPU"] in ("compiled", "reference")


@pytest.mark.correctness
def test_disable_env_forces_reference_backends():
    if os.environ.get(DISABLE_ENV, "0") in ("", "0"):
        pytest.skip(f"{DISABLE_ENV} not set (tests/reliability/test_fallback.py runs this with it set)")
    assert not STATE.cpu and STATE.reason == f"{DISABLE_ENV} is set"
    assert all(KERNEL_SOURCES[name][key] == "reference" for name in OPS for key in ("CPU", "CUDA")), KERNEL_SOURCES


@pytest.mark.correctness
def test_kernel_isa_follows_cnnkernels_cpu_isa():
    # Runs in the main suite (the probe's choice) and in tests/reliability/test_fallback.py's children
    # (CNNKERNELS_CPU_ISA=...).
    if not STATE.cpu:
        pytest.skip(f"compiled library not loaded: {STATE.reason}")
    d = _library.cpu_dispatch()
    compiled = STATE.build_config["cpu_isas"].split(",")
    isas = {f["isa"] for f in d["families"].values()}
    assert isas <= set(d["runnable"]) <= set(compiled)
    assert _library.cpu_isa() == d["isa"] == (isas.pop() if len(isas) == 1 else "mixed")
    request = os.environ.get(_library.CPU_ISA_ENV, "").lower()
    if request:
        assert d["request"] == request
        expected = request.upper() if request.upper() in d["runnable"] else d["runnable"][-1]
        assert {f["isa"] for f in d["families"].values()} == {expected}
        assert bool(d["note"]) == (expected != request.upper())
    else:
        assert d["request"] is None
        for fam, f in d["families"].items():
            if len(d["runnable"]) == 1:
                assert f["why"] == "the only build this CPU runs" and not f["probe_us"]
                continue
            # Every runnable build was timed, and the family runs the fastest.
            assert set(f["probe_us"]) == set(d["runnable"]), fam
            # (Compared by time: the reported times are rounded, so two builds can show the same figure.)
            assert f["probe_us"][f["isa"]] == min(f["probe_us"].values()), (fam, f)


@pytest.mark.correctness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_cpu_kernel_source_says_what_runs(dtype):
    # The report (python -m cnnkernels.info, the bench's cells) must match what the op does: a compiled CPU op hands
    # float64 to ATen's convolution, the fused fp32 kernel calls no ATen convolution. Seen here with the profiler.
    source = _library.cpu_kernel_source("conv2d_act", dtype)
    if not STATE.cpu:
        assert source == "reference"
        return
    x, w = torch.randn(1, 4, 6, 6, dtype=dtype), torch.randn(8, 4, 3, 3, dtype=dtype)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        torch.ops.cnnkernels.conv2d_act(x, w, None, None, [1, 1], [1, 1], [1, 1], 1, "relu")
    calls_aten_conv = any(e.key == "aten::convolution" for e in prof.key_averages())
    assert source == ("aten-fp64" if dtype == torch.float64 else "compiled")
    assert calls_aten_conv == (source == "aten-fp64")
