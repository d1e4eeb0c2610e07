"""BNNRepurposer: Monte-Carlo probabilities, OOD entropy, reproducibility, saving, errors.

The generic contract checks run in tests/test_common.py (registered as "bnn").
"""

from __future__ import annotations

import numpy as np
import pytest

import repurpose as rp
from repurpose.metrics import predictive_entropy


def blobs(seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (3, 4))
    y = np.repeat(np.arange(3), 30)
    x = centres[y] + rng.normal(0, 1, (len(y), 4))
    train = np.arange(len(y)) % 30 < 20
    return {"fc7": x[train]}, y[train], {"fc7": x[~train]}


@pytest.fixture(scope="module")
def fitted():
    train, y, test = blobs()
    bnn = rp.BNNRepurposer(hidden=(16,), n_iter=400, n_samples=50, progress=False,
                           random_state=0).fit_features(train, y)
    return bnn, test


def test_probabilities_are_smooth_monte_carlo_averages(fitted):
    bnn, test = fitted
    u = bnn.predict_uncertainty_features(test)
    np.testing.assert_allclose(u.proba.sum(1), 1.0, atol=1e-9)
    np.testing.assert_allclose(u.entropy, predictive_entropy(u.proba))
    # Averages of softmax outputs, not vote counts: not multiples of 1 / n_samples.
    votes = u.proba * bnn.n_samples
    assert not np.allclose(votes, np.round(votes))
    assert np.all(u.std >= 0) and u.std.max() > 0


def test_entropy_is_higher_out_of_distribution(fitted):
    bnn, test = fitted
    far = {"fc7": test["fc7"] * 0 + np.array([12.0, -12.0, 12.0, -12.0])}
    h_in = bnn.predict_uncertainty_features(test).entropy.mean()
    h_out = bnn.predict_uncertainty_features(far).entropy.mean()
    assert h_out > h_in


def test_reproducible_with_random_state_and_after_save(tmp_path, fitted):
    bnn, test = fitted
    train, y, _ = blobs()
    again = rp.BNNRepurposer(hidden=(16,), n_iter=400, n_samples=50, progress=False,
                             random_state=0).fit_features(train, y)
    p = bnn.predict_proba_features(test)
    np.testing.assert_array_equal(again.predict_proba_features(test), p)
    np.testing.assert_array_equal(bnn.predict_proba_features(test), p)  # same draws each call
    bnn.save(tmp_path / "bnn", include_handler=False)
    loaded = rp.load(tmp_path / "bnn")
    np.testing.assert_array_equal(loaded.predict_proba_features(test), p)
    assert [layer.weight_mu.shape[0] for layer in loaded.net_.layers] == [16, 3]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"hidden": (0,)}, "hidden=.*positive layer widths"),
        ({"n_samples": 0}, r"n_samples=0; expected an integer >= 1"),
        ({"kl_weight": 0.0}, r"kl_weight=0.0; expected a number in \(0, 1\]"),
        ({"kl_warmup": 2.0}, r"kl_warmup=2.0; expected a number in \[0, 1\]"),
    ],
)
def test_bad_parameters_are_named(options, message):
    train, y, _ = blobs()
    with pytest.raises(ValueError, match=message):
        rp.BNNRepurposer(progress=False, **options).fit_features(train, y)
