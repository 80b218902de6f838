"""pytest configuration: markers used to select test groups (tests/test_fallback.py re-runs some groups in a
subprocess), and the guard that keeps those subprocess runs from recursing."""

import sys
from pathlib import Path

import pytest

# Test this checkout's cnnkernels (built in place), never an installed copy in site-packages.
REPO_ROOT = Path(__file__).resolve().parent.parent
if sys.path[0] != str(REPO_ROOT):
    sys.path.insert(0, str(REPO_ROOT))
import cnnkernels  # noqa: E402

assert Path(cnnkernels.__file__).resolve().parent == REPO_ROOT / "cnnkernels", cnnkernels.__file__

from helpers import INNER_RUN_ENV, inner_run  # noqa: E402

MARKERS = {
    "correctness": "op output vs the pure-PyTorch reference (re-run by test_fallback.py)",
    "bad_input": "invalid arguments raise the documented exception (re-run by test_fallback.py)",
    "subprocess": "runs part of the suite in a child process (never inside such a child)",
}


def pytest_configure(config):
    for name, doc in MARKERS.items():
        config.addinivalue_line("markers", f"{name}: {doc}")


def pytest_collection_modifyitems(config, items):
    if not inner_run():
        return
    skip = pytest.mark.skip(reason=f"{INNER_RUN_ENV}=1: already inside a subprocess run")
    for item in items:
        if "subprocess" in item.keywords:
            item.add_marker(skip)
