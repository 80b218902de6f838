"""Benchmark providers: ways of running one case. `prepare` returns a zero-argument callable doing one forward pass;
run.py checks its output against the reference and times it (everything runs under torch.inference_mode()). The
tensors handed to `prepare` are already on the benchmark's device.

  cnnkernels          (CPU) the fused op, channels_last input (weights as given: the op re-lays them out once and
                      caches them)
  cnnkernels-cuda     (CUDA) the fused op under cnnkernels.use_backend("cuda"): its compiled CUDA kernel (or the
                      reference where the library has none; marked * in the table)
  cnnkernels-triton   (CUDA) the same under cnnkernels.use_backend("triton"): its Triton kernel
  eager-nchw          the torch.nn.functional composition the op replaces, NCHW input and weights (cuDNN on CUDA)
  eager-cl            the same composition, channels_last input and weights
  compile             torch.compile of that composition as a module with its weights as frozen parameters
                      (torch._inductor.config.freezing = True), channels_last; timed after compilation
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import torch

from cnnkernels._library import cpu_kernel_source

from cases import Case, Tensors

CL = torch.channels_last


def _to(t: Optional[torch.Tensor], memory_format) -> Optional[torch.Tensor]:
    if t is None:
        return None
    return t.contiguous(memory_format=memory_format) if t.dim() == 4 else t.contiguous()


class Provider:
    name: str = ""

    def prepare(self, case: Case, x: torch.Tensor, acts: Tensors, w: Tensors) -> Callable[[], torch.Tensor]:
        raise NotImplementedError

    def backend(self, case: Case, dtype: torch.dtype) -> Optional[str]:
        """For cnnkernels: which implementation serves the case ("compiled", "reference"; on CUDA "cuda", "triton")."""
        return None


class Cnnkernels(Provider):
    """cuda_backend None: CPU tensors (the op's CPU kernel); else the CUDA backend chosen with use_backend()."""

    def __init__(self, name: str = "cnnkernels", cuda_backend: Optional[str] = None):
        self.name, self.cuda_backend = name, cuda_backend

    def prepare(self, case, x, acts, w):
        import cnnkernels

        spec = case.spec
        fused = spec.fused_callable()
        kwargs = spec.op_args(case, _to(x, CL), {k: _to(v, CL) for k, v in acts.items()}, w)
        if self.cuda_backend is None:
            return lambda: fused(**kwargs)
        backend = self.cuda_backend

        def run():
            # use_backend is context-local, so it is entered per call (a contextvar set: ~1 us)
            with cnnkernels.use_backend(backend):
                return fused(**kwargs)
        return run

    def backend(self, case, dtype):
        """What serves the case: on CPU "compiled", "aten-fp64" or "reference" (cpu_kernel_source); on CUDA what use_backend(cuda_backend) resolves
        to: "cuda", "triton", or "reference" where the op has no compiled CUDA kernel."""
        if self.cuda_backend is None:
            return cpu_kernel_source(case.op, dtype)
        import cnnkernels
        from cnnkernels.backends import backend_table

        with cnnkernels.use_backend(self.cuda_backend):
            return backend_table().get(case.op, {}).get("cuda")


class Eager(Provider):
    def __init__(self, name: str, memory_format):
        self.name, self.memory_format = name, memory_format

    def prepare(self, case, x, acts, w):
        mf = self.memory_format
        x, acts, w = _to(x, mf), {k: _to(v, mf) for k, v in acts.items()}, {k: _to(v, mf) for k, v in w.items()}
        return lambda: case.spec.eager(case, x, acts, w)


class Block(torch.nn.Module):
    """The eager composition as a module whose weights are parameters, so that inductor's freezing can fold them."""

    def __init__(self, case: Case, w: Tensors):
        super().__init__()
        self.case = case
        self.names = list(w)
        for k, v in w.items():
            self.register_parameter(k, None if v is None else torch.nn.Parameter(v, requires_grad=False))

    def forward(self, x, acts: Dict[str, torch.Tensor]):
        return self.case.spec.eager(self.case, x, acts, {k: getattr(self, k) for k in self.names})


class Compile(Provider):
    name = "compile"

    def __init__(self):
        self.compile_s: Dict[str, float] = {}

    def prepare(self, case, x, acts, w):
        import torch._dynamo
        import torch._inductor.config

        torch._inductor.config.freezing = True
        torch._dynamo.reset()  # one fresh compilation per case (and no recompile limit across cases)
        module = Block(case, w).eval().to(memory_format=CL)
        compiled = torch.compile(module)
        x, acts = _to(x, CL), {k: _to(v, CL) for k, v in acts.items()}
        t0 = time.perf_counter()
        compiled(x, acts)  # compiles
        self.compile_s[case.name] = time.perf_counter() - t0
        return lambda: compiled(x, acts)


def all_providers(device: str = "cpu") -> List[Provider]:
    fused: List[Provider] = [Cnnkernels()]
    if device == "cuda":
        fused = [Cnnkernels("cnnkernels-cuda", "cuda"), Cnnkernels("cnnkernels-triton", "triton")]
    return fused + [Eager("eager-nchw", torch.contiguous_format), Eager("eager-cl", CL), Compile()]


PROVIDER_NAMES = [p.name for p in all_providers()]
CUDA_PROVIDER_NAMES = [p.name for p in all_providers("cuda")]
PEERS = ["eager-nchw", "eager-cl", "compile"]  # what cnnkernels is compared with
