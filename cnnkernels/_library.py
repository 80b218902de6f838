"""Loads the compiled op libraries, or falls back to the pure-PyTorch references.

`import cnnkernels` never fails because the compiled library is missing, built against another torch, or broken: the
ops are then defined from cnnkernels/ops.schema and run their references, and one warning says why. Setting
CNNKERNELS_DISABLE_COMPILED=1 forces that fallback (no warning: it was asked for).

CNNKERNELS_LIBRARY_DIR=<dir> loads the libraries and build config from <dir> instead of the package's lib/ folder, e.g.
a plain-CMake build (build/<name>/cnnkernels, where CMake writes them) such as the sanitizer build that
tests/run_sanitized.sh makes. The same checks apply (torch version, loadability).
"""

from __future__ import annotations

import ctypes
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import torch
from packaging.version import Version

PACKAGE_DIR = Path(__file__).resolve().parent
LIBRARY_DIR_ENV = "CNNKERNELS_LIBRARY_DIR"
LIB_DIR = Path(os.environ[LIBRARY_DIR_ENV]).resolve() if os.environ.get(LIBRARY_DIR_ENV) else PACKAGE_DIR / "lib"
CPU_LIB = LIB_DIR / "libcnnkernels_cpu.so"
CUDA_LIB = LIB_DIR / "libcnnkernels_cuda.so"
DISABLE_ENV = "CNNKERNELS_DISABLE_COMPILED"
# Forces every CPU kernel family onto one ISA build; unset, a timing probe picks the fastest build per family.
CPU_ISA_ENV = "CNNKERNELS_CPU_ISA"
CPU_ISA_CHOICES = ("default", "avx2", "avx512")
NAMESPACE = "cnnkernels"


@dataclass
class LibraryState:
    cpu: bool = False                      # compiled CPU kernels loaded
    cuda: bool = False                     # compiled CUDA kernels loaded
    reason: Optional[str] = None           # why the compiled CPU library is not used
    cuda_reason: Optional[str] = None      # why the compiled CUDA library is not used
    build_config: Optional[dict] = None
    cpu_handle: Optional[ctypes.CDLL] = field(default=None, repr=False)


def read_schemas() -> Dict[str, str]:
    """op name -> schema, from the single definition in ops.schema."""
    schemas = {}
    for line in (PACKAGE_DIR / "ops.schema").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            schemas[line.split("(", 1)[0]] = line
    return schemas


def _torch_release(v: str) -> Version:
    return Version(Version(v).base_version)


def _defined_elsewhere() -> bool:
    """The cnnkernels ops already exist in this process although our CPU library is not loaded: another copy of the
    library registered them (e.g. a plain-CMake build loaded with torch.ops.load_library). Loading ours as well would
    abort the process: its TORCH_LIBRARY(cnnkernels) throws during dlopen, where nothing can catch it."""
    if os.path.realpath(CPU_LIB) in {os.path.realpath(p) for p in torch.ops.loaded_libraries}:
        return False  # ours (an earlier import of this module): loading it again is a no-op
    return any(torch._C._dispatch_has_kernel(f"{NAMESPACE}::{name}") for name in read_schemas())


def _adopt_loaded_library(state: LibraryState) -> None:
    """Uses the copy of the library that already registered the ops instead of loading ours."""
    others = sorted(p for p in torch.ops.loaded_libraries if Path(p).name == CPU_LIB.name)
    where = others[0] if others else "a library not loaded with torch.ops.load_library"
    state.reason = (f"the cnnkernels ops were already registered in this process by {where}; its kernels are used "
                    f"and {CPU_LIB} is not loaded (two copies cannot both register them)")
    state.cuda_reason = "the ops were registered by another copy of the library; its CUDA library was not loaded"
    if others:
        state.cpu_handle = ctypes.CDLL(others[0])  # already loaded: no second registration
        state.cpu = True
        try:
            state.build_config = json.loads((Path(others[0]).parent / "_build_config.json").read_text())
        except (OSError, ValueError):
            pass
    warnings.warn(f"cnnkernels: {state.reason}", RuntimeWarning, stacklevel=4)


def _check_cpu_isa_env() -> None:
    """A bad CNNKERNELS_CPU_ISA fails the import with the values it takes, not the first op call deep in a model."""
    value = os.environ.get(CPU_ISA_ENV, "")
    if value and value.lower() not in CPU_ISA_CHOICES:
        raise ValueError(f"{CPU_ISA_ENV}={value!r}: expected one of {', '.join(map(repr, CPU_ISA_CHOICES))}, or "
                         f"unset to let a timing probe pick the fastest build per kernel family")


def _load_compiled(state: LibraryState) -> None:
    if os.environ.get(DISABLE_ENV, "0") not in ("", "0"):
        state.reason = f"{DISABLE_ENV} is set"
        return
    if _defined_elsewhere():
        _adopt_loaded_library(state)
        return
    cfg_path = LIB_DIR / "_build_config.json"
    if not CPU_LIB.exists() or not cfg_path.exists():
        state.reason = (f"the compiled library is missing ({CPU_LIB} not found); build it with "
                        f"`pip install --no-build-isolation .`")
        if os.environ.get(LIBRARY_DIR_ENV):
            state.reason = (f"the compiled library is missing ({CPU_LIB} or its _build_config.json not found in "
                            f"{LIBRARY_DIR_ENV}={os.environ[LIBRARY_DIR_ENV]})")
        return
    try:
        state.build_config = json.loads(cfg_path.read_text())
        built = state.build_config["torch_version"]
    except (OSError, ValueError, KeyError) as e:
        state.reason = f"unreadable build config {cfg_path}: {e}"
        return
    # The C++ ABI of torch changes between releases: never load a library built against another one.
    if _torch_release(built) != _torch_release(torch.__version__):
        state.reason = (f"the compiled library was built against torch {built} but torch {torch.__version__} is "
                        f"installed; rebuild cnnkernels")
        return
    try:
        torch.ops.load_library(str(CPU_LIB))
        state.cpu_handle = ctypes.CDLL(str(CPU_LIB))
    except OSError as e:
        state.reason = f"loading {CPU_LIB.name} failed: {e}"
        return
    state.cpu = True
    if not CUDA_LIB.exists():
        state.cuda_reason = "built without CUDA kernels"
    elif torch.version.cuda is None:
        state.cuda_reason = f"torch {torch.__version__} has no CUDA"
    else:
        try:
            torch.ops.load_library(str(CUDA_LIB))
            state.cuda = True
        except OSError as e:
            state.cuda_reason = f"loading {CUDA_LIB.name} failed: {e}"
            warnings.warn(f"cnnkernels: CUDA kernels unavailable ({state.cuda_reason}); CUDA tensors will use the "
                          f"reference implementations", RuntimeWarning, stacklevel=3)


_check_cpu_isa_env()
STATE = LibraryState()
_load_compiled(STATE)
if not STATE.cpu:
    STATE.cuda_reason = STATE.cuda_reason or STATE.reason
    if not STATE.reason.startswith(DISABLE_ENV) and "already registered" not in STATE.reason:
        warnings.warn(f"cnnkernels: using the pure-PyTorch reference implementations because {STATE.reason}",
                      RuntimeWarning, stacklevel=3)

# Python-side registrations (schemas when the library is absent, fake kernels, autograd, reference fallbacks) live in
# this fragment; it must stay alive for the life of the process.
LIB = torch.library.Library(NAMESPACE, "FRAGMENT")
SCHEMAS = read_schemas()
for _name, _schema in SCHEMAS.items():
    if not hasattr(getattr(torch.ops, NAMESPACE), _name):
        LIB.define(_schema)

# {op: {dispatch key: "compiled" or "reference"}}: where each op's kernel for a device comes from, filled as the op
# modules register their fallbacks. (Not cnnkernels.backends.BACKENDS, the CUDA backends a user can choose.)
KERNEL_SOURCES: Dict[str, Dict[str, str]] = {}

# The dtypes the compiled CPU kernels compute. A float64 call to a compiled CPU op is served by ATen's own float64
# operators inside the op (csrc/cpu/<op>.cpp, *_reference_fp64): correct, but nothing fused; reports say so.
CPU_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# Compiled CPU ops whose kernel computes float64 itself (torchvision's float64 box arithmetic, csrc/cpu/boxes.cpp).
FP64_KERNEL_OPS = ("box_iou", "nms", "batched_nms")


def cpu_kernel_source(op: str, dtype: torch.dtype) -> str:
    """What serves `op` for CPU tensors of `dtype`: "compiled" (a fused kernel), "aten-fp64" (the compiled op hands
    float64 to ATen), "reference" (the pure-PyTorch fallback) or "missing"."""
    source = KERNEL_SOURCES.get(op, {}).get("CPU", "missing")
    if source == "compiled" and dtype not in CPU_KERNEL_DTYPES and op not in FP64_KERNEL_OPS:
        return "aten-fp64"
    return source


def register_reference_where_missing(name: str, fn) -> None:
    """Registers `fn` (validation + reference) for every device that has no compiled kernel for op `name`."""
    qualname = f"{NAMESPACE}::{name}"
    KERNEL_SOURCES[name] = {}
    for key in ("CPU", "CUDA"):
        if torch._C._dispatch_has_kernel_for_dispatch_key(qualname, key):
            KERNEL_SOURCES[name][key] = "compiled"
        else:
            LIB.impl(name, fn, key)
            KERNEL_SOURCES[name][key] = "reference"


def cpu_isa() -> Optional[str]:
    """The ISA build the compiled CPU kernels run ("DEFAULT", "AVX2", "AVX512"), or "mixed" when the kernel families
    run different builds (cpu_dispatch() says which); None when the library is not loaded."""
    dispatch = cpu_dispatch()
    return None if dispatch is None else dispatch["isa"]


def cpu_dispatch() -> Optional[dict]:
    """How the compiled CPU kernels chose their ISA build, per kernel family (None when the library is not loaded):
    {"isa", "request": CNNKERNELS_CPU_ISA or None, "note", "runnable": [builds this CPU runs], "probe_ms",
    "families": {family: {"isa", "why", "probe_us": {build: microseconds per probe run}}}}. The choice is made once
    per process, at the first kernel call (or this call)."""
    if STATE.cpu_handle is None:
        return None
    f = STATE.cpu_handle.cnnkernels_cpu_dispatch
    f.restype = ctypes.c_char_p
    text = f().decode()
    try:
        return json.loads(text)
    except ValueError:
        # The only way the choice fails is a bad CNNKERNELS_CPU_ISA set after the import; the ops raise ValueError.
        raise ValueError(f"cnnkernels: the CPU kernels could not choose their ISA build: {text}") from None


def _cpu_count(symbol: str) -> int:
    """An int64 the compiled CPU library reports through its C entry point `symbol` (0 when it is not loaded)."""
    if STATE.cpu_handle is None:
        return 0
    f = getattr(STATE.cpu_handle, symbol)
    f.restype = ctypes.c_int64
    return int(f())


def weight_cache_size() -> int:
    """Cached packed weights whose source weight is still alive."""
    return _cpu_count("cnnkernels_weight_cache_size")


def weight_cache_capacity() -> int:
    """Most entries the packed-weight cache keeps (least recently used ones are evicted beyond it)."""
    return _cpu_count("cnnkernels_weight_cache_capacity")


def weight_cache_freeze(tensors) -> int:
    """Marks tensors' storages frozen in the packed-weight cache: their hits trust the version counter instead of
    re-reading the data (see cnnkernels.optimize(freeze=True)). The CUDA kernels keep packed weights for frozen
    tensors only (an unfrozen CUDA weight is packed on every call). Returns how many tensors were marked."""
    if STATE.cpu_handle is None:
        return 0
    f = STATE.cpu_handle.cnnkernels_weight_cache_freeze
    f.argtypes = [ctypes.c_void_p]
    n = 0
    for t in tensors:
        if (isinstance(t, torch.Tensor) and t.device.type in ("cpu", "cuda") and not t.is_inference()
                and t.numel() > 0):
            f(t.untyped_storage()._cdata)
            n += 1
    return n


def weight_cache_frozen_count() -> int:
    """Live storages marked by weight_cache_freeze."""
    return _cpu_count("cnnkernels_weight_cache_frozen_count")


def weight_cache_clear() -> None:
    if STATE.cpu_handle is not None:
        STATE.cpu_handle.cnnkernels_weight_cache_clear()


def op_names() -> List[str]:
    return list(SCHEMAS)
