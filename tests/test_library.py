"""How the ops were loaded: compiled kernels vs the reference fallback, and which CPU kernel ISA is in use."""

import os

import pytest
import torch

from cnnkernels import _library
from cnnkernels._library import BACKENDS, DISABLE_ENV, STATE
from samples import OPS

EXPECT_ENV = "CNNKERNELS_EXPECT_COMPILED"


@pytest.mark.skipif(os.environ.get(EXPECT_ENV) != "1", reason=f"{EXPECT_ENV}=1 not set (CI sets it)")
def test_compiled_library_loaded_when_expected():
    # CI builds the library and sets CNNKERNELS_EXPECT_COMPILED=1, so a silent fallback to the references fails CI.
    assert STATE.cpu, f"the compiled CPU library is not loaded: {STATE.reason}"


@pytest.mark.correctness
def test_every_op_registered_for_cpu():
    assert set(OPS) == set(_library.op_names()) == set(BACKENDS)
    for name in OPS:
        assert BACKENDS[name]["CPU"] in ("compiled", "reference")


@pytest.mark.correctness
def test_disable_env_forces_reference_backends():
    if os.environ.get(DISABLE_ENV, "0") in ("", "0"):
        pytest.skip(f"{DISABLE_ENV} not set (tests/test_fallback.py runs this with it set)")
    assert not STATE.cpu and STATE.reason == f"{DISABLE_ENV} is set"
    assert all(BACKENDS[name][key] == "reference" for name in OPS for key in ("CPU", "CUDA")), BACKENDS


@pytest.mark.correctness
def test_kernel_isa_follows_aten_cpu_capability():
    if not STATE.cpu:
        pytest.skip(f"compiled library not loaded: {STATE.reason}")
    isa = _library.cpu_isa()
    assert isa in STATE.build_config["cpu_isas"].split(",")
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":  # e.g. ATEN_CPU_CAPABILITY=default
        assert isa == "DEFAULT"
