"""The streaming solvers of the LR and linear SVM heads (features read chunk by chunk).

Tolerances: both solvers minimise the same convex objective; run to a tight tolerance
(1e-8) they agree to about 1e-5 on weights of order 1, the rest being where each stops.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.svm import LinearSVC
from torch import nn

import repurpose as rp
from repurpose.repurposers import _out_of_core


def _problem(n_classes: int, n: int = 400, seed: int = 0, dtype: type = np.float64):
    # float64: scikit-learn's solver works in the features' precision
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    feats = {"a": (rng.normal(size=(n, 6)) + 0.6 * y[:, None]).astype(dtype),
             "b": rng.normal(size=(n, 3)).astype(dtype)}
    return feats, np.array(["cat", "dog", "eel", "fox"])[y]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 80), d=st.integers(1, 5), rows=st.integers(1, 30),
       seed=st.integers(0, 2**16))
def test_chunked_column_moments_equal_numpy(n, d, rows, seed):
    x = np.random.default_rng(seed).normal(3.0, 2.0, size=(n, d))
    mean, std = _out_of_core.column_moments(x, rows)
    np.testing.assert_allclose(mean, x.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(std, x.std(0), rtol=1e-10, atol=1e-12)
    assert sum(s.stop - s.start for s in _out_of_core.chunk_slices(n, rows)) == n


def test_all_finite_looks_at_every_chunk():
    x = np.zeros((10, 2))
    assert _out_of_core.all_finite(x, 3)
    x[9, 1] = np.nan
    assert not _out_of_core.all_finite(x, 3)


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("class_weight", [None, "balanced"])
def test_streaming_lr_reaches_the_in_memory_optimum(n_classes, class_weight):
    feats, y = _problem(n_classes)
    kw = {"C": 0.5, "tol": 1e-8, "class_weight": class_weight, "progress": False}
    ref = rp.LogisticRegressionRepurposer(**kw).fit_features(feats, y)
    got = rp.LogisticRegressionRepurposer(solver="streaming", **kw).fit_features(feats, y)
    assert got.model_.coef_.shape == ref.model_.coef_.shape
    np.testing.assert_allclose(got.model_.coef_, ref.model_.coef_, atol=1e-4)
    np.testing.assert_allclose(got.model_.intercept_, ref.model_.intercept_, atol=1e-4)
    np.testing.assert_allclose(got.predict_proba_features(feats),
                               ref.predict_proba_features(feats), atol=1e-4)


def test_chunk_size_does_not_move_the_optimum():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 300)
    x = rng.normal(size=(300, 4)) + y[:, None]
    fits = [_out_of_core.fit_linear(lambda s: x[s], y, 3, loss="logistic", C=1.0,
                                    tol=1e-9, chunk_rows=rows) for rows in (7, 64, None)]
    for coef, intercept in fits[:2]:
        np.testing.assert_allclose(coef, fits[2][0], atol=1e-5)
        np.testing.assert_allclose(intercept, fits[2][1], atol=1e-5)


def test_streaming_lr_trains_from_memory_mapped_extraction(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.normal(size=(60, 3, 6, 6)).astype(np.float32)
    y = np.repeat([0, 1, 2], 20)
    images += y[:, None, None, None] * 0.5
    handler = rp.ModelHandler(nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU()))
    on_disk = handler.extract(images, ["1"], out=tmp_path / "f", progress=False)
    assert isinstance(on_disk["1"], np.memmap)
    in_memory = handler.extract(images, ["1"], progress=False)
    a = rp.LogisticRegressionRepurposer(solver="streaming", progress=False).fit_features(
        on_disk, y)
    b = rp.LogisticRegressionRepurposer(solver="streaming", progress=False).fit_features(
        in_memory, y)
    np.testing.assert_allclose(a.model_.coef_, b.model_.coef_, rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("n_classes", [2, 4])
def test_streaming_svm_matches_linear_svc(n_classes, tmp_path):
    feats, y = _problem(n_classes)
    rep = rp.SVMRepurposer(solver="streaming", tol=1e-6, progress=False).fit_features(feats, y)
    X = rep._combine(feats).astype(np.float64)
    # a large intercept_scaling leaves LinearSVC's intercept (almost) unpenalised, as ours
    ref = LinearSVC(C=1.0, intercept_scaling=1e3, tol=1e-10, max_iter=200_000).fit(
        X, np.searchsorted(rep.classes_, y))
    want = ref.decision_function(X).reshape(len(X), -1)
    np.testing.assert_allclose(rep._decision(X), want, atol=2e-3 * np.abs(want).max())
    proba = rep.predict_proba_features(feats)
    np.testing.assert_allclose(proba.sum(1), 1.0)
    loaded = rp.load(rep.save(tmp_path / "svm"))
    np.testing.assert_allclose(loaded.predict_proba_features(feats), proba)


def test_streaming_svm_is_linear_only():
    feats, y = _problem(2)
    with pytest.raises(ValueError, match="solver='streaming' trains linear SVMs only"):
        rp.SVMRepurposer(kernel="rbf", solver="streaming").fit_features(feats, y)


@pytest.mark.parametrize("cls", [rp.LogisticRegressionRepurposer, rp.SVMRepurposer])
def test_unknown_solver_is_named(cls):
    feats, y = _problem(2)
    with pytest.raises(ValueError, match="solver='sgd'"):
        cls(solver="sgd").fit_features(feats, y)
