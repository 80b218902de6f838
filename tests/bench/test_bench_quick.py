"""bench/run.py runs end to end on two small cases: table on stdout with the calibration peaks and cnnkernels' achieved
rates, JSON/CSV/markdown with every provider checked and timed; --device cuda refuses cleanly without CUDA. Only the
structure is checked, never a time."""

from __future__ import annotations

import contextlib
import json
import re
import sys

import pytest
import torch
import torch.nn.functional as F

from support.buildutil import REPO, run_python, subprocess_env

BENCH = REPO / "bench" / "run.py"
CASE = "resnet18.layer1.0.add_relu"
CONV_CASE = "mobilenet_v2.features.15"  # the cheapest conv case (7x7)

pytestmark = pytest.mark.skipif(not BENCH.exists(), reason="no bench/ next to the tests")


@contextlib.contextmanager
def bench_modules():
    """bench/'s modules imported in this process, and forgotten afterwards."""
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import calibrate
        import cases
        import providers
        import run

        yield run, cases, providers, calibrate
    finally:
        while str(REPO / "bench") in sys.path:
            sys.path.remove(str(REPO / "bench"))
        for name in ("calibrate", "cases", "run", "providers"):
            sys.modules.pop(name, None)


def test_bench_quick(tmp_path):
    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    r = run_python([str(BENCH), "--quick", "--no-compile", "--strict", "--threads", "1", "--filter", f"^{CASE}$",
                    "--filter", f"^{CONV_CASE}$", "--json", str(out), "--csv", str(tmp_path / "bench.csv"),
                    "--markdown", str(md)],
                   cwd=tmp_path, env=subprocess_env(), timeout=120)
    assert r.returncode == 0, f"bench failed:\n{r.stdout}\n{r.stderr}"
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("case "))
    for col in ("cnnkernels", "eager-nchw", "eager-cl", "vs eager", "vs best peer", "GFLOP/s %pk", "GB/s %pk"):
        assert col in header, header
    assert "compile" not in header.split()
    assert "1 threads" in r.stdout
    assert re.search(r"^peaks \(calibration probe, float32, 1 threads\): \d+ GFLOP/s compute, \d+ GB/s memory$",
                     r.stdout, re.M), r.stdout
    # add_relu: no convs, so no GFLOP/s; its GB/s with a % of the peak. The conv case has both.
    row = next(line for line in lines if line.startswith(CASE + " "))
    assert "error" not in row and re.search(r"  -  +[\d.]+ \d+%$", row), row
    conv_row = next(line for line in lines if line.startswith(CONV_CASE + " "))
    assert "error" not in conv_row and re.search(r"[\d.]+ \d+%  +[\d.]+ \d+%$", conv_row), conv_row
    assert any(line.strip().startswith(CONV_CASE) and "160->960->160" in line for line in lines)  # layer list

    data = json.loads(out.read_text())
    assert data["machine"]["threads"] == 1 and data["machine"]["torch"] and data["machine"]["device"] == "cpu"
    cal = data["calibration"]
    assert cal["peak_gflops"] > 0 and cal["peak_gbps"] > 0 and {p["kind"] for p in cal["probes"]} == {
        "compute", "bandwidth"}
    results = [x for x in data["results"] if x["case"] == CASE]
    assert {x["provider"] for x in results} == {"cnnkernels", "eager-nchw", "eager-cl"}
    for x in data["results"]:
        assert x["error"] is None and x["median_ms"] > 0
        assert x["p20_ms"] <= x["median_ms"] <= x["p80_ms"]
        assert x["min_bytes"] > 0 and x["gbps"] > 0 and x["pct_peak_bw"] > 0
        if x["case"] == CASE:
            assert x["flops"] == 0 and x["gflops"] is None and x["pct_peak_flops"] is None
        else:
            assert x["flops"] > 0 and x["gflops"] > 0 and x["pct_peak_flops"] > 0
    assert data["speedups"][CASE]["cnnkernels"] == "cnnkernels" and data["speedups"][CASE]["vs_best_peer"] > 0
    csv_text = (tmp_path / "bench.csv").read_text()
    assert csv_text.count("\n") == 1 + len(data["results"])
    assert "gflops" in csv_text.splitlines()[0] and "peak_gbps" in csv_text.splitlines()[0]

    text = md.read_text()
    assert text.startswith("# cnnkernels op benchmark: cpu, float32, batch 1")
    assert "| case | layer | cnnkernels | eager-nchw | eager-cl |" in text and "peaks (calibration probe" in text
    assert sum(line.startswith(f"| {c} |") for line in text.splitlines() for c in (CASE, CONV_CASE)) == 2


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available: test_bench_cuda_quick runs the path")
def test_bench_cuda_refused_without_cuda(tmp_path):
    r = run_python([str(BENCH), "--device", "cuda", "--quick", "--filter", f"^{CASE}$"], cwd=tmp_path,
                   env=subprocess_env(), timeout=120)
    assert r.returncode == 2, f"{r.stdout}\n{r.stderr}"
    assert "CUDA is not available" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert "case " not in r.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_bench_cuda_quick(tmp_path):
    out = tmp_path / "bench.json"
    r = run_python([str(BENCH), "--device", "cuda", "--quick", "--no-compile", "--filter", f"^{CASE}$",
                    "--filter", f"^{CONV_CASE}$", "--json", str(out)], cwd=tmp_path, env=subprocess_env(), timeout=300)
    assert r.returncode == 0, f"bench failed:\n{r.stdout}\n{r.stderr}"
    header = next(line for line in r.stdout.splitlines() if line.startswith("case "))
    for col in ("cnnkernels-cuda", "cnnkernels-triton", "eager-nchw", "eager-cl", "TFLOP/s %pk", "GB/s %pk"):
        assert col in header, header
    data = json.loads(out.read_text())
    assert data["machine"]["gpu_name"] and data["calibration"]["peak_gbps"] > 0
    for x in data["results"]:
        if x["provider"] in ("eager-nchw", "eager-cl"):
            assert x["error"] is None and x["median_ms"] > 0, x


def test_cuda_table_layout():
    """The CUDA table without a GPU: two cnnkernels columns, the faster one marked, TFLOP/s."""
    with bench_modules() as (run, cases, providers, calibrate):
        case = next(c for c in cases.CASES if c.name == CONV_CASE)
        ms = {"cnnkernels-cuda": 0.02, "cnnkernels-triton": 0.01, "eager-nchw": 0.04, "eager-cl": 0.03}
        res = [run.Result(case.name, case.op, case.describe(), list(case.input_shape(1)), n, median_ms=t, p20_ms=t,
                          p80_ms=t, flops=case.flops(1), min_bytes=case.min_bytes(1, 2)) for n, t in ms.items()]
        cal = {"device": "cuda", "dtype": "float16", "threads": 1, "peak_gflops": 500e3, "peak_gbps": 2000.0,
               "probes": []}
        run.add_rates(res, cal)
        machine = dict(device="cuda", threads=1, cpu_model="cpu", cores=1, cpu_isa=None, torch_cpu_capability="x",
                       torch="t", cnnkernels="c", cnnkernels_compiled=True, cnnkernels_reason=None, git_sha=None,
                       git_dirty=None, gpu_name="GPU", gpu_capability="9.0", gpu_sms=132, gpu_memory_gib=80,
                       torch_cuda="13.0", triton="3", cnnkernels_cuda_compiled=True, loadavg_1m=0.0)

        class Args:
            batch, dtype = 1, "float16"
        text = run.format_table(res, list(ms), machine, Args, cal)
    header = next(line for line in text.splitlines() if line.startswith("case "))
    assert "TFLOP/s %pk" in header and "cnnkernels-triton" in header
    row = next(line for line in text.splitlines() if line.startswith(CONV_CASE + " "))
    assert "0.010^" in row and "3.00x eager-cl" in row, row
    assert "^ the faster cnnkernels backend" in text and "GPU GPU (sm 9.0" in text


def test_flop_and_byte_counts():
    """conv_flops counts only taps inside the input (checked against a conv of ones); min_bytes is the inputs,
    weights and output of a case once."""
    with bench_modules() as (run, cases, providers, calibrate):
        for hw, k, s, pad in [(7, 3, 1, 1), (14, 3, 2, 1), (112, 3, 2, 1), (56, 1, 1, 0)]:
            taps = F.conv2d(torch.ones(1, 1, hw, hw), torch.ones(1, 1, k, k), stride=s, padding=pad).sum().item()
            assert cases.conv_flops(2, 8, 4, hw, k, s, pad) == 2 * 2 * 4 * 8 * taps
            assert cases.conv_flops(1, 8, 8, hw, k, s, pad, groups=8) == 2 * 8 * taps
        conv = next(c for c in cases.CASES if c.name == "resnet18.layer1.0.conv1")  # 3x3 64->64 @56, no residual
        assert conv.min_bytes(1, 4) == 4 * (2 * 64 * 56 * 56 + 64 * 64 * 9 + 64)
        add = next(c for c in cases.CASES if c.name == CASE)
        assert add.flops(1) == 0 and add.min_bytes(2, 2) == 2 * 3 * 2 * 64 * 56 * 56
        for c in cases.CASES:  # out_shape agrees with what the eager composition returns
            g = torch.Generator().manual_seed(0)
            shape = c.input_shape(1)
            y = c.spec.eager(c, torch.randn(shape), c.spec.activations(c, shape, g), c.spec.weights(c, g))
            assert tuple(y.shape) == c.spec.out_shape(c, 1), c.name
        rs = [run.Result("c", "op", "", [1], "p", median_ms=1.0, flops=10**9, min_bytes=10**6)]
        run.add_rates(rs, None)  # --no-calibrate: rates, no %
        assert rs[0].gflops == pytest.approx(1000) and rs[0].gbps == pytest.approx(1) and rs[0].pct_peak_flops is None
        assert calibrate.format_calibration(None)[0].startswith("peaks: not measured")


def test_bench_reports_a_wrong_provider():
    """A provider whose output is wrong gets an error cell, not a time."""
    with bench_modules() as (run, cases, providers, calibrate):
        class Wrong(providers.Eager):
            def prepare(self, case, x, acts, w):
                fn = super().prepare(case, x, acts, w)
                return lambda: fn() * 1.01

        case = next(c for c in cases.CASES if c.name == CASE)
        with torch.inference_mode():
            res = run.run_case(case, [Wrong("wrong", torch.contiguous_format)], 1, torch.float32, run.QUICK, 0)
    assert res[0].error and "mismatch" in res[0].error and res[0].median_ms is None


def test_every_case_fused_matches_eager():
    """Every case's fused op, called as the cnnkernels provider calls it (channels_last input, op_args), agrees with
    the eager composition's float64 reference; a wrong op_args or weight layout would otherwise surface only in a
    full benchmark run."""
    with bench_modules() as (run, cases, providers, calibrate):
        no_timing = run.Timing(warmup_s=0.0, warmup_calls=0, repeats=0, sample_s=0.0)
        ps = [providers.Cnnkernels(), providers.Eager("eager-nchw", torch.contiguous_format)]
        with torch.inference_mode():
            for c in cases.CASES:
                for r in run.run_case(c, ps, 1, torch.float32, no_timing, 0):
                    assert r.error is None, (c.name, r.provider, r.error)
                    assert r.max_rel_err is not None, (c.name, r.provider)


def test_case_flops_match_the_flop_counter(monkeypatch):
    """With the taps on the zero padding counted too (which conv_flops leaves out), every case's flops equal what
    torch's FlopCounterMode counts for its eager composition and for the fused op (cnnkernels' MAC formulas, e.g.
    mbconv_macs with its two SE convs on the pooled map): the three count the same convs."""
    from torch.utils.flop_counter import FlopCounterMode

    import cnnkernels  # noqa: F401  (registers the fused ops' FLOP formulas)

    with bench_modules() as (run, cases, providers, calibrate):
        monkeypatch.setattr(cases, "_taps", lambda size, k, stride, pad: k * cases.out_size(size, k, stride, pad))
        seen = set()
        for c in cases.CASES:
            g = torch.Generator().manual_seed(0)
            shape = c.input_shape(2)
            x, acts, w = torch.randn(shape), c.spec.activations(c, shape, g), c.spec.weights(c, g)
            counts = []
            for fn in (lambda: c.spec.eager(c, x, acts, w),
                       lambda: c.spec.fused_callable()(**c.spec.op_args(c, x, acts, w))):
                with torch.inference_mode(), FlopCounterMode(display=False) as fc:
                    fn()
                counts.append(fc.get_total_flops())
            assert counts == [c.flops(2)] * 2, (c.name, counts, c.flops(2))
            seen.add(c.op)
        assert seen == set(cases.OPS)
