"""Every op in one network under torch.compile(fullgraph=True) (inductor, CPU) and torch.export: no graph break,
the custom ops stay single nodes in the graph, results equal eager."""

import pytest
import torch

from cnnkernels._library import op_names
from support.dtypes import TOLERANCES
from support.samples import generic_ops
from support.tiny_net import TinyNet

OPS = generic_ops("tiny_net", op_names())


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
    # A weight's gradient sums thousands of products whose magnitude is the gradient's largest, so an element much
    # smaller than that carries rounding error of that size, and inductor's summation order differs from eager's (both
    # are equally far from a float64 run): the absolute tolerance scales with the gradient's largest element.
    tol = TOLERANCES[torch.float32]
    for g, ge in zip(grads, grads_eager):
        torch.testing.assert_close(g, ge, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, ge.abs().max().item()))


def test_export(net, x):
    with torch.no_grad():
        eager_out = net(x)
        ep = torch.export.export(net, (x,))
        assert _graph_ops(ep.graph_module) == set(OPS)
        out = ep.module()(x)
    torch.testing.assert_close(out, eager_out, **TOLERANCES[torch.float32])
