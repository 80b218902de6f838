"""Classes of optional packages (torchvision), looked up without importing them.

A model can only hold an instance of a torchvision class if torchvision has been imported, so code that recognises
such classes asks `sys.modules` instead of importing torchvision itself: `import cnnkernels` stays free of
torchvision's import time, and nothing changes when torchvision is not installed."""

from __future__ import annotations

import sys
from typing import Optional


def loaded_class(module: str, name: str) -> Optional[type]:
    """`module.name` if `module` is already imported, else None."""
    return getattr(sys.modules.get(module), name, None)


def is_instance_of(obj: object, module: str, name: str) -> bool:
    """type(obj) is exactly `module.name` (False when that module was never imported)."""
    cls = loaded_class(module, name)
    return cls is not None and type(obj) is cls
