"""Property-based tests of every op against its reference (strategies and checks in tests/support/fuzz.py).

* test_fuzz_slice[<op>]: the CI slice, a deterministic (derandomized) run of SLICE_CASES small cases per op; the
  whole slice takes well under a minute.
* test_fuzz_long[<op>]: the long mode, `pytest -m fuzz tests/reliability/test_fuzz_ops.py`: CNNKERNELS_FUZZ_CASES
  cases per op (default 10000) on larger shapes, random seed (CNNKERNELS_FUZZ_SEED to fix it). Skipped unless `-m`
  selects `fuzz`.
  `python tests/support/fuzz.py --cases 10000` is the same run with a per-op report of what was covered.
"""

from __future__ import annotations

import os

import pytest

from support.fuzz import OPS, Stats, make_runner

SLICE_CASES = 40
LONG_CASES_ENV = "CNNKERNELS_FUZZ_CASES"
LONG_SEED_ENV = "CNNKERNELS_FUZZ_SEED"


@pytest.mark.correctness
@pytest.mark.parametrize("op_name", OPS)
def test_fuzz_slice(op_name):
    stats = Stats()
    make_runner(op_name, "small", SLICE_CASES, derandomize=True, stats=stats)()
    assert stats.count[op_name] == SLICE_CASES


@pytest.fixture
def long_mode(request):
    if "fuzz" not in (request.config.getoption("-m") or ""):
        pytest.skip("long fuzzing runs with `pytest -m fuzz` (or python tests/support/fuzz.py)")


@pytest.mark.fuzz
@pytest.mark.parametrize("op_name", OPS)
def test_fuzz_long(op_name, long_mode, capsys):
    cases = int(os.environ.get(LONG_CASES_ENV, "10000"))
    seed = os.environ.get(LONG_SEED_ENV)
    stats = Stats()
    make_runner(op_name, "large", cases, derandomize=False, stats=stats, rng_seed=int(seed) if seed else None)()
    with capsys.disabled():
        print(f"\n{op_name}: {stats.count[op_name]} cases passed")
    assert stats.count[op_name] >= cases
