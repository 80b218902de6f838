"""What was built: device code for every CUDA architecture, no local memory (spills) in the hot CUDA kernels, a build
config matching the running torch, and `python -m cnnkernels.info` reporting every op."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
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


# bench/cuda_resources.py: the one cuobjdump finder, `cuobjdump -res-usage` parser and list of hot kernels, shared with
# the build's post-link resource table (CMakeLists.txt).
_spec = importlib.util.spec_from_file_location("cnnkernels_bench_cuda_resources", REPO / "bench" / "cuda_resources.py")
resources = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = resources  # dataclasses resolve their module by name
_spec.loader.exec_module(resources)
_cuobjdump = resources.find_cuobjdump


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


# ---- resource usage: no local memory in the hot kernels ------------------------------------------------------------
# A kernel whose registers run out keeps values in local memory (its stack frame): results stay right, so only
# `cuobjdump -res-usage` shows it. STACK counts spills, local arrays indexed at run time and call frames alike: all
# three are local-memory traffic, so any frame fails; `nvcc -Xptxas -v` on the kernel's file tells which it is.
OPTIMISED = ("Release", "RelWithDebInfo")
HOT = [(src, kernel) for src, kernels in sorted(resources.HOT_KERNELS.items()) for kernel in kernels]
# (arch, source, kernel) -> why it still spills: a strict xfail (the test fails once the spill is gone). Empty: the
# conv_gemm_kernel spills of nvcc 13.0 (64-80 register targets ptxas chose from the thread count alone) went with
# launch bounds that state the blocks per SM (block_gemm.cuh), the inverted residual's with its own and 32-bit tile
# state (expand_depthwise.cuh).
KNOWN_SPILLS: dict = {}


def _hot_params():
    for sm in sorted(DEFAULT_SM):
        for src, kernel in HOT:
            reason = KNOWN_SPILLS.get((f"sm_{sm}", src, kernel))
            marks = [pytest.mark.xfail(reason=reason, strict=True)] if reason else []
            yield pytest.param(f"sm_{sm}", src, kernel, marks=marks, id=f"sm_{sm}-{src[:-3]}-{kernel}")


@pytest.fixture(scope="module")
def resource_usage(device_code):
    cfg = device_code[0]
    if cfg.get("build_type", "Release") not in OPTIMISED:
        pytest.skip(f"register allocation is only checked in optimised builds (build_type={cfg.get('build_type')!r})")
    usages = resources.read(CUDA_LIB, _cuobjdump())
    assert usages, f"cuobjdump -res-usage found no kernels in {CUDA_LIB}"
    return usages


def test_every_cuda_kernel_is_classified_hot_or_cold(resource_usage):
    """A new kernel must be added to HOT_KERNELS or COLD_KERNELS, and every listed hot kernel must exist (a renamed
    one would otherwise drop out of the spill check unnoticed)."""
    unlisted = sorted({(u.source, u.kernel) for u in resource_usage if not u.classified})
    assert not unlisted, f"kernels in neither HOT_KERNELS nor COLD_KERNELS of bench/cuda_resources.py: {unlisted}"
    missing = sorted(set(HOT) - {(u.source, u.kernel) for u in resource_usage})
    assert not missing, f"HOT_KERNELS lists kernels that {CUDA_LIB.name} does not have: {missing}"


@pytest.mark.parametrize("arch, source, kernel", _hot_params())
def test_hot_kernel_uses_no_local_memory(resource_usage, arch, source, kernel):
    found = [u for u in resource_usage if (u.arch, u.source, u.kernel) == (arch, source, kernel)]
    if not found:
        pytest.skip(f"no {arch} cubin of {source} in this build")
    spilling = [u for u in found if u.stack or u.local]
    if spilling:
        pytest.fail("local memory (register spills or local arrays) in a hot kernel:\n" + "\n".join(
            f"  {u.arch} {u.name} ({u.source}): {u.stack} bytes stack frame, {u.local} bytes local, {u.reg} registers"
            for u in spilling), pytrace=False)


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
