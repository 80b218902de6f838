"""Drop-in modules: in training mode each runs its plain torch.nn submodules (BatchNorm with batch statistics, the
same autograd graph and the same results as the torch.nn / torchvision composition); in eval mode it calls the fused
ops with BatchNorm folded into the convolutions (cached, see cnnkernels/nn/_fold.py), through the same wrappers as
cnnkernels.<op>(), so cnnkernels.use_backend() and CNNKERNELS_CUDA_BACKEND choose their CUDA backend too.

Attribute names follow torchvision (BasicBlock, Bottleneck, InvertedResidual, Inception, BasicConv2d,
Conv2dNormActivation), so the state_dict keys are the same and torchvision weights load with strict=True.
When a module holds something the ops cannot run (GroupNorm, a BatchNorm without running statistics, an activation
other than ReLU/ReLU6, a conv with padding_mode="reflect", ...) its eval mode runs the plain submodules instead.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cnnkernels.nn._fold import (FoldCacheMixin, activation_name, conv_is_fusable, conv_unit, fold_conv_bn,
                                 is_batchnorm, is_foldable_norm, _FUSION)
from cnnkernels import ops
from cnnkernels.ops._checks import pair

__all__ = ["FusedSequential", "ConvBNAct", "BasicConv2d", "AddReLU", "ZeroPadShortcut", "BasicBlock", "Bottleneck",
           "DepthwiseSeparableConv2d", "InvertedResidual", "InceptionBlock", "InceptionAux", "Linear", "conv3x3",
           "conv1x1"]

_IntOr2 = Union[int, Tuple[int, int]]


def _conv_act(x: Tensor, conv: nn.Conv2d, w: Tensor, b: Optional[Tensor], act: str,
              residual: Optional[Tensor] = None) -> Tensor:
    return ops.conv2d_act(x, w, b, residual, conv.stride, conv.padding, conv.dilation, conv.groups, act)


def _bias_or_zeros(w: Tensor, b: Optional[Tensor]) -> Tensor:
    return b if b is not None else w.new_zeros(w.shape[0])


def _is_1x1(conv: nn.Conv2d) -> bool:
    return (tuple(conv.kernel_size) == (1, 1) and tuple(conv.stride) == (1, 1) and tuple(conv.padding) == (0, 0)
            and tuple(conv.dilation) == (1, 1) and conv.groups == 1)


def _is_same_odd(conv: nn.Conv2d) -> bool:
    """Odd kernel, padding K//2, dilation 1: the geometry the block ops assume for their KxK convs."""
    kh, kw = conv.kernel_size
    return (kh % 2 == 1 and kw % 2 == 1 and tuple(conv.padding) == (kh // 2, kw // 2)
            and tuple(conv.dilation) == (1, 1))


class FusedSequential(FoldCacheMixin, nn.Sequential):
    """An nn.Sequential whose eval mode runs every `Conv2d [BatchNorm2d] [ReLU|ReLU6]` run of children as one
    conv2d_act with the BatchNorm folded. Children and their indices are unchanged (same state_dict as
    nn.Sequential); other children run as they are. Training mode is nn.Sequential.forward."""

    def describe_fusion(self):
        with torch.no_grad():
            fused = [step for step in (self._compute_fold() or ()) if len(step) > 1]
        return f"{len(fused)}x conv2d_act ({', '.join(step[3] for step in fused)})" if fused else None

    def conv_bn_pairs(self):
        keys = list(self._modules)
        for a, b in zip(keys, keys[1:]):
            conv, norm = self._modules[a], self._modules[b]
            if conv_is_fusable(conv) and norm is not None and is_batchnorm(norm):
                yield conv, self, b

    def _compute_fold(self):
        mods = list(self._modules.values())
        steps = []
        i = 0
        while i < len(mods):
            m = mods[i]
            if conv_is_fusable(m):
                j, norm = i + 1, None
                if j < len(mods) and (is_batchnorm(mods[j]) or type(mods[j]) is nn.Identity):
                    norm = mods[j]
                    j += 1
                act = "none"
                if j < len(mods) and activation_name(mods[j]) in ("relu", "relu6"):
                    act = activation_name(mods[j])
                    j += 1
                if is_foldable_norm(norm) and (type(norm) is not nn.Identity and norm is not None or act != "none"):
                    w, b = fold_conv_bn(m, norm)
                    steps.append((m, w, b, act))
                    i = j
                    continue
            steps.append((m,))
            i += 1
        return tuple(steps)

    def forward(self, input):
        if self.training or not _FUSION["enabled"]:
            return super().forward(input)
        for step in self.folded():
            if len(step) == 1:
                input = step[0](input)
            else:
                conv, w, b, act = step
                input = _conv_act(input, conv, w, b, act)
        return input


class ConvBNAct(FusedSequential):
    """Conv2d -> norm -> activation with the constructor and state_dict of torchvision's Conv2dNormActivation
    (children 0, 1, 2); eval mode is one conv2d_act with the norm folded. activation_layer: nn.ReLU / nn.ReLU6 are
    fused, anything else is applied after the fused conv+norm, None for none."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntOr2 = 3, stride: _IntOr2 = 1,
                 padding: Optional[_IntOr2] = None, groups: int = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
                 activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU, dilation: _IntOr2 = 1,
                 inplace: Optional[bool] = True, bias: Optional[bool] = None) -> None:
        if padding is None:
            k, d = pair(kernel_size), pair(dilation)
            padding = ((k[0] - 1) // 2 * d[0], (k[1] - 1) // 2 * d[1])
            if isinstance(kernel_size, int) and isinstance(dilation, int):
                padding = padding[0]
        if bias is None:
            bias = norm_layer is None
        layers: List[nn.Module] = [nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding,
                                             dilation=dilation, groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            params = {} if inplace is None else {"inplace": inplace}
            layers.append(activation_layer(**params))
        super().__init__(*layers)
        self.out_channels = out_channels


class BasicConv2d(FoldCacheMixin, nn.Module):
    """GoogLeNet's conv (no bias) -> BatchNorm(eps=0.001) -> ReLU, attribute names `conv` and `bn` as torchvision's."""

    CONV_UNIT = ("conv", "bn", "relu")  # eval forward is exactly relu(bn(conv(x))): see cnnkernels.nn._fold.conv_unit
    CONV_BN_PAIRS = (("conv", "bn"),)
    FUSED_DESCRIPTION = "conv2d_act(relu)"

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def _compute_fold(self):
        if not conv_is_fusable(self.conv) or not is_foldable_norm(self.bn):
            return None
        return fold_conv_bn(self.conv, self.bn)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return _conv_act(x, self.conv, f[0], f[1], "relu")
        x = self.conv(x)
        x = self.bn(x)
        return F.relu(x, inplace=True)


class AddReLU(nn.Module):
    """relu(x + residual): plain torch in training mode, the fused add_relu op in eval mode."""

    def forward(self, x: Tensor, residual: Tensor) -> Tensor:
        if self.training or not _FUSION["enabled"]:
            return torch.relu(x + residual)
        return ops.add_relu(x, residual)


class ZeroPadShortcut(nn.Module):
    """The parameter-free ResNet shortcut (option A of He et al. 2015): spatial subsampling by `stride` (the pixels a
    strided 1x1 conv would read) and zero channels appended up to `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"ZeroPadShortcut cannot reduce channels ({in_channels} -> {out_channels})")
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride != 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if self.out_channels != self.in_channels:
            x = F.pad(x, (0, 0, 0, 0, 0, self.out_channels - self.in_channels))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                     bias=False, dilation=dilation)


def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)


def _fold_shortcut(downsample: Optional[nn.Module]):
    """None (identity), ('conv', conv, w, b) for a [Conv2d, norm] projection, or ('module',) to call it as it is."""
    if downsample is None:
        return None
    u = conv_unit(downsample)
    if u is not None and u.act == "none":
        w, b = fold_conv_bn(u.conv, u.norm)
        return ("conv", u.conv, w, b)
    return ("module",)


class _ResidualBlock(FoldCacheMixin, nn.Module):
    def _shortcut(self, x: Tensor, ds) -> Tensor:
        if ds is None:
            return x
        if ds[0] == "conv":
            return _conv_act(x, ds[1], ds[2], ds[3], "none")
        return self.downsample(x)


class BasicBlock(_ResidualBlock):
    """torchvision's ResNet BasicBlock (same constructor, attributes and state_dict). Eval mode: two conv2d_act
    calls, the second adding the shortcut and applying ReLU in its epilogue; a [conv1x1, BN] downsample is folded
    too."""

    expansion: int = 1
    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"))
    FUSED_DESCRIPTION = "2x conv2d_act, shortcut add + ReLU in the epilogue"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if groups != 1 or base_width != 64:
            raise ValueError("BasicBlock only supports groups=1 and base_width=64")
        if dilation > 1:
            raise NotImplementedError("Dilation > 1 not supported in BasicBlock")
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn1 = norm_layer(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes)
        self.bn2 = norm_layer(planes)
        self.downsample = downsample
        self.stride = stride

    def _compute_fold(self):
        if not (type(self.relu) is nn.ReLU and conv_is_fusable(self.conv1) and conv_is_fusable(self.conv2)
                and is_foldable_norm(self.bn1) and is_foldable_norm(self.bn2)):
            return None
        return fold_conv_bn(self.conv1, self.bn1), fold_conv_bn(self.conv2, self.bn2), \
            _fold_shortcut(self.downsample)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                (w1, b1), (w2, b2), ds = f
                out = _conv_act(x, self.conv1, w1, b1, "relu")
                return _conv_act(out, self.conv2, w2, b2, "relu", residual=self._shortcut(x, ds))
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class Bottleneck(_ResidualBlock):
    """torchvision's ResNet (v1.5) Bottleneck: stride on the 3x3 conv. Eval mode: three conv2d_act calls, the last
    adding the shortcut and applying ReLU in its epilogue."""

    expansion: int = 4
    CONV_BN_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))
    FUSED_DESCRIPTION = "3x conv2d_act, shortcut add + ReLU in the epilogue"

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Optional[nn.Module] = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = conv1x1(inplanes, width)
        self.bn1 = norm_layer(width)
        self.conv2 = conv3x3(width, width, stride, groups, dilation)
        self.bn2 = norm_layer(width)
        self.conv3 = conv1x1(width, planes * self.expansion)
        self.bn3 = norm_layer(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def _compute_fold(self):
        convs = (self.conv1, self.conv2, self.conv3)
        norms = (self.bn1, self.bn2, self.bn3)
        if not (type(self.relu) is nn.ReLU and all(conv_is_fusable(c) for c in convs)
                and all(is_foldable_norm(n) for n in norms)):
            return None
        return tuple(fold_conv_bn(c, n) for c, n in zip(convs, norms)) + (_fold_shortcut(self.downsample),)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                (w1, b1), (w2, b2), (w3, b3), ds = f
                out = _conv_act(x, self.conv1, w1, b1, "relu")
                out = _conv_act(out, self.conv2, w2, b2, "relu")
                return _conv_act(out, self.conv3, w3, b3, "relu", residual=self._shortcut(x, ds))
        identity = x
        out = self.conv1(x)
        out = self.bn1(out)
        out = self.relu(out)
        out = self.conv2(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv3(out)
        out = self.bn3(out)
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        out = self.relu(out)
        return out


class DepthwiseSeparableConv2d(FoldCacheMixin, nn.Module):
    """MobileNet v1's layer: depthwise KxK conv -> norm -> act, then pointwise 1x1 conv -> norm -> act, as two
    ConvBNAct children `depthwise` and `pointwise`. Eval mode: one dwsep_conv2d call (the depthwise activation
    never goes to memory)."""

    FUSED_DESCRIPTION = "dwsep_conv2d"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: _IntOr2 = 3, stride: _IntOr2 = 1,
                 padding: Optional[_IntOr2] = None, dilation: _IntOr2 = 1,
                 norm_layer: Optional[Callable[..., nn.Module]] = nn.BatchNorm2d,
                 activation_layer: Optional[Callable[..., nn.Module]] = nn.ReLU) -> None:
        super().__init__()
        self.depthwise = ConvBNAct(in_channels, in_channels, kernel_size, stride, padding, groups=in_channels,
                                   norm_layer=norm_layer, activation_layer=activation_layer, dilation=dilation)
        self.pointwise = ConvBNAct(in_channels, out_channels, 1, norm_layer=norm_layer,
                                   activation_layer=activation_layer)
        self.out_channels = out_channels

    def _compute_fold(self):
        du, pu = conv_unit(self.depthwise), conv_unit(self.pointwise)
        if du is None or pu is None:
            return None
        c = du.conv.in_channels
        if not (du.conv.groups == c and du.conv.out_channels == c and _is_1x1(pu.conv)):
            return None
        return fold_conv_bn(du.conv, du.norm), du.act, fold_conv_bn(pu.conv, pu.norm), pu.act

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                (dw, db), dact, (pw, pb), pact = f
                c = self.depthwise[0]
                return ops.dwsep_conv2d(x, dw, db, pw, pb, c.stride, c.padding, c.dilation, dact, pact)
        return self.pointwise(self.depthwise(x))


class InvertedResidual(FoldCacheMixin, nn.Module):
    """torchvision's MobileNetV2 InvertedResidual (same constructor, attributes and state_dict: `conv` is
    [ConvBNAct expand (when expand_ratio != 1), ConvBNAct depthwise, Conv2d project, norm]). Eval mode: one
    inverted_residual call (the expanded activation never goes to memory; the residual is added in its epilogue)."""

    FUSED_DESCRIPTION = "inverted_residual"

    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int,
                 norm_layer: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        self.stride = stride
        if stride not in [1, 2]:
            raise ValueError(f"stride should be 1 or 2 instead of {stride}")
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        hidden_dim = int(round(inp * expand_ratio))
        self.use_res_connect = self.stride == 1 and inp == oup
        layers: List[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden_dim, kernel_size=1, norm_layer=norm_layer,
                                    activation_layer=nn.ReLU6))
        layers.extend([
            ConvBNAct(hidden_dim, hidden_dim, stride=stride, groups=hidden_dim, norm_layer=norm_layer,
                      activation_layer=nn.ReLU6),
            nn.Conv2d(hidden_dim, oup, 1, 1, 0, bias=False),
            norm_layer(oup),
        ])
        self.conv = nn.Sequential(*layers)
        self.out_channels = oup
        self._is_cn = stride > 1

    def _compute_fold(self):
        layers = list(self.conv)
        if len(layers) == 4:
            eu = conv_unit(layers[0])
            if eu is None or not _is_1x1(eu.conv):
                return None
            layers = layers[1:]
        elif len(layers) == 3:
            eu = None
        else:
            return None
        du = conv_unit(layers[0])
        proj, pnorm = layers[1], layers[2]
        if du is None or not conv_is_fusable(proj) or not _is_1x1(proj) or not (is_batchnorm(pnorm) or
                                                                                  type(pnorm) is nn.Identity):
            return None
        if not is_foldable_norm(pnorm):
            return None
        dc = du.conv
        hidden = dc.in_channels
        s = tuple(dc.stride)
        if not (dc.groups == hidden and dc.out_channels == hidden and _is_same_odd(dc) and s[0] == s[1]):
            return None
        act = du.act
        if act not in ("relu", "relu6") or (eu is not None and eu.act != act):
            return None
        if self.use_res_connect and (s[0] != 1 or proj.out_channels != (eu.conv.in_channels if eu else hidden)):
            return None
        ew, eb = fold_conv_bn(eu.conv, eu.norm) if eu is not None else (None, None)
        dw, db = fold_conv_bn(dc, du.norm)
        pw, pb = fold_conv_bn(proj, pnorm)
        return ew, eb, dw, _bias_or_zeros(dw, db), pw, _bias_or_zeros(pw, pb), s[0], act

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                ew, eb, dw, db, pw, pb, stride, act = f
                return ops.inverted_residual(x, ew, eb, dw, db, pw, pb, stride, bool(self.use_res_connect), act)
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class InceptionBlock(FoldCacheMixin, nn.Module):
    """torchvision's GoogLeNet Inception module (same constructor, attributes and state_dict; like torchvision the
    "5x5" branch uses a 3x3 conv). Eval mode: one inception_block call writing every branch into its slice of the
    output (no concat)."""

    FUSED_DESCRIPTION = "inception_block"

    def __init__(self, in_channels: int, ch1x1: int, ch3x3red: int, ch3x3: int, ch5x5red: int, ch5x5: int,
                 pool_proj: int, conv_block: Optional[Callable[..., nn.Module]] = None) -> None:
        super().__init__()
        if conv_block is None:
            conv_block = BasicConv2d
        self.branch1 = conv_block(in_channels, ch1x1, kernel_size=1)
        self.branch2 = nn.Sequential(conv_block(in_channels, ch3x3red, kernel_size=1),
                                     conv_block(ch3x3red, ch3x3, kernel_size=3, padding=1))
        self.branch3 = nn.Sequential(conv_block(in_channels, ch5x5red, kernel_size=1),
                                     conv_block(ch5x5red, ch5x5, kernel_size=3, padding=1))
        self.branch4 = nn.Sequential(nn.MaxPool2d(kernel_size=3, stride=1, padding=1, ceil_mode=True),
                                     conv_block(in_channels, pool_proj, kernel_size=1))

    def _compute_fold(self):
        try:
            b2, b3, b4 = list(self.branch2), list(self.branch3), list(self.branch4)
        except TypeError:
            return None
        if len(b2) != 2 or len(b3) != 2 or len(b4) != 2:
            return None
        units = [conv_unit(m) for m in (self.branch1, b2[0], b2[1], b3[0], b3[1], b4[1])]
        if any(u is None or u.act != "relu" for u in units):
            return None
        u1, u2r, u2, u3r, u3, u4 = units
        if not all(_is_1x1(u.conv) for u in (u1, u2r, u3r, u4)):
            return None
        for u in (u2, u3):
            if not (_is_same_odd(u.conv) and tuple(u.conv.stride) == (1, 1) and u.conv.groups == 1):
                return None
        pool = b4[0]
        if not (type(pool) is nn.MaxPool2d and pair(pool.kernel_size) == (3, 3) and pair(pool.stride) == (1, 1)
                and pair(pool.padding) == (1, 1) and pair(pool.dilation) == (1, 1)):
            return None
        out = []
        for u in units:
            w, b = fold_conv_bn(u.conv, u.norm)
            out += [w, _bias_or_zeros(w, b)]
        return tuple(out)

    def forward(self, x: Tensor) -> Tensor:
        if not self.training and _FUSION["enabled"]:
            f = self.folded()
            if f is not None:
                return ops.inception_block(x, *f)
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class Linear(FoldCacheMixin, nn.Linear):
    """nn.Linear (same constructor, attributes and state_dict). Eval mode on CPU, for a 2-D input of the weight's dtype
    with gradients off: the batch runs as one 1x1 conv2d_act over N pixels. A classifier at batch 1 is a matrix-vector
    product bound by reading the weight once (5 MB for MobileNet v2's), which the conv kernel splits over the threads
    by output channel. Everything else (training, autograd into the weight, other shapes or devices) is F.linear."""

    FUSED_DESCRIPTION = "conv2d_act (1x1 over the batch)"

    def _compute_fold(self):
        # A cached view, so the packed-weight cache sees the same tensor every call (a frozen hit requires that).
        return self.weight[:, :, None, None]

    def forward(self, input: Tensor) -> Tensor:
        w = self.weight
        if (not self.training and _FUSION["enabled"] and input.dim() == 2 and input.shape[0] > 0
                and input.shape[1] == self.in_features and input.device.type == "cpu" and w.device.type == "cpu"
                and input.dtype == w.dtype and w.dtype in (torch.float32, torch.bfloat16, torch.float16)
                and not (torch.is_grad_enabled() and (w.requires_grad or input.requires_grad))):
            w4 = self.folded()
            # [N, C] row-major is exactly a channels_last [1, C, 1, N] image: N pixels in one row. The output is then
            # channels_last too, i.e. a row-major [N, out_features], as F.linear returns it.
            n, c = input.shape
            x = input.contiguous().view(1, 1, n, c).permute(0, 3, 1, 2)
            y = torch.ops.cnnkernels.conv2d_act(x, w4, self.bias, None, [1, 1], [0, 0], [1, 1], 1, "none")
            return y[0, :, 0, :].t()
        return F.linear(input, w, self.bias)


class InceptionAux(nn.Module):
    """torchvision's GoogLeNet auxiliary classifier (same state_dict); its 1x1 conv is a fused BasicConv2d."""

    def __init__(self, in_channels: int, num_classes: int, conv_block: Optional[Callable[..., nn.Module]] = None,
                 dropout: float = 0.7) -> None:
        super().__init__()
        if conv_block is None:
            conv_block = BasicConv2d
        self.conv = conv_block(in_channels, 128, kernel_size=1)
        self.fc1 = nn.Linear(2048, 1024)
        self.fc2 = nn.Linear(1024, num_classes)
        self.dropout = nn.Dropout(p=dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(x, (4, 4))
        x = self.conv(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x), inplace=True)
        x = self.dropout(x)
        return self.fc2(x)
