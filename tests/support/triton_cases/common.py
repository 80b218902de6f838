"""Shared by the Triton interpreter test modules (tests/triton_ops/test_triton_<op>.py).

Those modules run the Triton kernels on CPU tensors in the Triton interpreter. The interpreter is chosen when
`@triton.jit` runs, i.e. when cnnkernels.triton is first imported, from TRITON_INTERPRET; a pytest process that
imported it without the variable (another test module, or test_triton_gpu.py on a GPU machine, which needs compiled
kernels) cannot switch. So the modules only run in a process started with TRITON_INTERPRET=1 -- the subprocess that
tests/triton_ops/test_triton_interpret.py spawns, or a direct
`TRITON_INTERPRET=1 python -m pytest tests/triton_ops/test_triton_<op>.py` -- and skip themselves otherwise
(`require_interpreter()` at module level). Tolerances: dtypes.TRITON_TOLERANCES.
"""

from __future__ import annotations

import os
from typing import Callable

import pytest
import torch

from support.dtypes import TRITON_TOLERANCES

INTERPRET_ENV = "TRITON_INTERPRET"

# Both memory formats, fp32 and fp16: the grid every op's correctness cases run over.
LAYOUT_DTYPES = [
    pytest.param(torch.float32, False, id="fp32-nchw"),
    pytest.param(torch.float32, True, id="fp32-nhwc"),
    pytest.param(torch.float16, False, id="fp16-nchw"),
    pytest.param(torch.float16, True, id="fp16-nhwc"),
]


def require_interpreter():
    """Module-level guard: skip the module unless this process runs Triton in the interpreter; returns the
    cnnkernels.triton package (imported, i.e. the *_triton ops registered)."""
    if os.environ.get(INTERPRET_ENV, "0") != "1":
        pytest.skip(f"Triton interpreter cases: run with {INTERPRET_ENV}=1 (tests/triton_ops/test_triton_interpret.py runs "
                    f"them in a subprocess)", allow_module_level=True)
    pytest.importorskip("triton")
    import cnnkernels.triton as ct
    if not ct.INTERPRET:
        pytest.skip(f"cnnkernels.triton was imported before {INTERPRET_ENV}=1 was set: its kernels are compiled, "
                    f"not interpreted", allow_module_level=True)
    return ct


def op(name: str):
    return getattr(torch.ops.cnnkernels, name)


def widen(args):
    """The reference's inputs: fp16/bf16 tensors as fp32 (fp32 and fp64 unchanged)."""
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.dtype in (torch.float16, torch.bfloat16) else a
                 for a in args)


def assert_matches(out: torch.Tensor, ref: torch.Tensor, input: torch.Tensor) -> None:
    """Same shape, dtype and memory format as the main op gives (output_memory_format(input)), values within the
    dtype's tolerance of the fp32 reference."""
    from cnnkernels.ops._checks import output_memory_format
    assert out.shape == ref.shape, (out.shape, ref.shape)
    assert out.dtype == input.dtype
    assert out.device == input.device
    fmt = output_memory_format(input)
    assert out.is_contiguous(memory_format=fmt), (fmt, out.stride())
    torch.testing.assert_close(out.to(ref.dtype), ref, **TRITON_TOLERANCES[input.dtype])


def check_against_reference(name: str, reference: Callable, args) -> torch.Tensor:
    out = op(f"{name}_triton")(*args)
    assert_matches(out, reference(*widen(args)), args[0])
    return out


def assert_same_error(check: Callable, name: str, args) -> None:
    """The Triton op rejects `args` exactly as the main op's validation (`check`: check_<op> in
    cnnkernels/ops/_checks.py) does."""
    with pytest.raises((ValueError, TypeError, RuntimeError)) as expected:
        check(*args)
    with pytest.raises(expected.type) as got:
        op(f"{name}_triton")(*args)
    assert str(got.value) == str(expected.value)
    assert str(got.value).startswith(f"cnnkernels.{name}: "), str(got.value)


def assert_fake_matches(name: str, args) -> None:
    """The registered fake kernel gives the real output's shape, dtype and strides."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    real = op(f"{name}_triton")(*args)
    with FakeTensorMode() as mode:
        fake_args = [mode.from_tensor(a) if isinstance(a, torch.Tensor) else a for a in args]
        fake = op(f"{name}_triton")(*fake_args)
    assert fake.shape == real.shape and fake.dtype == real.dtype and fake.stride() == real.stride()


def opcheck_eager(name: str, args) -> None:
    """torch.library.opcheck without its torch.compile/AOT tests (those need a GPU for a Triton op:
    tests/triton_ops/test_triton_gpu.py runs the full opcheck)."""
    torch.library.opcheck(op(f"{name}_triton"), args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))


def assert_grads_match(name: str, reference: Callable, args, tol=dict(atol=1e-9, rtol=1e-7)) -> None:
    """Gradients through the Triton op (its registered autograd, the main op's backward formulas) equal autograd
    through the reference, for every floating tensor argument (fp64)."""
    def leaves():
        return [a.detach().clone().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args]

    a1, a2 = leaves(), leaves()
    out = op(f"{name}_triton")(*a1)
    ref = reference(*a2)
    g = torch.randn_like(ref)
    out.backward(g)
    ref.backward(g)
    torch.testing.assert_close(out, ref, **tol)
    for i, (x1, x2) in enumerate(zip(a1, a2)):
        if isinstance(x1, torch.Tensor):
            torch.testing.assert_close(x1.grad, x2.grad, **tol, msg=lambda m: f"grad of argument {i}: {m}")
