"""Op-level benchmark: each cnnkernels op against the PyTorch code it replaces, on shapes from real network layers.
With --models: whole networks (cnnkernels.optimize vs eager, torch.compile, ONNX Runtime, OpenVINO; bench/models.py).

    python bench/run.py                         # every case, all providers, all cores
    python bench/run.py --quick --no-compile    # smoke run (a few seconds)
    python bench/run.py --filter googlenet --threads 1 --json out.json --csv out.csv
    python bench/run.py --models                # mobilenet_v2, resnet18, resnet50, googlenet at batch 1
    python bench/run.py --models all --batch 1,8,32 --json m.json --plot m.png
    python bench/run.py --models --quick --model resnet18 --no-compile   # smoke run, 64x64 input

Each provider's output is checked against a float64 reference before it is timed; a wrong or failing provider is
reported in its cell instead of a time. Providers are timed interleaved within a case (warm-up, then repeated samples
in rotating order); the table gives the median ms per call, the JSON/CSV also p20/p80 and every sample.
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
from cnnkernels.info import collect as collect_info  # noqa: E402

from cases import CASES, Case  # noqa: E402
from providers import PROVIDER_NAMES, Compile, all_providers  # noqa: E402

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
    backend: Optional[str] = None          # cnnkernels only: compiled kernel or reference fallback
    median_ms: Optional[float] = None
    p20_ms: Optional[float] = None
    p80_ms: Optional[float] = None
    calls_per_sample: Optional[int] = None
    samples_ms: List[float] = field(default_factory=list)
    max_rel_err: Optional[float] = None
    compile_s: Optional[float] = None
    error: Optional[str] = None


def percentile(xs: List[float], q: float) -> float:
    xs = sorted(xs)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def check(out, ref: torch.Tensor, dtype) -> float:
    """Relative max error of `out` against the float64 reference; raises AssertionError on a mismatch."""
    if not isinstance(out, torch.Tensor):
        raise AssertionError(f"mismatch: returned {type(out).__name__}, not a tensor")
    if tuple(out.shape) != tuple(ref.shape):
        raise AssertionError(f"mismatch: shape {list(out.shape)}, expected {list(ref.shape)}")
    o = out.detach().to(torch.float64)
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


def _short(e: BaseException) -> str:
    """One line: the exception's first sentence (torch's 'Could not run ...' explanation is a paragraph)."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    msg = re.split(r"(?<=\.) ", msg, maxsplit=1)[0]
    return (msg if isinstance(e, AssertionError) else f"{type(e).__name__}: {msg}")[:300]


def run_case(case: Case, providers, batch: int, dtype, timing: Timing, seed: int) -> List[Result]:
    spec = case.spec
    g = torch.Generator().manual_seed(seed)
    shape = case.input_shape(batch)
    x = torch.randn(shape, generator=g).to(dtype)
    acts = {k: v.to(dtype) for k, v in spec.activations(case, shape, g).items()}
    w = {k: (None if v is None else v.to(dtype)) for k, v in spec.weights(case, g).items()}
    ref = spec.eager(case, x.double(), {k: v.double() for k, v in acts.items()},
                     {k: (None if v is None else v.double()) for k, v in w.items()})

    results, live = {}, []
    for p in providers:
        r = Result(case.name, case.op, case.describe(), list(shape), p.name, backend=p.backend(case))
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
            per_call = time_calls(fn, 1)
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
                results[p.name].samples_ms.append(time_calls(fn, results[p.name].calls_per_sample) * 1e3)
    finally:
        gc.enable()
    for r in results.values():
        if r.samples_ms:
            r.median_ms = percentile(r.samples_ms, 0.5)
            r.p20_ms = percentile(r.samples_ms, 0.2)
            r.p80_ms = percentile(r.samples_ms, 0.8)
    return list(results.values())


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


def machine_info(threads: int) -> Dict[str, object]:
    info = collect_info()
    return {
        "cpu_model": info["cpu"]["model"],
        "cpu_isa": info["cpu"]["isa"],                      # what cnnkernels' CPU kernels dispatch to
        "torch_cpu_capability": info["cpu"]["torch_capability"],
        "cores": info["cpu"]["cores"],
        "usable_cores": info["cpu"]["usable_cores"],
        "threads": threads,
        "python": info["versions"]["python"],
        "torch": info["versions"]["torch"],
        "cnnkernels": info["versions"]["cnnkernels"],
        "cnnkernels_compiled": info["compiled"]["cpu"],
        "cnnkernels_reason": info["compiled"]["reason"],
        **git_sha(),
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def _cell(r: Result, notes: List[str]) -> str:
    if r.error:
        notes.append(f"{r.case} / {r.provider}: {r.error}")
        return f"error [{len(notes)}]"
    spread = (r.p80_ms - r.p20_ms) / 2 / r.median_ms * 100 if r.median_ms else 0.0
    mark = "*" if r.backend == "reference" else ""
    return f"{r.median_ms:.3f}{mark} ±{spread:.0f}%"


def format_table(results: List[Result], names: List[str], machine: Dict, args) -> str:
    by_case: Dict[str, Dict[str, Result]] = {}
    for r in results:
        by_case.setdefault(r.case, {})[r.provider] = r
    notes: List[str] = []
    header = ["case", "layer"] + names + ["vs eager", "vs compile"]
    rows = []
    for case, rs in by_case.items():
        row = [case, next(iter(rs.values())).desc] + [_cell(rs[n], notes) for n in names]
        ck = rs.get("cnnkernels")
        ok = ck is not None and ck.median_ms
        eager = [rs[n].median_ms for n in ("eager-nchw", "eager-cl") if n in rs and rs[n].median_ms]
        row.append(f"{min(eager) / ck.median_ms:.2f}x" if ok and eager else "-")
        comp = rs.get("compile")
        row.append(f"{comp.median_ms / ck.median_ms:.2f}x" if ok and comp and comp.median_ms else "-")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    m = machine
    lines = [
        f"cnnkernels op benchmark: median ms per call (± half the p20-p80 spread), batch {args.batch}, "
        f"{args.dtype}, {m['threads']} threads (torch.set_num_threads)",
        f"CPU {m['cpu_model']}, {m['cores']} cores, cnnkernels kernels ISA {m['cpu_isa'] or 'n/a'} "
        f"(torch {m['torch_cpu_capability']}) | torch {m['torch']} | cnnkernels {m['cnnkernels']} "
        f"({'compiled' if m['cnnkernels_compiled'] else 'reference only: ' + str(m['cnnkernels_reason'])}) "
        f"| git {(m['git_sha'] or 'n/a')[:10]}{' (dirty)' if m['git_dirty'] else ''}",
    ]
    if m["loadavg_1m"] is not None and m["loadavg_1m"] > 0.5:
        lines.append(f"WARNING: load average {m['loadavg_1m']:.1f} when the run started: other processes compete "
                     f"for the cores and the times are unreliable")
    lines += [
        "",
        "  ".join(h.ljust(wd) for h, wd in zip(header, widths)).rstrip(),
    ]
    for row in rows:
        lines.append("  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)).rstrip())
    lines.append("")
    lines.append("vs eager: best of eager-nchw/eager-cl over cnnkernels; vs compile: compile over cnnkernels "
                 "(> 1: cnnkernels is faster)")
    if any(r.backend == "reference" and r.median_ms for r in results):
        lines.append("* cnnkernels ran its pure-PyTorch reference (no compiled CPU kernel for that op)")
    for i, n in enumerate(notes, 1):
        lines.append(f"[{i}] {n}")
    return "\n".join(lines)


def write_csv(path: Path, results: List[Result], machine: Dict, config: Dict) -> None:
    keys = ["cpu_model", "cpu_isa", "cores", "threads", "torch", "cnnkernels", "git_sha"]
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["case", "op", "layer", "provider", "backend", "median_ms", "p20_ms", "p80_ms", "samples",
                     "calls_per_sample", "max_rel_err", "error", "batch", "dtype"] + keys)
        for r in results:
            wr.writerow([r.case, r.op, r.desc, r.provider, r.backend, r.median_ms, r.p20_ms, r.p80_ms,
                         len(r.samples_ms), r.calls_per_sample, r.max_rel_err, r.error, config["batch"],
                         config["dtype"]] + [machine[k] for k in keys])


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: all usable cores)")
    ap.add_argument("--batch", default="1", help="batch size; with --models a comma-separated list, e.g. 1,8,32")
    ap.add_argument("--dtype", choices=list(DTYPES), default="float32")
    ap.add_argument("--filter", action="append", default=[], metavar="REGEX",
                    help="only cases whose name matches (re.search; repeat for OR)")
    ap.add_argument("--providers", default=None,
                    help=f"comma-separated subset of {','.join(PROVIDER_NAMES)} (with --models: of cnnkernels,"
                         f"eager-nchw,eager-cl,compile,onnxruntime,openvino)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile provider (compiling is slow)")
    ap.add_argument("--quick", action="store_true", help="tiny warm-up and repeat counts (CI smoke run)")
    ap.add_argument("--repeats", type=int, default=None, help="timed samples per provider and case")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, metavar="PATH", help="write machine info, config and all results")
    ap.add_argument("--csv", type=Path, metavar="PATH", help="write one row per case and provider")
    ap.add_argument("--strict", action="store_true", help="exit 1 if any provider failed or was wrong")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    mg = ap.add_argument_group("model level (bench/models.py)")
    mg.add_argument("--models", nargs="?", const="default", default=None, metavar="default|all|NAME[,NAME]",
                    help="benchmark whole models instead of ops (no value: mobilenet_v2,resnet18,resnet50,googlenet;"
                         " 'all': every cnnkernels.models model)")
    mg.add_argument("--model", action="append", default=[], metavar="NAME",
                    help="a model to benchmark (repeatable or comma-separated; implies --models)")
    mg.add_argument("--size", type=int, default=None, help="input height = width (default 224; --quick: 64)")
    mg.add_argument("--plot", type=Path, metavar="PATH", help="write a PNG bar chart of the speedups (matplotlib)")
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
        if args.plot:
            ap.error("--plot needs --models")
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
        from models import main_models

        threads = args.threads or usable_cores()
        torch.set_num_threads(threads)
        return main_models(args, threads, machine_info(threads))
    cases = [c for c in CASES if not args.filter or any(re.search(f, c.name) for f in args.filter)]
    if args.list:
        for c in cases:
            print(f"{c.name:<28} {c.op:<18} {c.describe()}")
        return 0
    if not cases:
        print(f"no case matches {args.filter}; cases: {', '.join(c.name for c in CASES)}", file=sys.stderr)
        return 2
    wanted = [n.strip() for n in (args.providers or ",".join(PROVIDER_NAMES)).split(",") if n.strip()]
    unknown = set(wanted) - set(PROVIDER_NAMES)
    if unknown:
        print(f"unknown providers {sorted(unknown)}; choose from {PROVIDER_NAMES}", file=sys.stderr)
        return 2
    if args.no_compile:
        wanted = [n for n in wanted if n != "compile"]
    providers = [p for p in all_providers() if p.name in wanted]

    threads = args.threads or usable_cores()
    torch.set_num_threads(threads)
    timing = QUICK if args.quick else Timing()
    if args.repeats:
        timing.repeats = args.repeats
    dtype = DTYPES[args.dtype]
    machine = machine_info(threads)
    config = {"batch": args.batch, "dtype": args.dtype, "threads": threads, "quick": args.quick,
              "filter": args.filter, "providers": [p.name for p in providers], "timing": asdict(timing),
              "tolerance": TOLERANCE[dtype], "seed": args.seed}

    t0 = time.perf_counter()
    results: List[Result] = []
    with torch.inference_mode():
        for case in cases:
            print(f"  {case.name} ...", file=sys.stderr, flush=True)
            results += run_case(case, providers, args.batch, dtype, timing, args.seed)
    elapsed = time.perf_counter() - t0

    print(format_table(results, [p.name for p in providers], machine, args))
    print(f"({len(cases)} cases in {elapsed:.1f} s)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"machine": machine, "config": config,
                                         "results": [asdict(r) for r in results]}, indent=2))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        write_csv(args.csv, results, machine, config)
    if args.strict and any(r.error for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
