"""Name -> builder registry behind cnnkernels.models.list_models() / get_model()."""

from __future__ import annotations

from typing import Callable, Dict, List

from torch import nn

_MODELS: Dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is already registered")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> List[str]:
    """Names accepted by get_model(), sorted."""
    return sorted(_MODELS)


def get_model(name: str, **kwargs) -> nn.Module:
    """Builds model `name` (randomly initialised) with the builder's keyword arguments, e.g.
    get_model("resnet18", num_classes=10, in_channels=1)."""
    try:
        fn = _MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}") from None
    return fn(**kwargs)
