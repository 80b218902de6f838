"""The pure-PyTorch fallback computes fp16/bf16 as the compiled kernels do: in fp32, rounded once to the output dtype
(cnnkernels/ops/_precision.py). Its 16-bit result is then the fp32 reference of the same inputs rounded once, bit for
bit (NaN payloads aside), whichever fp16/bf16 convolution torch would pick on this CPU: a fallback running torch's own
16-bit ops rounds every fused stage, and on CPUs with AVX512-BF16/AMX oneDNN's bf16 path also loses NaN/Inf.

The tests call each op module's `_fallback` directly, so they check the fallback with or without the compiled library.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from cnnkernels.ops._checks import output_memory_format
from cnnkernels.ops._precision import NARROW_DTYPES, run_in_fp32
from support.helpers import DTYPE_IDS, map_tensors, op, reference, to_fp32, with_specials
from support.samples import generic_ops, sample_inputs

OPS = generic_ops("precision")  # the detection ops are exact (samples.NOT_APPLICABLE)

NARROW = list(NARROW_DTYPES)


def fallback(op_name: str):
    # cnnkernels.ops.<op> is the re-exported wrapper function, not the module
    return importlib.import_module(f"cnnkernels.ops.{op_name}")._fallback


def assert_same_bits(out: torch.Tensor, want: torch.Tensor, what: str) -> None:
    """Bit-identical 16-bit tensors, NaN payloads aside (torch's NaN results carry payloads that differ by path)."""
    assert torch.equal(out.isnan(), want.isnan()), f"{what}: NaN in other places"
    differ = (out.view(torch.int16) != want.view(torch.int16)) & ~want.isnan()
    assert not differ.any(), f"{what}: {int(differ.sum())} of {out.numel()} elements differ"


@pytest.mark.correctness
@pytest.mark.parametrize("dtype", NARROW, ids=[DTYPE_IDS[d] for d in NARROW])
@pytest.mark.parametrize("op_name", OPS)
def test_fallback_is_fp32_reference_rounded_once(op_name, dtype):
    for label, args in sample_inputs(op_name, dtype):
        n = args[0].numel()
        for specials in (False, True):
            a = with_specials(args, [0, n // 3, n // 2, n - 1, 7 * n // 11]) if specials else args
            out = fallback(op_name)(*a)
            want = reference(op_name)(*to_fp32(a)).to(dtype)
            assert out.dtype == dtype and out.shape == want.shape, label
            assert out.is_contiguous(memory_format=output_memory_format(a[0])), (label, out.stride())
            assert_same_bits(out, want, f"{label} (specials={specials})")
            if specials:  # NaN and +-Inf exactly where the fp64 reference has them
                exact = reference(op_name)(*map_tensors(a, lambda t: t.double()))
                assert exact.isnan().any() or exact.isinf().any(), label
                assert torch.equal(out.isnan(), exact.isnan()), label
                assert torch.equal(out.isinf() & (out > 0), exact.isinf() & (exact > 0)), label
                assert torch.equal(out.isinf() & (out < 0), exact.isinf() & (exact < 0)), label


@pytest.mark.bad_input
@pytest.mark.parametrize("dtype", NARROW, ids=[DTYPE_IDS[d] for d in NARROW])
@pytest.mark.parametrize("op_name", OPS)
def test_fallback_rejects_fp32_argument_with_16bit_input(op_name, dtype):
    # The checks run before the fallback widens to fp32: an fp32 second argument is an error, not silently accepted.
    _, args = next(iter(sample_inputs(op_name, dtype)))
    name = op(op_name).default._schema.arguments[1].name
    args = (args[0], args[1].float()) + tuple(args[2:])
    with pytest.raises(TypeError, match=rf"^cnnkernels\.{op_name}: {name} must have the input's dtype "
                                        rf"{'Half' if dtype == torch.float16 else 'BFloat16'}, got Float$"):
        fallback(op_name)(*args)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, *NARROW], ids=["fp32", "fp64", "fp16", "bf16"])
def test_run_in_fp32_widens_only_16bit(dtype):
    x, w = torch.randn(2, 3, dtype=dtype), torch.randn(3, dtype=dtype)
    calls = []

    def ref(*a):
        calls.append((a, a[0] * a[1]))
        return calls[-1][1]

    out = run_in_fp32(ref, x, w, None, "relu")
    ((a, result),) = calls
    assert a[2:] == (None, "relu")
    if dtype in NARROW:
        assert a[0].dtype == a[1].dtype == torch.float32 and out.dtype == dtype
        assert torch.equal(out, (x.float() * w.float()).to(dtype))
    else:  # the very tensors in and the reference's result out: no copies
        assert a[0] is x and a[1] is w and out is result
