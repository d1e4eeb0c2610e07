"""MLPRepurposer: a small torch MLP with early stopping."""

from __future__ import annotations

import numpy as np
import torch

import repurpose as rp


def _blobs(n_per_class: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n_per_class)
    return {"f": (rng.normal(size=(3, 5)) * 1.5)[y] + rng.normal(size=(len(y), 5))}, y


def test_accuracy_on_separable_data():
    train, y = _blobs(20)
    rep = rp.MLPRepurposer(max_epochs=50, random_state=0).fit_features(train, y)
    assert np.mean(rep.predict_features(train) == y) > 0.7


def test_early_stopping_when_validation_loss_stops_improving():
    rng = np.random.default_rng(0)
    noise = {"f": rng.normal(size=(60, 20))}
    labels = rng.permutation(np.repeat([0, 1, 2], 20))  # nothing to learn: it can only overfit
    rep = rp.MLPRepurposer(max_epochs=200, patience=3, lr=1e-2, random_state=0)
    assert rep.fit_features(noise, labels).n_epochs_ < 200


def test_deterministic_and_leaves_global_rng_alone():
    train, y = _blobs(10)
    torch.manual_seed(123)
    expected = torch.rand(1)
    torch.manual_seed(123)
    a = rp.MLPRepurposer(max_epochs=10, random_state=3).fit_features(train, y)
    assert torch.equal(torch.rand(1), expected)
    b = rp.MLPRepurposer(max_epochs=10, random_state=3).fit_features(train, y)
    np.testing.assert_array_equal(a.predict_proba_features(train), b.predict_proba_features(train))


def test_one_example_per_class_trains_without_validation():
    train, y = _blobs(1)
    rep = rp.MLPRepurposer(max_epochs=7, hidden_sizes=(), random_state=0).fit_features(train, y)
    assert rep.n_epochs_ == 7
    assert rep.predict_proba_features(train).shape == (3, 3)


def test_device_parameter_is_used():
    train, y = _blobs(5)
    rep = rp.MLPRepurposer(max_epochs=2, device="cpu").fit_features(train, y)
    assert next(rep.module_.parameters()).device.type == "cpu"
