"""EnsembleRepurposer: the average of per-layer meta-models."""

import numpy as np
import pytest

import repurpose as rp


def _features(n=40, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(["cat", "dog"], n // 2)
    signal = (y == "dog")[:, None].astype(float)
    return {"fc6": rng.normal(size=(n, 3)) + signal, "fc7": rng.normal(size=(n, 5)) + signal}, y


def test_probabilities_are_the_mean_of_per_layer_models():
    feats, y = _features()
    rep = rp.EnsembleRepurposer(feature_layers=["fc6", "fc7"]).fit_features(feats, y)
    singles = [rp.LogisticRegressionRepurposer(feature_layers=[k]).fit_features(feats, y)
               for k in ("fc6", "fc7")]
    expected = np.mean([s.predict_proba_features(feats) for s in singles], axis=0)
    np.testing.assert_allclose(rep.predict_proba_features(feats), expected, rtol=1e-10)
    assert [m.feature_layers_ for m in rep.members_] == [["fc6"], ["fc7"]]
    assert set(rep.predict_features(feats)) <= {"cat", "dog"}


def test_weights_and_a_custom_estimator_survive_save_and_load(tmp_path):
    feats, y = _features()
    member = rp.LogisticRegressionRepurposer(C=0.05)
    rep = rp.EnsembleRepurposer(feature_layers=["fc6", "fc7"], estimator=member,
                                weights=[3, 1]).fit_features(feats, y)
    p = [m.predict_proba_features({k: feats[k]}) for m, k in zip(rep.members_, ["fc6", "fc7"],
                                                                 strict=True)]
    np.testing.assert_allclose(rep.predict_proba_features(feats), 0.75 * p[0] + 0.25 * p[1])
    rep.save(tmp_path / "ens")
    loaded = rp.load(tmp_path / "ens")
    assert loaded.estimator.C == 0.05 and loaded.weights == [3, 1]
    np.testing.assert_array_equal(loaded.predict_proba_features(feats),
                                  rep.predict_proba_features(feats))


def test_bad_weights_and_estimator():
    feats, y = _features()
    with pytest.raises(ValueError, match="weights"):
        rp.EnsembleRepurposer(feature_layers=["fc6", "fc7"], weights=[1]).fit_features(feats, y)
    with pytest.raises(ValueError, match="estimator"):
        rp.EnsembleRepurposer(feature_layers=["fc6"], estimator=object()).fit_features(feats, y)
