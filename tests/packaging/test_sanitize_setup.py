"""What tests/run_sanitized.sh relies on: the loader takes the compiled library from CNNKERNELS_LIBRARY_DIR (where a
plain-CMake build such as build/asan/cnnkernels puts it, with its _build_config.json), says so when it is missing
there, and the script itself parses. The sanitized run itself is `bash tests/run_sanitized.sh` (README, Reliability).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from support.buildutil import PACKAGE_DIR, REPO, run_python, skip_or_fail, subprocess_env

SCRIPT = REPO / "tests" / "run_sanitized.sh"

PROBE = r"""
import json, warnings
import torch
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import cnnkernels
from cnnkernels import _library as L
x = torch.randn(2, 3, 4, 5)
print(json.dumps({"cpu": L.STATE.cpu, "reason": L.STATE.reason, "lib": str(L.CPU_LIB),
                  "warnings": [str(w.message) for w in caught],
                  "ok": torch.equal(cnnkernels.add_relu(x, x), torch.relu(2 * x))}))
"""


def _probe(tmp_path: Path, libdir: Path) -> dict:
    env = subprocess_env(CNNKERNELS_LIBRARY_DIR=str(libdir))
    r = run_python(["-c", PROBE], cwd=tmp_path, env=env)
    assert r.returncode == 0, f"probe failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_library_dir_env_is_honoured(tmp_path):
    src = PACKAGE_DIR / "lib"
    if not (src / "libcnnkernels_cpu.so").exists():
        skip_or_fail("the package under test has no compiled library to copy")
    libdir = tmp_path / "build" / "cnnkernels"
    shutil.copytree(src, libdir)
    res = _probe(tmp_path, libdir)
    assert res["cpu"] and res["warnings"] == [] and res["ok"], res
    assert Path(res["lib"]) == libdir.resolve() / "libcnnkernels_cpu.so"


def test_library_dir_env_missing_library(tmp_path):
    res = _probe(tmp_path, tmp_path / "nowhere")
    assert not res["cpu"] and res["ok"], res
    assert "CNNKERNELS_LIBRARY_DIR" in res["reason"] and len(res["warnings"]) == 1, res


def test_run_sanitized_script_parses():
    assert SCRIPT.exists() and SCRIPT.stat().st_mode & 0o111, f"{SCRIPT} missing or not executable"
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
