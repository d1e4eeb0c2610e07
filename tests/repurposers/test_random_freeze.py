"""RandomFreezeRepurposer: exactly the named layers are re-initialised or frozen."""

import numpy as np
import pytest
import torch
from torch import nn

import repurpose as rp


class _Net(nn.Module):
    """conv1 and conv10: Xfer's substring matching confused these two."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3, padding=1)
        self.conv10 = nn.Conv2d(3, 4, 3, padding=1)
        self.fc1 = nn.Linear(4, 6)
        self.fc2 = nn.Linear(6, 5)

    def forward(self, x):
        x = torch.relu(self.conv10(torch.relu(self.conv1(x)))).mean((2, 3))
        return self.fc2(torch.relu(self.fc1(x)))


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(123)  # not the repurposer's seed: re-initialised weights must differ
    handler = rp.ModelHandler(_Net(), input_shape=(1, 5, 5))
    rng = np.random.default_rng(0)
    X = rng.normal(size=(30, 1, 5, 5)).astype(np.float32)
    return handler, X, np.arange(30) % 3


def _rf(handler, **kw):
    args = {"num_layers_to_drop": 1, "max_epochs": 2, "batch_size": 10, "lr": 1e-2,
            "progress": False, "random_state": 0, **kw}
    return rp.RandomFreezeRepurposer(handler, **args)


def _changed(rep, source):
    body = dict(rep.model_.body.named_parameters())
    return sorted({name.rsplit(".", 1)[0] for name, p in source.named_parameters()
                   if name in body and not torch.equal(body[name], p)})


def test_exactly_the_named_layer_is_reinitialised(problem):
    handler, X, y = problem
    # Everything kept is frozen, so only re-initialisation can change a layer.
    rep = _rf(handler, random_layers="conv1", fixed_layers="*").fit(X, y)
    assert rep.random_layers_ == ["conv1"]
    assert _changed(rep, handler.module) == ["conv1"]  # conv10 untouched
    assert rep.model_.body.conv10.weight.requires_grad is False


def test_glob_selects_both_and_fixed_layers_stay(problem):
    handler, X, y = problem
    rep = _rf(handler, random_layers=["conv1*"], fixed_layers=["fc1"]).fit(X, y)
    assert rep.random_layers_ == ["conv1", "conv10"]
    assert _changed(rep, handler.module) == ["conv1", "conv10"]
    assert torch.equal(rep.model_.body.fc1.weight, handler.module.fc1.weight)


def test_no_lists_trains_every_kept_layer(problem):
    handler, X, y = problem
    rep = _rf(handler).fit(X, y)
    assert rep.random_layers_ == [] and rep.fixed_layers_ == []
    assert _changed(rep, handler.module) == ["conv1", "conv10", "fc1"]
    assert "fc2" not in dict(rep.model_.body.named_modules())  # dropped


def test_unknown_or_dropped_layers_are_errors(problem):
    handler, X, y = problem
    with pytest.raises(rp.LayerNotFoundError, match="'conv2' not found; closest"):
        _rf(handler, random_layers=["conv2"]).fit(X, y)
    with pytest.raises(rp.LayerNotFoundError, match="fc2"):
        _rf(handler, fixed_layers=["fc2"]).fit(X, y)
    with pytest.raises(ValueError, match="num_layers_to_drop"):
        _rf(handler, num_layers_to_drop=-1).fit(X, y)
