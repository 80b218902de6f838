"""Op-level benchmark: each cnnkernels op against the PyTorch code it replaces, on shapes from real network layers.
With --models: whole networks (cnnkernels.optimize vs eager, torch.compile, ONNX Runtime, OpenVINO; bench/models.py).

    python bench/run.py                         # every case, all providers, all cores
    python bench/run.py --quick --no-compile    # smoke run (a few seconds)
    python bench/run.py --filter googlenet --threads 1 --json out.json --csv out.csv
    python bench/run.py --markdown bench/results/cpu-op-level.md --plot ops.png
    python bench/run.py --device cuda --dtype float16   # cnnkernels-cuda/-triton vs cuDNN and torch.compile
    python bench/run.py --models                # mobilenet_v2, resnet18, resnet50, googlenet, efficientnet_b0,
                                                # mobilenet_v3_large at batch 1
    python bench/run.py --models all --batch 1,8,32 --json m.json --plot m.png
    python bench/run.py --models --quick --model resnet18 --no-compile   # smoke run, 64x64 input

Each provider's output is checked against a float64 reference before it is timed; a wrong or failing provider is
reported in its cell instead of a time. Providers are timed interleaved within a case (warm-up, then repeated samples
in rotating order; on CUDA each sample is timed with CUDA events); the table gives the median ms per call, the
JSON/CSV also p20/p80 and every sample. From each case's FLOPs and minimal bytes (bench/cases.py) come the achieved
GFLOP/s and GB/s, also as a % of the peaks a calibration probe measures first (bench/calibrate.py).
Cases: bench/cases.py; providers: bench/providers.py.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import gc
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cnnkernels  # noqa: E402
from cnnkernels.info import collect as collect_info, dispatch_lines  # noqa: E402

from calibrate import calibrate, format_calibration  # noqa: E402
from cases import CASES, Case  # noqa: E402
from models import main_models  # noqa: E402
from plot import speedup_bars  # noqa: E402
from providers import CUDA_PROVIDER_NAMES, PEERS, PROVIDER_NAMES, Compile, all_providers  # noqa: E402
from stats import summary  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}
# max |out - ref| allowed, relative to max |ref|
TOLERANCE = {torch.float32: 1e-4, torch.float64: 1e-10, torch.bfloat16: 3e-2, torch.float16: 5e-3}


@dataclass
class Timing:
    warmup_s: float = 0.3        # per provider and case, at least `warmup_calls`
    warmup_calls: int = 3
    repeats: int = 20            # samples per provider and case
    sample_s: float = 0.01       # target duration of one sample (calls per sample are calibrated to it)


QUICK = Timing(warmup_s=0.0, warmup_calls=1, repeats=3, sample_s=0.0)


@dataclass
class Result:
    case: str
    op: str
    desc: str
    input_shape: List[int]
    provider: str
    backend: Optional[str] = None          # cnnkernels only: compiled, aten-fp64 or reference (cpu_kernel_source)
    median_ms: Optional[float] = None
    p20_ms: Optional[float] = None
    p80_ms: Optional[float] = None
    calls_per_sample: Optional[int] = None
    samples_ms: List[float] = field(default_factory=list)
    max_rel_err: Optional[float] = None
    compile_s: Optional[float] = None
    error: Optional[str] = None
    flops: Optional[int] = None            # the case's work (cases.py), the same for every provider
    min_bytes: Optional[int] = None
    gflops: Optional[float] = None         # achieved, at the median time; None for an op without convs
    gbps: Optional[float] = None
    pct_peak_flops: Optional[float] = None  # of the calibration probe's peaks; None with --no-calibrate
    pct_peak_bw: Optional[float] = None


def check(out, ref: torch.Tensor, dtype) -> float:
    """Relative max error of `out` against the float64 reference; raises AssertionError on a mismatch."""
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"mismatch: returned {type(out).__name__}, not a tensor")
    if tuple(out.shape) != tuple(ref.shape):
        raise AssertionError(f"mismatch: shape {list(out.shape)}, expected {list(ref.shape)}")
    o = out.detach().to("cpu", torch.float64)
    if not torch.isfinite(o).all():
        raise AssertionError("mismatch: non-finite values")
    err = ((o - ref).abs().max() / ref.abs().max().clamp_min(1e-12)).item()
    if err > TOLERANCE[dtype]:
        raise AssertionError(f"mismatch: max error {err:.3g} of max |ref| (tolerance {TOLERANCE[dtype]:g})")
    return err


def time_calls(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def time_calls_cuda(fn, number: int) -> float:
    """Seconds per call on the GPU's clock: CUDA events around `number` calls (the queue is empty at the start:
    the previous sample ended with a synchronize, so launch overhead the GPU waits for is counted)."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(number):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3 / number


def _short(e: BaseException) -> str:
    """One line: the exception's first sentence (torch's 'Could not run ...' explanation is a paragraph)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = re.split(r"(?<=\.) ", msg, maxsplit=1)[0]
    return (msg if isinstance(e, AssertionError) else f"{type(e).__name__}: {msg}")[:300]


def run_case(case: Case, providers, batch: int, dtype, timing: Timing, seed: int,
             device: str = "cpu") -> List[Result]:
    spec = case.spec
    g = torch.Generator().manual_seed(seed)
    shape = case.input_shape(batch)
    x = torch.randn(shape, generator=g).to(dtype)
    acts = {k: v.to(dtype) for k, v in spec.activations(case, shape, g).items()}
    w = {k: (None if v is None else v.to(dtype)) for k, v in spec.weights(case, g).items()}
    # the reference runs on the CPU in float64, from the same dtype-rounded inputs
    ref = spec.eager(case, x.double(), {k: v.double() for k, v in acts.items()},
                     {k: (None if v is None else v.double()) for k, v in w.items()})
    x, acts = x.to(device), {k: v.to(device) for k, v in acts.items()}
    w = {k: (None if v is None else v.to(device)) for k, v in w.items()}
    timer = time_calls_cuda if device == "cuda" else time_calls
    flops, nbytes = case.flops(batch), case.min_bytes(batch, x.element_size())

    results, live = {}, []
    for p in providers:
        r = Result(case.name, case.op, case.describe(), list(shape), p.name, backend=p.backend(case, dtype), flops=flops,
                   min_bytes=nbytes)
        results[p.name] = r
        try:
            fn = p.prepare(case, x, acts, w)
            if isinstance(p, Compile):
                r.compile_s = p.compile_s.get(case.name)
            r.max_rel_err = check(fn(), ref, dtype)
            # warm-up, then calibrate the calls per sample
            n, t0 = 0, time.perf_counter()
            while n < timing.warmup_calls or time.perf_counter() - t0 < timing.warmup_s:
                fn()
                n += 1
            if device == "cuda":
                torch.cuda.synchronize()  # the warm-up calls were only queued
            per_call = timer(fn, 1)
            r.calls_per_sample = max(1, int(timing.sample_s / max(per_call, 1e-7)))
            live.append((p, fn))
        except Exception as e:  # a provider that fails or is wrong is reported, never timed
            r.error = _short(e)

    gc.collect()
    gc.disable()
    try:
        for rep in range(timing.repeats):
            k = rep % len(live) if live else 0
            for p, fn in live[k:] + live[:k]:  # rotate the order so no provider always follows the same one
                results[p.name].samples_ms.append(timer(fn, results[p.name].calls_per_sample) * 1e3)
    finally:
        gc.enable()
    for r in results.values():
        if r.samples_ms:
            for k, v in summary(r.samples_ms).items():
                setattr(r, k, v)
    return list(results.values())


def add_rates(results: List[Result], cal: Optional[Dict]) -> None:
    """Achieved GFLOP/s and GB/s at the median time, and their % of the calibration probe's peaks."""
    peak_f = cal.get("peak_gflops") if cal else None
    peak_b = cal.get("peak_gbps") if cal else None
    for r in results:
        if not r.median_ms:
            continue
        s = r.median_ms / 1e3
        r.gflops = r.flops / s / 1e9 if r.flops else None
        r.gbps = r.min_bytes / s / 1e9 if r.min_bytes else None
        r.pct_peak_flops = 100 * r.gflops / peak_f if r.gflops and peak_f else None
        r.pct_peak_bw = 100 * r.gbps / peak_b if r.gbps and peak_b else None


def git_sha() -> Dict[str, Optional[object]]:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return {"git_sha": None, "git_dirty": None}
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=HERE,
                               capture_output=True, text=True, timeout=10).stdout.strip() != ""
        return {"git_sha": sha.stdout.strip(), "git_dirty": dirty}
    except (OSError, subprocess.TimeoutExpired):
        return {"git_sha": None, "git_dirty": None}


def machine_info(threads: int, device: str = "cpu") -> Dict[str, object]:
    info = collect_info()
    gpu = {}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu = {"gpu_name": props.name, "gpu_capability": f"{props.major}.{props.minor}",
               "gpu_memory_gib": round(props.total_memory / 2**30, 1), "gpu_sms": props.multi_processor_count,
               "torch_cuda": info["versions"]["torch_cuda"], "triton": info["versions"]["triton"],
               "cnnkernels_cuda_compiled": info["compiled"]["cuda"],
               "cnnkernels_cuda_reason": info["compiled"]["cuda_reason"]}
    return {
        "device": device,
        "cpu_model": info["cpu"]["model"],
        "cpu_isa": info["cpu"]["isa"],                      # what cnnkernels' CPU kernels dispatch to
        "cpu_dispatch": info["cpu"]["dispatch"],            # ... per kernel family, and why
        "torch_cpu_capability": info["cpu"]["torch_capability"],
        "cores": info["cpu"]["cores"],
        "usable_cores": info["cpu"]["usable_cores"],
        "threads": threads,
        "python": info["versions"]["python"],
        "torch": info["versions"]["torch"],
        "cnnkernels": info["versions"]["cnnkernels"],
        "cnnkernels_compiled": info["compiled"]["cpu"],
        "cnnkernels_reason": info["compiled"]["reason"],
        **gpu,
        **git_sha(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _cell(r: Result, notes: List[str], mark: str = "") -> str:
    if r.error:
        notes.append(f"{r.case} / {r.provider}: {r.error}")
        return f"error [{len(notes)}]"
    spread = (r.p80_ms - r.p20_ms) / 2 / r.median_ms * 100 if r.median_ms else 0.0
    mark += {"reference": "*", "aten-fp64": "†"}.get(r.backend, "")
    return f"{r.median_ms:.3f}{mark} ±{spread:.0f}%"


def speedups(rs: Dict[str, Result]) -> Dict[str, Optional[object]]:
    """cnnkernels (on CUDA the faster of cnnkernels-cuda/-triton) against the better eager layout and the fastest
    peer (eager-nchw, eager-cl, compile): ratios > 1 mean cnnkernels is faster."""
    ours = [(r.median_ms, n) for n, r in rs.items() if n.startswith("cnnkernels") and r.median_ms]
    eager = [rs[n].median_ms for n in ("eager-nchw", "eager-cl") if n in rs and rs[n].median_ms]
    peers = [(rs[n].median_ms, n) for n in PEERS if n in rs and rs[n].median_ms]
    ck = min(ours) if ours else None
    best = min(peers) if peers else None
    return {"cnnkernels": ck[1] if ck else None,
            "vs_eager": min(eager) / ck[0] if ck and eager else None,
            "vs_best_peer": best[0] / ck[0] if ck and best else None,
            "best_peer": best[1] if best else None}


def _rate(value: Optional[float], pct: Optional[float], scale: float = 1.0) -> str:
    if value is None:
        return "-"
    v = value / scale
    text = f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.2f}"
    return text + (f" {pct:.0f}%" if pct is not None else "")


def table(results: List[Result], names: List[str], device: str, layer_column: bool):
    """(header, rows, notes) of the results table: one row per case, one column per provider, then the speedups
    and cnnkernels' achieved rates."""
    by_case: Dict[str, Dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.provider] = r
    cuda = device == "cuda"
    two_ours = sum(n.startswith("cnnkernels") for n in names) > 1
    notes: List[str] = []
    header = ["case"] + (["layer"] if layer_column else []) + names + [
        "vs eager", "vs best peer", "TFLOP/s %pk" if cuda else "GFLOP/s %pk", "GB/s %pk"]
    rows = []
    for case, rs in by_case.items():
        sp = speedups(rs)
        row = [case] + ([next(iter(rs.values())).desc] if layer_column else [])
        row += [_cell(rs[n], notes, "^" if two_ours and n == sp["cnnkernels"] else "") for n in names]
        row.append(f"{sp['vs_eager']:.2f}x" if sp["vs_eager"] else "-")
        row.append(f"{sp['vs_best_peer']:.2f}x {sp['best_peer']}" if sp["vs_best_peer"] else "-")
        ck = rs.get(sp["cnnkernels"]) if sp["cnnkernels"] else None
        row.append(_rate(ck.gflops, ck.pct_peak_flops, 1e3 if cuda else 1.0) if ck else "-")
        row.append(_rate(ck.gbps, ck.pct_peak_bw) if ck else "-")
        rows.append(row)
    return header, rows, notes


def legend(results: List[Result], names: List[str], device: str) -> List[str]:
    cuda = device == "cuda"
    lines = ["vs eager: best of eager-nchw/eager-cl over cnnkernels; vs best peer: fastest of eager-nchw, eager-cl, "
             "compile over cnnkernels (> 1: cnnkernels is faster)",
             f"{'TFLOP/s' if cuda else 'GFLOP/s'}, GB/s: cnnkernels' achieved rates (2 x conv multiply-adds without "
             f"padding taps; inputs, weights, output moved once), %pk: of the calibration peaks (cache-resident "
             f"cases can pass 100% of the streaming GB/s)"]
    if sum(n.startswith("cnnkernels") for n in names) > 1:
        lines.append("^ the faster cnnkernels backend, which the speedups and rates are for")
    if any(r.backend == "reference" and r.median_ms for r in results):
        lines.append("* cnnkernels ran its pure-PyTorch reference (no compiled kernel for that op on this device)")
    if any(r.backend == "aten-fp64" and r.median_ms for r in results):
        lines.append("† float64 on CPU: the cnnkernels op hands the call to ATen's float64 operators (the fused CPU "
                     "kernels compute fp32, fp16 and bf16): these cells time ATen, not a cnnkernels kernel")
    return lines


def header_lines(machine: Dict, args, cal: Optional[Dict]) -> List[str]:
    m = machine
    clock = "CUDA events" if m["device"] == "cuda" else f"{m['threads']} threads (torch.set_num_threads)"
    lines = [
        f"cnnkernels op benchmark on {m['device']}: median ms per call (± half the p20-p80 spread), batch "
        f"{args.batch}, {args.dtype}, {clock}",
        f"CPU {m['cpu_model']}, {m['cores']} cores, cnnkernels kernels ISA {m['cpu_isa'] or 'n/a'} "
        f"(torch {m['torch_cpu_capability']}) | torch {m['torch']} | cnnkernels {m['cnnkernels']} "
        f"({'compiled' if m['cnnkernels_compiled'] else 'reference only: ' + str(m['cnnkernels_reason'])}) "
        f"| git {(m['git_sha'] or 'n/a')[:10]}{' (dirty)' if m['git_dirty'] else ''}",
    ]
    lines += [f"  cnnkernels CPU kernels: {line}" for line in dispatch_lines(m.get("cpu_dispatch"))]
    if m["device"] == "cuda":
        lines.append(f"GPU {m['gpu_name']} (sm {m['gpu_capability']}, {m['gpu_sms']} SMs, {m['gpu_memory_gib']} GiB)"
                     f" | CUDA {m['torch_cuda']} | triton {m['triton'] or 'not installed'} | cnnkernels CUDA "
                     f"kernels {'loaded' if m['cnnkernels_cuda_compiled'] else 'not loaded'}"
                     + (" | TF32 off" if args.dtype == "float32" else ""))
    lines += format_calibration(cal)
    if m["loadavg_1m"] is not None and m["loadavg_1m"] > 0.5:
        lines.append(f"WARNING: load average {m['loadavg_1m']:.1f} when the run started: other processes compete "
                     f"for the cores and the times are unreliable")
    return lines


def format_table(results: List[Result], names: List[str], machine: Dict, args, cal: Optional[Dict] = None) -> str:
    header, rows, notes = table(results, names, machine["device"], layer_column=False)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = header_lines(machine, args, cal) + ["", "  ".join(h.ljust(wd) for h, wd in zip(header, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)).rstrip())
    lines.append("")
    lines += legend(results, names, machine["device"])
    for i, n in enumerate(notes, 1):
        lines.append(f"[{i}] {n}")
    # the layer shapes last: the table stays narrow enough for a terminal
    by_case = {r.case: r.desc for r in results}
    width = max(len(c) for c in by_case)
    lines += ["", "layers:"] + [f"  {c:<{width}}  {d}" for c, d in by_case.items()]
    return "\n".join(lines)


def format_markdown(results: List[Result], names: List[str], machine: Dict, config: Dict, args,
                    cal: Optional[Dict]) -> str:
    """A summary to commit and link from the README: how it was run, the machine, the calibration and the table."""
    header, rows, notes = table(results, names, machine["device"], layer_column=True)
    m = machine
    md = [f"# cnnkernels op benchmark: {m['device']}, {args.dtype}, batch {args.batch}", "",
          f"`python bench/run.py {' '.join(config['argv'])}`, {m['date']}.", ""]
    md += ["```"] + header_lines(m, args, cal) + ["```", ""]
    md.append("| " + " | ".join(header) + " |")
    md.append("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        md.append("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |")
    md.append("")
    md += [f"- {line}" for line in legend(results, names, m["device"])]
    md += [f"- [{i}] {n}" for i, n in enumerate(notes, 1)]
    md.append("")
    return "\n".join(md)


def write_plot(path: Path, results: List[Result], names: List[str]) -> Optional[str]:
    """Grouped bars: speedup of cnnkernels over each peer, per case. Returns an error or None."""
    by_case: Dict[str, Dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.provider] = r
    series = {}
    for p in [n for n in names if n in PEERS]:
        vals = []
        for rs in by_case.values():
            ck = speedups(rs)["cnnkernels"]
            t, o = rs[ck].median_ms if ck else None, rs.get(p)
            vals.append(o.median_ms / t if t and o and o.median_ms else 0.0)
        series[p] = vals
    return speedup_bars(path, list(by_case), series, "cnnkernels ops vs peers (> 1: cnnkernels faster; missing bar: n/a)",
                        slot_width=0.3, min_width=7, height=5, rotate=True)


def write_csv(path: Path, results: List[Result], machine: Dict, config: Dict, cal: Optional[Dict] = None) -> None:
    keys = ["device", "cpu_model", "cpu_isa", "cores", "threads", "gpu_name", "torch", "cnnkernels", "git_sha"]
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["case", "op", "layer", "provider", "backend", "median_ms", "p20_ms", "p80_ms", "samples",
                     "calls_per_sample", "max_rel_err", "error", "flops", "min_bytes", "gflops", "gbps",
                     "pct_peak_flops", "pct_peak_bw", "batch", "dtype"] + keys + ["peak_gflops", "peak_gbps"])
        for r in results:
            wr.writerow([r.case, r.op, r.desc, r.provider, r.backend, r.median_ms, r.p20_ms, r.p80_ms,
                         len(r.samples_ms), r.calls_per_sample, r.max_rel_err, r.error, r.flops, r.min_bytes,
                         r.gflops, r.gbps, r.pct_peak_flops, r.pct_peak_bw, config["batch"], config["dtype"]]
                        + [machine.get(k) for k in keys]
                        + [cal and cal["peak_gflops"], cal and cal["peak_gbps"]])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: cnnkernels-cuda, cnnkernels-triton, eager (cuDNN) and compile on the GPU (op level)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    ap.add_argument("--batch", default="1", help="batch size; with --models a comma-separated list, e.g. 1,8,32")
    ap.add_argument("--dtype", choices=list(DTYPES), default="float32")
    ap.add_argument("--filter", action="append", default=[], metavar="REGEX",
                    help="only cases whose name matches (re.search; repeat for OR)")
    ap.add_argument("--providers", default=None,
                    help=f"comma-separated subset of {','.join(PROVIDER_NAMES)} (--device cuda: of "
                         f"{','.join(CUDA_PROVIDER_NAMES)}; with --models: of cnnkernels,eager-nchw,eager-cl,"
                         f"compile,onnxruntime,openvino)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider (compiling is slow)")
    ap.add_argument("--quick", action="store_true", help="tiny warm-up and repeat counts (CI smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="timed samples per provider and case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, metavar="PATH", help="write machine info, config and all results")
    ap.add_argument("--csv", type=Path, metavar="PATH", help="write one row per case and provider")
    ap.add_argument("--markdown", type=Path, metavar="PATH",
                    help="write a markdown summary (command, machine, calibration, table), e.g. for bench/results/")
    ap.add_argument("--no-calibrate", action="store_true",
                    help="skip the calibration probe (bench/calibrate.py): no %% of peak")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any provider failed or was wrong")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    mg = ap.add_argument_group("model level (bench/models.py)")
    mg.add_argument("--models", nargs="?", const="default", default=None, metavar="default|all|NAME[,NAME]",
                    help="benchmark whole models instead of ops (no value: mobilenet_v2,resnet18,resnet50,googlenet,"
                         "efficientnet_b0,mobilenet_v3_large; 'all': every cnnkernels.models model)")
    mg.add_argument("--model", action="append", default=[], metavar="NAME",
                    help="a model to benchmark (repeatable or comma-separated; implies --models)")
    mg.add_argument("--size", type=int, default=None, help="input height = width (default 224; --quick: 64)")
    ap.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG bar chart of the speedups (matplotlib)")
    args = ap.parse_args(argv)
    try:
        args.batches = [int(b) for b in str(args.batch).split(",") if b.strip()]
    except ValueError:
        ap.error(f"--batch: expected integers, got {args.batch!r}")
    if not args.batches or min(args.batches) < 1:
        ap.error("--batch: expected positive integers")
    if args.models is None and not args.model:
        if len(args.batches) != 1:
            ap.error("--batch takes one size for the op-level benchmark (lists need --models)")
    elif args.device != "cpu":
        ap.error("--device cuda is for the op-level benchmark; --models runs on the CPU")
    args.batch = args.batches[0] if len(args.batches) == 1 else args.batch
    return args


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.models is not None or args.model:
        threads = args.threads or usable_cores()
        torch.set_num_threads(threads)
        return main_models(args, threads, machine_info(threads))
    cases = [c for c in CASES if not args.filter or any(re.search(f, c.name) for f in args.filter)]
    if args.list:
        width = max((len(c.name) for c in cases), default=0)
        for c in cases:
            print(f"{c.name:<{width}}  {c.op:<18} {c.describe()}")
        return 0
    if not cases:
        print(f"no case matches {args.filter}; cases: {', '.join(c.name for c in CASES)}", file=sys.stderr)
        return 2
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        why = "torch is a CPU-only build" if torch.version.cuda is None else "torch.cuda.is_available() is False"
        print(f"error: --device cuda: CUDA is not available on this machine ({why}); run on a machine with an "
              f"NVIDIA GPU, or leave out --device for the CPU benchmark", file=sys.stderr)
        return 2
    if device == "cuda" and args.dtype == "float64":
        print("error: --device cuda: choose --dtype float32, float16 or bfloat16", file=sys.stderr)
        return 2
    known = CUDA_PROVIDER_NAMES if device == "cuda" else PROVIDER_NAMES
    wanted = [n.strip() for n in (args.providers or ",".join(known)).split(",") if n.strip()]
    unknown = set(wanted) - set(known)
    if unknown:
        print(f"unknown providers {sorted(unknown)} for --device {device}; choose from {known}", file=sys.stderr)
        return 2
    if args.no_compile:
        wanted = [n for n in wanted if n != "compile"]
    providers = [p for p in all_providers(device) if p.name in wanted]

    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    if device == "cuda":
        # fp32 means fp32: cuDNN would otherwise round convs to TF32 (and cnnkernels' Triton dots follow this flag)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    timing = QUICK if args.quick else Timing()
    if args.repeats:
        timing.repeats = args.repeats
    dtype = DTYPES[args.dtype]
    machine = machine_info(threads, device)
    config = {"device": device, "batch": args.batch, "dtype": args.dtype, "threads": threads, "quick": args.quick,
              "filter": args.filter, "providers": [p.name for p in providers], "timing": asdict(timing),
              "tolerance": TOLERANCE[dtype], "seed": args.seed, "argv": sys.argv[1:] if argv is None else list(argv)}

    cal = None
    if not args.no_calibrate:
        print("  calibrating ...", file=sys.stderr, flush=True)
        cal = calibrate(device, dtype, threads, args.quick)
    t0 = time.perf_counter()
    results: List[Result] = []
    with torch.inference_mode():
        for case in cases:
            print(f"  {case.name} ...", file=sys.stderr, flush=True)
            results += run_case(case, providers, args.batch, dtype, timing, args.seed, device)
    elapsed = time.perf_counter() - t0
    add_rates(results, cal)

    names = [p.name for p in providers]
    print(format_table(results, names, machine, args, cal))
    print(f"({len(cases)} cases in {elapsed:.1f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        by_case: Dict[str, Dict[str, Result]] = {}
        for r in results:
            by_case.setdefault(r.case, {})[r.provider] = r
        args.json.write_text(json.dumps({"machine": machine, "config": config, "calibration": cal,
                                         "speedups": {c: speedups(rs) for c, rs in by_case.items()},
                                         "results": [asdict(r) for r in results]}, indent=2))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        write_csv(args.csv, results, machine, config, cal)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(format_markdown(results, names, machine, config, args, cal))
        print(f"markdown summary written to {args.markdown}")
    if args.plot:
        err = write_plot(args.plot, results, names)
        print(err or f"plot written to {args.plot}", file=sys.stderr if err else sys.stdout)
    if args.strict and any(r.error for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
