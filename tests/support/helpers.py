"""Helpers shared by the test files: the reference comparison, error assertions, parametrization (the tolerances and
dtype ids they use are in support/dtypes.py)."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import re
from typing import Iterable, Optional, Sequence

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import cnnkernels
from support.dtypes import DTYPE_IDS, TOLERANCES
from support.samples import DETECTION_OPS, sample_inputs

DTYPES = (torch.float32, torch.float16, torch.bfloat16)

INNER_RUN_ENV = "CNNKERNELS_TEST_INNER"  # set in the subprocess runs of tests/reliability/test_fallback.py
PACKAGE_ENV = "CNNKERNELS_TEST_PACKAGE"  # ... with the package directory they must import


needs_cache = pytest.mark.skipif(not cnnkernels._library.STATE.cpu,
                                 reason="the weight cache is part of the compiled library")


def op(name: str):
    return getattr(torch.ops.cnnkernels, name)


def reference(name: str):
    return getattr(cnnkernels, f"{name}_reference")


def map_tensors(args: Sequence, fn) -> tuple:
    return tuple(fn(a) if isinstance(a, torch.Tensor) else a for a in args)


def to_fp32(args: Sequence) -> tuple:
    return map_tensors(args, lambda t: t.float())


def with_specials(args: Sequence, positions: Sequence[int]) -> tuple:
    """args with NaN/+Inf/-Inf written into the input at the given flat positions (cycling), in the input's layout."""
    x = args[0].clone(memory_format=torch.contiguous_format)
    flat = x.view(-1)
    for i, p in enumerate(positions):
        flat[p % flat.numel()] = (math.nan, math.inf, -math.inf)[i % 3]
    return (x.contiguous(memory_format=torch.channels_last) if args[0].dim() == 4 and
            args[0].is_contiguous(memory_format=torch.channels_last) else x,) + tuple(args[1:])


def with_grad(args: Sequence) -> tuple:
    """The args with every floating tensor a leaf that requires grad (strides kept: detach() does not copy);
    integer tensors (batched_nms's idxs) as they are."""
    return map_tensors(args, lambda t: t.detach().requires_grad_() if t.is_floating_point() else t)


def expected_memory_format(input: torch.Tensor) -> torch.memory_format:
    """channels_last in -> channels_last out; anything else (NCHW, sliced, transposed views) -> contiguous NCHW."""
    if input.dim() == 4 and input.is_contiguous(memory_format=torch.channels_last) and not input.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def cases(op_name: str, dtypes: Iterable[torch.dtype] = DTYPES, tag: Optional[str] = None) -> list:
    """pytest params (dtype, args) over the op's samples, with ids '<label>-<dtype>'."""
    return [pytest.param(dtype, args, id=f"{label}-{DTYPE_IDS[dtype]}")
            for dtype in dtypes for label, args in sample_inputs(op_name, dtype, tag=tag)]


def assert_equal_outputs(got, want) -> None:
    """Exactly equal (NaN where the other has NaN), output by output for ops returning several."""
    for g, w in zip(got, want) if isinstance(want, tuple) else ((got, want),):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, w.dtype, g.shape, w.shape)
        torch.testing.assert_close(g, w, rtol=0, atol=0, equal_nan=True)


def assert_matches_reference(op_name: str, args: Sequence, dtype: torch.dtype) -> None:
    if op_name in DETECTION_OPS:
        # Exact: the references compute what the kernels compute, in the same dtype (samples.DETECTION_OPS).
        assert_equal_outputs(op(op_name)(*args), reference(op_name)(*args))
        return
    out = op(op_name)(*args)
    expected = reference(op_name)(*to_fp32(args))
    assert out.dtype == dtype
    assert out.shape == expected.shape
    fmt = expected_memory_format(args[0])
    assert out.is_contiguous(memory_format=fmt), f"output strides {out.stride()} are not {fmt}"
    # The fake kernel (what torch.compile plans with) predicts the real output's shape and exact strides.
    fake = op(op_name)(*map_tensors(args, lambda t: torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                                                         device="meta")))
    assert fake.shape == out.shape
    assert fake.stride() == out.stride(), (fake.stride(), out.stride())
    torch.testing.assert_close(out.float(), expected, **TOLERANCES[dtype])


def assert_op_error(op_name: str, args: Sequence, exc_type: type, arg: str, compare_meta: bool = True) -> str:
    """The op rejects `args` with `exc_type` and a message 'cnnkernels.<op>: <arg>...'.

    With compare_meta, the same arguments on the meta device (the fake kernel, i.e. the Python checks torch.compile
    traces through) must fail identically: the compiled C++ checks and the Python checks give one error."""
    with pytest.raises(exc_type) as info:
        op(op_name)(*args)
    msg = str(info.value)
    assert re.match(rf"cnnkernels\.{op_name}: {re.escape(arg)}\b", msg), msg
    if compare_meta:
        with pytest.raises(exc_type) as meta_info:
            op(op_name)(*map_tensors(args, lambda t: t.to("meta")))
        assert str(meta_info.value) == msg
    return msg


def schema_args(op_name: str, values: dict) -> tuple:
    """The op's positional arguments, in schema order, from a dict keyed by the schema's argument names."""
    names = [a.name for a in op(op_name).default._schema.arguments]
    assert set(values) == set(names), f"{op_name} takes {names}"
    return tuple(values[n] for n in names)


def assert_empty_batch(op_name: str, args: Sequence) -> None:
    """N=0 (in `args`): the op returns an empty result shaped like the reference's, in the same dtype."""
    out = op(op_name)(*args)
    expected = reference(op_name)(*args)
    assert out.numel() == 0
    assert out.shape == expected.shape
    assert out.dtype == expected.dtype


def opcheck_cases(op_name: str) -> list:
    """pytest params (args, requires_grad): the op's "opcheck" samples in fp32, the first one also with grad."""
    samples = list(sample_inputs(op_name, torch.float32, tag="opcheck"))
    params = [pytest.param(args, False, id=label) for label, args in samples]
    label, args = samples[0]
    return params + [pytest.param(args, True, id=f"{label}-requires_grad")]


@contextlib.contextmanager
def single_thread():
    """gradcheck runs ~1000 tiny forwards: on a busy 2-core machine each 2-thread parallel region can wait a whole
    scheduler slice for its second thread (10x-50x slower), and the gradient formulas don't depend on threading."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def gradcheck(op_name: str, args: Sequence) -> None:
    """fp64 gradcheck w.r.t. every tensor argument."""
    with single_thread():
        assert torch.autograd.gradcheck(op(op_name), with_grad(args))


def opcheck(op_name: str, args: Sequence, requires_grad: bool) -> None:
    """torch.library.opcheck: schema, autograd registration, fake kernel vs real kernel, AOT dispatch."""
    if requires_grad:
        args = with_grad(args)
    torch.library.opcheck(op(op_name), args)


def inner_run() -> bool:
    return os.environ.get(INNER_RUN_ENV) == "1"


def assert_close_scaled(actual, expected, rel=1e-4):
    """Whole-network outputs: max |actual - expected| within `rel` of expected's largest magnitude (summation orders
    differ between fused and unfused paths, so an elementwise tolerance would be meaningless near zero)."""
    scale = expected.abs().max().item() + 1e-6
    err = (actual - expected).abs().max().item()
    assert err <= rel * scale + 1e-6, f"max abs error {err} vs scale {scale}"


class CountOps(TorchDispatchMode):
    """Counts the ops dispatched while active, by name (e.g. calls["cnnkernels.conv2d_act"])."""

    def __init__(self):
        super().__init__()
        self.calls = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))
