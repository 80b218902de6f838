"""What was built: device code for every CUDA architecture, a build config matching the running torch, and
`python -m cnnkernels.info` reporting every op."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from support.buildutil import LIB_DIR, REPO, run_python, skip_or_fail, subprocess_env

from cnnkernels import _library as L

# CMakeLists.txt's default TORCH_CUDA_ARCH_LIST "7.5;8.0;8.6;8.9;9.0+PTX": cubins for these, PTX for the last.
DEFAULT_SM = {"75", "80", "86", "89", "90"}
DEFAULT_PTX = {"90"}
CUDA_LIB = LIB_DIR / "libcnnkernels_cuda.so"
CONFIG = LIB_DIR / "_build_config.json"


def _cuobjdump():
    """cuobjdump from PATH, the pip package nvidia-cuda-cuobjdump (nvidia/cu*/bin) or the CUDA toolkit."""
    found = shutil.which("cuobjdump")
    if found:
        return found
    try:
        import nvidia
        for base in nvidia.__path__:
            for cand in sorted(Path(base).glob("cu*/bin/cuobjdump"), reverse=True):
                return str(cand)
    except ImportError:
        pass
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "cuobjdump").exists():
            return str(Path(home) / "bin" / "cuobjdump")
    return None


def _build_config():
    if not CONFIG.exists():
        skip_or_fail(f"no build config at {CONFIG}: the compiled library was not built")
    return json.loads(CONFIG.read_text())


def _list(tool, flag):
    """{object name: {sm numbers}} from `cuobjdump --list-elf|--list-ptx`, e.g. add_relu_kernel.sm_75.cubin."""
    r = subprocess.run([tool, flag, str(CUDA_LIB)], capture_output=True, text=True)
    if r.returncode != 0:
        # cuobjdump exits non-zero when there is nothing of that kind in the file
        assert "does not contain" in (r.stdout + r.stderr), f"{tool} {flag} failed:\n{r.stdout}\n{r.stderr}"
        return {}
    found = {}
    for obj, sm in re.findall(r":\s*(\S+)\.sm_(\d+[a-z]?)\.(?:cubin|ptx)", r.stdout):
        found.setdefault(obj, set()).add(sm)
    return found


def _parse_archs(archs_csv):
    """'75-real,90-real,90-virtual' -> ({'75', '90'}, {'90'})"""
    real, virtual = set(), set()
    for a in (archs_csv or "").split(","):
        if a.endswith("-real"):
            real.add(a[:-5])
        elif a.endswith("-virtual"):
            virtual.add(a[:-8])
    return real, virtual


@pytest.fixture(scope="module")
def device_code():
    cfg = _build_config()
    if not cfg.get("cuda"):
        skip_or_fail("the library was built without CUDA kernels")
    if not CUDA_LIB.exists():
        skip_or_fail(f"{CUDA_LIB} is missing although the build config lists CUDA {cfg['cuda']}")
    tool = _cuobjdump()
    if tool is None:
        skip_or_fail("cuobjdump not found (pip install nvidia-cuda-cuobjdump)")
    return cfg, _list(tool, "--list-elf"), _list(tool, "--list-ptx")


def test_cuda_device_code_matches_build_config(device_code):
    cfg, elf, ptx = device_code
    real, virtual = _parse_archs(cfg["cuda_archs"])
    assert elf, "libcnnkernels_cuda.so contains no cubins"
    for obj, sms in elf.items():
        assert sms == real, f"{obj}: cubins for sm_{sorted(sms)}, build config asks for sm_{sorted(real)}"
    for obj in elf:
        assert ptx.get(obj, set()) == virtual, \
            f"{obj}: PTX for {sorted(ptx.get(obj, set()))}, build config asks for compute_{sorted(virtual)}"


def test_cuda_device_code_covers_default_archs(device_code):
    cfg, elf, ptx = device_code
    real, virtual = _parse_archs(cfg["cuda_archs"])
    if (real, virtual) != (DEFAULT_SM, DEFAULT_PTX):
        skip_or_fail(f"built for a custom TORCH_CUDA_ARCH_LIST ({cfg['cuda_archs']}), not the default")
    for obj, sms in elf.items():
        assert sms == DEFAULT_SM, f"{obj}: cubins for sm_{sorted(sms)}, expected sm_{sorted(DEFAULT_SM)}"
        assert ptx.get(obj) == DEFAULT_PTX, f"{obj}: PTX for {ptx.get(obj)}, expected compute_{sorted(DEFAULT_PTX)}"


def test_every_cuda_kernel_file_is_in_the_library(device_code):
    _, elf, _ = device_code
    src = REPO / "csrc" / "cuda"
    if not src.is_dir():
        pytest.skip("no source tree next to the tests")
    kernels = {p.stem for p in src.glob("*.cu") if "__global__" in p.read_text()}
    missing = kernels - set(elf)
    assert not missing, f"kernel files with no device code in {CUDA_LIB.name}: {sorted(missing)}"


def test_build_config_matches_running_torch():
    cfg = _build_config()
    assert cfg["torch_version"] == torch.__version__
    assert cfg["torch_cuda_version"] == (torch.version.cuda or "")
    assert int(cfg["cxx11_abi"]) == int(torch._C._GLIBCXX_USE_CXX11_ABI)
    isas = cfg["cpu_isas"].split(",")
    assert isas[0] == "DEFAULT"
    if cfg.get("cuda") and torch.version.cuda:
        assert cfg["cuda"].split(".")[0] == torch.version.cuda.split(".")[0], \
            f"CUDA kernels built with nvcc {cfg['cuda']}, torch uses CUDA {torch.version.cuda}"


def test_compiled_library_loaded():
    if not L.STATE.cpu:
        skip_or_fail(f"compiled CPU library not loaded: {L.STATE.reason}")
    cfg = _build_config()
    families = L.cpu_dispatch()["families"].values()
    assert {f["isa"] for f in families} <= set(cfg["cpu_isas"].split(","))
    if cfg.get("cuda") and torch.version.cuda:
        assert L.STATE.cuda, L.STATE.cuda_reason


def test_info_lists_every_op(tmp_path):
    env = subprocess_env()
    r = run_python(["-m", "cnnkernels.info"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    for name in L.read_schemas():
        assert re.search(rf"^\s+{name}\s+(compiled|reference|missing)\s+(compiled|aten-fp64|reference|missing)"
                         rf"\s+(compiled|reference|missing)\s+(cuda|triton|reference)\s*$",
                         r.stdout, re.M), f"op {name} not in the info table:\n{r.stdout}"

    r = run_python(["-m", "cnnkernels.info", "--json"], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert set(info["ops"]) == set(L.read_schemas())
    assert info["versions"]["torch"] == torch.__version__
    assert Path(info["package_dir"]) == L.PACKAGE_DIR
    assert info["compiled"]["cpu"] == L.STATE.cpu


def test_info_collect_in_process():
    from cnnkernels.info import collect

    info = collect()
    assert info["compiled"]["cpu"] == L.STATE.cpu
    for name, row in info["ops"].items():
        assert row["schema"].startswith(name + "(")
        for key in ("CPU", "CUDA"):
            assert row[key] == L.KERNEL_SOURCES.get(name, {}).get(key, row[key])
