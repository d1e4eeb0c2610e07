"""GatedExpertsRepurposer: per-layer probes mixed by a gate fitted on out-of-fold logits.

The generic contract checks run in tests/test_common.py (registered as "gated_experts").
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.linear_model import LogisticRegression

import repurpose as rp
from repurpose.repurposers._gated_experts import fit_gate, mix


def _features(seed=0, n_per_class=20, signal=3.0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n_per_class)
    feats = {"fc6": rng.normal(size=(len(y), 8)), "fc7": rng.normal(size=(len(y), 12))}
    feats["fc7"][:, 5] += signal * y
    return feats, y


def test_the_informative_layer_gets_the_larger_share():
    feats, y = _features()
    rep = rp.GatedExpertsRepurposer(progress=False, random_state=0).fit_features(feats, y)
    shares = rep.gates_(feats)
    np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-12)
    assert shares[:, 1].mean() > 0.6
    assert (rep.predict_features(feats) == y).mean() > 0.9


def test_experts_are_the_per_layer_logistic_regressions():
    feats, y = _features()
    rep = rp.GatedExpertsRepurposer(C=0.5, progress=False, random_state=0)
    rep.fit_features(feats, y)
    x = (feats["fc6"] - feats["fc6"].mean(0)) / feats["fc6"].std(0)
    ref = LogisticRegression(C=0.5, max_iter=1000).fit(x, y)
    np.testing.assert_allclose(rep.experts_[0]["coef"], ref.coef_, rtol=1e-6, atol=1e-8)


def test_zero_gate_is_the_average_of_the_experts_logits():
    rng = np.random.default_rng(1)
    logits = torch.as_tensor(rng.normal(size=(3, 7, 4)))
    zero = torch.zeros(3, dtype=torch.float64)
    out, shares = mix(logits, zero, zero, torch.zeros(1, dtype=torch.float64))
    torch.testing.assert_close(out, logits.mean(0))
    torch.testing.assert_close(shares, torch.full((7, 3), 1 / 3, dtype=torch.float64))


def test_the_gate_is_fitted_on_out_of_fold_logits():
    # fc6 is pure noise with more dimensions than examples per fold: its expert fits its
    # own training examples perfectly, so only out-of-fold logits reveal that it is useless
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], 15)
    feats = {"fc6": rng.normal(size=(45, 60)), "fc7": rng.normal(size=(45, 4))}
    feats["fc7"][:, 0] += 1.5 * y
    rep = rp.GatedExpertsRepurposer(progress=False, random_state=0).fit_features(feats, y)
    # (fitted on the experts' own training logits instead, both shares stay at 0.50)
    assert rep.gate_["gate_bias"][1] - rep.gate_["gate_bias"][0] > 0.5
    assert rep.gates_(feats)[:, 1].mean() > 0.75


def test_a_strong_penalty_keeps_equal_shares():
    feats, y = _features()
    rep = rp.GatedExpertsRepurposer(gate_l2=1e6, progress=False, random_state=0)
    np.testing.assert_allclose(rep.fit_features(feats, y).gates_(feats), 0.5, atol=1e-4)


@settings(max_examples=15, deadline=None)
@given(n_per_class=st.integers(2, 9), folds=st.integers(2, 8), n_classes=st.integers(2, 4))
def test_any_class_size_of_at_least_two_fits(n_per_class, folds, n_classes):
    rng = np.random.default_rng(n_per_class)
    y = np.repeat(np.arange(n_classes), n_per_class)
    feats = {"a": rng.normal(size=(len(y), 3)) + y[:, None], "b": rng.normal(size=(len(y), 5))}
    rep = rp.GatedExpertsRepurposer(folds=folds, progress=False, random_state=0)
    proba = rep.fit_features(feats, y).predict_proba_features(feats)
    assert proba.shape == (len(y), n_classes)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)


def test_save_and_load_predict_the_same(tmp_path):
    feats, y = _features()
    feats = {"fire9/concat": feats["fc7"], "pool_final": feats["fc6"]}
    rep = rp.GatedExpertsRepurposer(progress=False, random_state=0).fit_features(feats, y)
    rep.save(tmp_path / "experts", include_handler=False)
    loaded = rp.load(tmp_path / "experts")
    assert isinstance(loaded, rp.GatedExpertsRepurposer)
    np.testing.assert_allclose(loaded.predict_proba_features(feats),
                               rep.predict_proba_features(feats))
    np.testing.assert_allclose(loaded.gates_(feats), rep.gates_(feats))


def test_fit_gate_prefers_the_informative_expert():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = 3.0 * np.eye(3)[y] + rng.normal(size=(300, 3))
    gate = fit_gate(np.stack([rng.normal(size=(300, 3)), good]), y, l2=1e-3)
    assert gate["gate_bias"][1] > gate["gate_bias"][0]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"C": 0.0}, r"C=0.0; expected a number in \(0, inf\)"),
        ({"folds": 1}, "folds=1; expected an integer >= 2"),
        ({"gate_l2": -1.0}, r"gate_l2=-1.0; expected a number in \[0, inf\)"),
    ],
)
def test_bad_parameters_are_named(options, message):
    feats, y = _features()
    with pytest.raises(ValueError, match=message):
        rp.GatedExpertsRepurposer(progress=False, **options).fit_features(feats, y)


def test_a_class_with_one_example_is_refused_by_name():
    feats, y = _features()
    y = y.copy()
    y[0] = 7
    with pytest.raises(ValueError, match="at least 2 examples of every class.*has 1"):
        rp.GatedExpertsRepurposer(progress=False).fit_features(feats, y)


def test_gates_of_features_of_another_width_are_refused_by_name():
    feats, y = _features()
    rep = rp.GatedExpertsRepurposer(progress=False, random_state=0).fit_features(feats, y)
    with pytest.raises(ValueError, match="layer 'fc7' has 11 features per sample, but this "
                                         "repurposer was fitted with 12"):
        rep.gates_({"fc6": feats["fc6"], "fc7": feats["fc7"][:, :11]})
