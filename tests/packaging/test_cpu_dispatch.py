"""Which ISA build each CPU kernel family runs: CNNKERNELS_CPU_ISA, the timing probe, and what is refused. The choice is
made once per process, so every configuration runs in a child process."""

import json
import subprocess
import sys

import pytest

from cnnkernels._library import CPU_ISA_ENV, STATE
from support.buildutil import child_env, missing_flags

pytestmark = [pytest.mark.subprocess,
              pytest.mark.skipif(not STATE.cpu, reason=f"compiled library not loaded: {STATE.reason}")]

FAMILIES = {"conv", "depthwise", "maxpool", "add_relu", "fingerprint"}


def child(tmp_path, code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(**env), capture_output=True,
                          text=True, timeout=120)


def child_dispatch(tmp_path, **env: str) -> dict:
    # An op call first: the choice must be the one the kernels really made, not one made for the report.
    code = ("import json, torch, cnnkernels; from cnnkernels import _library as L\n"
            "x = torch.randn(1, 8, 5, 5).to(memory_format=torch.channels_last)\n"
            "cnnkernels.conv2d_act(x, torch.randn(8, 8, 3, 3), padding=1)\n"
            "print(json.dumps(L.cpu_dispatch()))")
    proc = child(tmp_path, code, **env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("value", ["avx2", "AVX2", "default"])
def test_env_forces_every_family(tmp_path, value):
    isa = value.upper()
    if missing_flags(isa):
        pytest.skip(f"this CPU cannot run the {isa} build")
    d = child_dispatch(tmp_path, **{CPU_ISA_ENV: value})
    assert d["request"] == value.lower() and d["isa"] == isa and not d["note"]
    assert set(d["families"]) == FAMILIES
    for f in d["families"].values():
        assert f["isa"] == isa and f["why"] == f"{CPU_ISA_ENV}={value.lower()}" and not f["probe_us"]


@pytest.mark.parametrize("isa", ["AVX512", "AVX2"])
def test_env_never_exceeds_the_cpu(tmp_path, isa):
    # A build the CPU cannot run would fault: the request is capped to the widest build the CPU runs, and says so.
    if not missing_flags(isa):
        pytest.skip(f"this CPU runs the {isa} build")
    d = child_dispatch(tmp_path, **{CPU_ISA_ENV: isa.lower()})
    assert d["isa"] == d["runnable"][-1] != isa
    assert f"cannot run the {isa} build" in d["note"]


def test_probe_ignores_aten_cpu_capability(tmp_path):
    # torch's own ISA switch no longer limits (or chooses) the kernels: without CNNKERNELS_CPU_ISA the probe decides
    # among every build the CPU runs.
    default = child_dispatch(tmp_path, ATEN_CPU_CAPABILITY="default")
    assert default["request"] is None
    assert default["runnable"] == child_dispatch(tmp_path)["runnable"]
    if len(default["runnable"]) > 1:
        for fam, f in default["families"].items():
            assert f["why"] == "fastest in the timing probe", fam
            assert set(f["probe_us"]) == set(default["runnable"]), fam


@pytest.mark.parametrize("value", ["avx3", "sse4", "AVX-512"])
def test_bad_env_value_fails_the_import(tmp_path, value):
    proc = child(tmp_path, "import cnnkernels", **{CPU_ISA_ENV: value})
    assert proc.returncode != 0
    assert "ValueError" in proc.stderr
    assert f"{CPU_ISA_ENV}={value!r}: expected one of 'default', 'avx2', 'avx512'" in proc.stderr


def test_bad_env_value_after_import_raises_at_the_op(tmp_path):
    # Set after the import (so the import-time check did not see it) and before the first kernel call: the op raises
    # a ValueError naming the variable, and the C entry points report it instead of aborting the process.
    code = ("import os, torch, cnnkernels; from cnnkernels import _library as L\n"
            f"os.environ[{CPU_ISA_ENV!r}] = 'avx3'\n"
            "try:\n"
            "    cnnkernels.add_relu(torch.randn(4), torch.randn(4))\n"
            "except ValueError as e:\n"
            "    print('op:', str(e).splitlines()[-1])\n"
            "try:\n"
            "    L.cpu_dispatch()\n"
            "except ValueError as e:\n"
            "    print('dispatch:', e)\n")
    proc = child(tmp_path, code)
    assert proc.returncode == 0, proc.stderr
    assert f"op: {CPU_ISA_ENV}='avx3' is not one of" in proc.stdout
    assert (f"dispatch: cnnkernels: the CPU kernels could not choose their ISA build: {CPU_ISA_ENV}='avx3'"
            in proc.stdout)
