"""LogME, LEEP, NCE and H-score against brute force, relabelling and known-quality features."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repurpose import transferability as tr


def _direct_evidence(f: np.ndarray, t: np.ndarray, alpha: float, beta: float) -> float:
    """log p(t | F, alpha, beta) of Bayesian linear regression, straight from the definition:
    t ~ N(0, 1/alpha F F^T + 1/beta I)."""
    n = len(f)
    cov = f @ f.T / alpha + np.eye(n) / beta
    _, logdet = np.linalg.slogdet(cov)
    return float(-0.5 * (n * np.log(2 * np.pi) + logdet + t @ np.linalg.solve(cov, t)))


@pytest.mark.parametrize("shape", [(40, 6), (12, 20)])  # n > D and n < D
def test_logme_maximises_the_evidence_found_by_brute_force(shape):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, shape[0])
    y[:3] = [0, 1, 2]
    f = rng.normal(size=shape) + np.eye(3, shape[1])[y]
    fit = tr.logme_fit(f, y)
    for c in range(3):
        t = (y == c).astype(float)
        brute = _grid_max(lambda a, b, t=t: _direct_evidence(f, t, a, b)) / len(f)
        at_fit = _direct_evidence(f, t, fit.alpha[c], fit.beta[c]) / len(f)
        # the spectral formula agrees with the direct one at LogME's optimum ...
        assert fit.evidence[c] == pytest.approx(at_fit, abs=1e-8)
        # ... and that optimum is at least as good as the best of a fine grid
        assert at_fit >= brute - 1e-6
        assert at_fit - brute < 1e-3


def _grid_max(evidence) -> float:
    """A log grid over (alpha, beta), refined three times around its best point."""
    a_grid = b_grid = np.logspace(-4, 4, 81)
    step = a_grid[1] / a_grid[0]
    for _ in range(4):
        best = max((evidence(a, b), a, b) for a in a_grid for b in b_grid)
        a_grid = best[1] * np.logspace(-3, 3, 25, base=step)
        b_grid = best[2] * np.logspace(-3, 3, 25, base=step)
        step = step ** 0.25
    return best[0]


@pytest.mark.parametrize("method", ["logme", "hscore"])
def test_feature_scores_are_invariant_to_relabelling(method):
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(4), 25)
    f = rng.normal(size=(100, 10)) + np.eye(4, 10)[y]
    names = np.array(["tulip", "rose", "iris", "daisy"])[y]
    permuted = np.array([3, 0, 2, 1])[y]
    base = tr.score(f, y, method)
    assert tr.score(f, names, method) == pytest.approx(base, rel=1e-9)
    assert tr.score(f, permuted, method) == pytest.approx(base, rel=1e-9)


def _source_proba(y: np.ndarray, quality: float, n_source: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mapping = rng.permutation(n_source)[: y.max() + 1]
    logits = rng.normal(size=(len(y), n_source))
    logits[np.arange(len(y)), mapping[y]] += quality
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("method", ["leep", "nce"])
def test_source_label_scores_are_invariant_to_relabelling(method):
    y = np.repeat(np.arange(3), 20)
    p = _source_proba(y, 2.0, 7, seed=2)
    base = tr.score(p, y, method)
    assert tr.score(p, np.array(["c", "a", "b"])[y], method) == pytest.approx(base, rel=1e-9)
    assert tr.score(p[:, ::-1], y, method) == pytest.approx(base, rel=1e-9)  # source classes


@pytest.mark.parametrize("method", ["logme", "hscore"])
def test_feature_scores_order_features_of_known_quality(method):
    rng = np.random.default_rng(3)
    y = np.repeat(np.arange(5), 40)
    signal = np.eye(5, 16)[y]
    noise = rng.normal(size=(200, 16))
    scores = [tr.score(noise + strength * signal, y, method) for strength in (0.0, 0.5, 1.5, 4)]
    assert scores == sorted(scores) and len(set(scores)) == 4


@pytest.mark.parametrize("method", ["leep", "nce"])
def test_source_label_scores_order_sources_of_known_quality(method):
    y = np.repeat(np.arange(4), 50)
    scores = [tr.score(_source_proba(y, q, 10, seed=4), y, method) for q in (0.0, 1.0, 3.0, 8)]
    assert scores == sorted(scores) and len(set(scores)) == 4


def test_nce_and_leep_bounds():
    y = np.array([0, 0, 1, 1, 2, 2])
    assert tr.nce(y * 10, y) == pytest.approx(0.0)  # the source label fixes the target
    assert tr.nce(np.zeros(6), y) == pytest.approx(-np.log(3))  # no information
    uniform = np.full((6, 4), 0.25)
    assert tr.leep(uniform, y) == pytest.approx(-np.log(3))


def test_hscore_is_bounded_by_the_number_of_classes_minus_one():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(3), 30)
    f = rng.normal(size=(90, 6)) * 0.01 + 10 * np.eye(3, 6)[y]
    assert 1.9 < tr.hscore(f, y) <= 2 + 1e-9


@settings(max_examples=25, deadline=None)
@given(n=st.integers(4, 30), d=st.integers(1, 30), c=st.integers(2, 4),
       seed=st.integers(0, 1000))
def test_logme_ignores_zero_columns_whichever_gram_matrix_it_decomposes(n, d, c, seed):
    """Zero features change nothing in the model; padding with n of them moves LogME from
    the D x D to the n x n eigendecomposition, so both code paths must agree."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    f = rng.normal(size=(n, d))
    padded = np.hstack([f, np.zeros((n, n + 1))])
    assert tr.logme(padded, y) == pytest.approx(tr.logme(f, y), rel=1e-6, abs=1e-8)


@pytest.mark.parametrize(("args", "match"), [
    ((np.zeros((4, 2)), [0, 1, 0]), "4 samples but y has 3"),
    ((np.zeros((4, 2)), [0, 0, 0, 0]), "at least 2"),
    ((np.zeros(4), [0, 1, 0, 1]), "must be 2-D"),
    ((np.full((4, 2), np.nan), [0, 1, 0, 1]), "NaN"),
])
def test_bad_inputs_raise_clear_errors(args, match):
    with pytest.raises(ValueError, match=match):
        tr.logme(*args)


def test_unknown_method_and_unnormalised_leep_input_are_refused():
    with pytest.raises(ValueError, match="method='logmee'; use one of logme"):
        tr.score(np.zeros((4, 2)), [0, 1, 0, 1], "logmee")
    with pytest.raises(ValueError, match="Apply a softmax"):
        tr.leep(np.ones((4, 3)), [0, 1, 0, 1])
