"""box_iou, nms, batched_nms against torchvision.ops (the oracle): same IoUs, same kept indices in the same order."""

import pytest
import torch

import cnnkernels
from cnnkernels.ops.boxes import PER_CLASS_NUMEL
from support.helpers import assert_op_error

torchvision = pytest.importorskip("torchvision")
tvops = torchvision.ops

# batched_nms's two strategies: at most this many boxes use the coordinate trick, more run nms per class.
TRICK_MAX_BOXES = PER_CLASS_NUMEL["cpu"] // 4


def random_boxes(n, seed, scale=100.0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * scale
    wh = torch.rand(n, 2, generator=g) * scale / 4
    return torch.cat((xy, xy + wh), 1).to(dtype)


def tied_scores(n, seed, levels=5):
    """Scores with many ties (a few distinct values): the order of equal scores matters."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, levels, (n,), generator=g).float() / levels


def assert_same_nms(boxes, scores, t, idxs=None):
    if idxs is None:
        got, want = cnnkernels.nms(boxes, scores, t), tvops.nms(boxes, scores, t)
    else:
        got, want = cnnkernels.batched_nms(boxes, scores, idxs, t), tvops.batched_nms(boxes, scores, idxs, t)
    assert got.dtype == torch.int64
    assert torch.equal(got, want), (got.tolist()[:20], want.tolist()[:20])
    return got


@pytest.mark.correctness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("n", [0, 1, 2, 37, 300])
def test_nms_random_and_ties(n, dtype):
    boxes = random_boxes(n, seed=n, dtype=dtype)
    for scores in (torch.rand(n, generator=torch.Generator().manual_seed(n)).to(dtype), tied_scores(n, n).to(dtype)):
        for t in (0.0, 0.3, 0.5, 0.7, 1.0):
            assert_same_nms(boxes, scores, t)


@pytest.mark.correctness
@pytest.mark.parametrize("n", [TRICK_MAX_BOXES, TRICK_MAX_BOXES + 1], ids=["coordinate-trick", "per-class"])
def test_batched_nms_both_strategies(n):
    boxes, scores = random_boxes(n, seed=n, scale=300.0), tied_scores(n, n)
    idxs = torch.randint(0, 4, (n,), generator=torch.Generator().manual_seed(1))
    for t in (0.2, 0.6):
        assert_same_nms(boxes, scores, t, idxs)


@pytest.mark.correctness
@pytest.mark.parametrize("n", [TRICK_MAX_BOXES, TRICK_MAX_BOXES + 1], ids=["coordinate-trick", "per-class"])
def test_batched_nms_negative_coordinates(n):
    # Below the switch torchvision shifts class c by c * (max coordinate + 1): with negative coordinates a class-1 box
    # then overlaps a class-0 box and suppresses it; per class it cannot. Both behaviours are reproduced.
    filler = torch.tensor([[-1000.0, -1000.0, -999.0, -999.0]]) - torch.arange(n - 2.0)[:, None] * 3
    boxes = torch.cat((torch.tensor([[-40.0, -40.0, 10.0, 10.0], [-50.0, -50.0, 0.0, 0.0]]), filler))
    scores = torch.cat((torch.tensor([0.5, 0.9]), torch.full((n - 2,), 0.1)))
    idxs = torch.cat((torch.tensor([0, 1]), torch.zeros(n - 2, dtype=torch.int64)))
    kept = assert_same_nms(boxes, scores, 0.5, idxs)
    assert (0 in kept.tolist()) == (n > TRICK_MAX_BOXES)


@pytest.mark.correctness
def test_iou_exactly_at_threshold():
    # IoU([0,0,1,1], [0,0,2,1]) = 1/2 exactly: suppressed only when iou > threshold.
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 3.0, 1.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    for t in (0.5, 0.49999997, 1 / 3, 0.3333333):
        assert_same_nms(boxes, scores, t)
    assert cnnkernels.nms(boxes, scores, 0.5).tolist() == [0, 1]


@pytest.mark.correctness
def test_duplicates_degenerate_and_nan():
    boxes = torch.tensor([[1.0, 1.0, 5.0, 5.0]] * 4 + [[2.0, 2.0, 2.0, 6.0], [2.0, 2.0, 2.0, 6.0],   # zero area
                          [0.0, 0.0, 0.0, 0.0], [3.0, 3.0, float("nan"), 4.0], [1.0, 1.0, 5.0, 5.0]])
    for scores in (torch.full((9,), 0.5), torch.tensor([0.5, 0.5, 0.9, 0.5, 0.9, 0.9, 0.2, 0.99, 0.5]),
                   torch.tensor([0.5, float("nan"), 0.9, 0.5, 0.9, 0.9, 0.2, 0.99, 0.5])):
        for t in (0.0, 0.5):
            assert_same_nms(boxes, scores, t)
            assert_same_nms(boxes, scores, t, torch.tensor([0, 1, 0, 1, 0, 0, 1, 1, 0]))
    torch.testing.assert_close(cnnkernels.box_iou(boxes, boxes), tvops.box_iou(boxes, boxes), rtol=0, atol=0,
                               equal_nan=True)


@pytest.mark.correctness
def test_non_contiguous_inputs():
    big = random_boxes(120, seed=3)
    boxes = big.t().contiguous().t()[::2]                # column-major, every other row
    scores = tied_scores(120, 3)[::2]
    idxs = torch.randint(0, 3, (120,), dtype=torch.int32, generator=torch.Generator().manual_seed(2))[::2]
    assert not boxes.is_contiguous() and not scores.is_contiguous()
    assert_same_nms(boxes, scores, 0.4)
    assert_same_nms(boxes, scores, 0.4, idxs)
    assert torch.equal(cnnkernels.box_iou(boxes, big[1::3]), tvops.box_iou(boxes, big[1::3]))


@pytest.mark.correctness
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_box_iou(dtype):
    b1, b2 = random_boxes(31, 1, dtype=dtype), random_boxes(17, 2, dtype=dtype)
    got, want = cnnkernels.box_iou(b1, b2), tvops.box_iou(b1, b2)
    assert got.dtype == want.dtype   # float32 for float16/bfloat16 boxes, as torchvision
    assert torch.equal(got, want)
    assert cnnkernels.box_iou(b1[:0], b2).shape == (0, 17)


@pytest.mark.correctness
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_nms_narrow_dtypes_run_in_fp32(dtype):
    boxes, scores = random_boxes(80, 4, dtype=dtype), tied_scores(80, 4).to(dtype)
    idxs = torch.randint(0, 3, (80,), generator=torch.Generator().manual_seed(4))
    assert torch.equal(cnnkernels.nms(boxes, scores, 0.5), tvops.nms(boxes.float(), scores.float(), 0.5))
    assert torch.equal(cnnkernels.batched_nms(boxes, scores, idxs, 0.5),
                       tvops.batched_nms(boxes.float(), scores.float(), idxs, 0.5))


def test_gradients():
    b1 = random_boxes(6, 5, dtype=torch.float64).requires_grad_()
    b2 = (random_boxes(5, 6, dtype=torch.float64) * 0.5 + 10).requires_grad_()
    assert torch.autograd.gradcheck(cnnkernels.box_iou, (b1, b2))
    # nms / batched_nms: indices, no gradient; inputs that require grad are accepted.
    scores = torch.rand(6, dtype=torch.float64, requires_grad=True)
    for keep in (cnnkernels.nms(b1, scores, 0.5), cnnkernels.batched_nms(b1, scores, torch.zeros(6, dtype=torch.long),
                                                                          0.5)):
        assert not keep.requires_grad
        assert torch.equal(keep, tvops.nms(b1.detach(), scores.detach(), 0.5))


@pytest.mark.bad_input
def test_bad_inputs():
    b, s = random_boxes(4, 0), torch.rand(4)
    assert_op_error("box_iou", (b[:, :3], b), ValueError, "boxes1")
    assert_op_error("box_iou", (b, b.double()), TypeError, "boxes2")
    assert_op_error("box_iou", (b.int(), b.int()), TypeError, "boxes1")
    assert_op_error("nms", (b, s[:3], 0.5), ValueError, "scores")
    assert_op_error("nms", (b, s.double(), 0.5), TypeError, "scores")
    assert_op_error("nms", (b[None], s, 0.5), ValueError, "boxes")
    assert_op_error("nms", (b, s, float("nan")), ValueError, "iou_threshold")
    assert_op_error("batched_nms", (b, s, torch.zeros(4), 0.5), TypeError, "idxs")
    assert_op_error("batched_nms", (b, s, torch.zeros(4, dtype=torch.bool), 0.5), TypeError, "idxs")
    assert_op_error("batched_nms", (b, s, torch.zeros(3, dtype=torch.long), 0.5), ValueError, "idxs")


def test_compile():
    # One graph with the ops as single nodes; nms's data-dependent length is an unbacked size under fullgraph.
    torch._dynamo.reset()

    def detect(boxes, scores, idxs):
        keep = torch.ops.cnnkernels.batched_nms(boxes, scores, idxs, 0.5)
        return keep, torch.ops.cnnkernels.box_iou(boxes, boxes).amax(1), torch.ops.cnnkernels.nms(boxes, scores, 0.3)

    boxes, scores = random_boxes(50, 7), tied_scores(50, 7)
    idxs = torch.arange(50) % 3
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        got = torch.compile(detect, fullgraph=True)(boxes, scores, idxs)
    for g, w in zip(got, detect(boxes, scores, idxs)):
        assert torch.equal(g, w)
    assert torch.equal(got[0], tvops.batched_nms(boxes, scores, idxs, 0.5))
