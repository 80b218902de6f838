"""The Triton ops on a CUDA GPU: vs the reference, through torch.compile(fullgraph=True), opcheck, autograd, and the
backend choice. Skipped without a GPU (the kernels are then checked in the Triton interpreter by
tests/triton_ops/test_triton_interpret.py, which cannot cover compiled kernels, torch.compile or fake-tensor tracing of
them).

Run it in a process without TRITON_INTERPRET=1: the Triton kernels must be compiled, not interpreted.
"""

import importlib

import pytest
import torch

from support.dtypes import TRITON_TOLERANCES as TOLERANCES
from support.triton_cases.common import assert_grads_match, assert_matches, widen
from support.triton_cases.samples import ARGS, GEOMETRIES, OPS, make

pytestmark = pytest.mark.cuda

if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU (on CPU, tests/triton_ops/test_triton_interpret.py runs the Triton kernels in the "
                "interpreter)", allow_module_level=True)
pytest.importorskip("triton")
import cnnkernels.triton as _ct  # noqa: E402

if _ct.INTERPRET:
    pytest.skip("cnnkernels.triton was imported with TRITON_INTERPRET=1: its kernels are interpreted; run this module "
                "without it", allow_module_level=True)

DEVICE = "cuda"
DTYPES = [pytest.param(torch.float32, False, id="fp32-nchw"), pytest.param(torch.float16, True, id="fp16-nhwc"),
          pytest.param(torch.bfloat16, True, id="bf16-nhwc")]
CASES = [pytest.param(op, name, id=f"{op}-{name}") for op in OPS for name in GEOMETRIES[op]]


@pytest.fixture(autouse=True)
def exact_fp32():
    """The reference convs and matmuls in true fp32 (no TF32); the Triton kernels follow the matmul flag."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def triton_op(op):
    return getattr(torch.ops.cnnkernels, f"{op}_triton")


def reference(op):
    return getattr(importlib.import_module(f"cnnkernels.ops.{op}"), f"{op}_reference")


def args_for(op, name, dtype=torch.float32, channels_last=False):
    return ARGS[op](GEOMETRIES[op][name], dtype, channels_last, device=DEVICE)


@pytest.mark.parametrize("dtype, channels_last", DTYPES)
@pytest.mark.parametrize("op, name", CASES)
def test_matches_reference(op, name, dtype, channels_last):
    args = args_for(op, name, dtype, channels_last)
    out = triton_op(op)(*args)
    assert_matches(out, reference(op)(*widen(args)), args[0])


# Layers of the size the models use: several tiles per dimension, autotuning over all configs.
LARGE = {
    "add_relu": lambda dt: (make((8, 64, 56, 56), dt, True, device=DEVICE), make((8, 64, 56, 56), dt, True,
                                                                                         device=DEVICE)),
    "conv2d_act": lambda dt: ARGS["conv2d_act"]((8, 64, 28, 28, 128, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, True,
                                                         "relu"), dt, True, device=DEVICE),
    "dwsep_conv2d": lambda dt: ARGS["dwsep_conv2d"]((8, 64, 28, 28, 128, (3, 3), (2, 2), (1, 1), (1, 1), True, True,
                                                             "relu", "relu"), dt, True, device=DEVICE),
    "inverted_residual": lambda dt: ARGS["inverted_residual"]((8, 24, 28, 28, 144, 24, 3, 1, True, "relu6", True),
                                                                      dt, True, device=DEVICE),
    "inception_block": lambda dt: ARGS["inception_block"]((4, 192, 14, 14, 64, 96, 128, (3, 3), 16, 32, (5, 5),
                                                                   32), dt, True, device=DEVICE),
    # EfficientNet-B0's stage-4 block (expand x6, 5x5, SE 240 -> 10 -> 240, residual)
    "mbconv": lambda dt: ARGS["mbconv"]((8, 40, 28, 28, 240, 5, 1, 10, 40, True, "silu", "silu", "sigmoid"), dt, True,
                                        device=DEVICE),
    # a U-Net decoder step at 64x64 (input 32x32, 128 -> 64 upsampled channels, 64 skip channels)
    "up_concat_conv": lambda dt: ARGS["up_concat_conv"]((4, 128, 32, 32, 64, 64, 64, True, True, "relu"), dt, True,
                                                        device=DEVICE),
}


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32], ids=["fp16", "fp32"])
@pytest.mark.parametrize("op", OPS)
def test_large(op, dtype):
    args = LARGE[op](dtype)
    out = triton_op(op)(*args)
    ref = reference(op)(*widen(args))
    if dtype == torch.float32:
        assert_matches(out, ref, args[0])
    else:  # fp16 with deeper reductions than the small cases
        torch.testing.assert_close(out.float(), ref, atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("op", OPS)
def test_fp64(op):
    name = next(iter(GEOMETRIES[op]))
    args = args_for(op, name, torch.float64)
    torch.testing.assert_close(triton_op(op)(*args), reference(op)(*args), **TOLERANCES[torch.float64])


@pytest.mark.parametrize("dtype, channels_last", DTYPES[:2])
@pytest.mark.parametrize("op", OPS)
def test_torch_compile_fullgraph(op, dtype, channels_last):
    """torch.compile traces into the triton_op (Inductor sees the user-defined Triton kernels)."""
    torch._dynamo.reset()
    args = args_for(op, next(iter(GEOMETRIES[op])), dtype, channels_last)

    def f(*a):
        return triton_op(op)(*a) * 2 + 1

    compiled = torch.compile(f, fullgraph=True)
    torch.testing.assert_close(compiled(*args), f(*args), **TOLERANCES[dtype])


@pytest.mark.parametrize("op", OPS)
def test_opcheck(op):
    args = args_for(op, next(iter(GEOMETRIES[op])))
    args = tuple(a.requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)
    torch.library.opcheck(triton_op(op), args)


@pytest.mark.parametrize("op", OPS)
def test_autograd(op):
    assert_grads_match(op, reference(op), args_for(op, next(iter(GEOMETRIES[op]))), tol=dict(atol=1e-4, rtol=1e-4))


def test_backend_choice_on_cuda():
    from cnnkernels import _library, backends, use_backend
    for op in OPS:
        expected = "cuda" if _library.KERNEL_SOURCES.get(op, {}).get("CUDA") == "compiled" else "triton"
        assert backends.resolve(op, "cuda") == expected
    with use_backend("triton"):
        assert all(backends.resolve(op, "cuda") == "triton" for op in OPS)
        assert backends.resolve("conv2d_act", "cpu") == "cpu"
    args = args_for("add_relu", "2x3x7x7")
    with use_backend(add_relu="triton"):
        assert backends.resolve("add_relu", args[0].device) == "triton"
        torch.testing.assert_close(torch.ops.cnnkernels.add_relu_triton(*args), torch.relu(args[0] + args[1]))
