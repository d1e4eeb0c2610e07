"""How verification judges an imported net's values against a reference run."""

from __future__ import annotations

import numpy as np

__all__ = ["compare_to_scale"]


def compare_to_scale(ours: np.ndarray, theirs: np.ndarray, rtol: float,
                     atol: float) -> tuple[float, float, bool]:
    """``(max |ours - theirs|, that relative to max |theirs|, within atol + rtol * scale)``.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.array([2000.0, 0.001])
    >>> diff, rel, ok = compare_to_scale(ref + [0.01, 0.01], ref, rtol=1e-4, atol=1e-5)
    >>> f"{rel:.1e}", ok  # 0.01 is 1000% of the small element, but 5e-06 of the blob
    ('5.0e-06', True)
    """
    if ours.size == 0:
        return 0.0, 0.0, True
    a, b = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    diff = float(np.max(np.abs(a - b)))
    scale = float(np.max(np.abs(b)))
    if not np.isfinite(diff):
        return diff, float("inf"), False
    rel = diff / scale if scale > 0 else (0.0 if diff == 0 else float("inf"))
    return diff, rel, bool(diff <= atol + rtol * scale)
