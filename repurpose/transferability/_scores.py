"""Transferability estimates on arrays: LogME, LEEP, NCE and H-score.

Each estimate says, without training a classifier, how well a source representation will
serve a labelled target task. All four return a float where higher means more transferable.
They are written from the papers' definitions:

- LogME: You, Liu, Wang and Long, "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning", ICML 2021.
- LEEP: Nguyen, Hassner, Seeger and Archambeau, "LEEP: A New Measure to Evaluate
  Transferability of Learned Representations", ICML 2020.
- NCE: Tran, Nguyen and Hassner, "Transferability and Hardness of Supervised Classification
  Tasks", ICCV 2019.
- H-score: Bao, Li, Huang, Zheng and Wang, "An Information-Theoretic Approach to
  Transferability in Task Transfer Learning", ICIP 2019.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["METHODS", "score", "logme", "leep", "nce", "hscore", "LogMEFit", "logme_fit"]

METHODS = ("logme", "hscore", "leep", "nce")
_BOUNDS = (1e-12, 1e12)  # range of LogME's alpha and beta


def score(features: Any, y: Any, method: str = "logme") -> float:
    """A transferability estimate of ``features`` for labels ``y``; higher is better.

    Parameters
    ----------
    features : array-like
        What the method reads:

        - ``"logme"``, ``"hscore"``: a representation, shape (n, D) (e.g. pooled features
          of one layer).
        - ``"leep"``: the source network's own class probabilities, shape (n, Z), rows
          summing to 1 (a softmax output).
        - ``"nce"``: the source network's hard labels, shape (n,), or its class
          probabilities or scores, shape (n, Z) (the argmax is taken).
    y : array-like of shape (n,)
        Target labels of any sortable type.
    method : {"logme", "hscore", "leep", "nce"}

    Returns
    -------
    float
        LogME: mean log evidence per sample and class; H-score: ``tr(cov(f)^+ cov(E[f|y]))``;
        LEEP: mean log-likelihood (<= 0); NCE: ``-H(Y|Z)`` (<= 0).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 30)
    >>> good = rng.normal(size=(90, 8)) + 3 * np.eye(3, 8)[y]
    >>> bad = rng.normal(size=(90, 8))
    >>> score(good, y) > score(bad, y)
    True
    """
    funcs = {"logme": logme, "hscore": hscore, "leep": leep, "nce": nce}
    if method not in funcs:
        raise ValueError(f"method={method!r}; use one of {', '.join(METHODS)}")
    return funcs[method](features, y)


# ----- input checks ----------------------------------------------------------------------
def _labels(y: Any, n: int) -> tuple[np.ndarray, int]:
    y = np.asarray(y)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per sample); got shape {y.shape}")
    if len(y) != n:
        raise ValueError(f"features have {n} samples but y has {len(y)} labels")
    classes, codes = np.unique(y, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"y has {len(classes)} class(es); transferability needs at least 2")
    return codes.ravel(), len(classes)


def _matrix(features: Any, what: str = "features") -> np.ndarray:
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2:
        raise ValueError(f"{what} must be 2-D (n, D); got shape {f.shape}")
    if not np.all(np.isfinite(f)):
        raise ValueError(f"{what} contain NaN or infinite values")
    return f


# ----- LogME -----------------------------------------------------------------------------
@dataclass(frozen=True)
class LogMEFit:
    """What LogME found per target class: the evidence-maximising ``alpha`` (prior
    precision of the weights) and ``beta`` (noise precision), and the maximum log evidence
    divided by n. ``score`` is the mean of ``evidence``."""

    alpha: np.ndarray
    beta: np.ndarray
    evidence: np.ndarray

    @property
    def score(self) -> float:
        return float(np.mean(self.evidence))


def logme(features: Any, y: Any) -> float:
    """LogME: the maximum marginal likelihood (evidence) of a Bayesian linear model.

    For each class, the one-hot column ``t`` is modelled as ``t = F w + noise``, with
    ``w ~ N(0, 1/alpha I)`` and noise precision ``beta``; ``alpha`` and ``beta`` are set by
    MacKay's fixed-point iteration to maximise the evidence ``log p(t | F, alpha, beta)``.
    The score is the maximum evidence divided by n, averaged over the classes. One
    eigendecomposition of ``F^T F`` (or ``F F^T`` when n < D) serves every class and
    iteration, so 10,000 x 2,048 features take seconds.

    Parameters
    ----------
    features : array-like (n, D)
    y : array-like (n,)

    Returns
    -------
    float

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50)
    >>> logme(rng.normal(size=(100, 4)) + 4 * y[:, None], y) > logme(rng.normal(size=(100, 4)), y)
    True
    """
    return logme_fit(features, y).score


def logme_fit(features: Any, y: Any, max_iter: int = 1000, tol: float = 1e-6) -> LogMEFit:
    """LogME with its per-class hyperparameters (see :func:`logme`).

    Parameters
    ----------
    features : array-like (n, D)
    y : array-like (n,)
    max_iter : int
        Fixed-point iterations at most.
    tol : float
        Stop when ``alpha`` and ``beta`` change by less than this (relative) for all classes.

    Returns
    -------
    LogMEFit
    """
    f = _matrix(features)
    codes, n_classes = _labels(y, len(f))
    n, d = f.shape
    sigma2, z2, t2 = _spectrum(f, np.eye(n_classes)[codes])
    alpha, beta = _fixed_point(sigma2, z2, t2, n, max_iter, tol)
    evidence = _evidence(sigma2, z2, t2, n, d, alpha, beta) / n
    return LogMEFit(alpha, beta, evidence)


def _spectrum(f: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Eigenvalues ``s_i`` of ``F^T F`` (> 0) and ``z_i^2``, the squared projections of each
    target on the left singular vectors, plus ``||t||^2`` per target.

    Shapes: (k,), (C, k), (C,). Uses the smaller Gram matrix, so the cost is
    ``min(n, D)^2 max(n, D)``.
    """
    n, d = f.shape
    if n <= d:
        s, u = _eigh_positive(f @ f.T)
        z = (u.T @ targets).T
    else:
        s, v = _eigh_positive(f.T @ f)
        # U^T t = S^-1 V^T F^T t
        z = ((v.T @ (f.T @ targets)) / np.sqrt(s)[:, None]).T
    return s, z**2, (targets**2).sum(axis=0)


def _eigh_positive(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenpairs of a Gram matrix, keeping only the numerically non-zero eigenvalues."""
    s, v = np.linalg.eigh(gram)
    keep = s > s.max() * 1e-10 if s.max() > 0 else np.zeros_like(s, bool)
    return s[keep], v[:, keep]


def _fixed_point(s: np.ndarray, z2: np.ndarray, t2: np.ndarray, n: int, max_iter: int,
                 tol: float) -> tuple[np.ndarray, np.ndarray]:
    """MacKay's updates, all classes at once: ``gamma = sum beta s / (alpha + beta s)``,
    ``alpha = gamma / m^T m``, ``beta = (n - gamma) / ||F m - t||^2``."""
    n_classes = z2.shape[0]
    alpha = np.ones(n_classes)
    beta = np.ones(n_classes)
    residual_rest = np.maximum(t2 - z2.sum(axis=1), 0.0)  # part of t outside span(F)
    for _ in range(max_iter):
        denom = alpha[:, None] + beta[:, None] * s[None]
        gamma = (beta[:, None] * s[None] / denom).sum(axis=1)
        m2 = (beta[:, None] ** 2 * s[None] * z2 / denom**2).sum(axis=1)
        res2 = ((alpha[:, None] / denom) ** 2 * z2).sum(axis=1) + residual_rest
        # Bounded: with no signal alpha -> inf; when F interpolates t exactly beta -> inf.
        new_alpha = np.clip(gamma / np.maximum(m2, 1e-300), _BOUNDS[0], _BOUNDS[1])
        new_beta = np.clip((n - gamma) / np.maximum(res2, 1e-300), _BOUNDS[0], _BOUNDS[1])
        change = np.maximum(np.abs(new_alpha - alpha) / alpha, np.abs(new_beta - beta) / beta)
        alpha, beta = new_alpha, new_beta
        # With no usable signal the optimum is alpha -> infinity (w = 0): alpha grows
        # without converging, but once gamma (the effective number of weights) is ~0 the
        # evidence no longer moves.
        if np.all((change < tol) | (gamma < 1e-9)):
            break
    return alpha, beta


def _evidence(s: np.ndarray, z2: np.ndarray, t2: np.ndarray, n: int, d: int,
              alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``log p(t | F, alpha, beta)`` per class, from the spectrum."""
    a, b = alpha[:, None], beta[:, None]
    denom = a + b * s[None]
    m2 = (b**2 * s[None] * z2 / denom**2).sum(axis=1)
    res2 = ((a / denom) ** 2 * z2).sum(axis=1) + np.maximum(t2 - z2.sum(axis=1), 0.0)
    logdet = np.log(denom).sum(axis=1) + (d - len(s)) * np.log(alpha)
    return (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
            - beta / 2 * res2 - alpha / 2 * m2 - logdet / 2)


# ----- H-score ---------------------------------------------------------------------------
def hscore(features: Any, y: Any) -> float:
    """H-score: ``tr(cov(f)^+ cov(E[f | y]))``, the between-class share of the feature
    covariance (pseudo-inverse for singular covariances).

    Parameters
    ----------
    features : array-like (n, D)
    y : array-like (n,)

    Returns
    -------
    float
        Between 0 and ``min(D, n_classes - 1)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 50)
    >>> 0 < hscore(rng.normal(size=(100, 4)) + 4 * y[:, None], y) <= 1
    True
    """
    f = _matrix(features)
    codes, n_classes = _labels(y, len(f))
    f = f - f.mean(axis=0)
    n = len(f)
    counts = np.bincount(codes, minlength=n_classes)
    means = np.zeros((n_classes, f.shape[1]))
    np.add.at(means, codes, f)
    means /= counts[:, None]
    # cov(E[f|y]) = M^T M with M the class means weighted by sqrt(n_c / n)
    weighted = means * np.sqrt(counts / n)[:, None]
    s, v = _eigh_positive(f.T @ f / n)
    return float((((weighted @ v) ** 2) / s).sum())


# ----- LEEP and NCE (source-label based) -------------------------------------------------
def leep(source_proba: Any, y: Any) -> float:
    """LEEP: log-likelihood of the "expected empirical predictor" built from the source
    network's class probabilities.

    With ``theta(x)`` the source's distribution over its own classes ``z``, the empirical
    conditional ``P(y | z)`` is estimated from the target data, and LEEP is the mean of
    ``log sum_z P(y_i | z) theta(x_i)_z``.

    Parameters
    ----------
    source_proba : array-like (n, Z)
        The source network's class probabilities (a softmax output; rows sum to 1).
    y : array-like (n,)

    Returns
    -------
    float
        At most 0; higher is better.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0, 0, 1, 1])
    >>> informative = np.array([[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8]])
    >>> leep(informative, y) > leep(np.full((4, 2), 0.5), y)
    True
    """
    theta = _proba(source_proba)
    codes, n_classes = _labels(y, len(theta))
    joint = np.zeros((n_classes, theta.shape[1]))
    np.add.at(joint, codes, theta)
    joint /= len(theta)
    marginal = joint.sum(axis=0)
    cond = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    likelihood = (theta * cond[codes]).sum(axis=1)
    return float(np.mean(np.log(np.maximum(likelihood, 1e-300))))


def nce(source_labels: Any, y: Any) -> float:
    """NCE: the negative conditional entropy ``-H(Y | Z)`` of the target labels given the
    source network's hard labels.

    Parameters
    ----------
    source_labels : array-like (n,) or (n, Z)
        The source's predicted labels, or its class probabilities or scores (the argmax
        is taken).
    y : array-like (n,)

    Returns
    -------
    float
        At most 0 (0 when the source label determines the target label).

    Examples
    --------
    >>> import numpy as np
    >>> nce([3, 3, 7, 7], ["a", "a", "b", "b"])
    0.0
    """
    z = np.asarray(source_labels)
    if z.ndim == 2:
        z = _matrix(z, "source scores").argmax(axis=1)
    if z.ndim != 1:
        raise ValueError(f"source_labels must be (n,) labels or (n, Z) scores; got {z.shape}")
    codes, n_classes = _labels(y, len(z))
    _, z_codes = np.unique(z, return_inverse=True)
    joint = np.zeros((n_classes, int(z_codes.max()) + 1))
    np.add.at(joint, (codes, z_codes.ravel()), 1.0)
    joint /= len(z)
    marginal = joint.sum(axis=0)
    cond = np.divide(joint, marginal, out=np.ones_like(joint), where=joint > 0)
    return float((joint * np.log(cond)).sum())


def _proba(source_proba: Any) -> np.ndarray:
    theta = _matrix(source_proba, "source_proba")
    sums = theta.sum(axis=1)
    if np.any(theta < -1e-9) or not np.allclose(sums, 1.0, atol=1e-3):
        raise ValueError(
            "source_proba must hold probabilities (non-negative rows summing to 1); got rows "
            f"summing to {sums.min():.3g}..{sums.max():.3g}. Apply a softmax to scores first "
            "(scipy.special.softmax(scores, axis=1))"
        )
    return np.clip(theta, 0.0, None)
