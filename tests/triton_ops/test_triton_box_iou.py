"""cnnkernels::box_iou_triton in the Triton interpreter: exactly torchvision.ops.box_iou (see
tests/support/triton_cases/common.py for how these modules run)."""

import pytest
import torch

from support.triton_cases.common import assert_same_error, op, require_interpreter

require_interpreter()

torchvision = pytest.importorskip("torchvision")

from cnnkernels.ops._checks import check_box_iou  # noqa: E402


def boxes(n, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    return torch.cat((xy, xy + torch.rand(n, 2, generator=g) * 40), 1).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16], ids=["fp32", "fp64", "fp16"])
@pytest.mark.parametrize("n,m", [(37, 70), (1, 5), (65, 1)])
def test_matches_torchvision(n, m, dtype):
    a, b = boxes(n, n, dtype), boxes(m, m + 1, dtype)
    out = op("box_iou_triton")(a, b)
    want = torchvision.ops.box_iou(a, b)
    assert out.dtype == want.dtype
    torch.testing.assert_close(out, want, rtol=0, atol=0)


def test_degenerate_nan_strided_and_empty():
    a = torch.tensor([[0.0, 0.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0], [0.0, 0.0, float("nan"), 1.0], [0.0, 0.0, 2.0, 1.0]])
    torch.testing.assert_close(op("box_iou_triton")(a, a), torchvision.ops.box_iou(a, a), rtol=0, atol=0,
                               equal_nan=True)
    s = boxes(40, 3)[::2]
    torch.testing.assert_close(op("box_iou_triton")(s, a), torchvision.ops.box_iou(s, a), rtol=0, atol=0,
                               equal_nan=True)
    assert op("box_iou_triton")(a[:0], a).shape == (0, 4)


def test_bad_input_like_main_op():
    a = boxes(3, 0)
    assert_same_error(check_box_iou, "box_iou", (a, a[:, :3]))
    assert_same_error(check_box_iou, "box_iou", (a, a.double()))
