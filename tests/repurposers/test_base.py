"""The Repurposer / MetaModelRepurposer base classes and the registry."""

from __future__ import annotations

import numpy as np
import pytest
import sklearn.exceptions
from sklearn.base import clone

import repurpose as rp
from repurpose.repurposers import MetaModelRepurposer, Repurposer
from repurpose.testing import tiny_problem


def _features(seed: int = 0, n: int = 10) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n)
    a = rng.normal(size=(3 * n, 4)) + y[:, None] * 2.0
    b = rng.normal(size=(3 * n, 4)) - y[:, None]
    return {"a": a.astype(np.float32), "b": b.astype(np.float32)}, y


class Centroid(MetaModelRepurposer):
    """A minimal subclass using only the two required hooks."""

    def __init__(self, handler=None, feature_layers=None):
        self.handler = handler
        self.feature_layers = feature_layers

    def _fit_features(self, features, y):
        X = self._combine(features)
        self.means_ = np.stack([X[y == c].mean(0) for c in range(self.n_classes_)])

    def _predict_proba_features(self, features):
        d = ((self._combine(features)[:, None] - self.means_[None]) ** 2).sum(-1)
        e = np.exp(-(d - d.min(1, keepdims=True)))
        return e / e.sum(1, keepdims=True)


def test_abstract_base_cannot_be_instantiated():
    with pytest.raises(TypeError):
        Repurposer()  # type: ignore[abstract]
    with pytest.raises(TypeError):
        MetaModelRepurposer()  # type: ignore[abstract]


def test_minimal_subclass_gets_defaults_and_string_labels():
    feats, y = _features()
    labels = np.array(["cat", "dog", "emu"])[y]
    rep = Centroid().fit_features(feats, labels)
    assert rep.combine == "concat" and rep.pooling == "avg"
    assert rep.classes_.tolist() == ["cat", "dog", "emu"]
    assert rep.n_features_in_ == 8
    assert (rep.predict_features(feats) == labels).mean() > 0.9


def test_unfitted_raises_both_not_fitted_errors():
    rep = rp.LogisticRegressionRepurposer()
    with pytest.raises(rp.NotFittedError, match="not fitted"):
        rep.predict_proba_features({"a": np.zeros((2, 4))})
    with pytest.raises(sklearn.exceptions.NotFittedError):
        rep.predict(np.zeros((2, 1, 8, 8), np.float32))


def test_single_class_and_bad_labels_are_refused():
    feats, _ = _features()
    with pytest.raises(ValueError, match="single class"):
        Centroid().fit_features(feats, np.zeros(30))
    with pytest.raises(ValueError, match="X has 30 samples but y has 3"):
        Centroid().fit_features(feats, [0, 1, 2])
    with pytest.raises(ValueError, match="1-D"):
        Centroid().fit_features(feats, np.zeros((30, 2)))
    with pytest.raises(ValueError, match="NaN"):
        Centroid().fit_features(feats, np.r_[np.nan, np.arange(29.0)])


def test_feature_errors_name_the_problem():
    feats, y = _features()
    rep = Centroid().fit_features(feats, y)
    with pytest.raises(ValueError, match=r"layer 'a' has 5 features per sample.*fitted with 4"):
        rep.predict_proba_features({"a": np.zeros((2, 5)), "b": np.zeros((2, 4))})
    with pytest.raises(ValueError, match=r"no layer\(s\) \['b'\]; available: a"):
        rep.predict_proba_features({"a": np.zeros((2, 4))})
    bad = {"a": feats["a"].copy(), "b": feats["b"]}
    bad["a"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        rep.predict_proba_features(bad)
    with pytest.raises(ValueError, match="different numbers of samples"):
        rep.predict_proba_features({"a": np.zeros((2, 4)), "b": np.zeros((3, 4))})


def test_feature_layers_select_and_order():
    feats, y = _features()
    rep = Centroid(feature_layers=["b"]).fit_features(feats, y)
    assert rep.feature_layers_ == ["b"] and rep.n_features_in_ == 4
    rep = Centroid(feature_layers="a").fit_features(feats, y)
    assert rep.feature_layers_ == ["a"]
    with pytest.raises(ValueError, match="feature_layers"):
        Centroid(feature_layers=[1]).fit_features(feats, y)


def test_standardisation_uses_training_statistics():
    feats, y = _features()
    rep = rp.LogisticRegressionRepurposer().fit_features(feats, y)
    z = rep._combine(feats)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-4)


def test_combine_average_needs_equal_widths():
    feats, y = _features()
    rep = rp.LogisticRegressionRepurposer(combine="average").fit_features(feats, y)
    assert rep._combine(feats).shape == (30, 4)
    feats["b"] = np.c_[feats["b"], feats["b"]]
    with pytest.raises(ValueError, match=r"equal width; got a: 4, b: 8"):
        rp.LogisticRegressionRepurposer(combine="average").fit_features(feats, y)
    with pytest.raises(ValueError, match="combine='sum'"):
        rp.LogisticRegressionRepurposer(combine="sum").fit_features(feats, y)


def test_clone_shares_handler_and_copies_params():
    handler = tiny_problem().handler
    rep = rp.LogisticRegressionRepurposer(handler, ["fc7"], class_weight={5: 2.0})
    twin = clone(rep)
    assert twin.handler is handler
    assert twin.class_weight == {5: 2.0} and twin.class_weight is not rep.class_weight
    assert twin.get_params()["feature_layers"] == ["fc7"]


def test_fit_through_handler_and_labels_from_pairs():
    import torch

    p = tiny_problem()
    rep = rp.LogisticRegressionRepurposer(p.handler, ["fc6", "relu7"], progress=False)
    assert rep.fit(p.X_train, p.y_train) is rep
    assert rep.input_shape_ == (1, 8, 8)
    data = torch.utils.data.TensorDataset(torch.as_tensor(p.X_train),
                                          torch.as_tensor(p.y_train))
    twin = clone(rep).repurpose(data)
    np.testing.assert_allclose(twin.predict_probability(p.X_test), rep.predict_proba(p.X_test),
                               rtol=1e-3, atol=1e-5)
    with pytest.raises(ValueError, match="no labels"):
        clone(rep).fit(p.X_train)
    with pytest.raises(ValueError, match=r"inputs have shape \(N, 1, 8, 9\)"):
        rep.predict(np.zeros((2, 1, 8, 9), np.float32))


def test_handler_errors():
    p = tiny_problem()
    with pytest.raises(ValueError, match="has no handler"):
        rp.LogisticRegressionRepurposer().fit(p.X_train, p.y_train)
    with pytest.raises(ValueError, match="feature_layers is None; choose .*fc7"):
        rp.LogisticRegressionRepurposer(p.handler).fit(p.X_train, p.y_train)


def test_registry_refuses_duplicates_and_lists_names():
    assert {"lr", "svm", "mlp"} <= set(rp.list_repurposers())
    with pytest.raises(rp.RepurposeError, match="'lr' is already registered"):
        rp.register_repurposer("lr")(Centroid)
    with pytest.raises(rp.RepurposeError, match="no repurposer is registered as 'nope'"):
        rp.repurposers.get_repurposer_class("nope")
    with pytest.raises(rp.RepurposeError, match="non-empty string"):
        rp.register_repurposer("")


def test_base_docstring_example_runs():
    import doctest

    import repurpose.repurposers._base as base

    result = doctest.testmod(base, extraglobs={"rp": rp})
    assert result.failed == 0 and result.attempted > 0


def test_docs_knn_repurposer_is_complete_and_passes_the_checks(tmp_path):
    import re
    from pathlib import Path

    from repurpose.repurposers._registry import _REGISTRY
    from repurpose.testing import check_repurposer

    doc = Path(__file__).parents[2] / "docs" / "write-your-own-repurposer.md"
    first_block = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)[0]
    assert len(first_block.strip().splitlines()) <= 30
    namespace: dict = {}
    try:
        exec(compile(first_block, str(doc), "exec"), namespace)
        knn_cls = namespace["KNNRepurposer"]
        check_repurposer(lambda h: knn_cls(h, ["fc6", "fc7"], n_neighbors=3))
        assert "knn" in rp.list_repurposers()
    finally:
        _REGISTRY.pop("knn", None)


def test_a_failed_fit_leaves_the_estimator_unfitted():
    """Regression: classes_ was set before _fit ran, so a failed fit passed check_is_fitted."""
    from sklearn.utils.validation import check_is_fitted

    class Failing(Centroid):
        def _fit_features(self, features, y):
            raise RuntimeError("solver blew up")

    feats, y = _features()
    rep = Failing()
    with pytest.raises(RuntimeError, match="solver blew up"):
        rep.fit_features(feats, y)
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(rep)
    fitted = Centroid().fit_features(feats, y)
    with pytest.raises(ValueError, match="NaN"):
        fitted.fit_features({"a": np.full((4, 4), np.nan), "b": np.zeros((4, 4))}, [0, 1, 0, 1])
    with pytest.raises(sklearn.exceptions.NotFittedError):
        check_is_fitted(fitted)
