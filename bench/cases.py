"""The op-level benchmark suite: shapes taken from real network layers, each case named after its layer.

An `OpSpec` knows, for one cnnkernels op, how to make random weights (BatchNorm already folded into conv biases), the
plain torch.nn.functional composition the op replaces (`eager`), and the fused call (`fused`). A `Case` is one layer:
an op, its input size and the op's parameters. Batch size and dtype come from the command line.

Each op also defines its work once, from the same shapes: `flops` (2 x the multiply-adds of its convolutions) and
`min_bytes` (every input, weight and the output moved once), from which run.py derives achieved GFLOP/s and GB/s.

Layer names follow torchvision's module paths (resnet18, resnet50, mobilenet_v2, googlenet, efficientnet_b0,
mobilenet_v3_large). torchvision has no
MobileNet v1: its names follow the usual `features` Sequential of separate layers [conv, dw, pw, dw, pw, ...], and a
depthwise-separable case is named after its pointwise layer.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from math import prod
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from cnnkernels.ops._act import apply_activation as _act, apply_gate as _gate

Tensors = Dict[str, Optional[torch.Tensor]]
Shapes = Dict[str, Optional[Tuple[int, ...]]]


@dataclass(frozen=True)
class Case:
    name: str                 # layer path, e.g. "resnet50.layer1.0.conv3"
    op: str                   # cnnkernels op
    cin: int                  # input channels
    hw: int                   # input height = width
    params: Dict = field(default_factory=dict)

    def input_shape(self, batch: int) -> Tuple[int, int, int, int]:
        return (batch, self.cin, self.hw, self.hw)

    @property
    def spec(self) -> "OpSpec":
        return OPS[self.op]

    def describe(self) -> str:
        return self.spec.describe(self)

    def flops(self, batch: int) -> int:
        return self.spec.flops(self, batch)

    def min_bytes(self, batch: int, itemsize: int) -> int:
        return self.spec.min_bytes(self, batch, itemsize)


def _conv_w(g: torch.Generator, shape: Tuple[int, ...]) -> torch.Tensor:
    # He initialisation keeps activations O(1) through the blocks, so tolerances stay meaningful
    std = (2.0 / prod(shape[1:])) ** 0.5
    return torch.randn(shape, generator=g) * std


def _bias(g: torch.Generator, shape: Tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=g) * 0.1  # a folded BatchNorm shift: never zero


def out_size(size: int, k: int, stride: int = 1, pad: int = 0) -> int:
    return (size + 2 * pad - k) // stride + 1


def _taps(size: int, k: int, stride: int, pad: int) -> int:
    """Kernel taps that land inside the input, summed over the output positions along one dimension."""
    return sum(sum(1 for i in range(k) if 0 <= o * stride - pad + i < size)
               for o in range(out_size(size, k, stride, pad)))


def conv_flops(batch: int, cin: int, cout: int, hw: int, k: int, stride: int = 1, pad: int = 0,
               groups: int = 1) -> int:
    """2 x multiply-adds of a square conv, counting only real work: taps on the zero padding are left out (they are
    ~18% of a 3x3 conv at 7x7), and a grouped/depthwise conv only its cin/groups inputs per output channel."""
    return 2 * batch * cout * (cin // groups) * _taps(hw, k, stride, pad) ** 2


class OpSpec:
    """One op: random weights, the eager composition it replaces, and the fused cnnkernels call."""

    op: str

    def weight_shapes(self, case: Case) -> Shapes:
        """Conv weights (4-d) and biases (1-d) by argument name; None for an absent optional weight."""
        raise NotImplementedError

    def weights(self, case: Case, g: torch.Generator) -> Tensors:
        return {k: None if s is None else (_conv_w(g, s) if len(s) == 4 else _bias(g, s))
                for k, s in self.weight_shapes(case).items()}

    def activation_shapes(self, case: Case, x_shape) -> Shapes:
        """Activation-like extra inputs (a residual): they follow the input's layout in every provider."""
        return {}

    def activations(self, case: Case, x_shape, g: torch.Generator) -> Tensors:
        return {k: torch.randn(s, generator=g) for k, s in self.activation_shapes(case, x_shape).items()}

    def out_shape(self, case: Case, batch: int) -> Tuple[int, ...]:
        raise NotImplementedError

    def flops(self, case: Case, batch: int) -> int:
        """2 x the multiply-adds of the op's convs (conv_flops); biases, activations, adds and pooling are not
        counted (at most a few % of a conv's work). 0 for an op without convs."""
        raise NotImplementedError

    def min_bytes(self, case: Case, batch: int, itemsize: int) -> int:
        """Input, extra activations, weights and output each moved once: the least memory traffic of any
        implementation (fused intermediates never leave the cache)."""
        x = case.input_shape(batch)
        shapes = [x, self.out_shape(case, batch)] + list(self.activation_shapes(case, x).values()) \
            + [s for s in self.weight_shapes(case).values() if s is not None]
        return itemsize * sum(prod(s) for s in shapes)

    def eager(self, case: Case, x: torch.Tensor, acts: Tensors, w: Tensors) -> torch.Tensor:
        raise NotImplementedError

    def op_args(self, case: Case, x: torch.Tensor, acts: Tensors, w: Tensors) -> Dict:
        """The op's arguments by schema name (cnnkernels/ops.schema)."""
        raise NotImplementedError

    def describe(self, case: Case) -> str:
        raise NotImplementedError

    def fused_callable(self) -> Callable:
        """cnnkernels.<op> when its Python wrapper exists and takes the schema's argument names, else the raw
        torch.ops.cnnkernels.<op> (always defined, from ops.schema)."""
        import cnnkernels

        raw = getattr(torch.ops.cnnkernels, self.op)
        wrapper = getattr(cnnkernels, self.op, None)
        names = _schema_arg_names(self.op)
        if wrapper is not None:
            try:
                inspect.signature(wrapper).bind(**{n: None for n in names})
                return lambda **kw: wrapper(**kw)
            except (TypeError, ValueError):
                pass
        return lambda **kw: raw(*[kw[n] for n in names])


def _schema_arg_names(op: str) -> List[str]:
    from cnnkernels._library import SCHEMAS

    args = SCHEMAS[op].split("(", 1)[1].rsplit(")", 1)[0]
    return [a.strip().rsplit(" ", 1)[1] for a in args.split(",")]


class AddRelu(OpSpec):
    op = "add_relu"

    def weight_shapes(self, case):
        return {}

    def activation_shapes(self, case, x_shape):
        return {"residual": tuple(x_shape)}

    def out_shape(self, case, batch):
        return case.input_shape(batch)

    def flops(self, case, batch):
        return 0  # memory-bound: judged by GB/s

    def eager(self, case, x, acts, w):
        return F.relu(x + acts["residual"])

    def op_args(self, case, x, acts, w):
        return {"input": x, "residual": acts["residual"]}

    def describe(self, case):
        return f"relu(x + residual) {case.cin}x{case.hw}x{case.hw}"


class Conv2dAct(OpSpec):
    """params: cout, k, stride, residual (bool), activation"""

    op = "conv2d_act"

    def _out_hw(self, case):
        k = case.params["k"]
        return out_size(case.hw, k, case.params.get("stride", 1), k // 2)

    def weight_shapes(self, case):
        p = case.params
        return {"weight": (p["cout"], case.cin, p["k"], p["k"]), "bias": (p["cout"],)}

    def activation_shapes(self, case, x_shape):
        if not case.params.get("residual"):
            return {}
        return {"residual": self.out_shape(case, x_shape[0])}

    def out_shape(self, case, batch):
        ho = self._out_hw(case)
        return (batch, case.params["cout"], ho, ho)

    def flops(self, case, batch):
        p = case.params
        return conv_flops(batch, case.cin, p["cout"], case.hw, p["k"], p.get("stride", 1), p["k"] // 2)

    def eager(self, case, x, acts, w):
        p = case.params
        y = F.conv2d(x, w["weight"], w["bias"], p.get("stride", 1), p["k"] // 2)
        if acts.get("residual") is not None:
            y = y + acts["residual"]
        return _act(y, p["activation"])

    def op_args(self, case, x, acts, w):
        p = case.params
        s, pad = p.get("stride", 1), p["k"] // 2
        return {"input": x, "weight": w["weight"], "bias": w["bias"], "residual": acts.get("residual"),
                "stride": [s, s], "padding": [pad, pad], "dilation": [1, 1], "groups": 1,
                "activation": p["activation"]}

    def describe(self, case):
        p = case.params
        res = " + residual" if p.get("residual") else ""
        return (f"conv {p['k']}x{p['k']} {case.cin}->{p['cout']} s{p.get('stride', 1)}{res} {p['activation']} "
                f"@{case.hw}")


class DwsepConv2d(OpSpec):
    """params: cout, stride, dw_activation, pw_activation (3x3 depthwise, padding 1, then 1x1 pointwise)"""

    op = "dwsep_conv2d"

    def weight_shapes(self, case):
        c, cout = case.cin, case.params["cout"]
        return {"dw_weight": (c, 1, 3, 3), "dw_bias": (c,), "pw_weight": (cout, c, 1, 1), "pw_bias": (cout,)}

    def out_shape(self, case, batch):
        ho = out_size(case.hw, 3, case.params["stride"], 1)
        return (batch, case.params["cout"], ho, ho)

    def flops(self, case, batch):
        p, c = case.params, case.cin
        ho = out_size(case.hw, 3, p["stride"], 1)
        return conv_flops(batch, c, c, case.hw, 3, p["stride"], 1, groups=c) + conv_flops(batch, c, p["cout"], ho, 1)

    def eager(self, case, x, acts, w):
        p = case.params
        y = _act(F.conv2d(x, w["dw_weight"], w["dw_bias"], p["stride"], 1, 1, case.cin), p["dw_activation"])
        return _act(F.conv2d(y, w["pw_weight"], w["pw_bias"]), p["pw_activation"])

    def op_args(self, case, x, acts, w):
        p = case.params
        return {"input": x, "dw_weight": w["dw_weight"], "dw_bias": w["dw_bias"], "pw_weight": w["pw_weight"],
                "pw_bias": w["pw_bias"], "stride": [p["stride"]] * 2, "padding": [1, 1], "dilation": [1, 1],
                "dw_activation": p["dw_activation"], "pw_activation": p["pw_activation"]}

    def describe(self, case):
        p = case.params
        return (f"dw3x3 s{p['stride']} {p['dw_activation']} + pw {case.cin}->{p['cout']} {p['pw_activation']} "
                f"@{case.hw}")


class InvertedResidual(OpSpec):
    """params: cout, expand (ratio), stride, activation; residual when stride 1 and cin == cout (MobileNet v2)"""

    op = "inverted_residual"

    def _hidden(self, case):
        return case.cin * case.params["expand"]

    def _residual(self, case):
        return case.params["stride"] == 1 and case.cin == case.params["cout"]

    def weight_shapes(self, case):
        p, hid = case.params, self._hidden(case)
        w: Shapes = {"expand_weight": None, "expand_bias": None}
        if p["expand"] != 1:
            w = {"expand_weight": (hid, case.cin, 1, 1), "expand_bias": (hid,)}
        w.update({"dw_weight": (hid, 1, 3, 3), "dw_bias": (hid,),
                  "project_weight": (p["cout"], hid, 1, 1), "project_bias": (p["cout"],)})
        return w

    def out_shape(self, case, batch):
        ho = out_size(case.hw, 3, case.params["stride"], 1)
        return (batch, case.params["cout"], ho, ho)

    def flops(self, case, batch):
        p, hid = case.params, self._hidden(case)
        ho = out_size(case.hw, 3, p["stride"], 1)
        expand = conv_flops(batch, case.cin, hid, case.hw, 1) if p["expand"] != 1 else 0
        return (expand + conv_flops(batch, hid, hid, case.hw, 3, p["stride"], 1, groups=hid)
                + conv_flops(batch, hid, p["cout"], ho, 1))

    def eager(self, case, x, acts, w):
        p, hid = case.params, self._hidden(case)
        y = x
        if w["expand_weight"] is not None:
            y = _act(F.conv2d(y, w["expand_weight"], w["expand_bias"]), p["activation"])
        y = _act(F.conv2d(y, w["dw_weight"], w["dw_bias"], p["stride"], 1, 1, hid), p["activation"])
        y = F.conv2d(y, w["project_weight"], w["project_bias"])
        return y + x if self._residual(case) else y

    def op_args(self, case, x, acts, w):
        p = case.params
        return {"input": x, **w, "stride": p["stride"], "residual": self._residual(case),
                "activation": p["activation"]}

    def describe(self, case):
        p = case.params
        res = " + residual" if self._residual(case) else ""
        return (f"{case.cin}->{case.cin * p['expand']}->{p['cout']} s{p['stride']}{res} {p['activation']} "
                f"@{case.hw}")


class MBConv(OpSpec):
    """params: hidden, cout, k (3 or 5), stride, activation, se (squeeze channels; 0: no SE stage), se_activation,
    se_gate. As in torchvision's EfficientNet and MobileNet v3 blocks, there is no expand conv when hidden == cin,
    and a residual when stride 1 and cin == cout."""

    op = "mbconv"

    def _expand(self, case):
        return case.params["hidden"] != case.cin

    def _residual(self, case):
        return case.params["stride"] == 1 and case.cin == case.params["cout"]

    def _out_hw(self, case):
        k = case.params["k"]
        return out_size(case.hw, k, case.params["stride"], k // 2)

    def weight_shapes(self, case):
        p, hid, se = case.params, case.params["hidden"], case.params["se"]
        w: Shapes = {"expand_weight": None, "expand_bias": None}
        if self._expand(case):
            w = {"expand_weight": (hid, case.cin, 1, 1), "expand_bias": (hid,)}
        w.update({"dw_weight": (hid, 1, p["k"], p["k"]), "dw_bias": (hid,)})
        if se:
            w.update({"se_reduce_weight": (se, hid, 1, 1), "se_reduce_bias": (se,),
                      "se_expand_weight": (hid, se, 1, 1), "se_expand_bias": (hid,)})
        else:
            w.update(dict.fromkeys(("se_reduce_weight", "se_reduce_bias", "se_expand_weight", "se_expand_bias")))
        w.update({"project_weight": (p["cout"], hid, 1, 1), "project_bias": (p["cout"],)})
        return w

    def out_shape(self, case, batch):
        ho = self._out_hw(case)
        return (batch, case.params["cout"], ho, ho)

    def flops(self, case, batch):
        p, hid, se = case.params, case.params["hidden"], case.params["se"]
        expand = conv_flops(batch, case.cin, hid, case.hw, 1) if self._expand(case) else 0
        # The SE convs run on the pooled 1x1 map, as in cnnkernels' mbconv_macs (and torchvision's _ops): cheap, but
        # counted, so the rate is that of the whole block
        squeeze = conv_flops(batch, hid, se, 1, 1) + conv_flops(batch, se, hid, 1, 1) if se else 0
        return (expand + conv_flops(batch, hid, hid, case.hw, p["k"], p["stride"], p["k"] // 2, groups=hid)
                + squeeze + conv_flops(batch, hid, p["cout"], self._out_hw(case), 1))

    def eager(self, case, x, acts, w):
        p, hid = case.params, case.params["hidden"]
        y = x
        if w["expand_weight"] is not None:
            y = _act(F.conv2d(y, w["expand_weight"], w["expand_bias"]), p["activation"])
        y = _act(F.conv2d(y, w["dw_weight"], w["dw_bias"], p["stride"], p["k"] // 2, 1, hid), p["activation"])
        if w["se_reduce_weight"] is not None:
            s = _act(F.conv2d(y.mean((2, 3), keepdim=True), w["se_reduce_weight"], w["se_reduce_bias"]),
                     p["se_activation"])
            y = y * _gate(F.conv2d(s, w["se_expand_weight"], w["se_expand_bias"]), p["se_gate"])
        y = F.conv2d(y, w["project_weight"], w["project_bias"])
        return y + x if self._residual(case) else y

    def op_args(self, case, x, acts, w):
        p = case.params
        return {"input": x, **w, "stride": p["stride"], "residual": self._residual(case),
                "activation": p["activation"], "se_activation": p["se_activation"], "se_gate": p["se_gate"]}

    def describe(self, case):
        p = case.params
        res = " + residual" if self._residual(case) else ""
        se = f" SE {p['se']} {p['se_activation']}/{p['se_gate']}" if p["se"] else ""
        return (f"{case.cin}->{p['hidden']}->{p['cout']} k{p['k']} s{p['stride']}{res} {p['activation']}{se} "
                f"@{case.hw}")


class InceptionBlock(OpSpec):
    """params: c1, c3r, c3, c5r, c5, cp (torchvision's Inception(in, ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5,
    pool_proj)); torchvision's "5x5" branch uses a 3x3 kernel, so does this one. Every conv is followed by ReLU."""

    op = "inception_block"

    def weight_shapes(self, case):
        p, c = case.params, case.cin
        return {"w1": (p["c1"], c, 1, 1), "b1": (p["c1"],),
                "w2_reduce": (p["c3r"], c, 1, 1), "b2_reduce": (p["c3r"],),
                "w2": (p["c3"], p["c3r"], 3, 3), "b2": (p["c3"],),
                "w3_reduce": (p["c5r"], c, 1, 1), "b3_reduce": (p["c5r"],),
                "w3": (p["c5"], p["c5r"], 3, 3), "b3": (p["c5"],),
                "w4": (p["cp"], c, 1, 1), "b4": (p["cp"],)}

    def out_shape(self, case, batch):
        p = case.params
        return (batch, p["c1"] + p["c3"] + p["c5"] + p["cp"], case.hw, case.hw)

    def flops(self, case, batch):
        p, c, hw = case.params, case.cin, case.hw
        return (conv_flops(batch, c, p["c1"] + p["c3r"] + p["c5r"] + p["cp"], hw, 1)   # the four 1x1 convs
                + conv_flops(batch, p["c3r"], p["c3"], hw, 3, pad=1)
                + conv_flops(batch, p["c5r"], p["c5"], hw, 3, pad=1))

    def eager(self, case, x, acts, w):
        b1 = F.relu(F.conv2d(x, w["w1"], w["b1"]))
        b2 = F.relu(F.conv2d(x, w["w2_reduce"], w["b2_reduce"]))
        b2 = F.relu(F.conv2d(b2, w["w2"], w["b2"], padding=w["w2"].shape[-1] // 2))
        b3 = F.relu(F.conv2d(x, w["w3_reduce"], w["b3_reduce"]))
        b3 = F.relu(F.conv2d(b3, w["w3"], w["b3"], padding=w["w3"].shape[-1] // 2))
        b4 = F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
        b4 = F.relu(F.conv2d(b4, w["w4"], w["b4"]))
        return torch.cat([b1, b2, b3, b4], 1)

    def op_args(self, case, x, acts, w):
        return {"input": x, **w}

    def describe(self, case):
        p = case.params
        return (f"{case.cin} -> {p['c1']} | {p['c3r']}->{p['c3']} | {p['c5r']}->{p['c5']} | pool->{p['cp']} "
                f"@{case.hw}")


class UpConcatConv(OpSpec):
    """params: cup, cskip, cout, activation (a U-Net decoder step: 2x2 stride-2 transposed conv of the input to cup
    channels, cat with a cskip-channel skip tensor at twice the input's size, 3x3 conv with padding 1)"""

    op = "up_concat_conv"

    def weight_shapes(self, case):
        p = case.params
        return {"up_weight": (case.cin, p["cup"], 2, 2), "up_bias": (p["cup"],),
                "weight": (p["cout"], p["cskip"] + p["cup"], 3, 3), "bias": (p["cout"],)}

    def activation_shapes(self, case, x_shape):
        return {"skip": (x_shape[0], case.params["cskip"], 2 * case.hw, 2 * case.hw)}

    def out_shape(self, case, batch):
        return (batch, case.params["cout"], 2 * case.hw, 2 * case.hw)

    def flops(self, case, batch):
        p = case.params
        # Every upsampled pixel is one C_in x C_up product (kernel 2 = stride 2, no overlap).
        up = 2 * batch * (2 * case.hw) ** 2 * case.cin * p["cup"]
        return up + conv_flops(batch, p["cskip"] + p["cup"], p["cout"], 2 * case.hw, 3, pad=1)

    def eager(self, case, x, acts, w):
        up = F.conv_transpose2d(x, w["up_weight"], w["up_bias"], stride=2)
        return _act(F.conv2d(torch.cat([acts["skip"], up], 1), w["weight"], w["bias"], padding=1),
                    case.params["activation"])

    def op_args(self, case, x, acts, w):
        return {"input": x, "skip": acts["skip"], **w, "activation": case.params["activation"]}

    def describe(self, case):
        p = case.params
        return (f"up2x2 {case.cin}->{p['cup']} | skip {p['cskip']} -> 3x3 {p['cskip'] + p['cup']}->{p['cout']} "
                f"{p['activation']} @{case.hw}->{2 * case.hw}")


OPS: Dict[str, OpSpec] = {s.op: s for s in (AddRelu(), Conv2dAct(), DwsepConv2d(), InvertedResidual(),
                                            MBConv(), InceptionBlock(), UpConcatConv())}


def _incep(name, cin, hw, c1, c3r, c3, c5r, c5, cp):
    return Case(name, "inception_block", cin, hw, dict(c1=c1, c3r=c3r, c3=c3, c5r=c5r, c5=c5, cp=cp))


def _effnet(name, cin, hw, hidden, cout, k, stride, se):
    # EfficientNet: SiLU everywhere, sigmoid gate; every block has SE, squeezing to a quarter of the block's input
    return Case(name, "mbconv", cin, hw, dict(hidden=hidden, cout=cout, k=k, stride=stride, activation="silu", se=se,
                                              se_activation="silu", se_gate="sigmoid"))


def _mnv3(name, cin, hw, hidden, cout, k, stride, activation, se=0):
    # MobileNet v3: the SE stage is ReLU + hardsigmoid whatever the block's activation
    return Case(name, "mbconv", cin, hw, dict(hidden=hidden, cout=cout, k=k, stride=stride, activation=activation,
                                              se=se, se_activation="relu", se_gate="hardsigmoid"))


def _unet_up(name, cin, hw, width):
    return Case(name, "up_concat_conv", cin, hw, dict(cup=width, cskip=width, cout=width, activation="relu"))


CASES: List[Case] = [
    Case("resnet18.layer1.0.add_relu", "add_relu", 64, 56),
    Case("resnet18.layer1.0.conv1", "conv2d_act", 64, 56, dict(cout=64, k=3, stride=1, activation="relu")),
    Case("resnet50.layer1.0.conv3", "conv2d_act", 64, 56,
         dict(cout=256, k=1, stride=1, residual=True, activation="relu")),
    Case("mobilenet_v1.features.2", "dwsep_conv2d", 32, 112,
         dict(cout=64, stride=1, dw_activation="relu", pw_activation="relu")),
    Case("mobilenet_v1.features.4", "dwsep_conv2d", 64, 112,
         dict(cout=128, stride=2, dw_activation="relu", pw_activation="relu")),
    Case("mobilenet_v2.features.2", "inverted_residual", 16, 112,
         dict(cout=24, expand=6, stride=2, activation="relu6")),
    Case("mobilenet_v2.features.3", "inverted_residual", 24, 56,
         dict(cout=24, expand=6, stride=1, activation="relu6")),
    # torchvision's features.14 is the 96->160 stride-2 block (14x14 in, 7x7 out); 15 and 16 are 160->160 at 7x7
    Case("mobilenet_v2.features.14", "inverted_residual", 96, 14,
         dict(cout=160, expand=6, stride=2, activation="relu6")),
    Case("mobilenet_v2.features.15", "inverted_residual", 160, 7,
         dict(cout=160, expand=6, stride=1, activation="relu6")),
    # shapes as torchvision 0.29 builds them (checked by instantiating the models): features.N.M is stage N, block M
    _effnet("efficientnet_b0.features.1.0", 32, 112, 32, 16, 3, 1, 8),        # no expand conv
    _effnet("efficientnet_b0.features.2.0", 16, 112, 96, 24, 3, 2, 4),
    _effnet("efficientnet_b0.features.3.0", 24, 56, 144, 40, 5, 2, 6),
    _effnet("efficientnet_b0.features.4.1", 80, 14, 480, 80, 3, 1, 20),
    _effnet("efficientnet_b0.features.6.1", 192, 7, 1152, 192, 5, 1, 48),
    _mnv3("mobilenet_v3_large.features.4", 24, 56, 72, 40, 5, 2, "relu", se=24),
    _mnv3("mobilenet_v3_large.features.7", 40, 28, 240, 80, 3, 2, "hardswish"),  # no SE: the inverted_residual path
    _mnv3("mobilenet_v3_large.features.12", 112, 14, 672, 112, 3, 1, "hardswish", se=168),
    _mnv3("mobilenet_v3_large.features.13", 112, 14, 672, 160, 5, 2, "hardswish", se=168),
    _incep("googlenet.inception3a", 192, 28, 64, 96, 128, 16, 32, 32),
    _incep("googlenet.inception4a", 480, 14, 192, 96, 208, 16, 48, 64),
    _incep("googlenet.inception5b", 832, 7, 384, 192, 384, 48, 128, 128),
    # U-Net (Ronneberger et al., base width 64, four levels) on a 256x256 image: the first conv of each decoder step,
    # with its up-convolution halving the channels and the skip from the encoder level of the same size.
    _unet_up("unet.up1", 1024, 16, 512),
    _unet_up("unet.up2", 512, 32, 256),
    _unet_up("unet.up3", 256, 64, 128),
    _unet_up("unet.up4", 128, 128, 64),
]
