"""pytest configuration: markers used to select test groups (tests/reliability/test_fallback.py re-runs some groups in
a subprocess), the guard that keeps those subprocess runs from recursing, and a header line naming the cnnkernels under
test.

The tests run against whichever cnnkernels `import cnnkernels` finds: the source tree under `python -m pytest tests`
from the repository root (after `python setup.py build_ext --inplace`), the installed package under `pytest tests`.

This file stays in tests/ (not in a part's folder): pytest's default "prepend" import mode puts its folder on sys.path,
which is how every test file, in whichever folder, imports the shared modules as `support.<module>`.
"""

import os
from pathlib import Path

import pytest
import torch

import cnnkernels
from cnnkernels import _library
from support.helpers import INNER_RUN_ENV, PACKAGE_ENV, inner_run


def pytest_configure(config):
    # (The markers are declared in pyproject.toml.)
    # A child run of tests/reliability/test_fallback.py must test the package its parent tests.
    expected = os.environ.get(PACKAGE_ENV)
    if expected:
        assert Path(cnnkernels.__file__).resolve().parent == Path(expected), (cnnkernels.__file__, expected)


@pytest.fixture
def empty_cache():
    """The CPU kernels' packed-weight cache, cleared before and after the test."""
    _library.weight_cache_clear()
    yield
    _library.weight_cache_clear()


def pytest_report_header(config):
    state = _library.STATE
    how = f"compiled CPU kernels ({_library.cpu_isa()})" if state.cpu else f"reference fallback ({state.reason})"
    return f"cnnkernels: {Path(cnnkernels.__file__).parent}, {how}"


def pytest_collection_modifyitems(config, items):
    if not inner_run():
        return
    skip = pytest.mark.skip(reason=f"{INNER_RUN_ENV}=1: already inside a subprocess run")
    for item in items:
        if "subprocess" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def restore_num_threads():
    """torch.set_num_threads as it was before the test."""
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)
