"""All five ops in one network under torch.compile(fullgraph=True) (inductor, CPU) and torch.export: no graph break,
the custom ops stay single nodes in the graph, results equal eager."""

import pytest
import torch
from torch import nn

import cnnkernels
from cnnkernels._library import op_names
from helpers import TOLERANCES

OPS = tuple(op_names())


def _param(*shape):
    """A weight ([C_out, C_in, kH, kW], He-scaled) or a bias ([C])."""
    fan_in = shape[1] * shape[2] * shape[3] if len(shape) == 4 else 4 * shape[0]
    return nn.Parameter(torch.randn(*shape) * (2.0 / fan_in) ** 0.5)


class TinyNet(nn.Module):
    """stem conv -> dwsep (stride 2) -> inverted residual -> inception -> conv + add_relu join."""

    def __init__(self):
        super().__init__()
        self.stem = nn.ParameterList([_param(8, 3, 3, 3), _param(8)])
        self.dwsep = nn.ParameterList([_param(8, 1, 3, 3), _param(8), _param(12, 8, 1, 1), _param(12)])
        self.ir = nn.ParameterList([_param(36, 12, 1, 1), _param(36), _param(36, 1, 3, 3), _param(36),
                                    _param(12, 36, 1, 1), _param(12)])
        self.inc = nn.ParameterList([_param(4, 12, 1, 1), _param(4), _param(6, 12, 1, 1), _param(6),
                                     _param(6, 6, 3, 3), _param(6), _param(2, 12, 1, 1), _param(2),
                                     _param(3, 2, 5, 5), _param(3), _param(3, 12, 1, 1), _param(3)])
        self.head_w = _param(16, 16, 1, 1)

    def forward(self, x):
        x = cnnkernels.conv2d_act(x, *self.stem, None, 1, 1, 1, 1, "relu")
        x = cnnkernels.dwsep_conv2d(x, *self.dwsep, 2, 1, 1, "relu", "relu6")
        x = cnnkernels.inverted_residual(x, *self.ir, stride=1, residual=True, activation="relu6")
        x = cnnkernels.inception_block(x, *self.inc)
        return cnnkernels.add_relu(x, cnnkernels.conv2d_act(x, self.head_w, None, None, 1, 0, 1, 1, "none"))


def _graph_ops(gm: torch.fx.GraphModule) -> set:
    """Names of the cnnkernels ops called in the graph (dynamo records the op packet, export the overload)."""
    names = set()
    for node in gm.graph.nodes:
        target = node.target
        if isinstance(target, torch._ops.OpOverload):
            target = target.overloadpacket
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverloadPacket):
            ns, name = target._qualified_op_name.split("::")
            if ns == "cnnkernels":
                names.add(name)
    return names


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return TinyNet()


@pytest.fixture(scope="module")
def x():
    torch.manual_seed(1)
    return torch.randn(2, 3, 13, 17).contiguous(memory_format=torch.channels_last)


def test_compile_fullgraph_forward_backward(net, x):
    torch._dynamo.reset()
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        from torch._inductor.compile_fx import compile_fx
        return compile_fx(gm, example_inputs)

    compiled = torch.compile(net, fullgraph=True, backend=backend)
    xe, xc = x.clone().requires_grad_(), x.clone().requires_grad_()
    eager_out = net(xe)
    out = compiled(xc)
    assert len(graphs) == 1  # fullgraph=True already raises on a graph break; one graph means no recompiles either
    assert _graph_ops(graphs[0]) == set(OPS)
    torch.testing.assert_close(out, eager_out, **TOLERANCES[torch.float32])
    assert out.is_contiguous(memory_format=torch.channels_last)

    # Training step: the registered backward formulas traced by AOTAutograd and compiled by inductor.
    grads_eager = torch.autograd.grad(eager_out.square().sum(), [xe, *net.parameters()])
    grads = torch.autograd.grad(out.square().sum(), [xc, *net.parameters()])
    for g, ge in zip(grads, grads_eager):
        torch.testing.assert_close(g, ge, **TOLERANCES[torch.float32])


def test_export(net, x):
    with torch.no_grad():
        eager_out = net(x)
        ep = torch.export.export(net, (x,))
        assert _graph_ops(ep.graph_module) == set(OPS)
        out = ep.module()(x)
    torch.testing.assert_close(out, eager_out, **TOLERANCES[torch.float32])
