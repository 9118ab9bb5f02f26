"""Argparse ``type=`` functions that check an option's range, shared by every ``dawnet`` command.

A bad value gets argparse's one-line error naming the option and the fix (``argument --limit: must be an
integer >= 1, got -1``) and exit status 2, before any work starts. ``nan`` and ``inf`` are never accepted.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = [
    "int_range",
    "float_range",
    "positive_int",
    "nonnegative_int",
    "finite_float",
    "positive_float",
    "nonnegative_float",
]


def _bounds(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    parts = []
    if low is not None:
        parts.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        parts.append(f"{'<' if high_open else '<='} {high:g}")
    return " and ".join(parts)


def int_range(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A type function for integers in ``[low, high]`` (either bound may be left out)."""
    what = "an integer" + (f" {_bounds(low, high, False, False)}" if low is not None or high is not None else "")

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def float_range(low: float | None = None, high: float | None = None, *, low_open: bool = False,
                high_open: bool = False) -> Callable[[str], float]:
    """A type function for finite floats between ``low`` and ``high`` (open bounds with ``low_open``/``high_open``)."""
    bounds = _bounds(low, high, low_open, high_open)
    what = "a finite number" + (f" {bounds}" if bounds else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        if high is not None and (value >= high if high_open else value > high):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


positive_int = int_range(1)
positive_int.__doc__ = "An integer >= 1 (a count of steps, lines, threads, a beam width)."
nonnegative_int = int_range(0)
nonnegative_int.__doc__ = "An integer >= 0 (a count that may be zero)."
finite_float = float_range()
finite_float.__doc__ = "Any finite float (no nan or inf)."
positive_float = float_range(0.0, low_open=True)
positive_float.__doc__ = "A finite float > 0 (a learning rate, a size in seconds)."
nonnegative_float = float_range(0.0)
nonnegative_float.__doc__ = "A finite float >= 0 (a weight, a margin)."
