"""LogisticRegressionRepurposer."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import repurpose as rp
from repurpose.datasets import load_digits_split, pretrained_digits_cnn


@pytest.fixture(scope="module")
def digits_features():
    # the root conftest points REPURPOSE_CACHE_DIR at a session temp dir
    handler = rp.ModelHandler(pretrained_digits_cnn(epochs=2, progress=False))
    split = load_digits_split(50)
    layers = ["conv2", "fc6", "fc7"]
    kw = {"pooling": "flatten", "progress": False}
    return (handler.extract(split.X_train, layers, **kw), split.y_train,
            handler.extract(split.X_test, layers, **kw), split.y_test)


@pytest.mark.parametrize("layers", [["conv2"], ["fc6"], ["fc6", "fc7"], ["conv2", "fc7"]])
def test_converges_on_the_demo_without_warnings(digits_features, layers):
    train, y, test, y_test = digits_features
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = rp.LogisticRegressionRepurposer(feature_layers=layers).fit_features(train, y)
    assert rep.model_.n_iter_.max() < rep.max_iter
    assert np.mean(rep.predict_features(test) == y_test) > 0.6


def test_matches_sklearn_on_the_same_standardised_arrays(digits_features):
    train, y, _, _ = digits_features
    rep = rp.LogisticRegressionRepurposer(feature_layers="fc6", C=0.5).fit_features(train, y)
    # The standardisation is sklearn's (float32 features stay float32) ...
    X = rep._combine(train)
    np.testing.assert_allclose(X, StandardScaler().fit_transform(train["fc6"]), atol=1e-5)
    # ... and on the same arrays the solver is sklearn's: the same optimum, to its tolerance.
    # (Refitting on StandardScaler's output instead stops lbfgs at a point ~1e-4 away.)
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(X, y)
    np.testing.assert_allclose(rep.model_.coef_, ref.coef_, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(rep.predict_proba_features(train), ref.predict_proba(X),
                               atol=1e-4)


def test_multinomial_with_intercept_and_user_label_class_weight():
    rng = np.random.default_rng(0)
    y = np.repeat(["a", "b", "c"], 20)
    X = rng.normal(size=(60, 5)) + (y == "b")[:, None]
    rep = rp.LogisticRegressionRepurposer(class_weight={"a": 3.0}).fit_features({"f": X}, y)
    assert rep.model_.coef_.shape == (3, 5) and rep.model_.intercept_.shape == (3,)
    assert rep.model_.class_weight == {0: 3.0}
    with pytest.raises(ValueError, match=r"unknown label\(s\) \['z'\]"):
        rp.LogisticRegressionRepurposer(class_weight={"z": 1.0}).fit_features({"f": X}, y)
    with pytest.raises(ValueError, match="class_weight='heavy'"):
        rp.LogisticRegressionRepurposer(class_weight="heavy").fit_features({"f": X}, y)
    balanced = rp.LogisticRegressionRepurposer(class_weight="balanced")
    assert balanced.fit_features({"f": X}, y).model_.class_weight == "balanced"


def test_binary_problem():
    rng = np.random.default_rng(1)
    y = np.repeat([3, 7], 15)
    X = rng.normal(size=(30, 4)) + (y == 7)[:, None] * 2
    rep = rp.LogisticRegressionRepurposer().fit_features({"f": X}, y)
    assert rep.predict_proba_features({"f": X}).shape == (30, 2)
    assert set(rep.predict_features({"f": X}).tolist()) <= {3, 7}
