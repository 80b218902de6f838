"""BatchNorm folding, the folded-weight cache, and recognition of conv(+norm)(+activation) units.

Folding: for y = BN(conv(x)), w' = w * s and b' = beta + (b - mean) * s with s = gamma / sqrt(var + eps), so that
conv(x, w', b') == BN(conv(x)) in eval mode. It is done under torch.no_grad() in fp32 (fp64 for fp64 weights) and the
result cast back to the weight's dtype.

The cache: a fused module folds once and reuses the result while nothing it was folded from changed. What it was
folded from is every module in its fold scope (compared by identity), their `training` flags, and every parameter and
buffer (compared by identity, `_version`, data pointer, dtype, device and shape), plus the norms' eps. An optimizer
step or load_state_dict bumps `_version`; `.to()`/`.half()` change the data pointer or dtype; assigning a new
Parameter or module changes an identity; a train()/eval() mode flip clears the cache outright. Cached tensors live
in the module's __dict__, never as parameters or buffers, so state_dict is untouched. A refold writes into the
previous fold's tensors when their layout is unchanged.

Under torch.compile the graph does not fold: the fold runs eagerly while the graph is traced (outside the graph, via
torch.compiler.assume_constant_result) and the graph reads the cached tensors as inputs. Folding inside the graph
would hand the ops a freshly allocated weight every call, which their packed-weight cache (keyed by storage and
version counter) both keeps alive (memory grows by the model's size per call) and can confuse with a previous weight
when inductor reuses a buffer without bumping its version (wrong results). See FoldCacheMixin for how compiled models
stay current.
"""

from __future__ import annotations

import operator
from typing import Any, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from cnnkernels._optional import is_instance_of

__all__ = ["fold_conv_bn", "activation_name", "gate_name", "is_foldable_norm", "conv_unit", "ConvUnit",
           "FoldCacheMixin", "count_folds", "conv_is_fusable", "refresh_folds", "fusion", "fusion_enabled"]


_FUSION = {"enabled": True}


class fusion:
    """Context manager (and function) switching the eval-mode fused path of every cnnkernels.nn module on or off:
    `with cnnkernels.nn.fusion(False): model(x)` runs the plain torch.nn submodules (BatchNorm with running
    statistics) instead, e.g. to compare against. Process-wide, not thread-local."""

    def __init__(self, enabled: bool) -> None:
        self.prev = _FUSION["enabled"]
        _FUSION["enabled"] = bool(enabled)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        _FUSION["enabled"] = self.prev


def fusion_enabled() -> bool:
    return _FUSION["enabled"]


_BN_TYPES = (nn.BatchNorm2d, nn.SyncBatchNorm)


def is_batchnorm(m: Optional[nn.Module]) -> bool:
    """A BatchNorm the folding knows: BatchNorm2d, SyncBatchNorm or torchvision's FrozenBatchNorm2d (exact types: a
    subclass may normalise differently)."""
    return type(m) in _BN_TYPES or is_instance_of(m, "torchvision.ops.misc", "FrozenBatchNorm2d")


def is_foldable_norm(norm: Optional[nn.Module]) -> bool:
    """None / Identity (nothing to fold), a BatchNorm in eval mode with running statistics, or FrozenBatchNorm2d."""
    if norm is None or type(norm) is nn.Identity:
        return True
    if type(norm) in _BN_TYPES:  # not the frozen type: that one has no training mode and always folds
        # A BN without running stats (or one left in training mode) normalises with batch statistics: not foldable.
        return (not norm.training) and norm.track_running_stats and norm.running_mean is not None \
            and norm.running_var is not None
    return is_batchnorm(norm)


def activation_name(act: Optional[nn.Module]) -> Optional[str]:
    """The op's activation string for a module, "none" for None/Identity, or None when the ops cannot apply it."""
    if act is None or type(act) is nn.Identity:
        return "none"
    if type(act) is nn.ReLU:
        return "relu"
    if type(act) is nn.ReLU6:
        return "relu6"
    if type(act) is nn.Hardtanh and act.min_val == 0.0 and act.max_val == 6.0:
        return "relu6"
    if type(act) is nn.SiLU:
        return "silu"
    if type(act) is nn.Hardswish:
        return "hardswish"
    return None


def gate_name(gate: Optional[nn.Module]) -> Optional[str]:
    """mbconv's squeeze-and-excitation gate string for a module (nn.Sigmoid, nn.Hardsigmoid), else None."""
    if type(gate) is nn.Sigmoid:
        return "sigmoid"
    if type(gate) is nn.Hardsigmoid:
        return "hardsigmoid"
    return None


def conv_is_fusable(conv: nn.Module) -> bool:
    """A plain 2-D convolution the ops can run: nn.Conv2d itself, zero padding given as numbers."""
    return (type(conv) is nn.Conv2d and conv.padding_mode == "zeros" and not isinstance(conv.padding, str)
            and not conv.training)


def fold_conv_bn(conv: nn.Conv2d, norm: Optional[nn.Module]) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(w', b') such that conv2d(x, w', b') == norm(conv(x)) in eval mode. b' is None only without norm and bias."""
    w, b = conv.weight, conv.bias
    if norm is None or type(norm) is nn.Identity:
        return w, b
    with torch.no_grad():
        acc = torch.float64 if w.dtype == torch.float64 else torch.float32
        mean = norm.running_mean.to(acc)
        var = norm.running_var.to(acc)
        scale = torch.rsqrt(var + norm.eps)
        if getattr(norm, "weight", None) is not None:
            scale = scale * norm.weight.to(acc)
        shift = -mean if b is None else b.to(acc) - mean
        bias = shift * scale
        if getattr(norm, "bias", None) is not None:
            bias = bias + norm.bias.to(acc)
        w2 = (w.to(acc) * scale.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype)
        return w2, bias.to(w.dtype)


class ConvUnit(NamedTuple):
    """A conv, the norm after it (held by `owner` under attribute `norm_name`; None when absent) and the activation."""
    conv: nn.Conv2d
    owner: Optional[nn.Module]
    norm_name: Optional[str]
    act: str

    @property
    def norm(self) -> Optional[nn.Module]:
        return None if self.owner is None else getattr(self.owner, self.norm_name)


def conv_unit(m: nn.Module) -> Optional[ConvUnit]:
    """Recognises conv(+norm)(+act) modules whose eval-mode forward is exactly act(norm(conv(x))):
    cnnkernels BasicConv2d / torchvision googlenet BasicConv2d (conv, bn, ReLU), and Sequentials (ConvBNAct,
    torchvision Conv2dNormActivation, plain nn.Sequential) of [Conv2d, norm?, act?]. Returns None otherwise, or when
    some part cannot be fused (a non-foldable norm, an activation the ops lack, a conv the ops cannot run).

    A class of this package declares such a layout as `CONV_UNIT = (conv attribute, norm attribute, activation)` in
    its own body (a subclass may change forward, so an inherited declaration does not count)."""
    layout = type(m).__dict__.get("CONV_UNIT")
    if layout is None and is_instance_of(m, "torchvision.models.googlenet", "BasicConv2d"):
        layout = ("conv", "bn", "relu")
    if layout is not None:
        conv_name, norm_name, act = layout
        if m.training or not conv_is_fusable(getattr(m, conv_name)) or not is_foldable_norm(getattr(m, norm_name)):
            return None
        return ConvUnit(getattr(m, conv_name), m, norm_name, act)
    if isinstance(m, nn.Sequential) and not m.training and 1 <= len(m) <= 3:
        mods = list(m)
        if not conv_is_fusable(mods[0]):
            return None
        norm_name, act = None, "none"
        rest = mods[1:]
        if rest and (is_batchnorm(rest[0]) or (len(rest) == 2 and type(rest[0]) is nn.Identity)):
            if not is_foldable_norm(rest[0]):
                return None
            norm_name = list(m._modules)[1]
            rest = rest[1:]
        if rest:
            act = activation_name(rest[0])
            if act is None or len(rest) > 1:
                return None
        return ConvUnit(mods[0], m if norm_name else None, norm_name, act)
    return None


def _norm_eps(m: nn.Module) -> Optional[float]:
    return getattr(m, "eps", None) if is_batchnorm(m) else None


class _FoldState:
    __slots__ = ("objects", "signature", "value", "tensors", "tensor_signature")

    def __init__(self, objects, signature, value):
        self.objects, self.signature, self.value = objects, signature, value
        self.tensors = tuple(o for o in objects if isinstance(o, torch.Tensor))
        self.tensor_signature = _tensor_signature(self.tensors)


def _tensor_signature(tensors) -> List[Tuple[int, int]]:
    return [(t._version, t.data_ptr()) for t in tensors]


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _reuse_storage(old: Any, new: Any, sources: set) -> Any:
    """`new`, except that every tensor of a previous fold with the same layout is updated in place and reused.

    Reusing the storage keeps the tensors that compiled graphs read current, and lets the ops' packed-weight cache
    (keyed by storage and version counter) repack the same entry instead of pinning a new one per refold. `sources`
    holds the storages of the module's own parameters and buffers: a fold tensor that shares one (a view of a
    weight, as nn.Linear's fold) is never written to, since that would write into the user's tensor and bump its
    version counter, which would then trigger another refold on the next call."""
    if isinstance(new, torch.Tensor):
        if (isinstance(old, torch.Tensor) and not isinstance(old, nn.Parameter) and _storage(old) not in sources
                and _storage(new) not in sources
                and old.shape == new.shape and old.dtype == new.dtype and old.device == new.device
                and old.stride() == new.stride() and not old.requires_grad):
            old.copy_(new)
            return old
        return new
    if isinstance(new, tuple) and isinstance(old, tuple) and len(old) == len(new):
        return tuple(_reuse_storage(a, b, sources) for a, b in zip(old, new))
    return new


def _refold_after_load(module: nn.Module, incompatible_keys) -> None:
    """load_state_dict post-hook: refold now (in place), so that compiled graphs reading the folds see the new
    weights (eager calls would notice the version change anyway)."""
    if "_fold_value" in module.__dict__ and not module.training:
        module._folded_eager()


@torch.compiler.assume_constant_result
def _refresh_at_trace(module: nn.Module) -> int:
    """Run eagerly while torch.compile traces (not part of the graph): makes module._fold_value current, so the graph
    reads the cached folded tensors as inputs instead of recomputing the fold into fresh buffers every call."""
    from torch._subclasses.fake_tensor import unset_fake_temporarily
    with unset_fake_temporarily():
        module._folded_eager()
    return 0


class FoldCacheMixin:
    """Caches the result of `_compute_fold()` (folded weights and the fusion plan) for an nn.Module subclass.

    Subclasses implement `_compute_fold()` (called under no_grad; returns anything, None meaning "not fusable") and
    may override `_fold_scope()` (the modules whose parameters, buffers and structure the fold reads; default: the
    module itself). `folded()` returns the cached value, recomputing it only when the scope changed.

    Eager calls validate the cache on every call (cheap: identities, version counters, data pointers; a module frozen
    by optimize(freeze=True) checks only the version counters and data pointers of the tensors it folded). Under
    torch.compile the graph reads the cached tensors (`_fold_value`) as inputs: the fold runs eagerly when the graph is
    traced, again (in place, so the graph sees it) on load_state_dict, on eval() after train(), and on any eager call
    that finds the weights changed. After modifying weights in place while only calling the compiled model (e.g. an
    optimizer step on an eval-mode model), call cnnkernels.nn.refresh_folds(model) or run it eagerly once."""

    #: What the fused path runs, as optimize(verbose=True) prints it.
    FUSED_DESCRIPTION = "fused"
    #: (conv attribute, norm attribute) for each BatchNorm that directly follows a conv in forward(): optimize()
    #: folds those into the conv's weights for good and replaces the norm by nn.Identity.
    CONV_BN_PAIRS: Tuple[Tuple[str, str], ...] = ()

    def _fold_scope(self) -> Sequence[nn.Module]:
        return (self,)

    def describe_fusion(self) -> Optional[str]:
        """What the fused path runs, or None when this module would run its plain submodules (nothing fusable)."""
        with torch.no_grad():
            return None if self._compute_fold() is None else self.FUSED_DESCRIPTION

    def conv_bn_pairs(self):
        """Yields (conv, owner, norm attribute of owner) for every BatchNorm that directly follows a conv in
        forward() and can be folded into it for good."""
        for conv_name, norm_name in self.CONV_BN_PAIRS:
            conv, norm = getattr(self, conv_name, None), getattr(self, norm_name, None)
            if conv is not None and norm is not None and conv_is_fusable(conv) and is_batchnorm(norm):
                yield conv, self, norm_name

    @property
    def fold_frozen(self) -> bool:
        """True after freeze_fold(): the module's structure is taken as fixed (see folded())."""
        return self.__dict__.get("_fold_frozen", False)

    def freeze_fold(self) -> None:
        """Takes this module's structure as fixed, as optimize(freeze=True) does: each call then checks only the
        version counters and data pointers of the tensors the fold read, not every submodule. Undone by nothing but
        a copy of the module that is not frozen; refresh_folds() or a train()/eval() switch still refold."""
        self.__dict__["_fold_frozen"] = True

    def _compute_fold(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def fold_count(self) -> int:
        """How many times this module folded its weights (for tests and diagnostics)."""
        return self.__dict__.get("_fold_count", 0)

    def clear_fold_cache(self) -> None:
        self.__dict__.pop("_fold_state", None)

    def _fold_key(self):
        # Runs on every eager call, so it walks `_modules` directly (Module.modules() builds prefix strings and a memo
        # set, which cost more than the kernels of a small layer) and flattens the signature into one list.
        objects: List[Any] = []
        signature: List[Any] = []
        stack = list(reversed(self._fold_scope()))
        while stack:
            mod = stack.pop()
            objects.append(mod)
            signature.append(mod.training)
            signature.append(_norm_eps(mod))
            for tensors in (mod._parameters, mod._buffers):
                for t in tensors.values():
                    objects.append(t)
                    if t is not None:
                        signature += (t._version, t.data_ptr(), t.dtype, t.device, t.shape)
            children = mod._modules
            if children:
                stack.extend(c for c in reversed(children.values()) if c is not None)
        return objects, signature

    def folded(self) -> Any:
        if torch.compiler.is_compiling():
            _refresh_at_trace(self)
            return self._fold_value
        state = self.__dict__.get("_fold_state")
        # Frozen (optimize(freeze=True)): the scope's structure is taken as fixed, so only the version counters and
        # data pointers of the tensors the fold read are checked, not a walk over every submodule (most of the
        # per-call Python cost of a fused module).
        if state is not None and self.fold_frozen \
                and _tensor_signature(state.tensors) == state.tensor_signature:
            return state.value
        return self._folded_eager()

    def _folded_eager(self) -> Any:
        try:
            objects, signature = self._fold_key()
        except RuntimeError:  # e.g. inference tensors have no version counter: fold every call, never stale
            objects, signature = None, None
        state = self.__dict__.get("_fold_state")
        if objects is not None and state is not None and state.signature == signature \
                and len(state.objects) == len(objects) and all(map(operator.is_, state.objects, objects)):
            return state.value
        if objects is None:
            # Inference-tensor weights (a model built under inference_mode, not passed through optimize(), which
            # copies them into normal tensors): no version counters to validate a cache with, so fold every call,
            # into inference tensors, which the ops' packed-weight cache does not keep.
            with torch.inference_mode():
                value = self._compute_fold()
        else:
            with torch.inference_mode(False), torch.no_grad():
                value = self._compute_fold()
                if "_fold_value" in self.__dict__:
                    sources = {_storage(o) for o in objects if isinstance(o, torch.Tensor)}
                    value = _reuse_storage(self.__dict__["_fold_value"], value, sources)
            self.__dict__["_fold_state"] = _FoldState(objects, signature, value)
        self.__dict__["_fold_value"] = value
        self.__dict__["_fold_count"] = self.__dict__.get("_fold_count", 0) + 1
        if _refold_after_load not in self._load_state_dict_post_hooks.values():
            self.register_load_state_dict_post_hook(_refold_after_load)
        return value

    def train(self, mode: bool = True):
        flip = self.training != mode
        if flip:
            self.__dict__.pop("_fold_state", None)  # a mode flip always refolds
        out = super().train(mode)
        if flip and not mode and "_fold_value" in self.__dict__ and not torch.compiler.is_compiling():
            self._folded_eager()  # back in eval mode: refold now so compiled graphs see the new statistics
        return out

    def __getstate__(self):
        state = self.__dict__.copy()
        for k in ("_fold_state", "_fold_value"):
            state.pop(k, None)
        return state


def refresh_folds(model: nn.Module) -> int:
    """Re-validates the folded weights of every fused module in `model` now (refolding, in place, those whose
    weights changed); returns how many refolded. Only needed for compiled models whose weights were changed in place
    without any eager call, load_state_dict or train()/eval() in between."""
    n = 0
    for m in model.modules():
        if isinstance(m, FoldCacheMixin) and not m.training:
            before = m.fold_count
            m._folded_eager()
            n += m.fold_count != before
    return n


def count_folds(model: nn.Module) -> int:
    """Total number of folds performed by the fused modules in `model` (diagnostics; see FoldCacheMixin)."""
    return sum(m.fold_count for m in model.modules() if isinstance(m, FoldCacheMixin))
