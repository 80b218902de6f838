"""cnnkernels: fused CNN kernels exposed as torch ops (torch.ops.cnnkernels.*)."""

__version__ = "0.1.0"

from cnnkernels import _library  # noqa: F401  (loads the compiled ops or sets up the fallback)
from cnnkernels.ops import *  # noqa: F401,F403
from cnnkernels.ops import __all__ as _ops_all
from cnnkernels import backends  # noqa: F401,E402  (which implementation runs an op for CUDA tensors)
from cnnkernels.backends import use_backend  # noqa: E402
from cnnkernels import nn, models  # noqa: E402  (drop-in fused modules; model zoo)
from cnnkernels.optimize import optimize  # noqa: E402
from cnnkernels.convolutionalize import convolutionalize  # noqa: E402

__all__ = list(_ops_all) + ["backends", "use_backend", "nn", "models", "optimize", "convolutionalize"]
