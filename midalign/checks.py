"""Argument rules, each a (test, what the value must be) pair: one set for training settings
(midalign.settings) and the library's entry points (retrieval, evaluation), so a bad value passed from
Python is the same one-line SettingsError as a bad flag, raised before any work."""

from __future__ import annotations

import math
from collections.abc import Collection, Hashable
from pathlib import Path

from midalign.errors import SettingsError


def count(least: int):
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= least, f"an integer ≥ {least}"


def number(low: float, high: float = math.inf, high_open: bool = False, low_open: bool = True):
    ok = lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                    and (v > low if low_open else v >= low) and (v < high if high_open else v <= high))
    return ok, (f"a number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
                if math.isfinite(high) else f"a finite number {'>' if low_open else '≥'} {low:g}")


def among(choices):  # the live table, read when a value fails: a fork may add a task, pooling or loss
    return lambda v: isinstance(v, Hashable) and v in choices, lambda: "one of " + ", ".join(map(str, choices))


def _some(v) -> bool:
    """A non-empty collection (a list, tuple, range, dict's keys), not a string."""
    return isinstance(v, Collection) and not isinstance(v, (str, bytes)) and len(v) > 0


def each_among(choices):
    one = among(choices)[0]
    return lambda v: _some(v) and all(map(one, v)), lambda: "a non-empty list of " + ", ".join(map(str, choices))


def indices(high: int):
    """A non-empty list of integers in 0..high (hidden-state indices: 0 = the embeddings)."""
    one = lambda v: count(0)[0](v) and v <= high
    return lambda v: _some(v) and all(map(one, v)), f"a non-empty list of 0..{high}"


def paths():
    return (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, (str, Path)) for x in v),
            "a non-empty list of paths")


def names():
    return (lambda v: isinstance(v, (list, tuple)) and len(v) > 0 and all(isinstance(x, str) and x for x in v),
            "a non-empty list of names")


def check(where: str, **arguments: tuple) -> None:
    """`name=(value, rule)` for each argument of `where`; the first that fails is a SettingsError naming it."""
    for name, (value, (test, want)) in arguments.items():
        if not test(value):
            raise SettingsError(f"{where}: {name} = {value!r} must be {want() if callable(want) else want}")
