"""cnnkernels.convolutionalize(model, window): a classifier whose fully connected head is rewritten as convolutions.

A classifier built for `window`-sized images (LeNet-5: 32x32) ends in a feature map of a fixed size, flattened into
Linear layers. The first Linear is a convolution whose kernel is that whole feature map, and every later Linear a 1x1
convolution, so the rewritten network takes any larger image and returns a map of class scores in one pass: output
position (i, j) scores the window whose top-left corner is (i * stride_h, j * stride_w), and the overlapping windows
share the feature computation (OverFeat; the "fully convolutional" networks). For a feature extractor without
padding (LeNet-5) that score equals the classifier's on the cropped window; zero padding (AlexNet, VGG) makes a window
inside a larger image see its real neighbours where the lone crop saw zeros, so only the window at the image's size
matches the classifier exactly there.
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from cnnkernels._optional import loaded_class
from cnnkernels.nn import FoldCacheMixin, FusedSequential
from cnnkernels.optimize import _InputMemoryFormat

__all__ = ["convolutionalize", "SlidingWindowClassifier"]

_NAME = "cnnkernels.convolutionalize"

# Input sizes the model zoo's classifiers are built for, where the model does not record its own in a `resolution`
# attribute (as cnnkernels.models' EfficientNet does). AlexNet's and VGG's adaptive pools are the identity only around
# these sizes (6x6 and 7x7 maps).
_NATIVE_WINDOW = (
    ("cnnkernels.models.lenet", "LeNet5", 32),
    ("cnnkernels.models.alexnet", "AlexNet", 224),
    ("cnnkernels.models.vgg", "VGG", 224),
    ("torchvision.models.alexnet", "AlexNet", 224),
    ("torchvision.models.vgg", "VGG", 224),
)

# Classes whose forward is exactly classifier(flatten(avgpool(features(x)), 1)) (LeNet-5 has no avgpool): only for
# these can the stages be read off the attributes without reading the forward. EfficientNet has that forward too, but
# its squeeze-and-excitation gates average over the whole input, so a window's score would depend on the rest of the
# image.
_FEATURES_HEAD_CLASSES = (
    ("cnnkernels.models.lenet", "LeNet5"),
    ("cnnkernels.models.alexnet", "AlexNet"),
    ("cnnkernels.models.vgg", "VGG"),
    ("torchvision.models.alexnet", "AlexNet"),
    ("torchvision.models.vgg", "VGG"),
)

# Layers of the head that act on each feature independently, so they mean the same on a (N, C) vector and on every
# pixel of a (N, C, H, W) map.
_ELEMENTWISE = (nn.Identity, nn.Dropout, nn.AlphaDropout, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU,
                nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh,
                nn.Softplus, nn.Softsign, nn.Tanhshrink, nn.LogSigmoid)

Window = Union[int, Sequence[int]]


class SlidingWindowClassifier(nn.Sequential):
    """What convolutionalize() returns: the classifier's feature extractor followed by its head as convolutions.
    `window` (H, W) is the input size the classifier was built for and `stride` (H, W) the step in input pixels
    between neighbouring output positions: output[:, :, i, j] scores the window with top-left corner
    (i * stride[0], j * stride[1]). Inputs must be 4-D and at least `window` large."""

    def __init__(self, stages: "OrderedDict[str, nn.Module]", window: Tuple[int, int],
                 stride: Tuple[int, int]) -> None:
        super().__init__(stages)
        self.window = window
        self.stride = stride

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """The score map's (H', W') for an input of height x width: one position per whole window at `stride`."""
        return ((height - self.window[0]) // self.stride[0] + 1, (width - self.window[1]) // self.stride[1] + 1)

    def forward(self, input: Tensor) -> Tensor:
        if not isinstance(input, Tensor) or input.dim() != 4:
            got = f"shape {tuple(input.shape)}" if isinstance(input, Tensor) else type(input).__name__
            raise ValueError(f"SlidingWindowClassifier: `input` must be a 4-D (N, C, H, W) tensor, got {got}")
        h, w = input.shape[-2:]
        if h < self.window[0] or w < self.window[1]:
            raise ValueError(f"SlidingWindowClassifier: `input` must be at least the window, "
                             f"{self.window[0]}x{self.window[1]}, got {h}x{w}")
        return super().forward(input)


def _check_window(window: object) -> Tuple[int, int]:
    if isinstance(window, bool) or not isinstance(window, (int, tuple, list)):
        raise TypeError(f"{_NAME}: `window` must be an int or an (H, W) pair of ints, got {type(window).__name__}")
    pair = (window, window) if isinstance(window, int) else tuple(window)
    if len(pair) != 2 or any(isinstance(v, bool) or not isinstance(v, int) for v in pair):
        raise TypeError(f"{_NAME}: `window` must be an int or an (H, W) pair of ints, got {window!r}")
    if min(pair) < 1:
        raise ValueError(f"{_NAME}: `window` must be positive, got {window!r}")
    return pair


def _native_window(model: nn.Module) -> Tuple[int, int]:
    resolution = getattr(model, "resolution", None)
    if isinstance(resolution, int) and not isinstance(resolution, bool):
        return _check_window(resolution)
    for module, name, size in _NATIVE_WINDOW:
        cls = loaded_class(module, name)
        if cls is not None and isinstance(model, cls):
            return size, size
    raise ValueError(f"{_NAME}: cannot tell which input size a {type(model).__name__} was built for (it has no "
                     f"`resolution` attribute and is not a model of cnnkernels.models or torchvision with a known "
                     f"size); pass `window=(H, W)`")


def _flat_children(module: nn.Module) -> List[nn.Module]:
    """The layers a Sequential head runs, in order, nested Sequentials opened."""
    if type(module) in (nn.Sequential, FusedSequential):
        return [m for child in module for m in _flat_children(child)]
    return [module]


def _split(model: nn.Module) -> Tuple["OrderedDict[str, nn.Module]", List[nn.Module]]:
    """(the stages before the flatten, by name; the head's layers after it)."""
    if type(model) in (nn.Sequential, FusedSequential):
        children = list(model._modules.items())
        flat = [i for i, (_, m) in enumerate(children) if isinstance(m, nn.Flatten)]
        if len(flat) != 1 or (children[flat[0]][1].start_dim, children[flat[0]][1].end_dim) != (1, -1):
            raise ValueError(f"{_NAME}: a Sequential `model` must hold exactly one nn.Flatten() (start_dim=1, "
                             f"end_dim=-1) between its feature extractor and its head, found {len(flat)} "
                             f"nn.Flatten layers")
        body = type(model)(OrderedDict(children[:flat[0]]))
        head = [m for _, child in children[flat[0] + 1:] for m in _flat_children(child)]
        return OrderedDict(features=body), head
    known = [cls for cls in (loaded_class(m, n) for m, n in _FEATURES_HEAD_CLASSES) if cls is not None]
    if type(model) not in known:
        raise TypeError(f"{_NAME}: `model` must be an nn.Sequential with an nn.Flatten before its head, or one of "
                        f"LeNet5, AlexNet, VGG (cnnkernels.models or torchvision), got "
                        f"{type(model).__module__}.{type(model).__qualname__}")
    stages = OrderedDict(features=model.features)
    if hasattr(model, "avgpool"):
        stages["avgpool"] = model.avgpool
    return stages, _flat_children(model.classifier)


def _meta_copy(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters and buffers are on the meta device: shapes only, nothing allocated."""
    memo: Dict[int, Tensor] = {}
    for t in itertools.chain(module.parameters(), module.buffers()):
        meta = torch.empty_like(t, device="meta")
        memo[id(t)] = nn.Parameter(meta, t.requires_grad) if isinstance(t, nn.Parameter) else meta
    out = copy.deepcopy(module, memo)
    for m in out.modules():
        if isinstance(m, FoldCacheMixin):
            m.clear_fold_cache()
    return out


def _in_channels(stages: "OrderedDict[str, nn.Module]") -> int:
    for stage in stages.values():
        for m in stage.modules():
            if isinstance(m, nn.Conv2d):
                return m.in_channels
    raise ValueError(f"{_NAME}: `model`'s feature extractor holds no nn.Conv2d, so its input channels are unknown")


def _pool_replacement(path: str, pool: nn.Module, size_in: Tuple[int, int], window: Tuple[int, int]) -> nn.Module:
    """What computes `pool` exactly on every window of a larger map, given its input size at the window: nothing
    when it is the identity there, a fixed pool of k x k when its input is k times its output (each of its bins is
    then exactly k x k), else an error."""
    out = pool.output_size if isinstance(pool.output_size, tuple) else (pool.output_size, pool.output_size)
    out = tuple(i if o is None else o for o, i in zip(out, size_in))
    if getattr(pool, "return_indices", False):
        raise ValueError(f"{_NAME}: `model`'s {path} ({type(pool).__name__}) returns indices; it cannot be "
                         f"convolutionalized")
    if out == size_in:
        return nn.Identity()
    if all(i % o == 0 for i, o in zip(size_in, out)):
        k = tuple(i // o for i, o in zip(size_in, out))
        return nn.AvgPool2d(k, k) if isinstance(pool, nn.AdaptiveAvgPool2d) else nn.MaxPool2d(k, k)
    raise ValueError(f"{_NAME}: `model`'s {path} ({type(pool).__name__} to {out[0]}x{out[1]}) gets a "
                     f"{size_in[0]}x{size_in[1]} map at window {window[0]}x{window[1]}: it is not the identity "
                     f"there and its bins are not all of one size, so no fixed pool slides like it; pass a `window` "
                     f"at which it gets a {out[0]}x{out[1]} map (or a multiple of it)")


def _replace(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, new)


def _adaptive_pools(stages: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The adaptive pools of the Sequential chain `stages`; one inside any other block is an error: it pools the
    block's whole input (squeeze-and-excitation, attention), so no window's output could be computed on its own."""
    found = []
    for name, m in stages.named_modules():
        if not isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            continue
        parts = name.split(".")
        for depth in range(1, len(parts)):
            owner = stages.get_submodule(".".join(parts[:depth]))
            if not isinstance(owner, nn.Sequential) or type(owner).forward not in (nn.Sequential.forward,
                                                                                  FusedSequential.forward):
                raise ValueError(f"{_NAME}: `model`'s {name} is an adaptive pool inside a {type(owner).__name__} "
                                 f"block ({'.'.join(parts[:depth])}): its output depends on the block's whole input, "
                                 f"so a window's score would depend on the rest of the image")
        found.append((name, m))
    return found


def _run(stages: nn.Module, channels: int, size: Tuple[int, int]) -> Tensor:
    return stages(torch.empty(1, channels, *size, device="meta"))


def _stride(stages: nn.Module, channels: int, window: Tuple[int, int], feature_size: Tuple[int, int]
            ) -> Tuple[int, int]:
    """Per axis, the growth of the input between the first sizes that give 2 and 3 windows, i.e. feature maps one
    and two larger than at `window` (a chain of convolutions and pools maps an input grown by g to
    1 + floor((g + slack) / stride) more positions)."""
    def first(axis: int, target: int) -> int:
        def size(grow: int) -> int:
            shape = list(window)
            shape[axis] += grow
            return _run(stages, channels, tuple(shape)).shape[2 + axis]
        lo, hi = 0, 1
        while size(hi) < target:
            lo, hi = hi, hi * 2
            if hi > 64 * window[axis]:
                raise ValueError(f"{_NAME}: `model`'s feature map does not grow with its input (axis {axis})")
        while hi - lo > 1:  # size(lo) < target <= size(hi)
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if size(mid) >= target else (mid, hi)
        return hi
    return tuple(first(axis, feature_size[axis] + 2) - first(axis, feature_size[axis] + 1) for axis in (0, 1))


def _head_convs(head: List[nn.Module], features: Tuple[int, int, int]) -> List[nn.Module]:
    """The head's layers on a feature map of `features` (C, h, w): Linears as convolutions, the first one's kernel
    the whole map, BatchNorm1d as BatchNorm2d, elementwise layers as they are."""
    out: List[nn.Module] = []
    seen_linear = False
    for m in head:
        if isinstance(m, nn.Linear):
            c, h, w = features if not seen_linear else (m.in_features, 1, 1)
            if m.in_features != c * h * w:
                raise ValueError(f"{_NAME}: `model`'s first Linear takes {m.in_features} features, but the feature "
                                 f"map at the window is {c}x{h}x{w} = {c * h * w}; is `window` right?")
            # Built on meta (no initialisation to throw away), then given the Linear's own (already copied) tensors:
            # flatten(1) orders a (C, h, w) map channel-major, exactly a conv weight's (C, kh, kw) layout.
            conv = nn.Conv2d(c, m.out_features, (h, w), bias=m.bias is not None, device="meta")
            conv.weight = nn.Parameter(m.weight.detach().reshape(m.out_features, c, h, w),
                                       m.weight.requires_grad)
            if m.bias is not None:
                conv.bias = nn.Parameter(m.bias.detach(), m.bias.requires_grad)
            out.append(conv.train(m.training))
            seen_linear = True
        elif type(m) is nn.BatchNorm1d:
            bn = nn.BatchNorm2d(m.num_features, m.eps, m.momentum, m.affine, m.track_running_stats,
                                device=(m.weight if m.affine else m.running_mean).device)
            bn.load_state_dict(m.state_dict())
            out.append(bn.train(m.training))
        elif isinstance(m, (nn.Softmax, nn.LogSoftmax)) and m.dim == 1:
            out.append(m)  # dim 1 is the class axis of both the vectors and the score map
        elif type(m) in _ELEMENTWISE or (type(m) is nn.PReLU and m.num_parameters == 1):
            out.append(m)
        else:
            raise ValueError(f"{_NAME}: `model`'s head holds a {type(m).__name__}, which has no convolutional "
                             f"equivalent here (Linear, BatchNorm1d, Dropout, elementwise activations and "
                             f"Softmax(dim=1) are converted)")
    if not seen_linear:
        raise ValueError(f"{_NAME}: `model`'s head after the flatten holds no nn.Linear")
    return out


def convolutionalize(model: nn.Module, window: Optional[Window] = None) -> SlidingWindowClassifier:
    """A copy of the classifier `model` that runs on images larger than `window` in one pass and returns class scores
    (N, classes, H', W'), one per window-sized crop at the copy's `stride` (see SlidingWindowClassifier).

    `model`: cnnkernels.models' or torchvision's LeNet5, AlexNet or VGG (optimize()d ones included), or an
    nn.Sequential with one nn.Flatten between its feature extractor and its head; adaptive pools inside other blocks
    (squeeze-and-excitation) are refused, as each window's score would depend on the whole image.

    `window`: the (H, W) or int input size the classifier is used at; None takes the model's `resolution` attribute
    or the size its class is built for (LeNet-5 32, AlexNet and VGG 224), and raises ValueError where neither
    exists.

    The head's first Linear becomes a convolution with the feature map at `window` as its kernel, later Linears 1x1
    convolutions, BatchNorm1d BatchNorm2d; Dropout and elementwise activations stay, the flatten goes. An adaptive
    pool anywhere before the head is dropped where it is the identity at `window`, and becomes a fixed k x k pool of
    stride k where its input there is k times its output (then `stride` grows k-fold); any other adaptive pool is a
    ValueError. The copy's convolutions run as fused conv2d_act calls in eval mode; its outputs equal the model's at
    `window` within fp32 rounding in eval mode (on every window of a larger image too when the feature extractor has
    no padding). The copy keeps the model's training flag; `model` itself is not modified."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{_NAME}: `model` must be a torch.nn.Module, got {type(model).__name__}")
    window = _native_window(model) if window is None else _check_window(window)
    model_copy = copy.deepcopy(model)
    stages, head = _split(model_copy)
    body = nn.Sequential(stages)
    channels = _in_channels(stages)
    meta = _meta_copy(body)

    pools = _adaptive_pools(body)
    seen: Dict[str, Tuple[int, int]] = {}
    handles = [m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, args[0].shape[2:]))
               for name, m in _adaptive_pools(meta)]
    try:
        _run(meta, channels, window)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"{_NAME}: `model`'s feature extractor fails on a {channels}x{window[0]}x{window[1]} "
                         f"input; is `window` right? ({e})") from e
    finally:
        for h in handles:
            h.remove()
    for name, pool in pools:
        if name not in seen:
            continue  # never reached: a module the forward does not run
        new = _pool_replacement(name, pool, tuple(seen[name]), window)
        _replace(body, name, new)
        _replace(meta, name, copy.deepcopy(new))

    features = tuple(_run(meta, channels, window).shape[1:])
    stride = _stride(meta, channels, window, features[1:])
    head_layers = _head_convs(head, features)

    hooks = [h for h in model._forward_pre_hooks.values() if isinstance(h, _InputMemoryFormat)]
    out_stages = OrderedDict((name, stage) for name, stage in body.named_children()
                             if type(stage) is not nn.Identity)
    classifier = out_stages["classifier"] = FusedSequential(*head_layers)
    result = SlidingWindowClassifier(out_stages, window, stride)
    # Only the new containers take the model's mode; every layer kept or converted has its own one's.
    classifier.training = result.training = model.training
    for hook in hooks:
        # optimize()d models keep their parameters and inputs in one memory format (channels_last): the new
        # convolutions follow it.
        classifier.to(memory_format=hook.memory_format)
        result.register_forward_pre_hook(hook)
    for m in result.modules():
        if isinstance(m, FoldCacheMixin):
            m.clear_fold_cache()
    return result
