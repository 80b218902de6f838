"""`import cnnkernels` with a broken, mismatched or disabled compiled library: one RuntimeWarning naming the reason (none
when disabled on purpose), and the ops still work through their pure-PyTorch references.

Each case runs in a fresh interpreter on a copy of the package under test (installed or built in place), so the
library state of this process is never touched."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from support.buildutil import PACKAGE_DIR, run_python, skip_or_fail, subprocess_env

# Imports cnnkernels recording every warning, checks the ops against plain torch, prints a JSON summary.
PROBE = r"""
import json, sys, warnings
import torch  # torch's own import-time warnings are not ours
#PREAMBLE
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import cnnkernels
from cnnkernels import _library as L
x, r = torch.randn(2, 8, 5, 7), torch.randn(2, 8, 5, 7)
w, b = torch.randn(4, 8, 3, 3), torch.randn(4)
add_relu_ok = torch.equal(cnnkernels.add_relu(x, r), torch.relu(x + r))
y = cnnkernels.conv2d_act(x.contiguous(memory_format=torch.channels_last), w, b, None, 1, 1, 1, 1, "relu")
conv_ok = torch.allclose(y, torch.relu(torch.nn.functional.conv2d(x, w, b, 1, 1)), atol=1e-4, rtol=1e-4)
print(json.dumps({
    "file": cnnkernels.__file__,
    "warnings": [[w.category.__name__, str(w.message)] for w in caught],
    "cpu": L.STATE.cpu, "cuda": L.STATE.cuda, "reason": L.STATE.reason,
    "backends": L.KERNEL_SOURCES,
    "add_relu_ok": add_relu_ok, "conv_ok": conv_ok,
}))
"""


def _probe(tmp_path: Path, package_parent: Path, preamble: str = "", **env) -> dict:
    code = PROBE.replace("#PREAMBLE\n", preamble)
    r = run_python(["-c", code], cwd=tmp_path, env=subprocess_env(package_parent, **env))
    assert r.returncode == 0, f"probe failed:\n{r.stdout}\n{r.stderr}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture
def package_copy(tmp_path) -> Path:
    """A copy of the package under test in tmp_path/site/cnnkernels; returns its directory."""
    dst = tmp_path / "site" / "cnnkernels"
    shutil.copytree(PACKAGE_DIR, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _set_config(pkg: Path, **fields) -> None:
    """Writes lib/_build_config.json with `fields` over the existing one (or a minimal one) and makes sure a CPU
    library file exists, so that only the field under test can stop the load."""
    lib = pkg / "lib"
    lib.mkdir(exist_ok=True)
    cfg_path = lib / "_build_config.json"
    cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {
        "torch_version": torch.__version__, "cpu_isas": "DEFAULT", "cuda": None, "cuda_archs": None}
    cfg.update(fields)
    cfg_path.write_text(json.dumps(cfg))
    if not (lib / "libcnnkernels_cpu.so").exists():
        (lib / "libcnnkernels_cpu.so").write_bytes(b"")


def _assert_reference_fallback(res: dict, pkg: Path, *reason_parts: str) -> None:
    assert Path(res["file"]).resolve().parent == pkg.resolve(), "the probe imported another cnnkernels"
    assert len(res["warnings"]) == 1, f"expected exactly one warning, got {res['warnings']}"
    category, message = res["warnings"][0]
    assert category == "RuntimeWarning"
    for part in reason_parts:
        assert part in message, f"{part!r} not in the warning: {message}"
    assert not res["cpu"] and not res["cuda"]
    for op, keys in res["backends"].items():
        assert keys == {"CPU": "reference", "CUDA": "reference"}, (op, keys)
    assert res["add_relu_ok"] and res["conv_ok"]


def test_built_against_other_torch(tmp_path, package_copy):
    _set_config(package_copy, torch_version="2.0.0")
    res = _probe(tmp_path, package_copy.parent)
    _assert_reference_fallback(res, package_copy, "built against torch 2.0.0", torch.__version__)


def test_same_release_other_local_version_loads(tmp_path, package_copy):
    # Only the release is compared: a library built against torch X.Y.Z+cpu loads into X.Y.Z+cu130 and vice versa.
    if not (package_copy / "lib" / "libcnnkernels_cpu.so").exists():
        skip_or_fail("the package under test has no compiled library")
    release = torch.__version__.split("+")[0]
    _set_config(package_copy, torch_version=release + ("+cpu" if "+cpu" not in torch.__version__ else "+cu999"))
    res = _probe(tmp_path, package_copy.parent)
    assert res["warnings"] == [] and res["cpu"], res


def test_missing_library(tmp_path, package_copy):
    _set_config(package_copy)
    (package_copy / "lib" / "libcnnkernels_cpu.so").unlink()
    res = _probe(tmp_path, package_copy.parent)
    _assert_reference_fallback(res, package_copy, "missing", "libcnnkernels_cpu.so")


def test_missing_lib_folder(tmp_path, package_copy):
    shutil.rmtree(package_copy / "lib", ignore_errors=True)
    res = _probe(tmp_path, package_copy.parent)
    _assert_reference_fallback(res, package_copy, "missing")


def test_corrupt_library(tmp_path, package_copy):
    _set_config(package_copy)
    (package_copy / "lib" / "libcnnkernels_cpu.so").write_bytes(b"\x7fELF this is not a shared library" * 10)
    res = _probe(tmp_path, package_copy.parent)
    _assert_reference_fallback(res, package_copy, "loading libcnnkernels_cpu.so failed")


def test_corrupt_build_config(tmp_path, package_copy):
    _set_config(package_copy)
    (package_copy / "lib" / "_build_config.json").write_text("{ not json")
    res = _probe(tmp_path, package_copy.parent)
    _assert_reference_fallback(res, package_copy, "unreadable build config")


def test_corrupt_cuda_library_keeps_cpu_kernels(tmp_path, package_copy):
    if not (package_copy / "lib" / "libcnnkernels_cuda.so").exists():
        skip_or_fail("the library under test has no CUDA kernels")
    if torch.version.cuda is None:
        pytest.skip("torch without CUDA never loads the CUDA library")
    (package_copy / "lib" / "libcnnkernels_cuda.so").write_bytes(b"garbage")
    res = _probe(tmp_path, package_copy.parent)
    assert len(res["warnings"]) == 1, res["warnings"]
    category, message = res["warnings"][0]
    assert category == "RuntimeWarning" and "libcnnkernels_cuda.so" in message, message
    assert res["cpu"] and not res["cuda"]
    assert res["backends"]["add_relu"] == {"CPU": "compiled", "CUDA": "reference"}
    assert res["add_relu_ok"] and res["conv_ok"]


def test_disabled_by_env(tmp_path):
    res = _probe(tmp_path, PACKAGE_DIR.parent, CNNKERNELS_DISABLE_COMPILED="1")
    assert Path(res["file"]).resolve().parent == PACKAGE_DIR
    assert res["warnings"] == []
    assert not res["cpu"] and not res["cuda"]
    assert "CNNKERNELS_DISABLE_COMPILED" in res["reason"]
    for op, keys in res["backends"].items():
        assert keys == {"CPU": "reference", "CUDA": "reference"}, (op, keys)
    assert res["add_relu_ok"] and res["conv_ok"]


def test_loads_compiled_when_intact(tmp_path, package_copy):
    """The copy itself is loadable: the failures above come from what each test broke, not from copying."""
    if not (package_copy / "lib" / "libcnnkernels_cpu.so").exists():
        skip_or_fail("the package under test has no compiled library")
    res = _probe(tmp_path, package_copy.parent)
    assert res["warnings"] == [] and res["cpu"], res
    assert res["backends"]["add_relu"]["CPU"] == "compiled"
    assert res["add_relu_ok"] and res["conv_ok"]


def test_ops_already_registered_by_another_copy(tmp_path):
    """A plain-CMake build loaded with torch.ops.load_library (as the README shows) before `import cnnkernels`: the
    package must not load its own copy too (a second TORCH_LIBRARY(cnnkernels) aborts the process during dlopen);
    it uses the loaded one and says so in one warning."""
    if not (PACKAGE_DIR / "lib" / "libcnnkernels_cpu.so").exists() or "CNNKERNELS_LIBRARY_DIR" in os.environ:
        skip_or_fail("the package under test has no compiled library in lib/")
    other = tmp_path / "plain"
    shutil.copytree(PACKAGE_DIR / "lib", other)
    code = f"torch.ops.load_library({str(other / 'libcnnkernels_cpu.so')!r})\n"
    res = _probe(tmp_path, PACKAGE_DIR.parent, preamble=code)
    assert len(res["warnings"]) == 1, res["warnings"]
    category, message = res["warnings"][0]
    assert category == "RuntimeWarning" and "already registered" in message and str(other) in message, message
    assert res["cpu"] and res["backends"]["add_relu"]["CPU"] == "compiled"
    assert res["add_relu_ok"] and res["conv_ok"]
