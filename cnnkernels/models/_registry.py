"""Name -> builder registry behind cnnkernels.models.list_models() / get_model()."""

from __future__ import annotations

from typing import Callable, Dict, List, Optional

from torch import nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}
# What each model's output is: "classification" (N x classes logits) unless registered otherwise, so that code made
# for classifiers (heads, crops, transfer learning) can pick them out with list_models(task="classification").
_TASKS: Dict[str, str] = {}


def register_model(fn: Optional[Callable[..., nn.Module]] = None, *, task: str = "classification"):
    """Registers builder `fn` under its __name__: `@register_model`, or `@register_model(task="segmentation")` for a
    model whose output is not N x classes logits."""
    if not isinstance(task, str) or not task:
        raise ValueError(f"task must be a non-empty string, got {task!r}")

    def register(f: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if f.__name__ in _MODELS:
            raise ValueError(f"model {f.__name__!r} is already registered")
        _MODELS[f.__name__] = f
        _TASKS[f.__name__] = task
        return f

    return register if fn is None else register(fn)


def list_models(task: Optional[str] = None) -> List[str]:
    """Names accepted by get_model(), sorted; only those registered for `task` (e.g. "classification",
    "segmentation") when it is given."""
    return sorted(n for n in _MODELS if task is None or _TASKS[n] == task)


def model_task(name: str) -> str:
    """The task model `name` was registered for ("classification", "segmentation", ...)."""
    if name not in _TASKS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _TASKS[name]


def get_model(name: str, **kwargs) -> nn.Module:
    """Builds model `name` (randomly initialised) with the builder's keyword arguments, e.g.
    get_model("resnet18", num_classes=10, in_channels=1)."""
    try:
        fn = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None
    return fn(**kwargs)
