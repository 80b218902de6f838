"""Benchmark providers: ways of running one case. `prepare` returns a zero-argument callable doing one forward pass;
run.py checks its output against the reference and times it (everything runs under torch.inference_mode()).

  cnnkernels   the fused op, channels_last input (weights as given: the op re-lays them out once and caches them)
  eager-nchw   the torch.nn.functional composition the op replaces, NCHW input and weights
  eager-cl     the same composition, channels_last input and weights
  compile      torch.compile of that composition as a module with its weights as frozen parameters
               (torch._inductor.config.freezing = True), channels_last; timed after compilation
"""

from __future__ import annotations

import time
from typing import Callable, Dict, List, Optional

import torch

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

    def backend(self, case: Case) -> Optional[str]:
        """For cnnkernels: which implementation served the case on CPU ("compiled" or "reference")."""
        return None


class Cnnkernels(Provider):
    name = "cnnkernels"

    def prepare(self, case, x, acts, w):
        spec = case.spec
        fused = spec.fused_callable()
        kwargs = spec.op_args(case, _to(x, CL), {k: _to(v, CL) for k, v in acts.items()}, w)
        return lambda: fused(**kwargs)

    def backend(self, case):
        from cnnkernels._library import BACKENDS

        return BACKENDS.get(case.op, {}).get("CPU", "missing")


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


def all_providers() -> List[Provider]:
    return [Cnnkernels(), Eager("eager-nchw", torch.contiguous_format), Eager("eager-cl", CL), Compile()]


PROVIDER_NAMES = [p.name for p in all_providers()]
