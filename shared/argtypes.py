"""Argument types for the command lines: a value out of range is refused by argparse with a
line that names the option and what it must be (exit status 2), before anything runs."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def _number(kind: type, test: Callable[[float], bool], what: str) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not (math.isfinite(value) and test(value)):
            raise argparse.ArgumentTypeError(f"{text!r} must be {what}")
        return value

    parse.__name__ = what  # argparse names the type in its messages
    return parse


positive_float = _number(float, lambda v: v > 0, "a positive number")
positive_int = _number(int, lambda v: v > 0, "a positive integer")
non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
port_number = _number(int, lambda v: 0 <= v <= 65535, "a port number, 0 to 65535 (0: a free one)")
