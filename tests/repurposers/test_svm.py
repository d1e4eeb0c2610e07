"""SVMRepurposer: OvR SVMs with calibrated probabilities."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.svm import SVC

import repurpose as rp


def _blobs(n_per_class: int, n_classes: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(scale=3.0, size=(n_classes, 6))
    return {"f": centres[y] + rng.normal(size=(len(y), 6))}, y


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("calibration", ["sigmoid", "isotonic"])
@pytest.mark.parametrize("k", [1, 2, 5])
def test_probabilities_always_work_even_with_few_examples(kernel, calibration, k):
    train, y = _blobs(k)
    test, y_test = _blobs(20, seed=0)
    rep = rp.SVMRepurposer(kernel=kernel, calibration=calibration).fit_features(train, y)
    proba = rep.predict_proba_features(test)
    assert proba.shape == (100, 5)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)
    if k == 5:
        assert np.mean(rep.predict_features(test) == y_test) > 0.8


def test_decision_values_match_sklearn_svc():
    train, y = _blobs(10, n_classes=3)
    rep = rp.SVMRepurposer(kernel="rbf", C=2.0).fit_features(train, y)
    X = rep._combine(train).astype(np.float64)
    ref = SVC(kernel="rbf", C=2.0, gamma=rep.gamma_).fit(X, y == 1)
    np.testing.assert_allclose(rep._decision(X)[:, 1], ref.decision_function(X), atol=1e-8)


def test_binary_and_string_labels():
    train, y = _blobs(6, n_classes=2)
    labels = np.array(["no", "yes"])[y]
    rep = rp.SVMRepurposer().fit_features(train, labels)
    assert rep.predict_proba_features(train).shape == (12, 2)
    assert np.mean(rep.predict_features(train) == labels) > 0.8


def test_parameter_errors():
    train, y = _blobs(3)
    with pytest.raises(ValueError, match="kernel='poly'"):
        rp.SVMRepurposer(kernel="poly").fit_features(train, y)
    with pytest.raises(ValueError, match="calibration='platt'"):
        rp.SVMRepurposer(calibration="platt").fit_features(train, y)
    with pytest.raises(ValueError, match="cv=1"):
        rp.SVMRepurposer(cv=1).fit_features(train, y)
    with pytest.raises(ValueError, match="gamma=-1"):
        rp.SVMRepurposer(gamma=-1).fit_features(train, y)


def test_the_default_kernel_is_linear():
    """CNN features are classified with linear SVMs; RBF lost on the digits demo and on
    real photos (benchmarks/bench_svm_kernel.py, docs/repurposers.md)."""
    assert rp.SVMRepurposer().kernel == "linear"
    train, y = _blobs(8)
    test, y_test = _blobs(20, seed=0)
    rep = rp.SVMRepurposer().fit_features(train, y)
    assert np.mean(rep.predict_features(test) == y_test) > 0.9
