"""Helpers shared by the build, loading, bench and child-process tests (plain functions imported by name).

The tests run against whichever cnnkernels `import cnnkernels` finds (the installed package under `pytest tests`, or the
source tree after `python setup.py build_ext --inplace`); subprocesses are pointed at that same package.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional

import pytest

from cnnkernels._library import CPU_ISA_ENV, DISABLE_ENV, STATE
from cnnkernels._library import LIB_DIR, PACKAGE_DIR  # noqa: F401  (the package under test, wherever it lives)

TESTS_DIR = Path(__file__).resolve().parent.parent  # tests/ (this file is tests/support/buildutil.py)
REPO = TESTS_DIR.parent
EXPECT_COMPILED_ENV = "CNNKERNELS_EXPECT_COMPILED"


def expect_compiled() -> bool:
    """CI sets CNNKERNELS_EXPECT_COMPILED=1: a missing compiled library or tool is then a failure, not a skip."""
    return os.environ.get(EXPECT_COMPILED_ENV, "0") not in ("", "0")


def skip_or_fail(reason: str) -> None:
    if expect_compiled():
        pytest.fail(f"{reason} (and {EXPECT_COMPILED_ENV}=1 is set)")
    pytest.skip(reason)


def subprocess_env(package_parent: Optional[Path] = None, **extra: str) -> Dict[str, str]:
    """The environment for a child Python that must import the package in `package_parent` (default: the one under
    test). Variables that change which library loads are cleared unless given in `extra`."""
    env = dict(os.environ)
    for k in ("CNNKERNELS_DISABLE_COMPILED", "CNNKERNELS_CPU_ISA", "ATEN_CPU_CAPABILITY", "CNNKERNELS_LIBRARY_DIR"):
        env.pop(k, None)
    parent = str(package_parent or PACKAGE_DIR.parent)
    env["PYTHONPATH"] = os.pathsep.join([parent] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def run_python(args, cwd: Path, env: Dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Runs `python <args>` from `cwd` (keep it outside the source tree so the tree's cnnkernels/ is not imported)."""
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---- child processes on another kernel build (reliability/test_fallback.py, packaging/test_cpu_dispatch.py) --------

# What csrc/cpu/kernels/dispatch.cpp requires of the CPU for each build (the -m flags CMakeLists.txt compiles it with)
ISA_FLAGS = {"DEFAULT": (), "AVX2": ("avx2", "fma", "f16c", "bmi2"),
             "AVX512": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "fma", "f16c", "bmi2")}


def _cpu_flags() -> set:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def compiled_isas() -> list:
    return STATE.build_config["cpu_isas"].split(",") if STATE.cpu else []


def missing_flags(isa: str) -> list:
    return sorted(set(ISA_FLAGS[isa]) - _cpu_flags())


def child_env(**update: str) -> dict:
    """The environment of a child Python that imports the very cnnkernels under test (PYTHONPATH; the children run
    outside the source tree so its cnnkernels/ cannot shadow an installed one), with `update` as the only settings
    that change which kernels run.

    Unlike subprocess_env, it keeps CNNKERNELS_LIBRARY_DIR (a child of the sanitized run tests the sanitized library)
    and drops CNNKERNELS_EXPECT_COMPILED (a child with the compiled library disabled must skip, not fail, the tests
    that need it)."""
    env = dict(os.environ)
    for k in (DISABLE_ENV, CPU_ISA_ENV, "ATEN_CPU_CAPABILITY", EXPECT_COMPILED_ENV):
        env.pop(k, None)
    env["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_DIR.parent)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH")
                                                                    else []))
    env.update(update)
    return env
