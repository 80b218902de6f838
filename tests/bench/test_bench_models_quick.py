"""bench/run.py --models runs end to end on one small model: a table on stdout, every provider checked against the
eager output and timed (ONNX Runtime / OpenVINO only when installed: otherwise their cells say "not installed")."""

from __future__ import annotations

import importlib.util
import json

import pytest

from support.buildutil import REPO, run_python, subprocess_env

BENCH = REPO / "bench" / "run.py"

pytest.importorskip("torchvision")


@pytest.mark.skipif(not BENCH.exists(), reason="no bench/ next to the tests")
def test_bench_models_quick(tmp_path):
    out = tmp_path / "models.json"
    # --threads 1: on a busy shared machine two OpenMP threads can wait on each other for a long time
    r = run_python([str(BENCH), "--models", "--quick", "--model", "resnet18", "--no-compile", "--threads", "1",
                    "--strict", "--json", str(out), "--csv", str(tmp_path / "models.csv"),
                    "--markdown", str(tmp_path / "models.md")],
                   cwd=tmp_path, env=subprocess_env(), timeout=120)
    assert r.returncode == 0, f"bench failed:\n{r.stdout}\n{r.stderr}"
    lines = r.stdout.splitlines()
    header = next(line for line in lines if line.startswith("model "))
    for col in ("cnnkernels ms", "eager-nchw ms", "eager-cl ms", "onnxruntime ms", "openvino ms", "vs eager",
                "vs best peer"):
        assert col in header, header
    assert "compile ms" not in header
    row = next(line for line in lines if line.startswith("resnet18 "))
    assert "error" not in row, r.stdout
    assert "1 threads" in r.stdout and "input 64x64" in r.stdout
    md = (tmp_path / "models.md").read_text()
    assert "--models" in md and header in md and row in md

    data = json.loads(out.read_text())
    assert data["machine"]["threads"] == 1 and data["config"]["models"] == ["resnet18"]
    res = {x["provider"]: x for x in data["results"]}
    assert set(res) == {"cnnkernels", "eager-nchw", "eager-cl", "onnxruntime", "openvino"}
    for name, x in res.items():
        assert x["model"] == "resnet18" and x["batch"] == 1 and x["input_shape"] == [1, 3, 64, 64]
        if name in ("onnxruntime", "openvino") and importlib.util.find_spec(name) is None:
            assert x["error"] == "not installed" and x["median_ms"] is None
            continue
        assert x["error"] is None and x["median_ms"] > 0 and x["max_abs_diff"] is not None
        assert x["p20_ms"] <= x["median_ms"] <= x["p80_ms"]
    assert data["speedups"]["resnet18 b1"]["vs_eager"] > 0
    assert (tmp_path / "models.csv").read_text().count("\n") == 1 + len(res)


def _bench_models():
    """bench/models.py, imported without leaving bench/ on sys.path or the module in sys.modules."""
    import sys

    sys.path.insert(0, str(REPO / "bench"))
    try:
        import models
    finally:
        while str(REPO / "bench") in sys.path:
            sys.path.remove(str(REPO / "bench"))
        sys.modules.pop("models", None)
    return models


def test_model_check_reports_a_mismatch():
    """A model output that differs from the eager one is an error, not a time."""
    import torch

    models = _bench_models()
    ref = torch.randn(2, 10)
    assert models.check(ref + 1e-7, ref) < 1e-6
    with pytest.raises(AssertionError, match="mismatch: max abs diff"):
        models.check(ref * 1.01, ref)
    with pytest.raises(AssertionError, match="shape"):
        models.check(ref[:1], ref)


@pytest.mark.parametrize("name", ["efficientnet_b0", "mobilenet_v3_large"])
def test_mbconv_models_run_fused(name):
    """The bench's cnnkernels provider runs every EfficientNet / MobileNet v3 block as one fused mbconv call (not a
    fallback to unfused modules, which would still match the eager output) and matches torchvision's output."""
    import torch

    from support.helpers import CountOps

    models = _bench_models()
    assert name in models.DEFAULT_MODELS
    ref, ck, _ = models.build_models(name, 0)
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        fn = models.prepare_torch("cnnkernels", ref, ck, x)
        models.check(fn(), ref(x))
        with CountOps() as counter:
            fn()
    blocks = sum(type(m).__name__ in ("MBConv", "InvertedResidual") for m in ref.modules())
    assert blocks and counter.calls["cnnkernels.mbconv"] == blocks, counter.calls


def test_timm_model_runs_fused():
    """--models timm:<name>: the cnnkernels column is optimize() of the timm model, fused and matching timm's output."""
    pytest.importorskip("timm")
    import torch

    models = _bench_models()
    ref, ck, note = models.build_models("timm:mobilenetv3_large_100", 0)
    assert "timm" in note and ck is not ref
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        fn = models.prepare_torch("cnnkernels", ref, ck, x)
        models.check(fn(), ref(x))
        with torch.profiler.profile() as prof:
            fn()
    calls = {e.key: e.count for e in prof.key_averages()}
    assert calls.get("cnnkernels::mbconv", 0) == 15, calls
