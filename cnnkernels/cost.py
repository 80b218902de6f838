"""What a network costs: multiply-accumulates, parameters, output shapes and activation memory, per layer and in total.

    python -m cnnkernels.cost resnet18                      # per-layer table and totals, 1x3x224x224 input
    python -m cnnkernels.cost mobilenet_v2 --depth 1        # aggregated to the model's top-level modules
    python -m cnnkernels.cost googlenet --torchvision       # torchvision's model of that name instead

`count(model, input_size)` runs the model once and returns a `ModelCost` (`.macs`, `.params`,
`.activation_bytes`, `.layers`, `.table()`); `dwsep_ratio(out_channels, kernel_size)` is the cost of a
depthwise-separable convolution relative to a normal one.

Conventions (those of the papers and of torchvision's model table, whose `_ops` metadata they reproduce):
- a convolution costs output elements x kernel volume x input channels per group MACs, padding taps included; a
  linear layer output features x input features per row; BatchNorm, activations, pooling, adds and biases cost 0;
- the MACs are those torch.utils.flop_counter.FlopCounterMode counts (FLOPs / 2) for the aten ops and, through the
  formulas cnnkernels.ops._flops registers for them, for the fused cnnkernels ops; so a cnnkernels model in eval
  mode (fused) costs exactly what it costs in training mode or as its torchvision twin;
- every FLOP is attributed to the innermost module running when it happens. A layer of the table is a module that ran
  and computed something itself, or called no other module (a leaf): for a fused block in eval mode (a
  cnnkernels.nn.BasicBlock calling conv2d_act) that is the block, since its Conv2d / BatchNorm children never run;
- parameters are those of the model as given (shared ones once): a parameter belongs to its module's row, or, when
  that module did not run, to the nearest enclosing module that ran and computed (the fused block that read it), or
  else to a "(not run)" row (e.g. GoogLeNet's auxiliary classifiers in eval mode). optimize() folds BatchNorm into
  the convolutions, so an optimize()d model has fewer parameters than the model it came from (same MACs);
- activation memory of a row: the bytes of the module's outputs (elements x element size, every call). The total
  sums the rows, so a fused block counts only the output it writes, not the intermediates it keeps out of memory.

The model runs once in eval mode (then put back in the modes it had), under torch.no_grad(), on zeros of
`input_size` with the dtype and device of its first parameter: a model built on the meta device
(`with torch.device("meta"): ...`) is counted without allocating or computing anything, which is what the command does.
"""

from __future__ import annotations

import argparse
import numbers
import sys
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils._pytree import tree_leaves
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from cnnkernels import models
from cnnkernels._argtypes import nonnegative_int, positive_int
from cnnkernels.ops._flops import register_flop_formulas

__all__ = ["LayerCost", "ModelCost", "count", "dwsep_ratio", "main"]

ROOT_NAME = "<model>"  # how the table names the model itself (its module name is "")
NOT_RUN = "(not run)"
# Default input sizes of the command: LeNet-5 is a 32x32 network, everything else an ImageNet one.
DEFAULT_SIZES = {"lenet5": 32}


@dataclass(frozen=True)
class LayerCost:
    """One row of a ModelCost. `output_shape`: the output's shape (a tuple of shapes when the module returns several
    tensors), None when the module did not run. `calls`: how often the module ran (its MACs and activation bytes add
    up over the calls)."""

    name: str
    type: str
    output_shape: Optional[Tuple]
    params: int
    macs: int
    activation_bytes: int
    calls: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.macs


class ModelCost:
    """count()'s result: per-layer records `.layers` and the totals `.macs`, `.params`, `.activation_bytes` (the sums
    over the layers) of one forward pass on an input of shape `.input_shape`."""

    def __init__(self, layers: Sequence[LayerCost], input_shape: Tuple[int, ...], model_name: str,
                 outputs: Dict[str, Tuple[str, Optional[Tuple], int]]) -> None:
        self.layers: List[LayerCost] = list(layers)
        self.input_shape = tuple(input_shape)
        self.model_name = model_name
        self._outputs = outputs  # module name -> (type, output shape, calls), for every module, for aggregate()

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(r.activation_bytes for r in self.layers)

    def aggregate(self, depth: int) -> List[LayerCost]:
        """The layers summed up to module depth `depth` (0: the whole model, 1: its children, ...). A group is named
        after its module and shows that module's type and output."""
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 0:
            raise ValueError(f"cnnkernels.cost: `depth` must be an integer >= 0, got {depth!r}")
        groups: Dict[str, List[LayerCost]] = {}
        for r in self.layers:
            parts = [] if r.name == ROOT_NAME else r.name.split(".")
            groups.setdefault(".".join(parts[:depth]), []).append(r)
        out = []
        for key, rows in groups.items():
            name = key or ROOT_NAME
            if len(rows) == 1 and rows[0].name == name:
                # Only the module's own row (e.g. a ResNet's stem, run by the model's forward): as it is, not with
                # the module's output.
                out.append(rows[0])
                continue
            typ, shape, calls = self._outputs.get(key, (rows[0].type, rows[0].output_shape, rows[0].calls))
            out.append(LayerCost(name, typ, shape, sum(r.params for r in rows), sum(r.macs for r in rows),
                                 sum(r.activation_bytes for r in rows), calls))
        return out

    def table(self, depth: Optional[int] = None) -> str:
        """The per-layer table (aggregated to `depth` when given) and a line with the totals."""
        rows = self.layers if depth is None else self.aggregate(depth)
        head = ("layer", "type", "output", "params", "MACs", "activations")
        body = [(r.name, r.type + (f" (x{r.calls})" if r.calls > 1 else ""), _format_shape(r.output_shape),
                 f"{r.params:,}", f"{r.macs:,}", _format_bytes(r.activation_bytes)) for r in rows]
        total = ("total", "", "", f"{self.params:,}", f"{self.macs:,}", _format_bytes(self.activation_bytes))
        widths = [max(len(row[i]) for row in [head, total] + body) for i in range(len(head))]

        def line(row):
            left = [row[i].ljust(widths[i]) for i in range(3)]
            right = [row[i].rjust(widths[i]) for i in range(3, len(head))]
            return "  ".join(left + right).rstrip()

        rule = "-" * len(line(head))
        out = [line(head), rule] + [line(row) for row in body] + [rule, line(total), "", self.summary()]
        return "\n".join(out)

    def summary(self) -> str:
        return (f"{self.model_name}, input {_format_shape(self.input_shape)}: {self.macs / 1e9:.3f} GMACs "
                f"({self.flops / 1e9:.3f} GFLOPs), {self.params / 1e6:.3f} M params, "
                f"{self.activation_bytes / 2**20:.1f} MiB of layer outputs")

    def __str__(self) -> str:
        return self.table()

    def __repr__(self) -> str:
        return (f"ModelCost({self.model_name}, input={self.input_shape}, macs={self.macs:,}, params={self.params:,}, "
                f"activation_bytes={self.activation_bytes:,}, layers={len(self.layers)})")


def _format_shape(shape) -> str:
    if shape is None:
        return NOT_RUN
    if shape == ():
        return "-"
    if isinstance(shape[0], tuple):
        if len(shape) > 2:  # e.g. the 13 convs a fused VGG feature extractor runs itself
            return f"{_format_shape(shape[0])} .. {_format_shape(shape[-1])} ({len(shape)} outputs)"
        return ", ".join(_format_shape(s) for s in shape)
    return "x".join(str(d) for d in shape)


def _format_bytes(n: int) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


# ------------------------------------------------------------------------------------------------------ counting

def _input_shape(model: nn.Module, input_size) -> Tuple[int, ...]:
    """input_size: an int S (a batch-1 S x S image with the channels the model's first Conv2d takes, 3 without one),
    (C, H, W) (batch 1) or (N, C, H, W)."""
    def is_int(v):
        return isinstance(v, numbers.Integral) and not isinstance(v, bool)

    if is_int(input_size):
        dims: List[Any] = [input_size]
    elif isinstance(input_size, (tuple, list, torch.Size)):
        dims = list(input_size)
    else:
        raise TypeError(f"cnnkernels.cost.count: `input_size` must be an int or a sequence of ints (C, H, W) or "
                        f"(N, C, H, W), got {type(input_size).__name__}")
    bad = [d for d in dims if not is_int(d)]
    if bad:
        raise TypeError(f"cnnkernels.cost.count: `input_size` must hold ints, got {input_size!r}")
    if any(d < 1 for d in dims):
        raise ValueError(f"cnnkernels.cost.count: `input_size` must be positive, got {input_size!r}")
    dims = [int(d) for d in dims]
    if len(dims) == 1:
        conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
        return (1, conv.in_channels if conv is not None else 3, dims[0], dims[0])
    if len(dims) == 3:
        return (1, *dims)
    if len(dims) == 4:
        return tuple(dims)
    raise ValueError(f"cnnkernels.cost.count: `input_size` must be S, (C, H, W) or (N, C, H, W), got {input_size!r}")


def _example_input(model: nn.Module, shape: Tuple[int, ...]) -> torch.Tensor:
    tensors = list(model.parameters()) + list(model.buffers())
    device = tensors[0].device if tensors else torch.device("cpu")
    dtype = next((t.dtype for t in tensors if t.is_floating_point()), torch.get_default_dtype())
    return torch.zeros(shape, dtype=dtype, device=device)


def _output_info(output) -> Tuple[Optional[Tuple], int]:
    tensors = [t for t in tree_leaves(output) if isinstance(t, torch.Tensor)]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    if not tensors:
        return (), 0
    shapes = tuple(tuple(t.shape) for t in tensors)
    return (shapes[0] if len(shapes) == 1 else shapes), nbytes


def _join_shapes(shapes: List[Tuple]) -> Tuple:
    flat: List[Tuple] = []
    for sh in shapes:
        flat.extend(sh if sh and isinstance(sh[0], tuple) else [sh])
    return flat[0] if len(flat) == 1 else tuple(flat)


class _ModuleStats:
    __slots__ = ("order", "calls", "self_flops", "nested", "output_shape", "activation_bytes", "own_shapes",
                 "own_bytes")

    def __init__(self, order: int) -> None:
        self.order = order          # when the module first started running
        self.calls = 0
        self.self_flops = 0         # FLOPs of the ops that ran while it was the innermost running module
        self.nested = False         # whether it called another module
        self.output_shape: Optional[Tuple] = None  # of its last call
        self.activation_bytes = 0   # of its outputs, all calls
        self.own_shapes: List[Tuple] = []  # outputs of the ops with FLOPs that it ran itself
        self.own_bytes = 0


class _Recorder:
    """Forward pre/post hooks on every module: a stack of the running modules, each frame holding the FLOP total at
    its start and what its nested calls consumed, so that a module's own FLOPs = its inclusive FLOPs minus its
    children's (attributed to the dynamic caller, so a shared module counts where it runs)."""

    def __init__(self, counter: FlopCounterMode) -> None:
        self.counter = counter
        self.stats: Dict[int, _ModuleStats] = {}
        self.stack: List[List[Any]] = []  # [module id, FLOPs at start, FLOPs of nested calls]

    def pre(self, module, args):
        if self.stack:
            self.stats[self.stack[-1][0]].nested = True
        st = self.stats.get(id(module))
        if st is None:
            st = self.stats[id(module)] = _ModuleStats(len(self.stats))
        self.stack.append([id(module), self.counter.get_total_flops(), 0])

    def post(self, module, args, output):
        if not self.stack or self.stack[-1][0] != id(module):
            return  # a module called outside the stack discipline (cannot happen with plain forward calls)
        _, start, nested = self.stack.pop()
        inclusive = self.counter.get_total_flops() - start
        st = self.stats[id(module)]
        st.calls += 1
        st.self_flops += inclusive - nested
        shape, nbytes = _output_info(output)
        st.output_shape = shape
        st.activation_bytes += nbytes
        if self.stack:
            self.stack[-1][2] += inclusive

    def own_op(self, output) -> None:
        """An op with FLOPs ran while the innermost running module was the stack's top: its output."""
        if self.stack:
            st = self.stats[self.stack[-1][0]]
            shape, nbytes = _output_info(output)
            st.own_shapes.append(shape)
            st.own_bytes += nbytes


class _OwnOps(TorchDispatchMode):
    """Entered inside the FlopCounterMode, so it sees every op first: tells the recorder the outputs of the ops that
    FlopCounterMode then counted FLOPs for. A module that calls other modules and also computes itself (a ResNet
    whose forward runs the fused stem conv, a FusedSequential) gets these outputs as its row's, not its own output."""

    def __init__(self, counter: FlopCounterMode, recorder: _Recorder) -> None:
        super().__init__()
        self.counter, self.recorder = counter, recorder

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        before = self.counter.get_total_flops()
        out = func(*args, **(kwargs or {}))
        if self.counter.get_total_flops() != before:
            self.recorder.own_op(out)
        return out


def count(model: nn.Module, input_size: Union[int, Sequence[int]]) -> ModelCost:
    """Runs `model` once on zeros of `input_size` (an int S: a batch-1 S x S image with the channels of the model's
    first Conv2d; (C, H, W): batch 1; or (N, C, H, W)) and returns its cost: MACs, parameters, output shapes and
    activation memory per layer, and their totals (see the module's docstring for the conventions)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"cnnkernels.cost.count: `model` must be a torch.nn.Module, got {type(model).__name__}")
    shape = _input_shape(model, input_size)
    x = _example_input(model, shape)
    register_flop_formulas()  # the Triton ops' formulas too, if cnnkernels.triton was imported since
    names = {id(m): name for name, m in model.named_modules()}
    modules = {id(m): m for m in model.modules()}
    training = [(m, m.training) for m in model.modules()]
    counter = FlopCounterMode(display=False)
    rec = _Recorder(counter)
    handles = []
    try:
        for m in modules.values():
            handles.append(m.register_forward_pre_hook(rec.pre))
            handles.append(m.register_forward_hook(rec.post))
        if any(t for _, t in training):
            model.eval()
        with torch.no_grad(), counter, _OwnOps(counter, rec):
            model(x)
    finally:
        for h in handles:
            h.remove()
        # Back to the modes it had, parents first so that each module's own call has the last word.
        for m, mode in training:
            if m.training != mode:
                m.train(mode)
    stats = rec.stats
    ran = {i for i, st in stats.items() if st.calls}
    # FLOPs outside every module call (e.g. in a forward pre-hook of the model) go to the model itself.
    outside = counter.get_total_flops() - sum(st.self_flops for st in stats.values())
    if outside and id(model) in stats:
        stats[id(model)].self_flops += outside

    # Parameters: to their module's row if it ran, else to the nearest enclosing module that ran and computed (a
    # fused block that read the weights of its children), else to the outermost module that did not run.
    params: Dict[int, int] = {}
    not_run: Dict[int, None] = {}  # insertion-ordered set
    parent: Dict[int, Optional[int]] = {id(model): None}
    for m in modules.values():
        for child in m.children():
            parent.setdefault(id(child), id(m))
    by_name = {name: m for name, m in model.named_modules()}
    for pname, p in model.named_parameters():
        path = [id(by_name[pname.rpartition(".")[0]])]
        while path[-1] not in ran and parent.get(path[-1]) is not None:
            path.append(parent[path[-1]])
        holder = path[-1]
        if holder not in ran or (holder != path[0] and stats[holder].self_flops == 0):
            # Nobody that ran computed with it: the outermost module below `holder` that did not run holds it.
            holder = path[-2] if holder in ran else path[-1]
            not_run[holder] = None
        params[holder] = params.get(holder, 0) + p.numel()

    def row_name(i: int) -> str:
        return names[i] or ROOT_NAME

    rows: List[Tuple[int, LayerCost]] = []
    for i in sorted(ran, key=lambda i: stats[i].order):
        st = stats[i]
        if not st.nested:  # a leaf: its output
            out_shape, nbytes = st.output_shape, st.activation_bytes
        elif st.self_flops or params.get(i):  # computed itself besides calling modules: what its own ops wrote
            out_shape, nbytes = _join_shapes(st.own_shapes), st.own_bytes
        else:
            continue  # a container: its children are the rows
        rows.append((st.order, LayerCost(row_name(i), type(modules[i]).__name__, out_shape, params.get(i, 0),
                                         st.self_flops // 2, nbytes, st.calls)))
    position = {i: k for k, i in enumerate(modules)}  # the modules' registration order
    rows += [(len(stats) + position[i], LayerCost(row_name(i), type(modules[i]).__name__, None, params[i], 0, 0,
                                                     0)) for i in not_run if i not in ran]
    rows.sort(key=lambda r: r[0])
    outputs = {names[i]: (type(modules[i]).__name__, st.output_shape, st.calls) for i, st in stats.items() if st.calls}
    return ModelCost([r for _, r in rows], shape, type(model).__name__, outputs)


def dwsep_ratio(out_channels: int, kernel_size: Union[int, Sequence[int]]) -> float:
    """The cost of a depthwise-separable convolution (a KxK depthwise conv, then a 1x1 conv to N channels) relative to
    a normal KxK convolution to N channels on the same input: 1/N + 1/K^2 (MobileNets, Howard et al. 2017, eq. 5).
    kernel_size: K, or (kH, kW) for 1/N + 1/(kH kW)."""
    def check(v, what):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"cnnkernels.cost.dwsep_ratio: `{what}` must be a positive int, got {v!r}")
        if v < 1:
            raise ValueError(f"cnnkernels.cost.dwsep_ratio: `{what}` must be a positive int, got {v!r}")
        return int(v)

    n = check(out_channels, "out_channels")
    if isinstance(kernel_size, (tuple, list)):
        if len(kernel_size) != 2:
            raise ValueError(f"cnnkernels.cost.dwsep_ratio: `kernel_size` must be K or (kH, kW), got {kernel_size!r}")
        taps = check(kernel_size[0], "kernel_size") * check(kernel_size[1], "kernel_size")
    else:
        taps = check(kernel_size, "kernel_size") ** 2
    return 1.0 / n + 1.0 / taps


# ------------------------------------------------------------------------------------------------------- command

def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m cnnkernels.cost", description=__doc__.splitlines()[0])
    ap.add_argument("model", metavar="MODEL", help=f"a model of cnnkernels.models: {', '.join(models.list_models())}"
                                                   f" (with --torchvision: a torchvision model name)")
    ap.add_argument("--size", type=positive_int, default=None,
                    help="input height and width (default 224; 32 for lenet5)")
    ap.add_argument("--batch", type=positive_int, default=1, help="batch size (default 1)")
    ap.add_argument("--torchvision", action="store_true", help="count torchvision's model of that name instead")
    ap.add_argument("--depth", type=nonnegative_int, default=None,
                    help="sum the layers up to this module depth (1: the model's children)")
    ap.add_argument("--device", default="meta",
                    help="where to build and run the model (default meta: shapes only, nothing is computed)")
    return ap


def main(argv: Optional[Sequence[str]] = None) -> int:
    """The command: parses `argv` (default sys.argv[1:]), prints the table; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        ap.error(f"argument --device: {e}")
    if args.torchvision:
        import torchvision  # optional dependency, only for this flag
        names = torchvision.models.list_models(module=torchvision.models)
        if args.model not in names:
            ap.error(f"argument MODEL: unknown torchvision classification model {args.model!r}; available: "
                     f"{', '.join(names)}")
        kwargs = {"init_weights": False} if args.model in ("googlenet", "inception_v3") else {}
        with device:
            model = torchvision.models.get_model(args.model, weights=None, **kwargs)
    else:
        if args.model not in models.list_models():
            ap.error(f"argument MODEL: unknown model {args.model!r}; available: {', '.join(models.list_models())}")
        with device:
            model = models.get_model(args.model)
    size = args.size if args.size is not None else DEFAULT_SIZES.get(args.model, 224)
    conv = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    cost = count(model, (args.batch, conv.in_channels if conv is not None else 3, size, size))
    cost.model_name = f"{'torchvision' if args.torchvision else 'cnnkernels'} {args.model}"
    print(cost.table(args.depth))
    return 0


if __name__ == "__main__":
    sys.exit(main())
