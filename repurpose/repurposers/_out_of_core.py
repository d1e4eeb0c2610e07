"""Linear heads trained from features that need not fit in memory.

``extract(..., out=dir)`` returns memory-mapped arrays: the features stay on disk and the
operating system pages in the rows a computation touches. The in-memory solvers copy and
standardise all of them at once (LR: scikit-learn's L-BFGS; SVM: libsvm). The
``solver="streaming"`` of :class:`~repurpose.LogisticRegressionRepurposer` and of the
linear :class:`~repurpose.SVMRepurposer` instead minimise the same convex objective with
L-BFGS in float64, where each evaluation of the objective and its gradient is one pass over
the rows, 64 MB at a time. Memory is ``O(chunk_rows x D + D x classes)`` whatever
the number of samples; the price is one read of the features per evaluation (a few
hundred for a tight fit; from the page cache when it holds the file).

Objectives (``n`` samples, weights ``s_i`` from ``class_weight``), as scikit-learn's:

- logistic: ``sum_i s_i CE_i + ||W||^2 / (2 C)`` (multinomial; binary with one weight
  vector for two classes; intercepts not penalised), the ``LogisticRegression`` optimum;
- squared hinge, one-vs-rest: ``sum_i s_i max(0, 1 - t_ik f_k(x_i))^2 + ||w_k||^2 / (2 C)``
  per class (``LinearSVC``'s default loss, intercepts not penalised).

Both are divided by ``n`` for conditioning, which does not move the optimum.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

__all__ = ["LOSSES", "chunk_rows_for", "chunk_slices", "column_moments", "all_finite",
           "feature_rows", "fit_linear", "balanced_weights"]

LOSSES = ("logistic", "squared_hinge")
CHUNK_BYTES = 2**26  # a chunk of rows in float64: 64 MB

Rows = Callable[[Any], np.ndarray]  # rows(slice or index array) -> (m, D)


def chunk_slices(n: int, rows: int) -> Iterator[slice]:
    """``slice(start, stop)`` covering ``0..n-1`` in blocks of ``rows``.

    >>> list(chunk_slices(5, 2))
    [slice(0, 2, None), slice(2, 4, None), slice(4, 5, None)]
    """
    for start in range(0, n, rows):
        yield slice(start, min(start + rows, n))


def chunk_rows_for(width: int) -> int:
    """Rows per chunk: as many as fit in :data:`CHUNK_BYTES` as float64 (at least 256)."""
    return max(256, CHUNK_BYTES // (8 * max(width, 1)))


def column_moments(x: np.ndarray, rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and (population) standard deviation, reading ``rows`` at a time.

    Arrays of up to ``rows`` rows (default :func:`chunk_rows_for` their width) use numpy
    directly; longer ones are summed in float64 chunk by chunk (two passes: the mean, then
    squared deviations from it).
    """
    rows = rows or chunk_rows_for(x.shape[1])
    if len(x) <= rows:
        return x.mean(axis=0), x.std(axis=0)
    total = np.zeros(x.shape[1])
    for sl in chunk_slices(len(x), rows):
        total += x[sl].sum(axis=0, dtype=np.float64)
    mean = total / len(x)
    squares = np.zeros(x.shape[1])
    for sl in chunk_slices(len(x), rows):
        squares += ((x[sl] - mean) ** 2).sum(axis=0)
    return mean.astype(x.dtype), np.sqrt(squares / len(x)).astype(x.dtype)


def all_finite(x: np.ndarray, rows: int | None = None) -> bool:
    """Whether every value is finite, checked ``rows`` at a time."""
    rows = rows or chunk_rows_for(int(np.prod(x.shape[1:])))
    return all(bool(np.isfinite(x[sl]).all()) for sl in chunk_slices(len(x), rows))


def feature_rows(combine: Callable[[dict[str, Any]], np.ndarray],
                 features: dict[str, np.ndarray]) -> Rows:
    """``rows(index)``: the head's input (``combine`` of each layer's rows) for the samples
    of a slice or an index array."""
    return lambda sl: combine({k: v[sl] for k, v in features.items()})


def fit_linear(rows: Rows, y: np.ndarray, n_classes: int, *,
               loss: str, C: float, class_weight: Any = None,
               max_iter: int = 1000, tol: float = 1e-4, chunk_rows: int | None = None,
               progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Minimise a linear model's objective over rows read chunk by chunk.

    Parameters
    ----------
    rows : callable
        ``rows(slice)`` -> the standardised features of those samples, ``(m, D)``.
    y : ndarray of int
        Label codes ``0..n_classes-1``.
    loss : {"logistic", "squared_hinge"}
    C : float
        Inverse regularisation strength.
    class_weight : dict of code to weight, "balanced" or None
    max_iter, tol
        L-BFGS iterations and gradient tolerance (of the objective divided by ``n``).
    chunk_rows : int, optional
        Rows per chunk; default :func:`chunk_rows_for` the width.

    Returns
    -------
    coef : ndarray (K, D)
        ``K = 1`` for binary logistic regression, else ``n_classes``.
    intercept : ndarray (K,)
    """
    n = len(y)
    n_features = int(np.asarray(rows(slice(0, 1))).shape[1])
    chunk_rows = chunk_rows or chunk_rows_for(n_features)
    sample_weight = balanced_weights(class_weight, y, n_classes)
    k = 1 if loss == "logistic" and n_classes == 2 else n_classes
    w = torch.zeros(k, n_features, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(k, dtype=torch.float64, requires_grad=True)
    labels = torch.as_tensor(y, dtype=torch.long)
    weights = torch.ones(n, dtype=torch.float64) if sample_weight is None else \
        torch.as_tensor(sample_weight, dtype=torch.float64)
    optimizer = torch.optim.LBFGS([w, b], lr=1.0, max_iter=max_iter, tolerance_grad=tol,
                                  tolerance_change=1e-12, history_size=20,
                                  line_search_fn="strong_wolfe")
    bar = tqdm(desc="passes", unit="pass", disable=not progress, leave=False)

    def objective() -> torch.Tensor:
        optimizer.zero_grad()
        total = torch.zeros((), dtype=torch.float64)
        for sl in chunk_slices(n, chunk_rows):
            x = torch.as_tensor(np.asarray(rows(sl)), dtype=torch.float64)
            part = (_losses(loss, x @ w.T + b, labels[sl]) * weights[sl]).sum() / n
            part.backward()
            total += part.detach()
        penalty = (w * w).sum() / (2 * C * n)
        penalty.backward()
        bar.update(1)
        return total + penalty.detach()

    optimizer.step(objective)
    bar.close()
    return w.detach().numpy(), b.detach().numpy()


def _losses(loss: str, scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-sample losses of ``scores`` (m, K) against label codes ``y``."""
    if loss == "logistic":
        if scores.shape[1] == 1:
            return F.softplus(torch.where(y == 1, -1.0, 1.0) * scores[:, 0])
        return F.cross_entropy(scores, y, reduction="none")
    targets = torch.where(F.one_hot(y, scores.shape[1]) == 1, 1.0, -1.0).to(scores.dtype)
    return (1 - targets * scores).clamp(min=0).pow(2).sum(1)


def balanced_weights(class_weight: Any, y: np.ndarray, n_classes: int) -> np.ndarray | None:
    """Per-sample weights for scikit-learn's ``class_weight`` (codes or "balanced")."""
    if class_weight is None:
        return None
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    if class_weight == "balanced":
        per_class = len(y) / (n_classes * np.maximum(counts, 1))
    else:
        per_class = np.array([float(class_weight.get(c, 1.0)) for c in range(n_classes)])
    return per_class[y]
