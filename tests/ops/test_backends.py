"""cnnkernels.backends: the backend that runs each op for CUDA tensors (resolve(), use_backend(), the environment
variable, the defaults) and the table for `python -m cnnkernels.info`. No kernel runs here: resolve() only names a
backend, so everything is checked on CPU-only machines too."""

import threading

import pytest
import torch

import cnnkernels
from cnnkernels import _library, backends
from cnnkernels.backends import ENV_VAR, backend_table, default_backend, resolve, use_backend

OPS = _library.op_names()
TRITON_OPS = [op for op in OPS if op not in backends.NO_TRITON_OPS]


@pytest.fixture(autouse=True)
def clean(monkeypatch):
    """No backend chosen by the environment, not interpreting, triton available, no compiled CUDA kernel -- and
    resolve() never imports cnnkernels.triton (that import fixes interpreted vs compiled kernels for the whole
    process; tests/triton_ops/test_triton_gpu.py needs compiled ones)."""
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(backends, "_ensure_triton_op", lambda op: None)
    monkeypatch.setattr(backends, "triton_available", lambda: True)
    for op in OPS:
        monkeypatch.setitem(_library.KERNEL_SOURCES, op, {"CPU": "compiled", "CUDA": "reference"})


def set_cuda_compiled(monkeypatch, *ops):
    for op in ops:
        monkeypatch.setitem(_library.KERNEL_SOURCES, op, {"CPU": "compiled", "CUDA": "compiled"})


def test_exports():
    assert cnnkernels.use_backend is use_backend
    assert cnnkernels.backends is backends
    assert set(backends.op_names()) == set(OPS)
    assert backends.BACKENDS == ("cuda", "triton", "reference")


def test_defaults(monkeypatch):
    assert all(default_backend(op) == "triton" for op in TRITON_OPS)   # no compiled CUDA kernel, triton importable
    assert all(default_backend(op) == "reference" for op in backends.NO_TRITON_OPS)
    set_cuda_compiled(monkeypatch, "add_relu")
    assert default_backend("add_relu") == "cuda"                         # the compiled CUDA kernel wins
    assert default_backend("conv2d_act") == "triton"
    monkeypatch.setattr(backends, "triton_available", lambda: False)
    assert default_backend("add_relu") == "cuda"
    assert default_backend("conv2d_act") == "reference"                  # neither: the reference
    assert resolve("conv2d_act", "cuda") == "reference"


def test_resolve_devices(monkeypatch):
    set_cuda_compiled(monkeypatch, "add_relu")
    assert resolve("add_relu", "cuda") == "cuda"
    assert resolve("add_relu", torch.device("cuda", 1)) == "cuda"
    assert resolve("add_relu", "cuda:0") == "cuda"
    assert resolve("conv2d_act", "cuda") == "triton"
    for device in ("cpu", torch.device("cpu"), "meta"):
        assert resolve("add_relu", device) == "cpu"                      # always torch.ops.cnnkernels.<op>
    with pytest.raises(ValueError, match="unknown op 'conv3d'"):
        resolve("conv3d", "cuda")


def test_use_backend_all_ops(monkeypatch):
    set_cuda_compiled(monkeypatch, *OPS)
    with use_backend("triton"):
        assert all(resolve(op, "cuda") == "triton" for op in TRITON_OPS)
        assert all(resolve(op, "cuda") == "cuda" for op in backends.NO_TRITON_OPS)  # no Triton op: unchanged
        assert resolve("conv2d_act", "cpu") == "cpu"                     # CPU tensors: not without the interpreter
    assert all(resolve(op, "cuda") == "cuda" for op in OPS)              # restored
    with use_backend("reference"):
        assert resolve("inception_block", "cuda") == "reference"


def test_use_backend_per_op_and_nesting():
    with use_backend(conv2d_act="reference"):
        assert resolve("conv2d_act", "cuda") == "reference"
        assert resolve("add_relu", "cuda") == "triton"                   # the default
        with use_backend("cuda"):                                        # an inner all-ops choice replaces it
            assert resolve("conv2d_act", "cuda") == "cuda"
            with use_backend(add_relu="reference"):
                assert resolve("add_relu", "cuda") == "reference"
                assert resolve("conv2d_act", "cuda") == "cuda"
        assert resolve("conv2d_act", "cuda") == "reference"
    with use_backend("cuda", add_relu="triton"):                         # per-op entries beat the all-ops one
        assert resolve("add_relu", "cuda") == "triton"
        assert resolve("dwsep_conv2d", "cuda") == "cuda"


def test_use_backend_restores_after_exception():
    with pytest.raises(KeyError):
        with use_backend("reference"):
            raise KeyError
    assert resolve("conv2d_act", "cuda") == "triton"


@pytest.mark.parametrize("kwargs, match", [
    (dict(backend="cudnn"), "unknown backend 'cudnn'"),
    (dict(conv2d_act="fast"), "unknown backend 'fast'"),
    (dict(conv3d="triton"), "unknown op 'conv3d'"),
])
def test_use_backend_rejects_unknown(kwargs, match):
    backend = kwargs.pop("backend", None)
    with pytest.raises(ValueError, match=match):
        with use_backend(backend, **kwargs):
            pass


def test_use_backend_is_thread_local():
    seen = {}

    def other():
        seen["other"] = resolve("conv2d_act", "cuda")

    with use_backend("reference"):
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert resolve("conv2d_act", "cuda") == "reference"
    assert seen["other"] == "triton"


def test_env_var(monkeypatch):
    set_cuda_compiled(monkeypatch, *OPS)
    monkeypatch.setenv(ENV_VAR, "triton")
    assert all(resolve(op, "cuda") == "triton" for op in TRITON_OPS)
    monkeypatch.setenv(ENV_VAR, " conv2d_act = reference , add_relu=triton ")
    assert resolve("conv2d_act", "cuda") == "reference"
    assert resolve("add_relu", "cuda") == "triton"
    assert resolve("inception_block", "cuda") == "cuda"                  # the default
    monkeypatch.setenv(ENV_VAR, "conv2d_act=cuda,reference")             # per-op beats all-ops, in any order
    assert resolve("conv2d_act", "cuda") == "cuda"
    assert resolve("add_relu", "cuda") == "reference"
    monkeypatch.setenv(ENV_VAR, "")
    assert resolve("add_relu", "cuda") == "cuda"
    monkeypatch.setenv(ENV_VAR, "triton")
    with use_backend(add_relu="cuda"):                                   # use_backend beats the environment
        assert resolve("add_relu", "cuda") == "cuda"
        assert resolve("conv2d_act", "cuda") == "triton"


@pytest.mark.parametrize("value, match", [("cudnn", "unknown backend 'cudnn'"),
                                          ("conv3d=triton", "unknown op 'conv3d'"),
                                          ("add_relu=", "unknown backend ''")])
def test_env_var_rejects_unknown(monkeypatch, value, match):
    monkeypatch.setenv(ENV_VAR, value)
    with pytest.raises(ValueError, match=match) as e:
        resolve("add_relu", "cuda")
    assert ENV_VAR in str(e.value)


def test_triton_on_cpu_only_in_interpreter(monkeypatch):
    with use_backend("triton"):
        assert resolve("conv2d_act", "cpu") == "cpu"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert resolve("conv2d_act", "cpu") == "triton"
        assert resolve("conv2d_act", "cuda") == "triton"
    with use_backend("reference"):                                       # only "triton" applies to CPU tensors
        assert resolve("conv2d_act", "cpu") == "cpu"
    monkeypatch.setenv(ENV_VAR, "add_relu=triton")
    assert resolve("add_relu", "cpu") == "triton"
    assert resolve("conv2d_act", "cpu") == "cpu"


def test_backend_table(monkeypatch):
    set_cuda_compiled(monkeypatch, "add_relu")
    monkeypatch.setitem(_library.KERNEL_SOURCES, "conv2d_act", {"CPU": "reference", "CUDA": "reference"})
    table = backend_table()
    assert set(table) == set(OPS)
    assert table["add_relu"] == {"cpu": "compiled", "cuda": "cuda"}
    assert table["conv2d_act"] == {"cpu": "reference", "cuda": "triton"}
    with use_backend("cuda"):                                            # no compiled CUDA kernel: the reference runs
        assert backend_table()["conv2d_act"]["cuda"] == "reference"
        assert backend_table()["add_relu"]["cuda"] == "cuda"
    with use_backend("triton"):
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert backend_table()["dwsep_conv2d"] == {"cpu": "triton", "cuda": "triton"}


def test_resolve_under_torch_compile():
    """resolve() is an assume_constant_result: a wrapper branching on it compiles to one graph (fullgraph)."""
    def wrapper(x, r):
        if resolve("add_relu", x.device.type) == "cpu":
            return torch.ops.cnnkernels.add_relu(x, r)
        return torch.relu(x + r) * 0

    x, r = torch.randn(2, 3, 4, 5), torch.randn(2, 3, 4, 5)
    out = torch.compile(wrapper, fullgraph=True, backend="eager")(x, r)
    torch.testing.assert_close(out, torch.relu(x + r))


def test_choosing_triton_registers_the_triton_op(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.undo()                                                  # the real _ensure_triton_op
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    try:
        import cnnkernels.triton  # noqa: F401  (fails without the main op modules' Python registrations)
    except ImportError as e:
        pytest.skip(f"cnnkernels.triton cannot be imported: {e}")
    with use_backend("triton"):
        assert resolve("conv2d_act", "cuda") == "triton"
    assert hasattr(torch.ops.cnnkernels, "conv2d_act_triton")


def test_ops_without_triton(monkeypatch):
    # A "triton" choice for an op that has no Triton implementation runs what it runs without one.
    cuda = "cuda" if backends.cuda_compiled("nms") else "reference"
    with use_backend("triton", nms="triton"):
        assert resolve("nms", "cuda") == cuda
        assert resolve("nms", "cpu") == "cpu"
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        assert resolve("nms", "cpu") == "cpu"
        assert backend_table()["nms"] == {"cpu": _library.KERNEL_SOURCES["nms"]["CPU"], "cuda": cuda}
