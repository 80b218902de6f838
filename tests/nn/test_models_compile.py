"""A whole cnnkernels model under torch.compile(fullgraph=True) in eval mode: matches eager, reads the cached folded
weights (no per-call refolding, no growth of the ops' packed-weight cache), and follows weight changes."""

import pytest
import torch
from torch import nn

import cnnkernels
from cnnkernels import _library, models
from cnnkernels.testing import randomize_bn
from support.helpers import assert_close_scaled

def has_fake_kernel(op):
    try:
        from torch._library.simple_registry import singleton
        return singleton.find(f"cnnkernels::{op}").fake_impl.kernel is not None
    except Exception:  # pragma: no cover - registry API moved
        return True


NEEDS = {"resnet18": ["conv2d_act"], "mobilenet_v2": ["conv2d_act", "inverted_residual"]}


@pytest.mark.parametrize("name", list(NEEDS))
def test_compiled_model_matches_eager(name):
    missing = [op for op in NEEDS[name] if not has_fake_kernel(op)]
    assert not missing, f"no fake kernel registered for {missing} (needed to trace the op)"
    torch._dynamo.reset()
    torch.manual_seed(0)
    m = randomize_bn(models.get_model(name, num_classes=10)).eval()
    x = torch.randn(1, 3, 32, 40)
    with torch.no_grad():
        ref = m(x)
        folds = cnnkernels.nn.count_folds(m)
        compiled = torch.compile(m, fullgraph=True)
        assert_close_scaled(compiled(x), ref)
        # The graph reads the cached folds: no refolding and no new packed weights per call. (Folding inside the graph
        # would hand the ops fresh weight buffers every call, which their packed-weight cache keeps alive.)
        size = _library.weight_cache_size()
        for _ in range(3):
            out = compiled(x)
        assert_close_scaled(out, ref)
        assert cnnkernels.nn.count_folds(m) == folds
        assert _library.weight_cache_size() == size

        # load_state_dict refolds in place: the compiled model follows
        other = randomize_bn(models.get_model(name, num_classes=10), seed=7).eval()
        m.load_state_dict(other.state_dict())
        assert_close_scaled(compiled(x), other(x))

    # train -> eval: eval() refolds the new running statistics in place, the compiled graph sees them
    m.train()
    m(torch.randn(2, 3, 32, 40) * 2 + 1)
    m.eval()
    with torch.no_grad(), cnnkernels.nn.fusion(False):
        ref = m(x)
    with torch.no_grad():
        assert_close_scaled(compiled(x), ref)

    # An in-place weight change seen only by the compiled model is not re-validated per call (the graph does not read
    # version counters): refresh_folds() (or any eager call) brings it up to date, without recompiling.
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(1.01)
        assert cnnkernels.nn.refresh_folds(m) > 0
        assert cnnkernels.nn.refresh_folds(m) == 0
        with cnnkernels.nn.fusion(False):
            ref = m(x)
        assert_close_scaled(compiled(x), ref)
