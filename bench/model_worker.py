"""Times one ONNX model with ONNX Runtime or OpenVINO in a process of its own (their thread pools keep spinning after
a call, which distorts whatever runs next in the same process). Started by bench/models.py; needs numpy only.

    python bench/model_worker.py {onnxruntime|openvino} MODEL.onnx INPUT.npy REF.npy THREADS TIMING_JSON

Prints one JSON line on stdout: {"median_ms", "p20_ms", "p80_ms", "samples_ms", "max_abs_diff", "error"}.
"""

from __future__ import annotations

import json
import sys
import time

from stats import summary


def make_runner(kind: str, path: str, x, threads: int):
    if kind == "onnxruntime":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda: sess.run(None, {name: x})[0]
    if kind == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(path, "CPU", {"INFERENCE_NUM_THREADS": threads,
                                                         "PERFORMANCE_HINT": "LATENCY",
                                                         "INFERENCE_PRECISION_HINT": "f32"})
        req = compiled.create_infer_request()
        return lambda: req.infer([x])[0]
    raise ValueError(f"unknown runtime {kind!r}")


def main(argv) -> int:
    import numpy as np

    kind, path, xpath, refpath, threads, timing = argv
    timing = json.loads(timing)
    out = {"median_ms": None, "p20_ms": None, "p80_ms": None, "samples_ms": [], "max_abs_diff": None, "error": None}
    try:
        x = np.load(xpath)
        ref = np.load(refpath)
        fn = make_runner(kind, path, x, int(threads))
        y = np.asarray(fn())
        if y.shape != ref.shape:
            raise AssertionError(f"mismatch: shape {list(y.shape)}, expected {list(ref.shape)}")
        diff = float(np.abs(y.astype(np.float64) - ref).max())
        out["max_abs_diff"] = diff
        scale = float(np.abs(ref).max())
        if not np.isfinite(y).all() or diff > timing["tolerance"] * max(scale, 1e-12):
            raise AssertionError(f"mismatch: max abs diff {diff:.3g} (max |ref| {scale:.3g})")
        n, t0 = 0, time.perf_counter()
        while n < timing["warmup_calls"] or time.perf_counter() - t0 < timing["warmup_s"]:
            fn()
            n += 1
        samples, t0 = [], time.perf_counter()
        while len(samples) < timing["min_repeats"] or (len(samples) < timing["repeats"]
                                                       and time.perf_counter() - t0 < timing["max_s"]):
            t = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t) * 1e3)
        out.update(samples_ms=samples, **summary(samples))
    except Exception as e:  # reported in the table cell
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        out["error"] = (msg if isinstance(e, AssertionError) else f"{type(e).__name__}: {msg}")[:300]
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
