"""What optimize() knows of timm's models (tested with timm 1.0.31): their blocks with fused counterparts, and the
conv + norm + activation runs of their stems and heads.

timm is never imported here: its classes are looked up in sys.modules (cnnkernels._optional), since a model can only
hold them once timm is imported. The fused modules keep timm's attribute names, so a converted model has timm's
state_dict keys except the BatchNorms folded away (optimize()'s policy for torchvision models too). Their plain path
(training mode, `cnnkernels.nn.fusion(False)`, or a block the ops cannot express) is timm's own forward.

timm's BatchNormAct2d (a BatchNorm2d subclass) applies its activation inside the norm module; folding it into the
preceding conv leaves that activation in its place, so timm's forward stays correct after the fold.
"""

from __future__ import annotations

import importlib
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

import cnnkernels.nn as cnn
from cnnkernels import ops
from cnnkernels._optional import is_instance_of, loaded_class
from cnnkernels.nn._fold import (ConvUnit, FoldCacheMixin, activation_name, conv_is_fusable, fold_conv_bn,
                                 gate_name, is_batchnorm, is_foldable_norm, _FUSION)
from cnnkernels.nn.fused import conv_act
from cnnkernels.nn.mbconv import mbconv_fold, se_tensors
from cnnkernels.nn.mobilenet import dwsep_fold
from cnnkernels.nn.resnet import _fold_shortcut

__all__ = ["timm_map", "conv_norm_act_slots", "norm_act_remainder", "ConvNormAct"]

_BLOCKS = "timm.models._efficientnet_blocks"
_ACTS = "timm.layers.activations"

# timm's own activation classes: what timm builds for "sigmoid" by name, and the others when a model asks for them
_TIMM_ACTIVATIONS = (("Swish", "silu"), ("HardSwish", "hardswish"))
_TIMM_GATES = (("Sigmoid", "sigmoid"), ("HardSigmoid", "hardsigmoid"))


def _act(m: Optional[nn.Module]) -> Optional[str]:
    name = activation_name(m)
    if name is None:
        name = next((op for cls, op in _TIMM_ACTIVATIONS if is_instance_of(m, _ACTS, cls)), None)
    return name


def _gate(m: Optional[nn.Module]) -> Optional[str]:
    name = gate_name(m)
    if name is None:
        name = next((op for cls, op in _TIMM_GATES if is_instance_of(m, _ACTS, cls)), None)
    return name


def _is_norm_act(m: Optional[nn.Module]) -> bool:
    return is_instance_of(m, "timm.layers.norm_act", "BatchNormAct2d")


def norm_act_remainder(norm: nn.Module) -> Optional[nn.Module]:
    """For a timm BatchNormAct2d that can be folded into the conv before it (eval mode, running statistics, no
    dropout, an activation the ops have): the activation module it applies after normalising, which takes its place
    once folded. None for anything else."""
    if not _is_norm_act(norm) or norm.training or not norm.track_running_stats or norm.running_mean is None \
            or norm.running_var is None or type(norm.drop) is not nn.Identity or _act(norm.act) is None:
        return None
    return norm.act


def _norm_act(slot: Optional[nn.Module]) -> Optional[Tuple[Optional[nn.Module], str]]:
    """(norm to fold or None, activation) of what follows a conv in timm's forward: a BatchNormAct2d, a BatchNorm, an
    Identity, or the activation a folded BatchNormAct2d left behind; None when the ops cannot run it."""
    if _is_norm_act(slot):
        return (slot, _act(slot.act)) if norm_act_remainder(slot) is not None else None
    if is_batchnorm(slot):
        return (slot, "none") if is_foldable_norm(slot) else None
    act = _act(slot)
    return None if act is None else (None, act)


def _unit(owner: nn.Module, conv_name: str, norm_name: str) -> Optional[ConvUnit]:
    conv = getattr(owner, conv_name)
    na = _norm_act(getattr(owner, norm_name))
    if not conv_is_fusable(conv) or na is None:
        return None
    norm, act = na
    return ConvUnit(conv, owner if norm is not None else None, norm_name if norm is not None else None, act)


def _is_identity(m: Optional[nn.Module]) -> bool:
    """m does nothing in eval mode: None, nn.Identity, or timm's DropPath outside training."""
    if m is None or type(m) is nn.Identity:
        return True
    return is_instance_of(m, "timm.layers.drop", "DropPath") and (not m.training or m.drop_prob == 0.0)


class _TimmLayout:
    """A fused module with the attributes of the timm class TIMM_CLASS: timm's forward unless the fold applies, and
    timm's BatchNormAct2d folded by optimize() like a BatchNorm."""

    TIMM_CLASS: Tuple[str, str]

    def conv_bn_pairs(self):
        for conv_name, norm_name in self.CONV_BN_PAIRS:
            conv, norm = getattr(self, conv_name, None), getattr(self, norm_name, None)
            if conv is not None and conv_is_fusable(conv) and (is_batchnorm(norm) or _is_norm_act(norm)):
                yield conv, self, norm_name

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return self._run_folded(x, f)
        # Imported, not looked up: a model unpickled in a fresh process may hold no timm class any more.
        module, name = self.TIMM_CLASS
        return getattr(importlib.import_module(module), name).forward(self, x)


def _plain_residual(block: nn.Module, acts: Tuple[str, ...]) -> bool:
    """A timm ResNet block that is cnnkernels.nn's: ReLU everywhere, no attention, anti-aliasing, DropBlock or active
    DropPath."""
    return (all(_act(getattr(block, a)) == "relu" for a in acts) and block.se is None
            and _is_identity(block.drop_block) and _is_identity(block.aa) and _is_identity(block.drop_path))


class TimmBasicBlock(_TimmLayout, cnn.BasicBlock):
    """timm.models.resnet.BasicBlock (timm's attributes): cnnkernels.nn.BasicBlock's two conv2d_act calls when the
    block is plain (ReLU, no SE, anti-aliasing, DropBlock or active DropPath)."""

    TIMM_CLASS = ("timm.models.resnet", "BasicBlock")

    def _compute_fold(self):
        if not _plain_residual(self, ("act1", "act2")):
            return None
        units = _unit(self, "conv1", "bn1"), _unit(self, "conv2", "bn2")
        if any(u is None or u.act != "none" for u in units):
            return None
        return tuple(fold_conv_bn(u.conv, u.norm) for u in units) + (_fold_shortcut(self.downsample),)


class TimmBottleneck(_TimmLayout, cnn.Bottleneck):
    """timm.models.resnet.Bottleneck (timm's attributes): cnnkernels.nn.Bottleneck's three conv2d_act calls when the
    block is plain."""

    TIMM_CLASS = ("timm.models.resnet", "Bottleneck")

    def _compute_fold(self):
        if not _plain_residual(self, ("act1", "act2", "act3")):
            return None
        units = _unit(self, "conv1", "bn1"), _unit(self, "conv2", "bn2"), _unit(self, "conv3", "bn3")
        if any(u is None or u.act != "none" for u in units):
            return None
        return tuple(fold_conv_bn(u.conv, u.norm) for u in units) + (_fold_shortcut(self.downsample),)


class _TimmMBConv(_TimmLayout, cnn.MBConv):
    """A timm block that one mbconv call runs, as cnnkernels.nn.MBConv runs torchvision's."""

    @property
    def use_res_connect(self) -> bool:
        return bool(self.has_skip)

    def _se(self):
        """(True, se_tensors or None) when the block's `se` can be run (absent or timm's SqueezeExcite), else
        (False, None)."""
        se = self.se
        if type(se) is nn.Identity:
            return True, None
        if not is_instance_of(se, _BLOCKS, "SqueezeExcite"):
            return False, None
        part = se_tensors(se.conv_reduce, se.conv_expand, _act(se.act1), _gate(se.gate))
        return part is not None, part

    def _fold(self, expand: Optional[Tuple[str, str]], depthwise: Tuple[str, str], project: Tuple[str, str]):
        if self.conv_s2d is not None or not _is_identity(self.aa) or not _is_identity(self.drop_path):
            return None
        ok, se = self._se()
        eu = _unit(self, *expand) if expand else None
        du, pu = _unit(self, *depthwise), _unit(self, *project)
        if not ok or du is None or pu is None or (expand and eu is None):
            return None
        return mbconv_fold(eu, du, se, pu, self.use_res_connect)


class TimmInvertedResidual(_TimmMBConv):
    """timm's InvertedResidual (MobileNet v2/v3, EfficientNet; with or without SqueezeExcite): one mbconv call."""

    TIMM_CLASS = (_BLOCKS, "InvertedResidual")
    CONV_BN_PAIRS = (("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))

    def _compute_fold(self):
        return self._fold(("conv_pw", "bn1"), ("conv_dw", "bn2"), ("conv_pwl", "bn3"))


class TimmDepthwiseSeparable(_TimmMBConv):
    """timm's DepthwiseSeparableConv: one mbconv call without expansion when the pointwise conv has no activation (the
    first block of MobileNet v2/v3 and EfficientNet), else (MobileNet v1's layer, `pw_act`) one dwsep_conv2d call if
    it has neither SE nor skip."""

    TIMM_CLASS = (_BLOCKS, "DepthwiseSeparableConv")
    CONV_BN_PAIRS = (("conv_dw", "bn1"), ("conv_pw", "bn2"))

    def _compute_fold(self):
        f = self._fold(None, ("conv_dw", "bn1"), ("conv_pw", "bn2"))
        if f is not None or self.has_skip or type(self.se) is not nn.Identity or self.conv_s2d is not None \
                or not _is_identity(self.aa):
            return f
        du, pu = _unit(self, "conv_dw", "bn1"), _unit(self, "conv_pw", "bn2")
        f = dwsep_fold(du, pu) if du is not None and pu is not None else None
        return None if f is None else ("dwsep_conv2d",) + f

    def describe_fusion(self) -> Optional[str]:
        with torch.no_grad():
            f = self._compute_fold()
        return None if f is None else f[0] if isinstance(f[0], str) else self.FUSED_DESCRIPTION

    def _run_folded(self, x: Tensor, f) -> Tensor:
        if not isinstance(f[0], str):
            return super()._run_folded(x, f)
        (dw, db), dw_act, (pw, pb), pw_act = f[1:]
        c = self.conv_dw
        return ops.dwsep_conv2d(x, dw, db, pw, pb, c.stride, c.padding, c.dilation, dw_act, pw_act)


class ConvNormAct(FoldCacheMixin, nn.Conv2d):
    """An nn.Conv2d (same parameters, same state_dict keys) that also applies the norm and the activation which follow
    it in its timm parent's forward, moved in from the parent's attributes (which become nn.Identity): one conv2d_act
    in eval mode. Once optimize() folded the norm, `norm` holds what the norm left behind (Identity, or a
    BatchNormAct2d's activation)."""

    def _plan(self) -> Optional[Tuple[Optional[nn.Module], str]]:
        na, act = _norm_act(self.norm), _act(self.act)
        if na is None or act is None or (act != "none" and na[1] != "none"):
            return None
        return na[0], act if act != "none" else na[1]

    def describe_fusion(self) -> Optional[str]:
        with torch.no_grad():
            f = self._compute_fold()
        # a bare conv is not worth a replacement
        return None if f is None or (self._plan()[0] is None and f[2] == "none") else f"conv2d_act ({f[2]})"

    def conv_bn_pairs(self):
        if is_batchnorm(self.norm) or _is_norm_act(self.norm):
            yield self, self, "norm"

    def _compute_fold(self):
        plan = self._plan()
        if plan is None or self.training or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return None
        return fold_conv_bn(self, plan[0]) + (plan[1],)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return conv_act(x, self, *f)
        return self.act(self.norm(self._conv_forward(x, self.weight, self.bias)))


# timm class -> the fused module with its attributes
_EQUIVALENTS = (
    ("timm.models.resnet", "BasicBlock", TimmBasicBlock),
    ("timm.models.resnet", "Bottleneck", TimmBottleneck),
    (_BLOCKS, "InvertedResidual", TimmInvertedResidual),
    (_BLOCKS, "DepthwiseSeparableConv", TimmDepthwiseSeparable),
    ("timm.layers.linear", "Linear", cnn.Linear),  # nn.Linear whose eager forward is F.linear
)

# timm class -> conv_norm_act_slots
_CONV_NORM_ACT = (
    ("timm.models.resnet", "ResNet", (("conv1", "bn1", "act1"),)),
    ("timm.models.efficientnet", "EfficientNet", (("conv_stem", "bn1", None), ("conv_head", "bn2", None))),
    ("timm.models.efficientnet", "EfficientNetFeatures", (("conv_stem", "bn1", None),)),
    ("timm.models.mobilenetv3", "MobileNetV3", (("conv_stem", "bn1", None), ("conv_head", "norm_head", "act2"))),
    ("timm.models.mobilenetv3", "MobileNetV3Features", (("conv_stem", "bn1", None),)),
    (_BLOCKS, "ConvBnAct", (("conv", "bn1", None),)),
)


def timm_map() -> Dict[type, type]:
    """The timm classes a model can hold now -> their fused counterparts (empty when timm was never imported)."""
    table: Dict[type, type] = {}
    for module, name, target in _EQUIVALENTS:
        cls = loaded_class(module, name)
        if cls is not None:
            table[cls] = target
    return table


def conv_norm_act_slots(m: nn.Module) -> Tuple[Tuple[str, str, Optional[str]], ...]:
    """(conv, norm, activation or None) attributes of `m` that its timm forward runs one after the other, with nothing
    else reading the norm's or the activation's input; () for anything but the timm classes that have them."""
    return next((slots for module, name, slots in _CONV_NORM_ACT if is_instance_of(m, module, name)), ())
