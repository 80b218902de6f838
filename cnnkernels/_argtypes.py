"""argparse `type`s shared by the package's commands (python -m cnnkernels.cost, python -m cnnkernels.train): each
converts the text, checks the value and names what it expected either way."""

from __future__ import annotations

import argparse
from typing import Callable


def checked(convert: Callable[[str], float], ok: Callable[[float], bool], expected: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            v = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(v):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {v}")
        return v
    return parse


positive_int = checked(int, lambda v: v >= 1, "a positive integer")
nonnegative_int = checked(int, lambda v: v >= 0, "an integer >= 0")
positive_float = checked(float, lambda v: v > 0, "a positive number")
fraction = checked(float, lambda v: 0 <= v <= 1, "a number in [0, 1]")
open_fraction = checked(float, lambda v: 0 < v <= 1, "a number in (0, 1]")
