"""repurpose.datasets: the digits split and the cached pretrained CNN."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from repurpose import ModelHandler
from repurpose.datasets import (
    cache_dir,
    digits_cnn,
    load_digits_split,
    pretrained_digits_cnn,
)


def test_split_shapes_and_disjointness():
    s = load_digits_split(5, seed=3)
    assert s.X_train.shape == (25, 1, 8, 8) and s.X_train.dtype == np.float32
    assert s.X_train.min() >= 0 and s.X_train.max() <= 1
    assert np.bincount(s.y_train, minlength=10)[5:].tolist() == [5] * 5
    assert set(s.y_test.tolist()) == {5, 6, 7, 8, 9} and set(s.y_source.tolist()) == {0, 1, 2, 3, 4}
    assert len(s.y_train) + len(s.y_test) + len(s.y_source) == 1797
    again = load_digits_split(5, seed=3)
    np.testing.assert_array_equal(again.X_train, s.X_train)
    assert not np.array_equal(load_digits_split(5, seed=4).X_train, s.X_train)


@pytest.mark.parametrize("k", [0, 101, 2.5, True])
def test_split_rejects_bad_k(k):
    with pytest.raises(ValueError, match="k_per_class"):
        load_digits_split(k)


def test_cnn_layers_and_equal_fc_widths():
    net = digits_cnn()
    handler = ModelHandler(net)
    assert handler.layer_names == ["conv1", "relu1", "conv2", "relu2", "fc6", "relu6", "fc7",
                                   "relu7", "fc8"]
    f = handler.extract(np.zeros((2, 1, 8, 8), np.float32), ["fc6", "fc7"], progress=False)
    assert f["fc6"].shape == f["fc7"].shape == (2, 64)
    assert torch.equal(digits_cnn().fc8.weight, net.fc8.weight)  # seeded


def test_pretrained_cnn_is_cached_under_the_env_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("REPURPOSE_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    net = pretrained_digits_cnn(epochs=3, progress=False)
    files = list(tmp_path.glob("digits_cnn_*/*"))
    assert sorted(f.name for f in files) == ["graph.json", "weights.safetensors"]
    again = pretrained_digits_cnn(epochs=3, progress=False)
    assert again is not net and torch.equal(again.fc6.weight, net.fc6.weight)
    s = load_digits_split(1)
    logits = again(torch.as_tensor(s.X_source[:200]))
    # it learned something (chance: 0.2)
    assert (logits.argmax(1).numpy() == s.y_source[:200]).mean() > 0.4


def test_damaged_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv("REPURPOSE_CACHE_DIR", str(tmp_path))
    pretrained_digits_cnn(epochs=1, progress=False)
    (weights,) = tmp_path.glob("digits_cnn_*/weights.safetensors")
    weights.write_bytes(b"garbage")
    net = pretrained_digits_cnn(epochs=1, progress=False)
    assert net.fc8.weight.shape == (5, 64)


def test_default_cache_dir_uses_platformdirs(monkeypatch):
    monkeypatch.delenv("REPURPOSE_CACHE_DIR", raising=False)
    assert "repurpose" in str(cache_dir())
