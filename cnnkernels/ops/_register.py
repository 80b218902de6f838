"""One call that gives an op its fake kernel and autograd formula, and keeps them for the op's other
implementations (the Triton op `cnnkernels::<op>_triton` has the same signature, validation and backward)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

import torch


@dataclass(frozen=True)
class OpHooks:
    fake: Callable
    backward: Callable
    setup_context: Callable


_HOOKS: Dict[str, OpHooks] = {}


def register_op_hooks(op: str, *, fake: Callable, backward: Callable, setup_context: Callable) -> None:
    """Registers `fake` and the autograd formula for cnnkernels::<op>, and records them for op_hooks(op)."""
    hooks = OpHooks(fake, backward, setup_context)
    apply_op_hooks(f"cnnkernels::{op}", hooks)
    _HOOKS[op] = hooks


def op_hooks(op: str) -> OpHooks:
    """The hooks cnnkernels.ops.<op> registered (importing cnnkernels registers every op's)."""
    try:
        return _HOOKS[op]
    except KeyError:
        raise ValueError(f"cnnkernels: no hooks registered for op '{op}'; registered: {', '.join(sorted(_HOOKS))}") \
            from None


def apply_op_hooks(qualname: str, hooks: OpHooks) -> None:
    """Registers `hooks` for the op `qualname` ("namespace::name")."""
    torch.library.register_fake(qualname)(hooks.fake)
    torch.library.register_autograd(qualname, hooks.backward, setup_context=hooks.setup_context)
