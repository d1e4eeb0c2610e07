"""Metrics for probabilistic classifiers: accuracy, NLL, Brier score, ECE and OOD AUROC.

Every function takes class probabilities ``proba`` of shape ``(n, n_classes)`` (rows sum to 1,
as returned by ``predict_proba``) and, where needed, the true labels ``y_true``. Labels are
column indices ``0..n_classes-1`` unless ``classes`` is given (for example a repurposer's
``classes_``), in which case each label is looked up in ``classes``.

Examples
--------
>>> import numpy as np
>>> from repurpose import metrics
>>> p = np.array([[0.9, 0.1], [0.2, 0.8]])
>>> float(metrics.accuracy([0, 1], p))
1.0
>>> round(float(metrics.nll([0, 1], p)), 4)
0.1643
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from repurpose._validation import check_int

__all__ = [
    "accuracy",
    "nll",
    "brier",
    "ece",
    "calibration_bins",
    "predictive_entropy",
    "ood_auroc",
    "paired_bootstrap",
]

_EPS = 1e-12


def _proba(proba: Any) -> np.ndarray:
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 1:
        raise ValueError(f"proba must have shape (n, n_classes); got shape {p.shape}")
    if p.size and (not np.all(np.isfinite(p)) or p.min() < -1e-6):
        raise ValueError("proba must hold finite, non-negative probabilities")
    return p


def _labels(y_true: Any, proba: np.ndarray, classes: Sequence[Any] | None) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim != 1 or len(y) != len(proba):
        raise ValueError(
            f"y_true must be 1-d with one label per row of proba ({len(proba)}); "
            f"got shape {y.shape}"
        )
    if classes is not None:
        cls = np.asarray(classes)
        index = {c: i for i, c in enumerate(cls.tolist())}
        unknown = sorted({v for v in y.tolist() if v not in index}, key=str)
        if unknown:
            raise ValueError(f"labels {unknown[:5]} are not in classes {cls.tolist()}")
        return np.array([index[v] for v in y.tolist()], dtype=np.int64)
    n_classes = proba.shape[1]
    if y.size and (not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes):
        raise ValueError(
            f"y_true must hold column indices 0..{n_classes - 1} "
            "(or pass classes=rep.classes_ to map labels); "
            f"got values in [{y.min()}, {y.max()}] of dtype {y.dtype}"
        )
    return y.astype(np.int64)


def accuracy(y_true: Any, proba: Any, classes: Sequence[Any] | None = None) -> float:
    """Fraction of rows whose most probable class is the true one.

    Args:
        y_true: True labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, n_classes)``.
        classes: Optional labels of the columns of ``proba`` (e.g. ``rep.classes_``).

    Returns:
        Accuracy in ``[0, 1]``.
    """
    p = _proba(proba)
    y = _labels(y_true, p, classes)
    return float(np.mean(p.argmax(axis=1) == y))


def nll(y_true: Any, proba: Any, classes: Sequence[Any] | None = None) -> float:
    """Mean negative log-likelihood (cross-entropy) of the true labels, in nats.

    Args:
        y_true: True labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, n_classes)``; clipped at 1e-12 before the log.
        classes: Optional labels of the columns of ``proba``.

    Returns:
        Mean of ``-log proba[i, y_i]``.
    """
    p = _proba(proba)
    y = _labels(y_true, p, classes)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], _EPS, None))))


def brier(y_true: Any, proba: Any, classes: Sequence[Any] | None = None) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot label.

    Args:
        y_true: True labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, n_classes)``.
        classes: Optional labels of the columns of ``proba``.

    Returns:
        Mean of ``sum_k (proba[i, k] - [y_i == k])**2``, in ``[0, 2]``.
    """
    p = _proba(proba)
    y = _labels(y_true, p, classes)
    onehot = np.zeros_like(p)
    onehot[np.arange(len(y)), y] = 1.0
    return float(np.mean(np.sum((p - onehot) ** 2, axis=1)))


def _equal_mass_bins(conf: np.ndarray, n_bins: int) -> list[np.ndarray]:
    order = np.argsort(conf, kind="stable")
    return [b for b in np.array_split(order, n_bins) if len(b)]


def calibration_bins(
    y_true: Any, proba: Any, n_bins: int = 10, classes: Sequence[Any] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-mass confidence bins, as used by :func:`ece` and the reliability diagram.

    Rows are sorted by confidence (top-class probability) and split into ``n_bins`` bins of
    (nearly) equal size.

    Args:
        y_true: True labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, n_classes)``.
        n_bins: Number of bins (at most ``n`` are used).
        classes: Optional labels of the columns of ``proba``.

    Returns:
        ``(confidence, accuracy, count)``: per-bin mean confidence, accuracy and size.
    """
    if not isinstance(n_bins, int | np.integer) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer; got {n_bins!r}")
    p = _proba(proba)
    y = _labels(y_true, p, classes)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    bins = _equal_mass_bins(conf, int(n_bins))
    return (
        np.array([conf[b].mean() for b in bins]),
        np.array([correct[b].mean() for b in bins]),
        np.array([len(b) for b in bins]),
    )


def ece(
    y_true: Any, proba: Any, n_bins: int = 10, classes: Sequence[Any] | None = None
) -> float:
    """Expected calibration error of the top-class confidence, with equal-mass bins.

    ``ECE = sum_b (n_b / n) * |accuracy_b - confidence_b|`` over ``n_bins`` bins holding
    (nearly) equal numbers of rows, sorted by confidence. Equal-mass bins avoid the empty or
    near-empty bins of equal-width binning when most predictions are confident.

    Args:
        y_true: True labels, shape ``(n,)``.
        proba: Class probabilities, shape ``(n, n_classes)``.
        n_bins: Number of bins.
        classes: Optional labels of the columns of ``proba``.

    Returns:
        ECE in ``[0, 1]``.
    """
    conf, acc, count = calibration_bins(y_true, proba, n_bins=n_bins, classes=classes)
    if count.sum() == 0:
        return 0.0
    return float(np.sum(count * np.abs(acc - conf)) / count.sum())


def predictive_entropy(proba: Any) -> np.ndarray:
    """Entropy of each row's predictive distribution, in nats.

    Args:
        proba: Class probabilities, shape ``(n, n_classes)``.

    Returns:
        Array ``(n,)`` of ``-sum_k p_k log p_k``; 0 for a one-hot row, ``log(n_classes)`` for a
        uniform one.
    """
    p = _proba(proba)
    return -np.sum(p * np.log(np.clip(p, _EPS, None)), axis=1)


def ood_auroc(proba_in: Any, proba_out: Any) -> float:
    """Area under the ROC curve for telling out-of-distribution inputs from in-distribution ones.

    The score is the predictive entropy: a model that "knows what it doesn't know" gives
    higher entropy to out-of-distribution inputs. 0.5 is chance, 1.0 is perfect separation.

    Args:
        proba_in: Probabilities on in-distribution inputs, shape ``(n_in, n_classes)``.
        proba_out: Probabilities on out-of-distribution inputs, shape ``(n_out, n_classes)``.

    Returns:
        AUROC with out-of-distribution as the positive class.
    """
    h_in = predictive_entropy(proba_in)
    h_out = predictive_entropy(proba_out)
    if len(h_in) == 0 or len(h_out) == 0:
        raise ValueError(
            f"need at least one input on each side; got {len(h_in)} in and {len(h_out)} out"
        )
    labels = np.concatenate([np.zeros(len(h_in)), np.ones(len(h_out))])
    return float(roc_auc_score(labels, np.concatenate([h_in, h_out])))


_METRICS: dict[str, Callable[..., float]] = {"accuracy": accuracy, "nll": nll, "brier": brier,
                                              "ece": ece}


def paired_bootstrap(
    y_true: Any,
    proba_a: Any,
    proba_b: Any,
    metric: str | Callable[..., float] = "accuracy",
    n_resamples: int = 2000,
    confidence: float = 0.95,
    classes: Sequence[Any] | None = None,
    random_state: int | None = 0,
) -> dict[str, float]:
    """How far two classifiers differ on one test set: ``metric(a) - metric(b)`` with a
    paired bootstrap interval.

    The same resampled rows (drawn with replacement) score both classifiers, so what the
    test set holds by chance (hard or easy photos) cancels out of the difference.

    Args:
        y_true: True labels, shape ``(n,)``.
        proba_a: Probabilities of the first classifier, shape ``(n, n_classes)``.
        proba_b: Probabilities of the second, on the same rows and columns.
        metric: ``"accuracy"``, ``"nll"``, ``"brier"``, ``"ece"`` or a function
            ``f(y_true, proba) -> float`` taking column indices.
        n_resamples: Bootstrap resamples.
        confidence: Coverage of the percentile interval.
        classes: Optional labels of the columns of the probabilities.
        random_state: Seed of the resampling.

    Returns:
        ``{"difference", "low", "high"}``: the difference on the whole test set and the
        percentile interval of the resampled differences.

    Examples:
        >>> import numpy as np
        >>> from repurpose import metrics
        >>> y = np.array([0, 1, 1, 0, 1, 0, 1, 1])
        >>> a = np.eye(2)[y] * 0.8 + 0.1               # right on every row
        >>> b = np.eye(2)[[0, 1, 0, 0, 1, 1, 1, 1]] * 0.8 + 0.1   # wrong on two
        >>> out = metrics.paired_bootstrap(y, a, b, n_resamples=500)
        >>> out["difference"], out["low"] >= 0.0
        (0.25, True)
    """
    pa, pb = _proba(proba_a), _proba(proba_b)
    if pa.shape != pb.shape:
        raise ValueError(f"proba_a and proba_b must have one shape; got {pa.shape} and "
                         f"{pb.shape}")
    y = _labels(y_true, pa, classes)
    score = _METRICS.get(metric) if isinstance(metric, str) else metric
    if score is None:
        raise ValueError(f"metric={metric!r}; expected one of {sorted(_METRICS)} or a "
                         "function f(y_true, proba) -> float")
    check_int("n_resamples", n_resamples, 1)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence={confidence!r}; expected a number in (0, 1)")
    if len(y) == 0:
        raise ValueError("paired_bootstrap needs at least one test row; got none")
    rng = np.random.default_rng(random_state)
    diffs = np.empty(int(n_resamples))
    for i in range(len(diffs)):
        rows = rng.integers(0, len(y), len(y))
        diffs[i] = score(y[rows], pa[rows]) - score(y[rows], pb[rows])
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(diffs, [tail, 100.0 - tail])
    return {"difference": float(score(y, pa) - score(y, pb)), "low": float(low),
            "high": float(high)}

