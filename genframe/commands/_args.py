"""Argument types for numbers on the command line: a bad value is refused when the line is parsed.

A count below one, a negative seed or an infinite learning rate would otherwise reach the code
that uses it and fail there, far from the flag that caused it.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable


def count(minimum: int = 1) -> Callable[[str], int]:
    """An integer of at least ``minimum`` (a number of images, steps, strips...)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}; give a whole number >= {minimum}")
        return value
    parse.__name__ = "count"
    return parse


def number(*, positive: bool = False) -> Callable[[str], float]:
    """A finite number; ``positive``: greater than 0, else at least 0."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is not finite; give a finite number")
        if value < 0 or (positive and value == 0):
            raise argparse.ArgumentTypeError(f"{value:g} is not {'> 0' if positive else '>= 0'}")
        return value
    parse.__name__ = "number"
    return parse
