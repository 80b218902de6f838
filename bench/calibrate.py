"""Calibration probe: the compute and memory rates torch itself reaches on this machine, measured by the benchmark at
its own thread count, so that the ops' achieved GFLOP/s and GB/s can be read as a % of a peak that is really
reachable here (datasheet peaks are not: AMD CPUs, for one, run MKL's sgemm far below the FMA peak).

CPU   compute: a large channels_last conv through oneDNN (3x3 256->256 @56x56 and 1x1 1024->1024 @64x64, batch 1,
      in the benchmark's dtype); bandwidth: a streaming add c = a + b on fp32 arrays far larger than the last-level
      cache (256 MiB each; --quick: 64 MiB, still 6x a 32 MiB L3).
CUDA  compute: an 8192^3 matmul in the benchmark's dtype and in fp32 (TF32 off, as in the benchmark); bandwidth: a
      copy and an add on 1 GiB arrays; timed with CUDA events.

Each probe reports the median over its repeats; the peak is the best probe of its kind (compute: in the benchmark's
dtype). Bytes count each array read or written once (the STREAM convention: write-allocate traffic not counted).

    python bench/calibrate.py [--device cpu|cuda] [--threads N] [--dtype float32] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

from cases import conv_flops

MiB = 1 << 20


def _median_s(fn: Callable[[], object], repeats: int, warmup: int, device: str) -> float:
    """Median seconds per call of `fn`: perf_counter on CPU, CUDA events (after a synchronize) on CUDA."""
    for _ in range(warmup):
        fn()
    times = []
    if device == "cuda":
        torch.cuda.synchronize()
        for _ in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
    else:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _probe(name: str, kind: str, work: float, fn, repeats: int, warmup: int, device: str) -> Dict[str, object]:
    """kind "compute": work in FLOPs, rate in GFLOP/s; kind "bandwidth": work in bytes, rate in GB/s."""
    try:
        s = _median_s(fn, repeats, warmup, device)
    except Exception as e:  # e.g. a dtype the device's conv/matmul does not support: no peak for it
        return {"name": name, "kind": kind, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    return {"name": name, "kind": kind, "median_ms": s * 1e3, "repeats": repeats, "rate": work / s / 1e9,
            "unit": "GFLOP/s" if kind == "compute" else "GB/s"}


def _conv_probe(cin: int, cout: int, hw: int, k: int, dtype, repeats: int, warmup: int) -> Dict[str, object]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, cin, hw, hw, generator=g).to(dtype).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(cout, cin, k, k, generator=g) * 0.05).to(dtype).contiguous(memory_format=torch.channels_last)
    name = f"conv {k}x{k} {cin}->{cout} @{hw}x{hw} NHWC"
    # counted like the cases (cases.conv_flops), so that % of peak compares like with like
    flops = conv_flops(1, cin, cout, hw, k, 1, k // 2)
    return _probe(name, "compute", flops, lambda: F.conv2d(x, w, padding=k // 2), repeats, warmup, "cpu")


def _add_probe(nbytes: int, device: str, repeats: int, warmup: int) -> Dict[str, object]:
    a = torch.ones(nbytes // 4, dtype=torch.float32, device=device)
    b, c = torch.ones_like(a), torch.empty_like(a)
    name = f"streaming add, 3 x {nbytes // MiB} MiB fp32"
    return _probe(name, "bandwidth", 3 * nbytes, lambda: torch.add(a, b, out=c), repeats, warmup, device)


def cpu_probes(dtype, quick: bool) -> List[Dict[str, object]]:
    repeats, warmup = (3, 1) if quick else (10, 2)
    probes = [_conv_probe(256, 256, 56, 3, dtype, repeats, warmup)]
    if not quick:
        probes.append(_conv_probe(1024, 1024, 64, 1, dtype, repeats, warmup))
    probes.append(_add_probe((64 if quick else 256) * MiB, "cpu", repeats, warmup))
    return probes


def cuda_probes(dtype, quick: bool) -> List[Dict[str, object]]:
    repeats, warmup = (5, 2) if quick else (20, 5)
    probes = []
    n = 8192
    for dt in dict.fromkeys([dtype, torch.float32]):  # the benchmark's dtype first, then fp32 for reference
        a = torch.randn(n, n, device="cuda").to(dt)
        b = torch.randn(n, n, device="cuda").to(dt)
        name = f"matmul {n}^3 {str(dt).replace('torch.', '')}"
        probes.append(dict(_probe(name, "compute", 2 * n ** 3, lambda: a @ b, repeats, warmup, "cuda"),
                           dtype=str(dt).replace("torch.", "")))
        del a, b
    nbytes = 1024 * MiB
    src, dst = torch.ones(nbytes // 4, device="cuda"), torch.empty(nbytes // 4, device="cuda")
    probes.append(_probe(f"copy, 2 x {nbytes // MiB} MiB", "bandwidth", 2 * nbytes, lambda: dst.copy_(src), repeats,
                         warmup, "cuda"))
    del src, dst
    probes.append(_add_probe(nbytes, "cuda", repeats, warmup))
    torch.cuda.empty_cache()
    return probes


def calibrate(device: str, dtype, threads: int, quick: bool) -> Dict[str, object]:
    """The probes and the peaks derived from them (peak_gflops in the benchmark's dtype, peak_gbps)."""
    t0 = time.perf_counter()
    with torch.inference_mode():
        probes = cuda_probes(dtype, quick) if device == "cuda" else cpu_probes(dtype, quick)
    dt_name = str(dtype).replace("torch.", "")

    def best(kind: str) -> Optional[float]:
        rates = [p["rate"] for p in probes if p["kind"] == kind and "rate" in p and p.get("dtype", dt_name) == dt_name]
        return max(rates) if rates else None

    return {"device": device, "dtype": dt_name, "threads": threads, "quick": quick, "probes": probes,
            "peak_gflops": best("compute"), "peak_gbps": best("bandwidth"), "elapsed_s": time.perf_counter() - t0}


def format_calibration(cal: Optional[Dict[str, object]]) -> List[str]:
    if cal is None:
        return ["peaks: not measured (--no-calibrate): no % of peak"]
    cuda = cal["device"] == "cuda"
    parts = []
    for p in cal["probes"]:
        if "rate" not in p:
            parts.append(f"{p['name']}: {p['error']}")
        elif p["kind"] == "compute" and cuda:
            parts.append(f"{p['name']} {p['rate'] / 1e3:.1f} TFLOP/s")
        else:
            parts.append(f"{p['name']} {p['rate']:.0f} {p['unit']}")
    flops, gbps = cal["peak_gflops"], cal["peak_gbps"]
    peak_f = "n/a" if flops is None else (f"{flops / 1e3:.1f} TFLOP/s" if cuda else f"{flops:.0f} GFLOP/s")
    peak_b = "n/a" if gbps is None else f"{gbps:.0f} GB/s"
    where = "" if cuda else f", {cal['threads']} threads"
    return [f"peaks (calibration probe, {cal['dtype']}{where}): {peak_f} compute, {peak_b} memory",
            "  " + "; ".join(parts)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda: CUDA is not available on this machine (torch.cuda.is_available() is False)",
              file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    print("\n".join(format_calibration(calibrate(args.device, getattr(torch, args.dtype), torch.get_num_threads(),
                                                 args.quick))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
