"""bench/run.py runs end to end on one small case: table on stdout, JSON with every provider checked and timed."""

from __future__ import annotations

import json

import pytest

from buildutil import REPO, run_python, subprocess_env

BENCH = REPO / "bench" / "run.py"
CASE = "resnet18.layer1.0.add_relu"


@pytest.mark.skipif(not BENCH.exists(), reason="no bench/ next to the tests")
def test_bench_quick(tmp_path):
    out = tmp_path / "bench.json"
    r = run_python([str(BENCH), "--quick", "--no-compile", "--strict", "--threads", "1", "--filter", f"^{CASE}$",
                    "--json", str(out), "--csv", str(tmp_path / "bench.csv")],
                   cwd=tmp_path, env=subprocess_env(), timeout=120)
    assert r.returncode == 0, f"bench failed:\n{r.stdout}\n{r.stderr}"
    header = next(line for line in r.stdout.splitlines() if line.startswith("case "))
    for col in ("cnnkernels", "eager-nchw", "eager-cl", "vs eager", "vs compile"):
        assert col in header, header
    assert "1 threads" in r.stdout
    row = next(line for line in r.stdout.splitlines() if line.startswith(CASE + " "))
    assert "error" not in row, r.stdout

    data = json.loads(out.read_text())
    assert data["machine"]["threads"] == 1 and data["machine"]["torch"]
    results = {x["provider"]: x for x in data["results"]}
    assert set(results) == {"cnnkernels", "eager-nchw", "eager-cl"}
    for x in results.values():
        assert x["case"] == CASE and x["error"] is None and x["median_ms"] > 0
        assert x["p20_ms"] <= x["median_ms"] <= x["p80_ms"]
    assert (tmp_path / "bench.csv").read_text().count("\n") == 1 + len(results)


def test_bench_reports_a_wrong_provider():
    """A provider whose output is wrong gets an error cell, not a time."""
    import sys

    import torch

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import cases
        import run
        from providers import Eager

        class Wrong(Eager):
            def prepare(self, case, x, acts, w):
                fn = super().prepare(case, x, acts, w)
                return lambda: fn() * 1.01

        case = next(c for c in cases.CASES if c.name == CASE)
        with torch.inference_mode():
            res = run.run_case(case, [Wrong("wrong", torch.contiguous_format)], 1, torch.float32, run.QUICK, 0)
    finally:
        while str(REPO / "bench") in sys.path:
            sys.path.remove(str(REPO / "bench"))
        for name in ("cases", "run", "providers"):
            sys.modules.pop(name, None)
    assert res[0].error and "mismatch" in res[0].error and res[0].median_ms is None
