"""matplotlib, imported when a plot is drawn (it is an optional extra)."""

from __future__ import annotations

from typing import Any

__all__ = ["pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot``, or an ImportError that says how to install it."""
    try:
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "repurpose.plot needs matplotlib; install it with `pip install repurpose[plot]`"
        ) from err
    return plt
