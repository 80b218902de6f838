"""Model-level benchmark (`python bench/run.py --models`): whole networks from cnnkernels.models against the ways a
user would otherwise deploy the same torchvision network on CPU, fp32.

Providers
  cnnkernels    cnnkernels.optimize(model, freeze=True) of the cnnkernels model loaded from the torchvision model's
                state_dict (BN folded, fused blocks, channels_last; freeze=True trusts the weights' version counters,
                as compile's freezing trusts the weights), channels_last input. Called under
                torch.inference_mode() like every torch provider, as a user would: optimize() copies outside it, so
                the weights keep the version counters the freeze needs (the provider fails rather than time an
                unfrozen model)
  eager-nchw    the torchvision model, eval(), under torch.inference_mode(), NCHW input
  eager-cl      the same with model and input in channels_last
  compile       torch.compile of the torchvision model with torch._inductor.config.freezing = True, channels_last,
                timed after compilation
  onnxruntime   ONNX Runtime CPU EP on torch.onnx.export(opset_version=17) of the torchvision model,
                intra_op_num_threads=N, inter_op_num_threads=1, in a subprocess of its own
  openvino      OpenVINO CPU on the same ONNX file, INFERENCE_NUM_THREADS=N, PERFORMANCE_HINT=LATENCY,
                INFERENCE_PRECISION_HINT=f32, in a subprocess of its own

BatchNorm running stats and affine parameters are randomized (fresh BN layers are identities and hide folding bugs).
Every provider's output is checked against the eager fp32 NCHW output before it is timed. The torch providers are
timed interleaved (rotating order) in this process, each sample after an untimed call of the same provider; ONNX
Runtime and OpenVINO each run afterwards in a process of their own, after a pause, so that no runtime's spinning
thread pool steals the cores of another.
Models torchvision lacks (mobilenet_v1, lenet5, unet) use the cnnkernels model through its plain torch.nn modules
(cnnkernels.nn.fusion(False)) as "torchvision" model.
`timm:<name>` (e.g. timm:efficientnet_b0) benchmarks a timm model: every peer runs it as timm builds it, and the
cnnkernels column is cnnkernels.optimize() of that same model (timm's blocks converted, see cnnkernels/_timm.py).
"""

from __future__ import annotations

import copy
import csv
import gc
import importlib.util
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from torch import nn

import cnnkernels
import cnnkernels.models as cmodels
from cnnkernels.info import dispatch_lines
from cnnkernels.testing import randomize_bn
from plot import speedup_bars
from stats import summary

HERE = Path(__file__).resolve().parent
CL = torch.channels_last

DEFAULT_MODELS = ["mobilenet_v2", "resnet18", "resnet50", "googlenet", "efficientnet_b0", "mobilenet_v3_large",
                  "unet"]
TORCH_PROVIDERS = ["cnnkernels", "eager-nchw", "eager-cl", "compile"]
EXTERNAL_PROVIDERS = ["onnxruntime", "openvino"]
MODEL_PROVIDERS = TORCH_PROVIDERS + EXTERNAL_PROVIDERS
PEERS = ["eager-nchw", "eager-cl", "compile", "onnxruntime", "openvino"]
# max |out - ref| allowed, relative to max |ref| (whole networks in fp32: summation order differs per runtime)
TOLERANCE = 1e-3
# input (C, H, W) of models that do not take 3x224x224
INPUT_CHW = {"lenet5": (1, 32, 32), "unet": (3, 256, 256)}


@dataclass
class ModelTiming:
    warmup_s: float = 1.0       # per provider, at least warmup_calls
    warmup_calls: int = 3
    repeats: int = 30           # at most this many one-call samples per provider ...
    min_repeats: int = 5        # ... at least this many ...
    max_s: float = 15.0         # ... and stop adding samples after this long
    pause_s: float = 1.0        # idle time before each external runtime's process (spinning pools wind down)
    settle_calls: int = 1       # untimed calls before each torch sample, so it runs with its own model's data warm


MODEL_QUICK = ModelTiming(warmup_s=0.0, warmup_calls=1, repeats=3, min_repeats=3, max_s=0.0, pause_s=0.2,
                          settle_calls=0)


@dataclass
class ModelResult:
    model: str
    batch: int
    input_shape: List[int]
    provider: str
    median_ms: Optional[float] = None      # per forward pass of the whole batch
    p20_ms: Optional[float] = None
    p80_ms: Optional[float] = None
    images_per_s: Optional[float] = None
    samples_ms: List[float] = field(default_factory=list)
    max_abs_diff: Optional[float] = None   # against the eager fp32 NCHW output
    setup_s: Optional[float] = None        # optimize / compile / export + session creation
    error: Optional[str] = None


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


class Progress:
    """A one-line progress bar on stderr (redrawn in place on a terminal, one line per step otherwise)."""

    def __init__(self, total: int, width: int = 30):
        self.total, self.done, self.width, self.t0 = max(total, 1), 0, width, time.perf_counter()
        self.tty = sys.stderr.isatty()

    def show(self, what: str) -> None:
        filled = int(self.width * self.done / self.total)
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done}/{self.total} {time.perf_counter() - self.t0:5.0f}s  {what}"
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
        else:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def step(self, what: str = "") -> None:
        self.done += 1
        self.show(what)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


TIMM_PREFIX = "timm:"  # --models timm:<name>: a timm model (pretrained=False), optimize()d for the cnnkernels column


def build_models(name: str, seed: int):
    """(reference model, cnnkernels model loaded from its state_dict, note); both eval, BN randomized."""
    torch.manual_seed(seed)
    if name.startswith(TIMM_PREFIX):
        import timm

        ref = randomize_bn(timm.create_model(name[len(TIMM_PREFIX):], pretrained=False), seed).eval()
        # optimize() converts timm's own blocks (cnnkernels/_timm.py): the cnnkernels column is the timm model itself,
        # optimize()d, and every peer runs the unconverted timm model.
        return ref, copy.deepcopy(ref), f"{name}: the cnnkernels column is optimize() of the timm model"
    import torchvision

    tv_fn = getattr(torchvision.models, name, None)
    note = None
    if tv_fn is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # googlenet's init_weights FutureWarning
            ref = tv_fn(weights=None)
    else:
        ref = cmodels.get_model(name)
        note = (f"{name}: torchvision has no such model; eager/compile/ONNX run the cnnkernels model through its plain "
                f"torch.nn modules (cnnkernels.nn.fusion(False))")
    ref = randomize_bn(ref, seed).eval()
    with torch.device("meta"):
        ck = cmodels.get_model(name)
    ck = ck.to_empty(device="cpu")
    ck.load_state_dict(ref.state_dict())
    if tv_fn is None:
        ref = Unfused(ref)
    return ref, ck.eval(), note


class Unfused(nn.Module):
    """A cnnkernels model run through its plain torch.nn submodules: in eval mode its modules would otherwise call the
    fused ops, and the peers' baseline of a model torchvision lacks must not be cnnkernels itself."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x):
        with cnnkernels.nn.fusion(False):
            return self.model(x)


def _main_output(y):
    if isinstance(y, torch.Tensor):
        return y
    if isinstance(y, (tuple, list)) and y and isinstance(y[0], torch.Tensor):
        return y[0]  # e.g. GoogLeNetOutputs: the logits
    raise TypeError(f"model returned {type(y).__name__}")


def check(out, ref: torch.Tensor) -> float:
    out = _main_output(out)
    if tuple(out.shape) != tuple(ref.shape):
        raise AssertionError(f"mismatch: shape {list(out.shape)}, expected {list(ref.shape)}")
    o = out.detach().float()
    if not torch.isfinite(o).all():
        raise AssertionError("mismatch: non-finite values")
    diff = (o - ref).abs().max().item()
    scale = ref.abs().max().item()
    if diff > TOLERANCE * max(scale, 1e-12):
        raise AssertionError(f"mismatch: max abs diff {diff:.3g} (max |ref| {scale:.3g})")
    return diff


def _short(e: BaseException) -> str:
    import re

    msg = re.sub(r"\x1b\[[0-9;]*m", "", str(e)).strip()
    msg = msg.splitlines()[0] if msg else ""
    msg = re.split(r"(?<=\.) ", msg, maxsplit=1)[0]
    return (msg if isinstance(e, AssertionError) else f"{type(e).__name__}: {msg}")[:300]


def _stats(r: ModelResult) -> None:
    if r.samples_ms:
        for k, v in summary(r.samples_ms).items():
            setattr(r, k, v)
        r.images_per_s = r.batch / r.median_ms * 1e3


def prepare_torch(provider: str, ref: nn.Module, ck: nn.Module, x: torch.Tensor):
    if provider == "cnnkernels":
        model = cnnkernels.optimize(ck, freeze=True)  # channels_last by default; frozen like compile's weights
        # Inference tensors have no version counters: the freeze would not apply and every call would refold and
        # re-read every weight, which is not what this column claims to time.
        if any(t.is_inference() for t in itertools.chain(model.parameters(), model.buffers())):
            raise AssertionError("not frozen: optimize(freeze=True) returned inference tensors")
        xc = x.contiguous(memory_format=CL)
        return lambda: model(xc)
    if provider == "eager-nchw":
        return lambda: ref(x)
    if provider == "eager-cl":
        m = copy.deepcopy(ref).to(memory_format=CL)
        xc = x.contiguous(memory_format=CL)
        return lambda: m(xc)
    if provider == "compile":
        import torch._dynamo
        import torch._inductor.config

        torch._inductor.config.freezing = True
        torch._dynamo.reset()
        m = copy.deepcopy(ref).to(memory_format=CL)
        compiled = torch.compile(m)
        xc = x.contiguous(memory_format=CL)
        compiled(xc)  # compiles
        return lambda: compiled(xc)
    raise ValueError(provider)


def time_torch(live, results: Dict[str, ModelResult], timing: ModelTiming, progress: Progress, label: str) -> None:
    """Warm-up each, then one-call samples in rotating order until repeats (or max_s with at least min_repeats).
    Each sample follows `settle_calls` untimed calls of the same provider: the provider before it has evicted this
    model's weights from the caches, while ONNX Runtime and OpenVINO are timed in back-to-back loops of their own."""
    for name, fn in live:
        n, t0 = 0, time.perf_counter()
        while n < timing.warmup_calls or time.perf_counter() - t0 < timing.warmup_s:
            fn()
            n += 1
    gc.collect()
    gc.disable()
    try:
        t0, rep = time.perf_counter(), 0
        while live and (rep < timing.min_repeats or (rep < timing.repeats
                                                     and time.perf_counter() - t0 < timing.max_s * len(live))):
            k = rep % len(live)
            for name, fn in live[k:] + live[:k]:
                for _ in range(timing.settle_calls):
                    fn()
                t = time.perf_counter()
                fn()
                results[name].samples_ms.append((time.perf_counter() - t) * 1e3)
            rep += 1
            if rep % 5 == 0:
                progress.show(f"{label}: torch providers, {rep} samples")
    finally:
        gc.enable()


def export_onnx(ref: nn.Module, x: torch.Tensor, path: Path) -> str:
    """Classic TorchScript exporter at opset 17; the dynamo exporter if that fails. Returns which one worked."""
    import contextlib
    import io
    import logging

    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(ref, (x,), str(path), opset_version=17, dynamo=False,
                              input_names=["input"], output_names=["output"])
        return "torchscript"
    except Exception:
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            torch.onnx.export(ref, (x,), str(path), opset_version=17, dynamo=True)
        return "dynamo"


def run_external(kind: str, onnx_path: Path, xpath: Path, refpath: Path, threads: int, timing: ModelTiming,
                 r: ModelResult) -> None:
    spec = dict(asdict(timing), tolerance=TOLERANCE)
    time.sleep(timing.pause_s)
    t0 = time.perf_counter()
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    try:
        p = subprocess.run([sys.executable, str(HERE / "model_worker.py"), kind, str(onnx_path), str(xpath),
                            str(refpath), str(threads), json.dumps(spec)],
                           capture_output=True, text=True, timeout=1800, env=env)
    except subprocess.TimeoutExpired:
        r.error = "worker timed out"
        return
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if p.returncode != 0 or not lines:
        tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
        r.error = f"worker exit {p.returncode}: {tail}"[:300]
        return
    out = json.loads(lines[-1])
    r.samples_ms, r.max_abs_diff, r.error = out["samples_ms"], out["max_abs_diff"], out["error"]
    r.setup_s = time.perf_counter() - t0 - sum(r.samples_ms) / 1e3
    _stats(r)


def run_model(name: str, batch: int, hw: int, providers: List[str], threads: int, timing: ModelTiming, seed: int,
              workdir: Path, progress: Progress, notes: List[str]) -> List[ModelResult]:
    label = f"{name} b{batch}"
    c, h, w = INPUT_CHW.get(name, (3, hw, hw))
    shape = [batch, c, h, w]
    results = {p: ModelResult(name, batch, shape, p) for p in providers}
    try:
        ref_model, ck_model, note = build_models(name, seed)
    except Exception as e:
        for r in results.values():
            r.error = f"build: {_short(e)}"
        progress.step(f"{label}: build failed")
        return list(results.values())
    if note and note not in notes:
        notes.append(note)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        ref_out = _main_output(ref_model(x)).float().clone()

    live = []
    with torch.inference_mode():
        for p in [p for p in providers if p in TORCH_PROVIDERS]:
            progress.show(f"{label}: preparing {p}")
            r = results[p]
            try:
                t0 = time.perf_counter()
                fn = prepare_torch(p, ref_model, ck_model, x)
                r.setup_s = time.perf_counter() - t0
                r.max_abs_diff = check(fn(), ref_out)
                live.append((p, fn))
            except Exception as e:  # a failing or wrong provider is reported, never timed
                r.error = _short(e)
        time_torch(live, results, timing, progress, label)
    for p, _ in live:
        _stats(results[p])
    del live
    progress.step(f"{label}: torch providers done")

    ext = [p for p in providers if p in EXTERNAL_PROVIDERS]
    missing = [p for p in ext if not available(p)]
    for p in missing:
        results[p].error = "not installed"
    ext = [p for p in ext if p not in missing]
    if ext:
        import numpy as np

        onnx_path, xpath, refpath = (workdir / f"{name}_b{batch}.onnx", workdir / f"{name}_b{batch}_x.npy",
                                     workdir / f"{name}_b{batch}_ref.npy")
        np.save(xpath, x.numpy())
        np.save(refpath, ref_out.double().numpy())
        progress.show(f"{label}: exporting ONNX")
        try:
            t0 = time.perf_counter()
            exporter = export_onnx(ref_model, x, onnx_path)
            export_s = time.perf_counter() - t0
        except Exception as e:
            exporter = None
            for p in ext:
                results[p].error = f"ONNX export: {_short(e)}"
        if exporter:
            for p in ext:
                progress.show(f"{label}: {p} (own process)")
                run_external(p, onnx_path, xpath, refpath, threads, timing, results[p])
                if results[p].setup_s is not None:
                    results[p].setup_s += export_s
            if exporter != "torchscript":
                n = f"{label}: ONNX exported with the dynamo exporter (the TorchScript one failed)"
                notes.append(n)
        for f in (onnx_path, xpath, refpath, Path(str(onnx_path) + ".data")):
            if f.exists():
                f.unlink()
    progress.step(f"{label}: done")
    return list(results.values())


# ---------------------------------------------------------------------------------------------------- output


def _cell(r: ModelResult, notes: List[str]) -> str:
    if r.error == "not installed":
        return "not installed"
    if r.error:
        notes.append(f"{r.model} b{r.batch} / {r.provider}: {r.error}")
        return f"error [{len(notes)}]"
    if r.median_ms is None:
        return "-"
    spread = (r.p80_ms - r.p20_ms) / 2 / r.median_ms * 100
    return f"{r.median_ms:.2f} ±{spread:.0f}%"


def speedups(rs: Dict[str, ModelResult]) -> Dict[str, Optional[float]]:
    ck = rs.get("cnnkernels")
    t = ck.median_ms if ck and ck.median_ms else None
    eager = [rs[n].median_ms for n in ("eager-nchw", "eager-cl") if n in rs and rs[n].median_ms]
    peers = [(rs[n].median_ms, n) for n in PEERS if n in rs and rs[n].median_ms]
    best = min(peers) if peers else None
    return {"vs_eager": (min(eager) / t) if t and eager else None,
            "vs_best_peer": (best[0] / t) if t and best else None,
            "best_peer": best[1] if best else None}


def group(results: List[ModelResult]) -> Dict[tuple, Dict[str, ModelResult]]:
    by: Dict[tuple, Dict[str, ModelResult]] = {}
    for r in results:
        by.setdefault((r.model, r.batch), {})[r.provider] = r
    return by


def format_table(results: List[ModelResult], providers: List[str], machine: Dict, hw: int, notes_in: List[str]) -> str:
    notes: List[str] = []
    header = ["model", "batch"] + [f"{p} ms" for p in providers] + ["cnnkernels img/s", "vs eager", "vs best peer"]
    rows = []
    for (model, batch), rs in group(results).items():
        row = [model, str(batch)] + [_cell(rs[p], notes) for p in providers]
        ck = rs.get("cnnkernels")
        row.append(f"{ck.images_per_s:.1f}" if ck and ck.images_per_s else "-")
        s = speedups(rs)
        row.append(f"{s['vs_eager']:.2f}x" if s["vs_eager"] else "-")
        row.append(f"{s['vs_best_peer']:.2f}x ({s['best_peer']})" if s["vs_best_peer"] else "-")
        rows.append(row)
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    m = machine
    lines = [
        f"cnnkernels model benchmark: median ms per forward pass of the batch (± half the p20-p80 spread), fp32, "
        f"input {hw}x{hw}, {m['threads']} threads for every provider",
        f"CPU {m['cpu_model']}, {m['cores']} cores, cnnkernels kernels ISA {m['cpu_isa'] or 'n/a'} "
        f"(torch {m['torch_cpu_capability']}) | torch {m['torch']} | cnnkernels {m['cnnkernels']} "
        f"({'compiled' if m['cnnkernels_compiled'] else 'reference only: ' + str(m['cnnkernels_reason'])}) "
        f"| git {(m['git_sha'] or 'n/a')[:10]}{' (dirty)' if m['git_dirty'] else ''}",
    ]
    lines += [f"  cnnkernels CPU kernels: {line}" for line in dispatch_lines(m.get("cpu_dispatch"))]
    versions = [f"{k} {v}" for k, v in m.get("runtimes", {}).items()]
    if versions:
        lines.append("runtimes: " + ", ".join(versions))
    if m["loadavg_1m"] is not None and m["loadavg_1m"] > 0.5:
        lines.append(f"WARNING: load average {m['loadavg_1m']:.1f} when the run started: other processes compete "
                     f"for the cores and the times are unreliable")
    lines += ["", "  ".join(h.ljust(wd) for h, wd in zip(header, widths)).rstrip()]
    for row in rows:
        lines.append("  ".join(str(c).ljust(wd) for c, wd in zip(row, widths)).rstrip())
    lines += ["", "vs eager: best of eager-nchw/eager-cl over cnnkernels; vs best peer: fastest of eager, compile, "
                  "onnxruntime, openvino over cnnkernels (> 1: cnnkernels is faster)"]
    for n in notes_in:
        lines.append(f"note: {n}")
    for i, n in enumerate(notes, 1):
        lines.append(f"[{i}] {n}")
    return "\n".join(lines)


def write_csv(path: Path, results: List[ModelResult], machine: Dict) -> None:
    keys = ["cpu_model", "cpu_isa", "cores", "threads", "torch", "cnnkernels", "git_sha", "loadavg_1m"]
    with open(path, "w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["model", "batch", "input_shape", "provider", "median_ms", "p20_ms", "p80_ms", "images_per_s",
                     "samples", "max_abs_diff", "setup_s", "error"] + keys)
        for r in results:
            wr.writerow([r.model, r.batch, "x".join(map(str, r.input_shape)), r.provider, r.median_ms, r.p20_ms,
                         r.p80_ms, r.images_per_s, len(r.samples_ms), r.max_abs_diff, r.setup_s, r.error]
                        + [machine.get(k) for k in keys])


def write_plot(path: Path, results: List[ModelResult], providers: List[str]) -> Optional[str]:
    """Grouped bars: speedup of cnnkernels over each other provider, per model x batch. Returns an error or None."""
    groups = list(group(results).items())
    series = {}
    for p in [p for p in providers if p != "cnnkernels"]:
        vals = []
        for _, rs in groups:
            ck, o = rs.get("cnnkernels"), rs.get(p)
            vals.append(o.median_ms / ck.median_ms if ck and o and ck.median_ms and o.median_ms else 0.0)
        series[p] = vals
    return speedup_bars(path, [f"{m}\nb{b}" for (m, b), _ in groups], series,
                        "cnnkernels.optimize vs peers, fp32 CPU (> 1: cnnkernels faster; missing bar: n/a)",
                        slot_width=1.4 / 3, min_width=6, height=4.5)


# ---------------------------------------------------------------------------------------------------- main


def model_names(args) -> List[str]:
    names: List[str] = []
    if args.models and not (args.model and args.models == "default"):  # bare --models with --model NAME: just NAME
        for part in args.models.split(","):
            part = part.strip()
            if part == "default":
                names += DEFAULT_MODELS
            elif part == "all":
                names += cmodels.list_models()
            elif part:
                names.append(part)
    for part in args.model:
        names += [n.strip() for n in part.split(",") if n.strip()]
    if not names:
        names = ["resnet18"] if args.quick else list(DEFAULT_MODELS)
    if args.quick and not args.model and args.models in (None, "default"):
        names = names[:1]  # --quick: one model unless named
    seen = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


def main_models(args, threads: int, machine: Dict) -> int:
    names = model_names(args)
    unknown = [n for n in names if n not in cmodels.list_models() and not n.startswith(TIMM_PREFIX)]
    if unknown:
        print(f"unknown models {unknown}; available: {', '.join(cmodels.list_models())}, or timm:<name> for a timm "
              f"model", file=sys.stderr)
        return 2
    if any(n.startswith(TIMM_PREFIX) for n in names) and not available("timm"):
        print("timm:<name> models need timm (pip install timm)", file=sys.stderr)
        return 2
    wanted = [n.strip() for n in (args.providers or ",".join(MODEL_PROVIDERS)).split(",") if n.strip()]
    bad = set(wanted) - set(MODEL_PROVIDERS)
    if bad:
        print(f"unknown providers {sorted(bad)}; choose from {MODEL_PROVIDERS}", file=sys.stderr)
        return 2
    if args.no_compile:
        wanted = [p for p in wanted if p != "compile"]
    providers = [p for p in MODEL_PROVIDERS if p in wanted]
    batches = args.batches or [1]
    hw = args.size or (64 if args.quick else 224)
    timing = copy.copy(MODEL_QUICK if args.quick else ModelTiming())
    if args.repeats:
        timing.repeats = args.repeats
        timing.min_repeats = min(timing.min_repeats, args.repeats)
    runtimes = {}
    for mod in ("torchvision", "onnx", "onnxruntime", "openvino"):
        if available(mod):
            try:
                runtimes[mod] = __import__(mod).__version__
            except Exception:
                runtimes[mod] = "?"
        else:
            runtimes[mod] = "not installed"
    machine = dict(machine, runtimes=runtimes)
    config = {"mode": "models", "models": names, "batches": batches, "input_hw": hw, "dtype": "float32",
              "threads": threads, "quick": args.quick, "providers": providers, "timing": asdict(timing),
              "tolerance": TOLERANCE, "seed": args.seed}

    progress = Progress(len(names) * len(batches) * 2)
    notes: List[str] = []
    results: List[ModelResult] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cnnkernels-bench-") as tmp:
        for name in names:
            for b in batches:
                results += run_model(name, b, hw, providers, threads, timing, args.seed, Path(tmp), progress, notes)
    progress.close()
    elapsed = time.perf_counter() - t0

    table = format_table(results, providers, machine, hw, notes)
    footer = f"({len(names)} models x {len(batches)} batch sizes in {elapsed:.1f} s)"
    print(table)
    print(footer)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        command = "python bench/run.py " + " ".join(sys.argv[1:])
        args.markdown.write_text(f"# cnnkernels model benchmark\n\n`{command}`\n\n```\n{table}\n{footer}\n```\n")
        print(f"markdown summary written to {args.markdown}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        speed = {f"{m} b{b}": speedups(rs) for (m, b), rs in group(results).items()}
        args.json.write_text(json.dumps({"machine": machine, "config": config, "elapsed_s": elapsed,
                                         "speedups": speed, "notes": notes,
                                         "results": [asdict(r) for r in results]}, indent=2))
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        write_csv(args.csv, results, machine)
    if args.plot:
        err = write_plot(args.plot, results, providers)
        print(err or f"plot written to {args.plot}", file=sys.stderr if err else sys.stdout)
    if args.strict and any(r.error and r.error != "not installed" for r in results):
        return 1
    return 0
