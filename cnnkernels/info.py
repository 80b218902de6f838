"""What cnnkernels is running with: versions, build config, CPU ISA, compiled library state, backend of every op.

    python -m cnnkernels.info          # human-readable report
    python -m cnnkernels.info --json   # the same as JSON

`collect()` returns the report as a dict (used by tests and bench/run.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from importlib import metadata
from typing import Any, Dict, List, Optional

import torch

import cnnkernels
from cnnkernels import _library as L

DEVICE_KEYS = ("CPU", "CUDA")


def _dist_version(name: str) -> Optional[str]:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _triton() -> Dict[str, Any]:
    try:
        import triton
    except Exception as e:  # ImportError, or a broken install raising anything at import
        return {"importable": False, "version": _dist_version("triton"), "error": f"{type(e).__name__}: {e}"}
    return {"importable": True, "version": getattr(triton, "__version__", None) or _dist_version("triton"),
            "error": None}


def _read_build_config() -> Optional[dict]:
    if L.STATE.build_config is not None:
        return L.STATE.build_config
    try:  # not loaded (e.g. disabled or torch mismatch): still show what is on disk
        return json.loads((L.LIB_DIR / "_build_config.json").read_text())
    except (OSError, ValueError):
        return None


def _op_backends() -> Dict[str, Dict[str, str]]:
    from cnnkernels.backends import backend_table

    chosen = backend_table()
    ops = {}
    for name, schema in L.SCHEMAS.items():
        row = {"schema": schema}
        for key in DEVICE_KEYS:
            backend = L.KERNEL_SOURCES.get(name, {}).get(key)
            if backend is None:  # no Python module registered the op: only a compiled kernel can serve it
                has = torch._C._dispatch_has_kernel_for_dispatch_key(f"{L.NAMESPACE}::{name}", key)
                backend = "compiled" if has else "missing"
            row[key] = backend
        # float64 calls: the compiled CPU op hands them to ATen (no fused fp64 kernel)
        row["CPU_fp64"] = L.cpu_kernel_source(name, torch.float64) if row["CPU"] == "compiled" else row["CPU"]
        # what cnnkernels.<op>() runs for CUDA tensors (cnnkernels.use_backend / CNNKERNELS_CUDA_BACKEND)
        row["cuda_backend"] = chosen.get(name, {}).get("cuda", "reference")
        ops[name] = row
    return ops


def collect() -> Dict[str, Any]:
    """The whole report as a JSON-serialisable dict."""
    cuda_devices = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            cuda_devices.append({"name": p.name, "capability": f"{p.major}.{p.minor}"})
    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count()
    return {
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_cuda": torch.version.cuda,
            "torchvision": _dist_version("torchvision"),
            "triton": _dist_version("triton"),
            "cnnkernels": cnnkernels.__version__,
        },
        "package_dir": str(L.PACKAGE_DIR),
        "build_config": _read_build_config(),
        "compiled": {
            "cpu": L.STATE.cpu,
            "cuda": L.STATE.cuda,
            "reason": L.STATE.reason,
            "cuda_reason": L.STATE.cuda_reason,
            "disabled_by_env": os.environ.get(L.DISABLE_ENV, "0") not in ("", "0"),
        },
        "cpu": {
            "model": cpu_model(),
            "machine": platform.machine(),
            "cores": os.cpu_count(),
            "usable_cores": affinity,
            "torch_threads": torch.get_num_threads(),
            "isa": L.cpu_isa(),  # what the compiled kernels dispatch to; None when not loaded
            "dispatch": L.cpu_dispatch(),  # per kernel family: the ISA build and why
            "torch_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "cuda_devices": cuda_devices,
        "triton": _triton(),
        "ops": _op_backends(),
    }


def dispatch_lines(dispatch: Optional[Dict[str, Any]]) -> List[str]:
    """Which ISA build each CPU kernel family runs and why, e.g. `conv  AVX512  fastest in the timing probe (AVX2
    120.3 us, AVX512 64.1 us)`; also used by the bench headers."""
    if not dispatch:
        return []
    how = (f"{L.CPU_ISA_ENV}={dispatch['request']}" if dispatch["request"]
           else f"{L.CPU_ISA_ENV} unset: timing probe over {', '.join(dispatch['runnable'])} in "
                f"{dispatch['probe_ms']:.1f} ms")
    lines = [how]
    width = max(len(f) for f in dispatch["families"])
    for fam, d in dispatch["families"].items():
        times = ", ".join(f"{isa} {us:.1f} us" for isa, us in d["probe_us"].items())
        lines.append(f"{fam:<{width}}  {d['isa']:<7} {d['why']}" + (f" ({times})" if times else ""))
    return lines


def format_report(info: Dict[str, Any]) -> str:
    v, b, c, cpu = info["versions"], info["build_config"], info["compiled"], info["cpu"]
    out = []
    add = out.append
    add(f"cnnkernels {v['cnnkernels']}  ({info['package_dir']})")
    add("")
    add("Versions")
    add(f"  python        {v['python']}")
    add(f"  torch         {v['torch']}" + (f" (CUDA {v['torch_cuda']})" if v["torch_cuda"] else " (CPU-only build)"))
    add(f"  torchvision   {v['torchvision'] or 'not installed'}")
    t = info["triton"]
    add(f"  triton        {t['version'] or 'not installed'}, "
        + ("importable" if t["importable"] else f"not importable ({t['error']})"))
    add("")
    add(f"Build config ({L.LIB_DIR / '_build_config.json'})" if os.environ.get(L.LIBRARY_DIR_ENV)
        else "Build config (cnnkernels/lib/_build_config.json)")
    if b is None:
        add("  none: the compiled library was not built or installed")
    else:
        add(f"  built against torch {b.get('torch_version')}"
            + (f" (CUDA {b['torch_cuda_version']})" if b.get("torch_cuda_version") else "")
            + f", C++11 ABI {b.get('cxx11_abi')}, {b.get('build_type')} build")
        add(f"  CPU ISA levels  {(b.get('cpu_isas') or '').replace(',', ', ')}")
        if b.get("cuda"):
            add(f"  CUDA            nvcc {b['cuda']}, archs {(b.get('cuda_archs') or '').replace(',', ', ')}")
        else:
            add("  CUDA            not built")
        add(f"  sanitizers      {b.get('sanitize') or 'none'}")
    add("")
    add("Compiled library")
    add("  CPU kernels   " + ("loaded" if c["cpu"] else f"NOT loaded: {c['reason']}"))
    add("  CUDA kernels  " + ("loaded" if c["cuda"] else f"NOT loaded: {c['cuda_reason']}"))
    add("")
    add("Runtime")
    add(f"  CPU           {cpu['model']} ({cpu['machine']}), {cpu['cores']} cores "
        f"({cpu['usable_cores']} usable), torch threads {cpu['torch_threads']}")
    add(f"  CPU ISA       kernels run {cpu['isa'] or 'n/a (compiled library not loaded)'}; "
        f"torch uses {cpu['torch_capability']}")
    for line in dispatch_lines(cpu["dispatch"]):
        add(f"    {line}")
    devs = info["cuda_devices"]
    add("  CUDA devices  " + (", ".join(f"{d['name']} (sm {d['capability']})" for d in devs) if devs else "none"))
    add("")
    add("Ops (kernel registered per device: compiled, pure-PyTorch reference, or missing; CPU fp64: what serves")
    add("     float64 CPU tensors, aten-fp64 = the op calls ATen's float64 operators, nothing fused; and the backend")
    add("     the cnnkernels.<op>() wrappers pick for CUDA tensors: cuda, triton or reference)")
    width = max([len("op")] + [len(n) for n in info["ops"]])
    add(f"  {'op':<{width}}  {'CPU':<10}  {'CPU fp64':<10}  {'CUDA':<10}  CUDA backend")
    for name, row in info["ops"].items():
        add(f"  {name:<{width}}  {row['CPU']:<10}  {row['CPU_fp64']:<10}  {row['CUDA']:<10}  {row['cuda_backend']}")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m cnnkernels.info", description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    info = collect()
    print(json.dumps(info, indent=2) if args.json else format_report(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
