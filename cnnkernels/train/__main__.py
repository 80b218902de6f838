"""Command line of cnnkernels.train: `python -m cnnkernels.train <command> [options]`.

Commands:
  digits   LeNet-5 trained from scratch on the scikit-learn digits (32x32, the fixed stratified split of
           cnnkernels.train.data.digits), then evaluated eagerly and through cnnkernels.optimize().
  transfer LeNet-5 trained on the digits 0-4, frozen, and a new head trained on 5-9 from a FeatureCache, against the
           same head trained end to end and a LeNet-5 trained from scratch (cnnkernels.train.demos.transfer_demo).
  evaluate two LeNet-5s on all digits, evaluated with a centre crop, 5 and 10 crops (MultiCrop) and as an Ensemble
           (cnnkernels.train.demos.multicrop_demo).
  segment  U-Net trained to segment generated scenes (cnnkernels.train.scenes), per-class and mean IoU on validation
           scenes through cnnkernels.optimize() (cnnkernels.train.segmentation).
  landmarks LandmarkNet trained to place the points of the generated scenes' objects from their crops; mean point
           error on validation scenes in pixels and box diagonals (cnnkernels.train.landmarks).
  detect   a YOLO-style detector (MobileNet v2 backbone, k-means anchors) trained on generated scenes; mAP@0.5 and AP
           per class on validation scenes (cnnkernels.train.detection).

More commands plug in with register_command(name, help=..., add_arguments=..., run=...): add_arguments(parser) fills
the subcommand's argparse parser, run(args) does the work and returns the exit status.

Multi-process training has its own entry point: torchrun ... -m cnnkernels.train.distributed (see that module).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Callable, Dict, List, NamedTuple, Optional

import torch
from torch.utils.data import DataLoader

import cnnkernels
from cnnkernels._argtypes import fraction, nonnegative_int, open_fraction, positive_float, positive_int
from cnnkernels.models import lenet5
from cnnkernels.nn import fusion
from cnnkernels.train.data import digits, digits_augmentation
from cnnkernels.train.demos import MIRROR_NOTE, multicrop_demo, transfer_demo
from cnnkernels.train.detection import add_detect_arguments, run_detect
from cnnkernels.train.landmarks import add_landmarks_arguments, run_landmarks
from cnnkernels.train.loop import evaluate, fit, load_checkpoint, predict_proba
from cnnkernels.train.segmentation import add_segment_arguments, run_segment

__all__ = ["Command", "COMMANDS", "register_command", "build_parser", "main", "run_digits", "run_transfer",
           "run_evaluate"]


class Command(NamedTuple):
    """A subcommand: its one-line help, the function adding its options to its parser, and the function running it
    (args -> exit status)."""
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: Dict[str, Command] = {}


def register_command(name: str, *, help: str, add_arguments: Callable[[argparse.ArgumentParser], None],
                     run: Callable[[argparse.Namespace], int]) -> None:
    """Adds subcommand `name` to `python -m cnnkernels.train` (see Command)."""
    if not isinstance(name, str) or not name or name.startswith("-") or " " in name:
        raise ValueError(f"name must be a non-empty word not starting with '-', got {name!r}")
    if name in COMMANDS:
        raise ValueError(f"command {name!r} is already registered")
    if not callable(add_arguments) or not callable(run):
        raise TypeError("add_arguments and run must be callables")
    COMMANDS[name] = Command(help, add_arguments, run)


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(prog="python -m cnnkernels.train",
                                     description="Training with cnnkernels models on offline data.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run, _parser=p)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parses `argv` (default: sys.argv[1:]) and runs the chosen command; returns its exit status."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


# --- digits ---------------------------------------------------------------------------------------------------------

def _digits_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=positive_int, default=40)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate, cosine-annealed to 0")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the initial weights, shuffling and augmentation (the split is always seed 0)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=True,
                   help="random rotations (+-10 degrees) and shifts (+-10%%) of the training images")
    p.add_argument("--workers", type=nonnegative_int, default=0, help="DataLoader worker processes")
    # LeNet-5 on 32x32 batches is too small to gain from intra-op threads; on a busy machine they only contend.
    p.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--out", default=None,
                   help="directory for checkpoint.pt (written every epoch) and metrics.json")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--expect-accuracy", type=fraction, default=None,
                   help="exit with status 1 when the test accuracy ends below this")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_digits(args: argparse.Namespace) -> int:
    """The `digits` command: trains LeNet-5 on the digits and reports the test accuracy of the eager model (plain
    torch.nn layers, cnnkernels.nn.fusion(False)) and of cnnkernels.optimize(model) (the fused inference model),
    and the wall time. Exit status 1 when the two disagree or the accuracy is below --expect-accuracy."""
    if args.resume and not args.out:
        args._parser.error("--resume needs --out DIR (it continues from DIR/checkpoint.pt)")
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train_set = digits("train", transform=digits_augmentation() if args.augment else None)
    test_set = digits("test")
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, num_workers=args.workers)
    test_loader = DataLoader(test_set, batch_size=256)

    torch.manual_seed(args.seed)
    model = lenet5(in_channels=1, num_classes=10)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    checkpoint = os.path.join(args.out, "checkpoint.pt") if args.out else None
    start = 0
    if args.resume and os.path.isfile(checkpoint):
        start = load_checkpoint(checkpoint, model, optimizer, scheduler)
        print(f"resuming from epoch {start} of {args.epochs} ({checkpoint})", flush=True)
    elif args.resume:
        print(f"--resume: no {checkpoint} yet, starting from epoch 0", flush=True)
    print(f"LeNet-5 on the digits: {len(train_set)} train / {len(test_set)} test images at 32x32, "
          f"{args.epochs} epochs, batch {args.batch_size}, Adam lr {args.lr:g} (cosine), "
          f"augmentation {'on' if args.augment else 'off'}, {torch.get_num_threads()} threads", flush=True)

    def report(rec):
        # Test accuracy per epoch is for watching only: the final model is the last epoch's, whatever it scores.
        rec["test_accuracy"] = evaluate(model, test_loader)
        print(f"epoch {rec['epoch']:3d}/{args.epochs} loss {rec['loss']:.4f} train acc {rec['accuracy']:.4f} "
              f"test acc {rec['test_accuracy']:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)

    history = fit(model, train_loader, epochs=args.epochs, optimizer=optimizer, scheduler=scheduler,
                  progress=not args.no_progress, checkpoint=checkpoint, start_epoch=start, on_epoch_end=report,
                  seed=args.seed, checkpoint_extra={"command": "digits", "args": _plain_args(args)})
    train_time = time.perf_counter() - t0

    model.eval()
    with fusion(False):
        eager_probs, labels = predict_proba(model, test_loader)
    fused_model = cnnkernels.optimize(model)
    fused_probs, _ = predict_proba(fused_model, test_loader)
    eager_pred, fused_pred = eager_probs.argmax(1), fused_probs.argmax(1)
    eager_acc = float((eager_pred == labels).double().mean())
    fused_acc = float((fused_pred == labels).double().mean())
    differ = int((eager_pred != fused_pred).sum())
    max_diff = float((eager_probs - fused_probs).abs().max())
    total = time.perf_counter() - t0
    print(f"test accuracy: eager {eager_acc:.4f}, cnnkernels.optimize() {fused_acc:.4f} "
          f"({int(round(fused_acc * len(labels)))}/{len(labels)}; {differ} predictions differ, "
          f"max probability difference {max_diff:.1e})", flush=True)
    print(f"wall time: {train_time:.1f} s training, {total:.1f} s in all", flush=True)
    if args.out:
        metrics = {"eager_accuracy": eager_acc, "optimized_accuracy": fused_acc, "predictions_differ": differ,
                   "max_probability_difference": max_diff, "train_seconds": train_time, "total_seconds": total,
                   "epochs": args.epochs, "history": history, "args": _plain_args(args)}
        with open(os.path.join(args.out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)
    status = 0
    if differ:
        print(f"error: the eager and the optimized model disagree on {differ} test images", file=sys.stderr)
        status = 1
    if args.expect_accuracy is not None and fused_acc < args.expect_accuracy:
        print(f"error: test accuracy {fused_acc:.4f} is below --expect-accuracy {args.expect_accuracy}",
              file=sys.stderr)
        status = 1
    return status


def _plain_args(args: argparse.Namespace) -> Dict[str, object]:
    return {k: v for k, v in vars(args).items() if not k.startswith("_")}


register_command("digits", help="train LeNet-5 from scratch on the scikit-learn digits (32x32)",
                 add_arguments=_digits_arguments, run=run_digits)


# --- transfer -------------------------------------------------------------------------------------------------------

# The cached head and the end-to-end head see features that differ by fp32 rounding only (fused vs eager backbone);
# a larger difference means the two paths did not train on the same data in the same order.
HEAD_TOLERANCE = 1e-4


def _print_line(line: str) -> None:
    print(line, flush=True)


def _write_metrics(out: Optional[str], metrics: Dict[str, object]) -> None:
    if out:
        os.makedirs(out, exist_ok=True)
        with open(os.path.join(out, "metrics.json"), "w") as f:
            json.dump(metrics, f, indent=2)


def _transfer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs-base", type=positive_int, default=30, help="epochs of the base network on 0-4")
    p.add_argument("--epochs-head", type=positive_int, default=100,
                   help="epochs of the new head (cached and end to end) and of the from-scratch network on 5-9")
    p.add_argument("--train-fraction", type=open_fraction, nargs="+", default=[1.0, 0.1], metavar="F",
                   help="stratified fractions of the 5-9 training images to run with, one table row group each "
                        "(default: 1.0 0.1, all images and the small-data regime)")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the initial weights, shuffling, augmentation and training subsets")
    p.add_argument("--lr", type=positive_float, default=3e-3,
                   help="Adam learning rate of the base and from-scratch networks, cosine-annealed to 0")
    p.add_argument("--head-lr", type=positive_float, default=3e-2,
                   help="Adam learning rate of the new head, cosine-annealed to 0")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--out", default=None, help="directory for metrics.json and the feature caches")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_transfer(args: argparse.Namespace) -> int:
    """The `transfer` command (cnnkernels.train.demos.transfer_demo): prints the accuracy and wall-time table and
    writes OUT/metrics.json. Exit status 1 when a cached head differs from its end-to-end twin by more than
    HEAD_TOLERANCE."""
    torch.set_num_threads(args.threads)
    metrics = transfer_demo(epochs_base=args.epochs_base, epochs_head=args.epochs_head,
                            train_fractions=args.train_fraction, seed=args.seed, lr=args.lr, head_lr=args.head_lr,
                            batch_size=args.batch_size, out=args.out, progress=not args.no_progress,
                            log=_print_line)
    _write_metrics(args.out, metrics)
    status = 0
    for run in metrics["runs"]:
        if not run["head_max_abs_diff"] <= HEAD_TOLERANCE:
            print(f"error: with train fraction {run['train_fraction']:g} the cached head differs from the end-to-end "
                  f"head by {run['head_max_abs_diff']:.2e} (tolerance {HEAD_TOLERANCE:g})", file=sys.stderr)
            status = 1
    return status


register_command("transfer", help="transfer LeNet-5 from the digits 0-4 to 5-9: a new head trained on cached "
                                  "features, against end to end and against training from scratch",
                 add_arguments=_transfer_arguments, run=run_transfer)


# --- evaluate -------------------------------------------------------------------------------------------------------

def _evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.epilog = "note: " + MIRROR_NOTE
    p.add_argument("--epochs", type=positive_int, default=30, help="epochs of each of the two networks")
    p.add_argument("--seed", type=nonnegative_int, default=0,
                   help="seed of the first network (the second uses SEED + 1), shuffling and augmentation")
    p.add_argument("--lr", type=positive_float, default=3e-3, help="Adam learning rate, cosine-annealed to 0")
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--threads", type=positive_int, default=1, help="torch.set_num_threads (default 1)")
    p.add_argument("--out", default=None, help="directory for metrics.json")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run_evaluate(args: argparse.Namespace) -> int:
    """The `evaluate` command (cnnkernels.train.demos.multicrop_demo): prints the accuracy table of single models,
    5 and 10 crops and ensembles, and writes OUT/metrics.json when --out is given."""
    torch.set_num_threads(args.threads)
    metrics = multicrop_demo(epochs=args.epochs, seed=args.seed, lr=args.lr, batch_size=args.batch_size,
                             progress=not args.no_progress, log=_print_line)
    _write_metrics(args.out, metrics)
    return 0


register_command("evaluate", help="two LeNet-5s on the digits evaluated with a centre crop, 5 and 10 crops and as "
                                  "an ensemble (mirrored digits are not digits: 10 crops can hurt here)",
                 add_arguments=_evaluate_arguments, run=run_evaluate)


# --- segment --------------------------------------------------------------------------------------------------------

register_command("segment", help="train U-Net to segment generated scenes; per-class and mean IoU on validation scenes",
                 add_arguments=add_segment_arguments, run=run_segment)


# --- landmarks ------------------------------------------------------------------------------------------------------

register_command("landmarks", help="train LandmarkNet to place the points of generated scenes' objects from their "
                                   "crops; mean point error on validation scenes",
                 add_arguments=add_landmarks_arguments, run=run_landmarks)


# --- detect ---------------------------------------------------------------------------------------------------------

register_command("detect", help="train a YOLO-style detector on generated scenes; mAP@0.5 and AP per class on "
                                "validation scenes", add_arguments=add_detect_arguments, run=run_detect)


if __name__ == "__main__":
    sys.exit(main())
