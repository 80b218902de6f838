"""The detection ops against torchvision.ops on the CPU: box_iou, nms, batched_nms on 1000 and 5000 boxes, and
yolo_postprocess against yolo_decode + score threshold + torchvision.ops.batched_nms per image.

    PYTHONPATH=$PWD python bench/detection.py [--threads N] [--repeats R] [--quick]

Every pair is first checked for equal results (the ops promise torchvision's exactly); then each side is timed in
interleaved samples (median and 20th/80th percentiles, ms), and the ratio torchvision / cnnkernels is reported (> 1:
cnnkernels faster). batched_nms on 1000 boxes runs torchvision's coordinate trick, on 5000 its per-class loop.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Callable, Dict, List

import torch
import torchvision

import cnnkernels
from cnnkernels import _argtypes, _library
from stats import summary


def boxes_scores(n: int, seed: int, classes: int = 4):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 1000
    boxes = torch.cat((xy, xy + 10 + torch.rand(n, 2, generator=g) * 200), 1)
    return boxes, torch.rand(n, generator=g), torch.randint(0, classes, (n,), generator=g)


def yolo_composition(head, anchors, image_size, score_t, iou_t, k):
    boxes, scores, labels = cnnkernels.yolo_decode(head, anchors, image_size)
    out = []
    for n in range(head.shape[0]):
        cand = torch.where(scores[n] > score_t)[0]
        out.append(cand[torchvision.ops.batched_nms(boxes[n, cand], scores[n, cand], labels[n, cand], iou_t)][:k])
    return out


def cases() -> List[Dict]:
    out = []
    for n in (1000, 5000):
        b, s, c = boxes_scores(n, n)
        out += [
            dict(name=f"box_iou {n}x{n}", ours=lambda b=b: cnnkernels.box_iou(b, b),
                 theirs=lambda b=b: torchvision.ops.box_iou(b, b)),
            dict(name=f"nms {n} boxes t=0.5", ours=lambda b=b, s=s: cnnkernels.nms(b, s, 0.5),
                 theirs=lambda b=b, s=s: torchvision.ops.nms(b, s, 0.5)),
            dict(name=f"batched_nms {n} boxes 4 classes",
                 ours=lambda b=b, s=s, c=c: cnnkernels.batched_nms(b, s, c, 0.5),
                 theirs=lambda b=b, s=s, c=c: torchvision.ops.batched_nms(b, s, c, 0.5)),
        ]
    g = torch.Generator().manual_seed(0)
    head = torch.randn(8, 3 * (5 + 4), 20, 20, generator=g) * 2   # 8 images, 3 anchors, 4 classes, 20x20 grid
    anchors = torch.tensor([[10.0, 13.0], [30.0, 20.0], [40.0, 60.0]])
    args = (head, anchors, (160, 160), 0.25, 0.45, 100)
    decoded = cnnkernels.yolo_decode(*args[:3])

    def same(o, t):  # the kept candidates' boxes, scores and labels, image by image
        return all(torch.equal(o[i][n, :o[3][n]], decoded[i][n, t[n]]) for n in range(len(t)) for i in range(3))

    out.append(dict(name="yolo_postprocess 8x(3x20x20) C=4", ours=lambda: cnnkernels.yolo_postprocess(*args),
                    theirs=lambda: yolo_composition(*args), same=same))
    return out


def sample(fn: Callable, target_s: float) -> float:
    """ms per call over enough calls to last about target_s."""
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        dt = time.perf_counter() - t0
        if dt >= target_s:
            return dt / calls * 1e3


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=_argtypes.positive_int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=_argtypes.positive_int, default=15, help="samples per side and case")
    ap.add_argument("--quick", action="store_true", help="3 short samples per side (a smoke run)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, target = (3, 0.0) if args.quick else (args.repeats, 0.05)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} thread(s), "
          f"cnnkernels CPU: {'compiled' if _library.STATE.cpu else 'reference'} "
          f"(box_iou {_library.KERNEL_SOURCES['box_iou']['CPU']}, nms {_library.KERNEL_SOURCES['nms']['CPU']}), "
          f"load {os.getloadavg()[0]:.1f}")
    print("| case | cnnkernels ms (p20-p80) | torchvision ms (p20-p80) | torchvision / cnnkernels |")
    print("|---|---|---|---|")
    for case in cases():
        o, t = case["ours"](), case["theirs"]()
        same = case.get("same", lambda o, t: torch.equal(o, t))(o, t)
        if not same:
            print(f"| {case['name']} | results differ from torchvision: not timed | | |")
            continue
        ours, theirs = [], []
        for _ in range(repeats):  # interleaved, so load changes hit both sides alike
            ours.append(sample(case["ours"], target))
            theirs.append(sample(case["theirs"], target))
        so, st = summary(ours), summary(theirs)
        print(f"| {case['name']} | {so['median_ms']:.3f} ({so['p20_ms']:.3f}-{so['p80_ms']:.3f}) | "
              f"{st['median_ms']:.3f} ({st['p20_ms']:.3f}-{st['p80_ms']:.3f}) | "
              f"{st['median_ms'] / so['median_ms']:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
