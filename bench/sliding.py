"""Sliding-window classification: LeNet-5 turned into convolutions by cnnkernels.convolutionalize() scores every
32x32 window of an image (stride 4) in one pass, against cropping the windows and classifying them.

    python bench/sliding.py                          # 256x256 image, 1 and 2 threads
    python bench/sliding.py --size 128 --threads 1 --repeats 5 --json sliding.json

Methods (all on the same eval-mode LeNet-5, whose convolutions run as fused conv2d_act calls):
  convolutionalized  one forward of the convolutionalized model over the whole image;
  crops (unfold)     every window cut out with F.unfold and classified in one batch;
  crops (one by one) windows classified one forward each: a subset (--subset) is timed and the time scaled to all.
Every method's scores are checked against the convolutionalized map first. Each method is timed in interleaved
rounds (warm-up, then --repeats samples in rotating order); the table gives medians and p20-p80. Time on an idle
machine: the header shows the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cnnkernels  # noqa: E402
from cnnkernels.info import collect as collect_info  # noqa: E402
from cnnkernels.models import lenet5  # noqa: E402

from stats import summary  # noqa: E402

WINDOW, STRIDE = 32, 4


def crops(image: torch.Tensor) -> torch.Tensor:
    """Every WINDOW x WINDOW crop of a (1, C, H, W) image at STRIDE, row-major, as a (windows, C, WINDOW, WINDOW)
    batch."""
    c = image.shape[1]
    cols = F.unfold(image, WINDOW, stride=STRIDE)  # (1, C * WINDOW * WINDOW, windows)
    return cols[0].t().reshape(-1, c, WINDOW, WINDOW)


def time_interleaved(fns: Dict[str, Callable[[], object]], repeats: int) -> Dict[str, List[float]]:
    """ms per call of each function, `repeats` samples each, the order rotating every round."""
    for fn in fns.values():
        fn()
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    names = list(fns)
    for r in range(repeats):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append((time.perf_counter() - t0) * 1e3)
    return samples


def run(size: int, threads: int, repeats: int, subset: int, seed: int) -> List[Dict[str, object]]:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model = lenet5().eval()
    sliding = cnnkernels.convolutionalize(model)
    image = torch.randn(1, 1, size, size)
    rows, cols = sliding.output_size(size, size)
    windows = rows * cols
    batch = crops(image)
    few = batch[:subset]

    with torch.inference_mode():
        ref = sliding(image)[0].permute(1, 2, 0).reshape(windows, -1)
        err = (model(batch) - ref).abs().max().item()
        err_one = max((model(few[k:k + 1])[0] - ref[k]).abs().max().item() for k in range(len(few)))
        scale = ref.abs().max().item()
        for name, e in (("crops (unfold)", err), ("crops (one by one)", err_one)):
            if e > 1e-5 * scale + 1e-7:
                raise AssertionError(f"{name}: scores differ from the convolutionalized map by {e:.3g}")

        def one_by_one():
            for k in range(len(few)):
                model(few[k:k + 1])

        samples = time_interleaved({
            "convolutionalized": lambda: sliding(image),
            "crops (unfold)": lambda: model(crops(image)),
            "crops (one by one)": one_by_one,
        }, repeats)
    scale_one = windows / len(few)
    out = []
    for name, ms in samples.items():
        ms = [t * scale_one for t in ms] if name == "crops (one by one)" else ms
        out.append({"method": name, "threads": threads, "size": size, "windows": windows,
                    "timed_windows": len(few) if name == "crops (one by one)" else windows, **summary(ms)})
    base = out[0]["median_ms"]
    for r in out:
        r["vs_convolutionalized"] = r["median_ms"] / base
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--repeats", type=int, default=15, help="timed samples per method (default 15)")
    ap.add_argument("--subset", type=int, default=200,
                    help="windows classified one by one per sample, scaled to all windows (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results and the machine to this file")
    args = ap.parse_args(argv)
    if args.size < WINDOW:
        ap.error(f"--size must be at least {WINDOW}")
    if args.repeats < 1 or args.subset < 1:
        ap.error("--repeats and --subset must be positive")
    try:
        threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        ap.error(f"--threads must be comma-separated integers, got {args.threads!r}")
    if not threads or min(threads) < 1:
        ap.error("--threads must be positive")

    info = collect_info()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"LeNet-5 sliding windows ({WINDOW}x{WINDOW}, stride {STRIDE}) over a {args.size}x{args.size} image; "
          f"{info['cpu']['model']}, ISA {info['cpu']['isa']}, torch {info['versions']['torch']}, "
          f"load average {load:.2f}")
    results = []
    for t in threads:
        results += run(args.size, t, args.repeats, args.subset, args.seed)
    print(f"{'threads':>7}  {'method':<20} {'windows':>8} {'median ms':>10} {'p20-p80 ms':>17} {'x conv':>7}")
    for r in results:
        note = f" (timed {r['timed_windows']}, scaled)" if r["timed_windows"] != r["windows"] else ""
        print(f"{r['threads']:>7}  {r['method']:<20} {r['windows']:>8} {r['median_ms']:>10.3f} "
              f"{r['p20_ms']:>8.3f}-{r['p80_ms']:<8.3f} {r['vs_convolutionalized']:>7.1f}{note}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "cpu": info["cpu"]["model"], "isa": info["cpu"]["isa"],
                       "torch": info["versions"]["torch"], "loadavg_1m": load, "args": vars(args)}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
