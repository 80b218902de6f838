"""Transfer learning for the models of cnnkernels.models and their torchvision counterparts (and any nn.Module that
ends in an nn.Linear classifier): freeze a trained body, give the model a new classifier, unfreeze it stage by stage.

Frozen means two things, both kept by `freeze()` and undone by `unfreeze()` / `freeze(..., until=...)`:

* the module's own parameters have requires_grad=False;
* the module always behaves as in eval mode, even after `model.train()`: a frozen BatchNorm normalises with its running
  statistics and never updates them (num_batches_tracked included), a frozen Dropout passes its input through, and
  a frozen cnnkernels.nn block runs the fused ops with its BatchNorm folded, exactly as at inference.

The mode is kept by a small callable that `freeze()` stores in the frozen module's instance `__dict__` under the name
`train`, where it shadows nn.Module.train: `model.train(mode)` reaches every module through `child.train(mode)`, and a
frozen module answers by staying in eval mode, remembering `mode` (restored when it is unfrozen) and passing `mode` on
to its children (a trainable module placed inside a frozen one, e.g. a new head, still follows `model.train()`).
Nothing is added to the state_dict (the keys stay identical; strict loading works both ways), and the freezing
survives `copy.deepcopy` and pickling. `cnnkernels.optimize()` folds the frozen BatchNorms like any other (it needs
the whole model in eval mode, as always). `is_frozen(module)` tells whether a module is frozen; calling
`requires_grad_()` on a frozen module changes its parameters but not its mode.
"""

from __future__ import annotations

import difflib
from typing import Dict, List, Optional

from torch import nn

from cnnkernels.nn import FoldCacheMixin, FusedSequential

__all__ = ["freeze", "unfreeze", "stages", "replace_head", "head_name", "aux_head_names", "is_frozen"]

# Containers whose children count as separate stages: plain sequences of layers. Sequential subclasses that are layers
# themselves (cnnkernels ConvBNAct, torchvision Conv2dNormActivation) are one stage each.
_STAGE_CONTAINERS = (nn.Sequential, FusedSequential, nn.ModuleList, nn.ModuleDict)


class _FrozenTrain:
    """The `train` of a frozen module (stored in its instance __dict__, shadowing nn.Module.train).

    Keeps the module itself in eval mode, records the mode asked for (restored when the module is unfrozen) and passes
    that mode on to the children, which decide for themselves (frozen ones through their own _FrozenTrain)."""

    def __init__(self, module: nn.Module, mode: bool) -> None:
        self.module = module
        self.mode = bool(mode)

    def __call__(self, mode: bool = True) -> nn.Module:
        if not isinstance(mode, bool):
            raise ValueError(f"train(): `mode` must be a bool, got {type(mode).__name__}")
        self.mode = mode
        module = self.module
        module.training = False
        for child in module.children():
            child.train(mode)
        return module

    def __repr__(self) -> str:
        return f"<frozen train() of {type(self.module).__name__}, requested mode={self.mode}>"


def is_frozen(module: nn.Module) -> bool:
    """True when `module` itself was frozen by freeze() (it stays in eval mode whatever `model.train()` asks)."""
    return isinstance(module.__dict__.get("train"), _FrozenTrain)


def _trainable_dtype(p) -> bool:
    return p.is_floating_point() or p.is_complex()


def _freeze_module(module: nn.Module) -> None:
    for p in module.parameters(recurse=False):
        p.requires_grad_(False)
    if not is_frozen(module):
        module.__dict__["train"] = _FrozenTrain(module, module.training)
        module.training = False


def _thaw_module(module: nn.Module, params: bool) -> None:
    """Gives `module` its normal train() back, in the mode last asked for; params=True also makes its own parameters
    trainable."""
    if is_frozen(module):
        requested = module.__dict__.pop("train").mode
        if module.training != requested:
            module.training = requested
            if isinstance(module, FoldCacheMixin):
                module.clear_fold_cache()  # as FoldCacheMixin.train does on a mode flip
    if params:
        for p in module.parameters(recurse=False):
            if _trainable_dtype(p):
                p.requires_grad_(True)


def _check_model(model, who: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{who}: `model` must be a torch.nn.Module, got {type(model).__name__}")


def _unknown_module(who: str, arg: str, model: nn.Module, name) -> ValueError:
    names = [n for n, _ in model.named_modules() if n]
    close = difflib.get_close_matches(str(name), names, n=3)
    top = [n for n, _ in model.named_children()]
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    shown = ", ".join(repr(t) for t in top[:8]) + (", ..." if len(top) > 8 else "")
    return ValueError(f"{who}: `{arg}` must be the qualified name of a module of {type(model).__name__} "
                      f"(a name from model.named_modules()), got {name!r}; {hint}top-level modules: {shown}")


def _requested_mode(model: nn.Module) -> bool:
    """The mode model.train()/eval() last asked the root for (a frozen root itself stays in eval mode)."""
    ov = model.__dict__.get("train")
    return ov.mode if isinstance(ov, _FrozenTrain) else model.training


def _make_trainable_from(model: nn.Module, start: str) -> None:
    """Everything registered at or after module `start` (named_modules order) becomes trainable, parameters and mode;
    the ancestors of `start` get their normal mode back (their own parameters are left as they are)."""
    seen = False
    for name, module in model.named_modules():
        if name == start:
            seen = True
        if seen:
            _thaw_module(module, params=True)
        elif name == "" or start.startswith(name + "."):
            _thaw_module(module, params=False)


def freeze(model: nn.Module, until: Optional[str] = None) -> nn.Module:
    """Freezes the body of `model` in place and returns it.

    `until` is the qualified name of the first module left trainable (as listed by `model.named_modules()`, e.g.
    "layer4", "features.12", "fc", "classifier.6"). Every module registered before it in named_modules order is
    frozen: its parameters get requires_grad=False and it stays in eval mode (BatchNorm on running statistics that
    are never updated, Dropout off) even after `model.train()`. `until` itself and every module registered after it
    become trainable again (requires_grad=True, normal train()/eval()), so freeze() can also move the boundary back.
    The modules that contain `until` (the model itself, e.g. "layer4" for "layer4.1") are not frozen, since part of
    them trains, but parameters they hold directly (rare, e.g. a class token on the model) are. `until=None` freezes
    the whole model. `head_name(model)` is the usual `until` for training only the classifier.

    Raises ValueError (with close matches and the top-level names) when `until` names no module of the model."""
    _check_model(model, "freeze")
    if until is None:
        for module in model.modules():
            _freeze_module(module)
        return model
    if not isinstance(until, str):
        raise TypeError(f"freeze: `until` must be a module name (str) or None, got {type(until).__name__}")
    modules: Dict[str, nn.Module] = dict(model.named_modules())
    if until not in modules:
        raise _unknown_module("freeze", "until", model, until)
    for name, module in modules.items():
        if name == until:
            break
        if name == "" or until.startswith(name + "."):
            _thaw_module(module, params=False)
            for p in module.parameters(recurse=False):
                p.requires_grad_(False)
        else:
            _freeze_module(module)
    _make_trainable_from(model, until)
    return model


def _has_params(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def stages(model: nn.Module) -> List[str]:
    """The units unfreeze() counts, first to last: the model's top-level children that hold parameters, except that a
    plain container child (nn.Sequential, cnnkernels FusedSequential, nn.ModuleList, nn.ModuleDict) is replaced by its
    own children that hold parameters. So ResNet's stages are conv1, bn1, layer1.0, ..., layer4.1, fc; VGG's and
    AlexNet's are the conv / BatchNorm / Linear indices of `features` and `classifier`; MobileNet's are the blocks
    features.0 ... features.18 and classifier.1; GoogLeNet's are conv1 ... inception5b, aux1, aux2, fc. A model
    without children but with parameters of its own is one stage, "" (the model)."""
    _check_model(model, "stages")
    out: List[str] = []
    seen = set()
    for name, child in model.named_children():
        if type(child) in _STAGE_CONTAINERS:
            for sub, grandchild in child.named_children():
                if id(grandchild) not in seen and _has_params(grandchild):
                    seen.add(id(grandchild))
                    out.append(f"{name}.{sub}")
        elif id(child) not in seen and _has_params(child):
            seen.add(id(child))
            out.append(name)
    if not out and next(model.parameters(recurse=False), None) is not None:
        out.append("")
    return out


def unfreeze(model: nn.Module, n: int) -> nn.Module:
    """Progressive unfreezing from the top: makes the last `n` stages of `stages(model)` trainable and returns the
    model (in place).

    Everything registered from the first of those stages on becomes trainable, parameters and mode (BatchNorm back on
    batch statistics and Dropout on in training mode), as with `freeze(model, until=stages(model)[-n])` except that
    nothing is frozen: modules already trainable stay so. n=0 changes nothing; n >= len(stages(model)) unfreezes the
    whole model. Raises ValueError for a negative n, TypeError for a non-integer one."""
    _check_model(model, "unfreeze")
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"unfreeze: `n` must be an int (how many stages to unfreeze), got {type(n).__name__}")
    if n < 0:
        raise ValueError(f"unfreeze: `n` must be >= 0 (how many stages to unfreeze from the top), got {n}")
    if n == 0:
        return model
    names = stages(model)
    if n >= len(names):
        for module in model.modules():
            _thaw_module(module, params=True)
        return model
    _make_trainable_from(model, names[-n])
    return model


def head_name(model: nn.Module) -> str:
    """Qualified name of the model's classifier: the last nn.Linear (subclasses included) in registration order, e.g.
    "fc" for ResNet and GoogLeNet, "classifier.6" for AlexNet and VGG, "classifier.1" for MobileNet, "classifier.2"
    for LeNet-5. Raises ValueError when the model holds no nn.Linear."""
    _check_model(model, "head_name")
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"head_name: `model` ({type(model).__name__}) holds no nn.Linear to act as its classifier "
                         f"head")
    return last


def aux_head_names(model: nn.Module, head: Optional[str] = None) -> List[str]:
    """Qualified names of the auxiliary classifiers' final Linears (GoogLeNet's aux1.fc2 and aux2.fc2, Inception v3's
    AuxLogits.fc): within each top-level child whose name contains "aux" (any case) and that does not hold the head,
    the last nn.Linear, when it has as many outputs as the head. `head` defaults to head_name(model)."""
    _check_model(model, "aux_head_names")
    head = head_name(model) if head is None else head
    modules = dict(model.named_modules())
    if head not in modules:
        raise _unknown_module("aux_head_names", "head", model, head)
    out_features = getattr(modules[head], "out_features", None)
    found = []
    for name, child in model.named_children():
        if "aux" not in name.lower() or head == name or head.startswith(name + "."):
            continue
        last = None
        for sub, module in child.named_modules():
            if isinstance(module, nn.Linear):
                last = (f"{name}.{sub}" if sub else name, module)
        if last is not None and last[1].out_features == out_features:
            found.append(last[0])
    return found


def _new_linear(old: nn.Linear, num_classes: int) -> nn.Linear:
    # The same class when it is built like nn.Linear (cnnkernels.nn.Linear, NonDynamicallyQuantizableLinear).
    cls = type(old) if type(old).__init__ is nn.Linear.__init__ else nn.Linear
    return cls(old.in_features, num_classes, bias=old.bias is not None, device=old.weight.device,
               dtype=old.weight.dtype)


def replace_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Replaces the model's classifier (the Linear named by head_name(model)) by a freshly initialised one with
    `num_classes` outputs and returns the model (changed in place); auxiliary classifiers (aux_head_names, e.g.
    GoogLeNet's aux1.fc2 / aux2.fc2) get a new final Linear too. Each new Linear has the old one's in_features, bias
    presence, device, dtype and class (nn.Linear when the old class is built differently), is trainable even if the
    model was frozen before, and follows model.train()/eval(). Raises ValueError for num_classes < 1 or a model
    without an nn.Linear, TypeError for a non-integer num_classes."""
    _check_model(model, "replace_head")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(f"replace_head: `num_classes` must be an int, got {type(num_classes).__name__}")
    if num_classes < 1:
        raise ValueError(f"replace_head: `num_classes` must be >= 1, got {num_classes}")
    head = head_name(model)
    if head == "":
        raise ValueError("replace_head: `model` is itself the nn.Linear head; build a new nn.Linear instead")
    mode = _requested_mode(model)
    for name in [head] + aux_head_names(model, head):
        old = model.get_submodule(name)
        new = _new_linear(old, num_classes)
        new.train(mode)
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, new)
    return model
