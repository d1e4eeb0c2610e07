"""rp.metrics against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repurpose import metrics

P = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
Y = np.array([0, 1, 1, 1])


def test_accuracy_and_labels_mapped_through_classes():
    assert metrics.accuracy(Y, P) == 0.75
    assert metrics.accuracy(["cat", "dog", "dog", "dog"], P, classes=["cat", "dog"]) == 0.75


def test_nll_is_mean_negative_log_probability_of_the_true_class():
    expected = -(math.log(0.9) + math.log(0.8) + math.log(0.4) + math.log(0.7)) / 4
    assert metrics.nll(Y, P) == pytest.approx(expected, abs=1e-12)


def test_brier_is_mean_squared_distance_to_one_hot():
    expected = (2 * 0.1**2 + 2 * 0.2**2 + 2 * 0.6**2 + 2 * 0.3**2) / 4
    assert metrics.brier(Y, P) == pytest.approx(expected, abs=1e-12)


def test_ece_uses_equal_mass_bins():
    # Confidences sorted: 0.6 (wrong), 0.7, 0.8, 0.9 (right). Two bins of two rows:
    # bin 1: conf 0.65, acc 0.5; bin 2: conf 0.85, acc 1.0.
    expected = 0.5 * abs(0.5 - 0.65) + 0.5 * abs(1.0 - 0.85)
    assert metrics.ece(Y, P, n_bins=2) == pytest.approx(expected, abs=1e-12)
    conf, acc, count = metrics.calibration_bins(Y, P, n_bins=2)
    np.testing.assert_allclose(conf, [0.65, 0.85])
    np.testing.assert_allclose(acc, [0.5, 1.0])
    np.testing.assert_array_equal(count, [2, 2])
    # One bin: |mean accuracy - mean confidence|.
    assert metrics.ece(Y, P, n_bins=1) == pytest.approx(abs(0.75 - 0.75), abs=1e-12)


def test_predictive_entropy_bounds():
    h = metrics.predictive_entropy([[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3]])
    np.testing.assert_allclose(h, [0.0, math.log(3)], atol=1e-12)


def test_ood_auroc_from_entropy():
    sure = np.array([[0.99, 0.01], [0.95, 0.05]])
    unsure = np.array([[0.5, 0.5], [0.6, 0.4]])
    assert metrics.ood_auroc(sure, unsure) == 1.0
    assert metrics.ood_auroc(unsure, sure) == 0.0
    # Ties count one half.
    assert metrics.ood_auroc(sure[:1], sure[:1]) == 0.5


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match="column indices 0..1"):
        metrics.accuracy([0, 2], P[:2])
    with pytest.raises(ValueError, match="not in classes"):
        metrics.nll(["cow"], P[:1], classes=["cat", "dog"])
    with pytest.raises(ValueError, match=r"shape \(n, n_classes\)"):
        metrics.ece([0], [0.5, 0.5])
    with pytest.raises(ValueError, match="one label per row"):
        metrics.brier([0, 1, 1], P[:2])
    with pytest.raises(ValueError, match="n_bins"):
        metrics.ece(Y, P, n_bins=0)
    with pytest.raises(ValueError, match="at least one input"):
        metrics.ood_auroc(P, np.zeros((0, 2)))


def test_paired_bootstrap_of_a_classifier_against_itself_is_zero():
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=50)
    y = rng.integers(0, 3, 50)
    for metric in ("accuracy", "nll", "brier", "ece"):
        assert metrics.paired_bootstrap(y, p, p, metric=metric, n_resamples=50) == {
            "difference": 0.0, "low": 0.0, "high": 0.0}


def test_paired_bootstrap_interval_brackets_a_clear_difference():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    good = np.eye(2)[y] * 0.8 + 0.1
    flips = rng.random(400) < 0.3  # b is wrong on about 30% of the rows
    bad = np.eye(2)[np.where(flips, 1 - y, y)] * 0.8 + 0.1
    out = metrics.paired_bootstrap(y, good, bad, n_resamples=1000)
    assert out["difference"] == pytest.approx(flips.mean())
    assert 0.0 < out["low"] < out["difference"] < out["high"] < 0.5
    # a custom metric and label lookup through classes
    names = np.array(["cat", "dog"])[y]
    custom = metrics.paired_bootstrap(names, good, bad, metric=metrics.accuracy,
                                      classes=["cat", "dog"], n_resamples=1000)
    assert custom == out


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"metric": "auc"}, "metric='auc'; expected one of"),
        ({"confidence": 1.0}, r"confidence=1.0; expected a number in \(0, 1\)"),
        ({"n_resamples": 0}, "n_resamples=0; expected an integer >= 1"),
        ({"proba_b": np.full((4, 3), 1 / 3)}, "one shape; got \\(4, 2\\) and \\(4, 3\\)"),
    ],
)
def test_paired_bootstrap_bad_arguments_are_named(kwargs, message):
    args = {"y_true": [0, 1, 0, 1], "proba_a": np.full((4, 2), 0.5),
            "proba_b": np.full((4, 2), 0.5)}
    with pytest.raises(ValueError, match=message):
        metrics.paired_bootstrap(**{**args, **kwargs})
