"""Re-runs groups of the suite in a child process under another configuration:

* CNNKERNELS_DISABLE_COMPILED=1: the correctness and bad-input tests against the pure-PyTorch fallback (what users
  get when the compiled library is missing or built for another torch), which must then report "reference" backends;
* CNNKERNELS_CPU_ISA=default|avx2|avx512: the correctness tests on each ISA build of the compiled kernels this CPU
  runs, whichever the timing probe would pick here (another CPU may pick another one).

The children get CNNKERNELS_TEST_INNER=1 and deselect the `subprocess` marker, so they never start children of their
own.
"""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from cnnkernels._library import CPU_ISA_ENV, DISABLE_ENV, STATE
from support.buildutil import PACKAGE_DIR, TESTS_DIR, child_env, missing_flags
from support.buildutil import compiled_isas as _compiled_isas
from support.helpers import INNER_RUN_ENV, PACKAGE_ENV

pytestmark = pytest.mark.subprocess


def child_cpu_isa(tmp_path: Path, **update: str) -> str:
    code = "import cnnkernels._library as L; print(L.cpu_isa())"
    return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=child_env(**update), capture_output=True,
                          text=True, check=True, timeout=120).stdout.strip()


def run_inner_pytest(tmp_path: Path, marker_expr: str, timeout: int = 420, **update: str) -> dict:
    """Runs `pytest tests -m '<marker_expr> and not subprocess'` in a child; returns {test id: outcome}."""
    env = child_env(**update)
    env[INNER_RUN_ENV] = "1"
    env[PACKAGE_ENV] = str(PACKAGE_DIR)
    report = tmp_path / "inner.xml"
    cmd = [sys.executable, "-m", "pytest", str(TESTS_DIR), "-q", "-p", "no:cacheprovider", "-m",
           f"({marker_expr}) and not subprocess", f"--junitxml={report}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert proc.returncode == 0, f"{' '.join(cmd)} with {update} failed:\n{tail}"
    outcomes = {}
    for case in ET.parse(report).getroot().iter("testcase"):
        kinds = {child.tag for child in case}
        outcome = ("failed" if kinds & {"failure", "error"} else "skipped" if "skipped" in kinds else "passed")
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    assert outcomes, tail
    return outcomes


def _passed(outcomes: dict, test_name: str) -> bool:
    return any(k.endswith(f"::{test_name}") and v == "passed" for k, v in outcomes.items())


def test_reference_fallback(tmp_path):
    outcomes = run_inner_pytest(tmp_path, "correctness or bad_input", **{DISABLE_ENV: "1"})
    assert sum(v == "passed" for v in outcomes.values()) > 100
    # Inside the child, every op reported its "reference" backend for CPU and CUDA.
    assert _passed(outcomes, "test_disable_env_forces_reference_backends"), outcomes


@pytest.mark.skipif(not STATE.cpu, reason=f"compiled library not loaded: {STATE.reason}")
@pytest.mark.parametrize("isa", ["DEFAULT", "AVX2", "AVX512"])
def test_each_isa_build(tmp_path, isa):
    # The main run covers the builds the probe picked on this CPU; another CPU may pick any other, so every build the
    # CPU can run passes the correctness tests here.
    assert isa in _compiled_isas(), f"built without the {isa} kernels: {_compiled_isas()}"
    if missing_flags(isa):
        pytest.skip(f"this CPU cannot run the {isa} build (no {'/'.join(missing_flags(isa))})")
    assert child_cpu_isa(tmp_path, **{CPU_ISA_ENV: isa.lower()}) == isa
    outcomes = run_inner_pytest(tmp_path, "correctness", **{CPU_ISA_ENV: isa.lower()})
    assert sum(v == "passed" for v in outcomes.values()) > 50
    # ... and the child's kernels really were that build, for every family.
    assert _passed(outcomes, "test_kernel_isa_follows_cnnkernels_cpu_isa"), outcomes
