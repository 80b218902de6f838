"""Helpers shared by the build, loading and bench tests (not a conftest: plain functions imported by name).

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

from cnnkernels._library import LIB_DIR, PACKAGE_DIR  # noqa: F401  (the package under test, wherever it lives)

REPO = Path(__file__).resolve().parent.parent
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
