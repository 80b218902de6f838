"""cnnkernels.optimize(model): turns a trained model into an inference model that runs the fused ops.

1. Blocks it knows are replaced by the cnnkernels.nn module with the same attributes (sharing their submodules):
   torchvision BasicBlock / Bottleneck / ResNet (for its conv1-bn1-relu stem), MobileNetV2 InvertedResidual,
   EfficientNet MBConv and MobileNetV3 InvertedResidual (-> MBConv), GoogLeNet Inception and BasicConv2d,
   Conv2dNormActivation -> ConvBNAct, and plain nn.Sequentials holding a Conv2d [+ BatchNorm]
   [+ ReLU/ReLU6/SiLU/Hardswish] run -> FusedSequential (same children, same indices), nn.Linear ->
   cnnkernels.nn.Linear (a 1x1 conv2d_act over the batch); timm's blocks, stems and heads (cnnkernels/_timm.py).
   A replacement that could not fuse anything (GroupNorm, unusual activations, ...) is undone. cnnkernels modules
   stay as they are. Every other module is left untouched (its children are still visited).
2. Every BatchNorm that directly follows a convolution in one of those modules is folded into the convolution's
   weight and bias for good and replaced by nn.Identity (a timm BatchNormAct2d by its activation).
3. Parameters are converted to `memory_format` and a forward pre-hook converts 4-D inputs to it.

Outputs match the original model within fp32 rounding; the result is for inference (eval mode) only.
"""

from __future__ import annotations

import copy
import itertools
from typing import Dict, List, Optional, Tuple

import torch
from torch import nn

from cnnkernels import _timm
from cnnkernels._library import weight_cache_freeze
from cnnkernels._optional import loaded_class
from cnnkernels.models.resnet import ResNet
import cnnkernels.nn as cnn
from cnnkernels.nn._fold import FoldCacheMixin, conv_is_fusable, fold_conv_bn, is_foldable_norm

__all__ = ["optimize"]


# torchvision classes -> the cnnkernels.nn module with the same attributes, forward and state_dict.
_TORCHVISION_EQUIVALENTS = (
    ("torchvision.models.resnet", "BasicBlock", cnn.BasicBlock),
    ("torchvision.models.resnet", "Bottleneck", cnn.Bottleneck),
    ("torchvision.models.resnet", "ResNet", ResNet),
    ("torchvision.models.mobilenetv2", "InvertedResidual", cnn.InvertedResidual),
    ("torchvision.models.mobilenetv3", "InvertedResidual", cnn.MBConv),
    ("torchvision.models.efficientnet", "MBConv", cnn.MBConv),
    ("torchvision.models.googlenet", "Inception", cnn.InceptionBlock),
    ("torchvision.models.googlenet", "BasicConv2d", cnn.BasicConv2d),
    ("torchvision.ops.misc", "Conv2dNormActivation", cnn.ConvBNAct),
)


def _torchvision_map() -> Dict[type, type]:
    """The torchvision classes a model can hold now (only imported modules' classes can be in it)."""
    table: Dict[type, type] = {}
    for module, name, target in _TORCHVISION_EQUIVALENTS:
        cls = loaded_class(module, name)
        if cls is not None:
            table[cls] = target
    return table


_ALWAYS = {nn.Linear: cnn.Linear}


def _adopt(cls: type, m: nn.Module) -> nn.Module:
    """A `cls` instance with m's attributes, sharing its submodules, parameters and buffers."""
    new = cls.__new__(cls)
    new.__dict__.update(m.__dict__)
    for k in ("_parameters", "_buffers", "_modules", "_non_persistent_buffers_set"):
        if k in m.__dict__:
            new.__dict__[k] = copy.copy(m.__dict__[k])
    new.__dict__.pop("_fold_state", None)
    new.__dict__.pop("_fold_count", None)
    return new


def _describe(m: nn.Module) -> Optional[str]:
    """What the fused module runs, or None when it would fall back to its plain submodules."""
    return m.describe_fusion() if isinstance(m, FoldCacheMixin) else None


def _fuse_conv_norm_act(m: nn.Module, path: str, log: List[Tuple[str, str, str, str]]) -> None:
    """Puts a ConvNormAct in the conv's place of each conv -> norm [-> activation] run that m's forward makes of its
    attributes (timm's stems and heads), and nn.Identity in the norm's and the activation's."""
    for conv_name, norm_name, act_name in _timm.conv_norm_act_slots(m):
        conv, norm = m._modules.get(conv_name), m._modules.get(norm_name)
        act = m._modules.get(act_name) if act_name else nn.Identity()
        if not conv_is_fusable(conv) or norm is None or act is None:
            continue
        new = _adopt(_timm.ConvNormAct, conv)
        new.norm, new.act = norm, act
        desc = _describe(new)
        if desc is None:
            continue
        setattr(m, conv_name, new)
        for name in (norm_name, act_name):
            if name:
                setattr(m, name, nn.Identity().train(m.training))
        parts = " + ".join(n for n in (conv_name, norm_name, act_name) if n)
        log.append((f"{path}.{conv_name}" if path else conv_name, f"{type(m).__module__}.{type(m).__qualname__} "
                    f"{parts}", "cnnkernels._timm.ConvNormAct", desc))


def _convert(m: nn.Module, path: str, table: Dict[type, type], log: List[Tuple[str, str, str, str]]) -> nn.Module:
    for name, child in list(m._modules.items()):
        if child is None:
            continue
        new = _convert(child, f"{path}.{name}" if path else name, table, log)
        if new is not child:
            m._modules[name] = new
    if isinstance(m, FoldCacheMixin):  # already a cnnkernels module
        desc = _describe(m)
        if desc is not None:
            log.append((path or "<model>", f"cnnkernels.nn.{type(m).__name__}" if type(m).__module__.startswith(
                "cnnkernels.nn") else f"{type(m).__module__}.{type(m).__name__}", "(kept)", desc))
        return m
    _fuse_conv_norm_act(m, path, log)
    target = table.get(type(m)) or _ALWAYS.get(type(m))
    if target is None and type(m) is nn.Sequential:
        target = cnn.FusedSequential
    if target is None:
        return m
    new = _adopt(target, m)
    desc = _describe(new)
    if desc is None:
        return m
    src = f"{type(m).__module__}.{type(m).__qualname__}"
    dst = f"cnnkernels.nn.{target.__name__}" if target.__module__.startswith("cnnkernels.nn") else \
        f"{target.__module__}.{target.__name__}"
    log.append((path or "<model>", src, dst, desc))
    return new


def _bake(model: nn.Module, prefix_of: Dict[int, str], log: List[str]) -> int:
    done = set()
    count = 0
    for m in list(model.modules()):
        if not isinstance(m, FoldCacheMixin):
            continue
        for conv, owner, name in list(m.conv_bn_pairs()):
            norm = getattr(owner, name)
            rest = _timm.norm_act_remainder(norm)  # what a timm BatchNormAct2d leaves in its place
            if id(conv) in done or not (is_foldable_norm(norm) or rest is not None):
                continue
            w, b = fold_conv_bn(conv, norm)
            req = conv.weight.requires_grad
            conv.weight = nn.Parameter(w.detach().clone(), requires_grad=req)
            conv.bias = nn.Parameter(b.detach().clone(), requires_grad=req)
            setattr(owner, name, (rest if rest is not None else nn.Identity()).train(norm.training))
            done.add(id(conv))
            count += 1
            p = prefix_of.get(id(owner), "?")
            log.append(f"{p + '.' if p else ''}{name}")
    return count


class _InputMemoryFormat:
    """Forward pre-hook: converts 4-D tensor inputs to the model's memory format."""

    def __init__(self, memory_format: torch.memory_format) -> None:
        # By name: torch.memory_format objects do not pickle, and the hook goes wherever torch.save takes the model.
        self.format_name = str(memory_format).replace("torch.", "")

    @property
    def memory_format(self) -> torch.memory_format:
        return getattr(torch, self.format_name)

    def __call__(self, module, args):
        if any(isinstance(a, torch.Tensor) and a.dim() == 4 for a in args):
            return tuple(a.contiguous(memory_format=self.memory_format)
                         if isinstance(a, torch.Tensor) and a.dim() == 4 else a for a in args)
        return None


def optimize(model: nn.Module, *, inplace: bool = False, memory_format: Optional[torch.memory_format] =
             torch.channels_last, freeze: bool = False, verbose: bool = False) -> nn.Module:
    """Returns an inference version of `model` (a cnnkernels, torchvision or timm model, or any module tree holding
    torchvision-style or timm blocks): BatchNorm folded into the convolutions, known blocks replaced by cnnkernels
    modules that call the fused ops, parameters and inputs in `memory_format` (None: leave as they are). The model
    must be in eval mode. It is deep-copied first unless inplace=True. verbose=True prints what was fused and folded.

    freeze=True (like torch.compile's `freezing`): the CPU kernels' packed-weight cache trusts the weights' version
    counters instead of re-reading every weight on every call to prove it unchanged, which saves one pass over the
    model's weights per forward; the CUDA kernels keep packed weights for frozen weights only (unfrozen CUDA weights
    are re-laid-out on every call). Updates through optimizer steps, load_state_dict or in-place ops are still seen;
    writes that bypass version counters (`w.data`, NumPy views) are not, until cnnkernels._library.weight_cache_clear().
    Tensors the model gets later (e.g. after .to()) are not frozen. The model's structure is frozen too: each fused
    module checks only its tensors' version counters and data pointers per call, so assigning a new submodule,
    parameter or BatchNorm eps, or switching a single submodule to training mode, is not seen until
    cnnkernels.nn.refresh_folds(model) or a train()/eval() switch of the fused module (model.train() included).

    Under torch.inference_mode() optimize() gives the same model: it copies, folds and freezes outside inference mode,
    so the result holds normal tensors with version counters (which both caches rely on) and runs under
    inference_mode with cache hits. A model whose own tensors are inference tensors (built or loaded under
    inference_mode) is copied into normal tensors; with inplace=True it is refused (ValueError)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"cnnkernels.optimize: `model` must be a torch.nn.Module, got {type(model).__name__}")
    training = [name or "<model>" for name, m in model.named_modules() if m.training]
    if training:
        shown = ", ".join(training[:3]) + (", ..." if len(training) > 3 else "")
        raise ValueError(f"cnnkernels.optimize: `model` is in training mode ({len(training)} modules, e.g. {shown}); "
                         f"call model.eval() first. optimize() folds BatchNorm running statistics into the "
                         f"convolutions, which is only valid for inference.")
    inference = [name for name, t in itertools.chain(model.named_parameters(), model.named_buffers())
                 if t.is_inference()]
    if inference and inplace:
        shown = ", ".join(inference[:3]) + (", ..." if len(inference) > 3 else "")
        raise ValueError(f"cnnkernels.optimize: `model` holds inference tensors ({len(inference)}, e.g. {shown}), "
                         f"created under torch.inference_mode(). They have no version counters, so the fused "
                         f"modules would refold and the kernels re-read every weight on every call, and freeze=True "
                         f"could not take effect; inplace=True keeps the model's own tensors. Drop inplace=True "
                         f"(the copy gets normal tensors) or build/load the model outside torch.inference_mode().")
    # Under inference_mode the copy, the folded weights and .to()'s outputs would be inference tensors, which have no
    # version counters: no fold could be kept, every weight would be fingerprinted on every call, and
    # weight_cache_freeze skips them. Outside it they are normal tensors, the deep copy of an inference tensor too.
    with torch.inference_mode(False):
        if not inplace:
            model = copy.deepcopy(model)
        log: List[Tuple[str, str, str, str]] = []
        model = _convert(model, "", {**_torchvision_map(), **_timm.timm_map()}, log)
        prefix_of = {id(m): name for name, m in model.named_modules()}
        folded: List[str] = []
        n_folded = _bake(model, prefix_of, folded)
        for m in model.modules():
            if isinstance(m, FoldCacheMixin):
                m.clear_fold_cache()
        if memory_format is not None:
            model = model.to(memory_format=memory_format)
            model.register_forward_pre_hook(_InputMemoryFormat(memory_format))
        if freeze:
            weight_cache_freeze(itertools.chain(model.parameters(), model.buffers()))
            for m in model.modules():
                if isinstance(m, FoldCacheMixin):
                    m.freeze_fold()
    if verbose:
        shown = [e for e in log if not any(e[0].startswith(o[0] + ".") for o in log if o is not e)]
        print(f"cnnkernels.optimize: {type(model).__name__}: {len(shown)} fused modules, {n_folded} BatchNorm layers "
              f"folded, memory_format={str(memory_format).replace('torch.', '') if memory_format else 'unchanged'}")
        rest = list(folded)
        for path, src, dst, desc in shown:
            mine = [f for f in rest if path == "<model>" or f.startswith(path + ".")]
            rest = [f for f in rest if f not in mine]
            bn = f", {len(mine)} BatchNorm folded" if mine else ""
            print(f"  {path}: {src} {'(kept)' if dst == '(kept)' else '-> ' + dst} [{desc}{bn}]")
        for name in rest:
            print(f"  {name}: BatchNorm folded into the preceding conv")
    return model
