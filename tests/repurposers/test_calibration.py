"""Temperature scaling: rp.calibrate on probability arrays, features and raw inputs."""

from __future__ import annotations

import numpy as np
import pytest

import repurpose as rp
from repurpose import metrics
from repurpose.repurposers._calibration import apply_temperature, fit_temperature
from repurpose.testing import tiny_problem


def test_temperature_lowers_nll_of_an_overconfident_model():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1.5, (2000, 4))
    p_true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=p) for p in p_true])
    overconfident = apply_temperature(p_true, 0.4)
    t = fit_temperature(overconfident, y)
    assert 2.0 < t < 3.2  # undoes the 0.4 sharpening (ideal 2.5)
    fixed = apply_temperature(overconfident, t)
    assert metrics.nll(y, fixed) < metrics.nll(y, overconfident) - 0.1
    np.testing.assert_array_equal(fixed.argmax(1), overconfident.argmax(1))


def features(n_per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.array(["cat", "dog", "emu"]), n_per_class)
    centres = {"cat": 0.0, "dog": 1.0, "emu": 2.0}
    x = np.array([[centres[v]] * 6 for v in y]) + rng.normal(0, 1.2, (len(y), 6))
    return {"fc7": x}, y


def test_calibrate_a_meta_model_on_features_and_save_it(tmp_path):
    (f_train, y_train), (f_val, y_val), (f_test, y_test) = (
        features(15, 0), features(60, 1), features(60, 2)
    )
    rep = rp.LogisticRegressionRepurposer(C=1e4, progress=False).fit_features(f_train, y_train)
    cal = rp.calibrate(rep, f_val, y_val)
    assert cal.temperature_ > 1.0  # the weakly regularised model was overconfident
    before = rep.predict_proba_features(f_test)
    after = cal.predict_proba_features(f_test)
    assert metrics.nll(y_test, after, classes=cal.classes_) < metrics.nll(
        y_test, before, classes=rep.classes_
    )
    np.testing.assert_array_equal(cal.classes_, rep.classes_)
    cal.save(tmp_path / "cal", include_handler=False)
    loaded = rp.load(tmp_path / "cal")
    assert type(loaded).__name__ == "TemperatureScaledRepurposer"
    np.testing.assert_array_equal(loaded.predict_proba_features(f_test), after)


def test_calibrate_on_raw_inputs_through_the_handler(tmp_path):
    p = tiny_problem()
    rep = rp.LogisticRegressionRepurposer(p.handler, ["fc7"], progress=False)
    rep.fit(p.X_train, p.y_train)
    cal = rp.calibrate(rep, p.X_test, p.y_test)
    proba = cal.predict_proba(p.X_test)
    np.testing.assert_array_equal(proba.argmax(1), rep.predict_proba(p.X_test).argmax(1))
    assert cal.score(p.X_test, p.y_test) == rep.score(p.X_test, p.y_test)
    cal.save(tmp_path / "cal.zip")
    np.testing.assert_array_equal(rp.load(tmp_path / "cal.zip").predict_proba(p.X_test), proba)


def test_calibrate_errors_are_explained():
    f_train, y_train = features(10, 0)
    with pytest.raises(rp.NotFittedError, match="needs a fitted repurposer"):
        rp.calibrate(rp.LogisticRegressionRepurposer(), f_train, y_train)
    rep = rp.LogisticRegressionRepurposer(progress=False).fit_features(f_train, y_train)
    with pytest.raises(ValueError, match=r"validation labels \['yak'\] are not classes"):
        rp.calibrate(rep, {"fc7": f_train["fc7"][:1]}, ["yak"])
