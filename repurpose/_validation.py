"""One place for checking constructor parameters, so every error reads the same way.

Each check raises ``ValueError("name=value; expected ...")``: the parameter, the value it got
and what is accepted. Repurposers call these from ``fit`` (never from ``__init__``, which only
stores its arguments, as scikit-learn requires).
"""

from __future__ import annotations

import numbers
from collections.abc import Collection
from typing import Any

__all__ = ["check_int", "check_number", "check_choice"]


def check_int(name: str, value: Any, low: int) -> int:
    """Return ``value`` as an int if it is an integer ``>= low`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ValueError(f"{name}={value!r}; expected an integer >= {low}")
    return int(value)


def check_number(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it lies in the interval given by ``low`` and ``high``.

    Bounds are closed unless ``low_open`` / ``high_open``; None means unbounded on that side.
    """
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        v = float(value)
        ok = v == v  # not NaN
        if low is not None:
            ok = ok and (v > low if low_open else v >= low)
        if high is not None:
            ok = ok and (v < high if high_open else v <= high)
    if not ok:
        interval = _interval(low, high, low_open, high_open)
        raise ValueError(f"{name}={value!r}; expected a number in {interval}")
    return float(value)


def check_choice(name: str, value: Any, options: Collection[Any]) -> Any:
    """Return ``value`` if it is one of ``options``."""
    if value not in options:
        raise ValueError(f"{name}={value!r}; expected one of {sorted(options, key=str)}")
    return value


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    left = "(" if low_open or low is None else "["
    right = ")" if high_open or high is None else "]"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{left}{lo}, {hi}{right}"
