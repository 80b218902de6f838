"""Which implementation of an op runs for CUDA tensors.

Backends for CUDA tensors:

- ``"cuda"``: the C++ op ``torch.ops.cnnkernels.<op>`` (its compiled CUDA kernel; where the library has none, the
  reference registered for the CUDA key in its place),
- ``"triton"``: ``torch.ops.cnnkernels.<op>_triton`` (cnnkernels.triton, imported when first chosen),
- ``"reference"``: the pure-PyTorch reference (same validation, output in the same memory format).

Default, per op: ``"cuda"`` where the compiled CUDA kernel exists (``_library.KERNEL_SOURCES[op]["CUDA"] == "compiled"``),
else ``"triton"`` if triton can be imported, else ``"reference"``.

Overrides, strongest first:

1. ``cnnkernels.use_backend(...)``, a context manager (thread- and task-local): ``use_backend("triton")`` for every
   op, ``use_backend(conv2d_act="triton")`` for one, or both (``use_backend("cuda", add_relu="reference")``; the
   per-op choices win). Nested blocks override the enclosing ones.
2. The environment variable ``CNNKERNELS_CUDA_BACKEND``, read at each call: ``triton``, or per op
   ``conv2d_act=triton,add_relu=cuda``, or both (``reference,conv2d_act=triton``).
3. The default above.

CPU tensors always run ``torch.ops.cnnkernels.<op>`` (its compiled CPU kernel or the reference fallback), with one
exception for testing: where ``"triton"`` is chosen (by 1 or 2) and ``TRITON_INTERPRET=1``, CPU tensors run the
Triton op in the Triton interpreter.

Under torch.compile the choice is made once, when the call is traced (``resolve`` is an
``assume_constant_result``): changing the backend afterwards does not recompile.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
from typing import Dict, Iterator, Optional, Tuple, Union

import torch

from cnnkernels import _library

BACKENDS: Tuple[str, ...] = ("cuda", "triton", "reference")
ENV_VAR = "CNNKERNELS_CUDA_BACKEND"
# The value resolve() returns for CPU tensors: torch.ops.cnnkernels.<op> as dispatched for the CPU.
CPU = "cpu"

# Ops with no implementation in cnnkernels/triton/: a "triton" choice (for every op or for one of these) runs what
# they run without triton -- the C++ op on CPU tensors; the compiled CUDA kernel, else the reference, on CUDA tensors.
NO_TRITON_OPS = frozenset(("nms", "batched_nms", "yolo_postprocess"))

_overrides: contextvars.ContextVar[Dict[str, str]] = contextvars.ContextVar("cnnkernels_backend_overrides",
                                                                             default={})


def op_names() -> Tuple[str, ...]:
    return tuple(_library.op_names())


def _check_op(op: str, where: str) -> None:
    if op not in _library.SCHEMAS:
        raise ValueError(f"cnnkernels.backends: unknown op '{op}' in {where}; ops are {', '.join(op_names())}")


def _check_backend(backend: str, where: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"cnnkernels.backends: unknown backend '{backend}' in {where}; backends are "
                         f"{', '.join(BACKENDS)}")
    return backend


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton can be imported and torch has torch.library.triton_op (needed by cnnkernels.triton)."""
    if not hasattr(torch.library, "triton_op"):
        return False
    try:
        import triton  # noqa: F401
    except Exception:
        return False
    return True


def cuda_compiled(op: str) -> bool:
    """Whether torch.ops.cnnkernels.<op> has a compiled CUDA kernel."""
    return _library.KERNEL_SOURCES.get(op, {}).get("CUDA") == "compiled"


def default_backend(op: str) -> str:
    """The backend `op` uses for CUDA tensors when nothing overrides it."""
    _check_op(op, "default_backend()")
    if cuda_compiled(op):
        return "cuda"
    if triton_available() and op not in NO_TRITON_OPS:
        return "triton"
    return "reference"


@functools.lru_cache(maxsize=32)
def _parse_env(value: str) -> Dict[str, str]:
    """CNNKERNELS_CUDA_BACKEND -> {op: backend}; the key "" holds the all-ops choice."""
    where = f"{ENV_VAR}={value!r}"
    out: Dict[str, str] = {}
    for item in value.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" in item:
            op, backend = (s.strip() for s in item.split("=", 1))
            _check_op(op, where)
            out[op] = _check_backend(backend, where)
        else:
            out[""] = _check_backend(item, where)
    return out


def _env_choice(op: str) -> Optional[str]:
    value = os.environ.get(ENV_VAR, "")
    if not value.strip():
        return None
    choices = _parse_env(value)
    return choices.get(op, choices.get(""))


def _chosen(op: str) -> Optional[str]:
    """The backend chosen for `op` by use_backend() or the environment, if any."""
    overrides = _overrides.get()
    if op in overrides:
        return overrides[op]
    if "" in overrides:
        return overrides[""]
    return _env_choice(op)


def interpreting() -> bool:
    """Whether Triton kernels run in the interpreter (TRITON_INTERPRET=1), where they accept CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _ensure_triton_op(op: str) -> None:
    if not hasattr(torch.ops.cnnkernels, f"{op}_triton"):
        import cnnkernels.triton  # noqa: F401  (registers torch.ops.cnnkernels.<op>_triton)


@torch.compiler.assume_constant_result
def resolve(op: str, device: Union[str, torch.device]) -> str:
    """The backend that runs `op` for tensors on `device`: "cuda", "triton" or "reference" for CUDA devices, "cpu"
    (torch.ops.cnnkernels.<op>) for the others, or "triton" for CPU tensors when it is chosen and TRITON_INTERPRET=1.
    Choosing "triton" imports cnnkernels.triton, so torch.ops.cnnkernels.<op>_triton exists when this returns."""
    _check_op(op, "resolve()")
    device_type = device if isinstance(device, str) else torch.device(device).type
    device_type = device_type.split(":", 1)[0]
    if device_type != "cuda":
        # CPU tensors: the C++ op, unless the Triton op is chosen and runs in the interpreter
        if not (interpreting() and _chosen(op) == "triton" and op not in NO_TRITON_OPS):
            return CPU
        backend = "triton"
    else:
        chosen = _chosen(op)
        backend = chosen if chosen is not None else default_backend(op)
        if backend == "triton" and op in NO_TRITON_OPS:
            backend = "cuda" if cuda_compiled(op) else "reference"
    if backend == "triton":
        _ensure_triton_op(op)
    return backend


@contextlib.contextmanager
def use_backend(backend: Optional[str] = None, /, **per_op: str) -> Iterator[None]:
    """Within the block, CUDA tensors run `backend` for every op, and per_op[op] for the ops named:

        with cnnkernels.use_backend("triton"): ...
        with cnnkernels.use_backend(conv2d_act="triton", add_relu="cuda"): ...

    Blocks nest (the inner one wins) and are local to the thread / async task. With TRITON_INTERPRET=1, "triton"
    also applies to CPU tensors (to test the Triton kernels without a GPU)."""
    layer: Dict[str, str] = {}
    if backend is not None:
        layer[""] = _check_backend(backend, "use_backend()")
    for op, b in per_op.items():
        _check_op(op, "use_backend()")
        layer[op] = _check_backend(b, "use_backend()")
    outer = _overrides.get()
    merged = dict(outer)
    if "" in layer:  # an all-ops choice replaces the enclosing per-op ones
        merged = {}
    merged.update(layer)
    token = _overrides.set(merged)
    try:
        yield
    finally:
        _overrides.reset(token)


def backend_table() -> Dict[str, Dict[str, str]]:
    """{op: {"cpu": ..., "cuda": ...}}: what runs each op now, for `python -m cnnkernels.info`.

    "cpu": "compiled" (the C++ CPU kernel) or "reference" (the pure-PyTorch fallback) -- or "triton" where the Triton
    op is forced onto CPU tensors in the interpreter. "cuda": "cuda", "triton" or "reference" (resolve()); a "cuda"
    backend without a compiled CUDA kernel shows as "reference" (the C++ op then runs the reference)."""
    table: Dict[str, Dict[str, str]] = {}
    for op in op_names():
        chosen = _chosen(op)
        if chosen == "triton" and op in NO_TRITON_OPS:
            chosen = None
        if chosen == "triton" and interpreting():
            cpu = "triton"
        else:
            cpu = _library.KERNEL_SOURCES.get(op, {}).get("CPU", "compiled" if _library.STATE.cpu else "reference")
        cuda = chosen if chosen is not None else default_backend(op)
        if cuda == "cuda" and not cuda_compiled(op):
            cuda = "reference"
        table[op] = {"cpu": cpu, "cuda": cuda}
    return table


__all__ = ["BACKENDS", "CPU", "ENV_VAR", "NO_TRITON_OPS", "backend_table", "cuda_compiled", "default_backend", "interpreting",
           "op_names", "resolve", "triton_available", "use_backend"]


def call(op: str, fallback, *args):
    """Runs `op` on `args` (the schema's arguments, input first) with the backend `resolve` picks for the input's
    device; `fallback` is the op module's validation + reference. What the public wrappers cnnkernels.<op> use."""
    backend = resolve(op, args[0].device)
    if backend == "triton":
        return getattr(torch.ops.cnnkernels, f"{op}_triton")(*args)
    if backend == "reference":
        return fallback(*args)
    return getattr(torch.ops.cnnkernels, op)(*args)
