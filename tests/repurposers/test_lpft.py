"""FineTuneRepurposer: LP-FT (head_init="probe") and head-only training on cached features."""

import inspect

import numpy as np
import pytest
import torch
from torch import nn

import repurpose as rp
from repurpose.repurposers import _finetune as finetune_module
from repurpose.repurposers._lpft import StandardizedHead, fit_probe_head, interpolate_weights


class _Net(nn.Module):
    def __init__(self, n_classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 8, 3, padding=1)
        self.fc8 = nn.Linear(8, n_classes)

    def forward(self, x):
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc8(x.mean((2, 3)))


def _problem(n_classes: int = 3, n: int = 60):
    torch.manual_seed(0)
    net = _Net().eval()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 1, 6, 6)).astype(np.float32)
    y = np.array(["ant", "bee", "cat"][:n_classes])[np.arange(n) % n_classes]
    for i in range(n_classes):
        X[y == y[i], :, : 2 + i] += 1.0
    return rp.ModelHandler(net, input_shape=(1, 6, 6)), X, y


def _counting(handler):
    """Count calls of the source's conv1 (every body forward passes it once)."""
    calls = []
    handler.module.conv1.register_forward_hook(lambda *a: calls.append(1))
    return calls


@pytest.mark.parametrize("n_classes", [2, 3])
def test_probe_head_predicts_what_the_linear_probe_predicts(n_classes, monkeypatch):
    handler, X, y = _problem(n_classes)
    start = []  # the network's probabilities before the first training step

    class Spy(finetune_module.Trainer):
        def fit(self, data, y=None, val=None):
            start.append(torch.softmax(self.model(*data.source.tensors), 1).detach().numpy())
            return super().fit(data, y, val)

    monkeypatch.setattr(finetune_module, "Trainer", Spy)
    rep = rp.FineTuneRepurposer(handler, transfer_layer="conv2", head_init="probe",
                                validation_fraction=0.0, max_epochs=1, progress=False,
                                random_state=0).fit(X, y)
    probe = rp.LogisticRegressionRepurposer(handler, "conv2", progress=False).fit(X, y)
    np.testing.assert_allclose(start[0], probe.predict_proba(X), atol=1e-4)
    assert rep.score(X, y) >= probe.score(X, y) - 0.05


def test_fit_probe_head_keeps_missing_classes_improbable():
    rng = np.random.default_rng(1)
    feats = torch.as_tensor(rng.normal(size=(30, 4)), dtype=torch.float32)
    codes = torch.as_tensor(np.arange(30) % 2)  # classes 0 and 1 of 3
    feats[codes == 1, 0] += 3
    head = StandardizedHead(4, 3)
    fit_probe_head(head, feats, codes, C=1.0)
    proba = torch.softmax(head(feats), 1).detach().numpy()
    assert proba[:, 2].max() < 1e-6
    assert (proba.argmax(1) == codes.numpy()).mean() > 0.9


def test_head_only_trains_on_features_computed_once():
    handler, X, y = _problem()
    kw = {"transfer_layer": "conv2", "batch_size": 20, "validation_fraction": 0.0,
          "patience": None, "progress": False, "random_state": 0}
    counts = {}
    for epochs in (1, 6):
        calls = _counting(handler)
        rp.FineTuneRepurposer(handler, max_epochs=epochs, **kw).fit(X, y)
        counts[epochs] = len(calls)
        handler.module.conv1._forward_hooks.clear()
    # the copies share the handler's hooks: one pass over 3 batches plus the sizing sample
    assert counts[1] == counts[6] == 4


def test_cached_head_training_matches_running_the_body_each_epoch():
    handler, X, y = _problem()
    kw = {"transfer_layer": "conv2", "max_epochs": 4, "batch_size": 16, "lr": 1e-2,
          "progress": False, "random_state": 0}
    cached = rp.FineTuneRepurposer(handler, **kw).fit(X, y)
    streamed = rp.FineTuneRepurposer(handler, augment=lambda x: x, **kw).fit(X, y)
    for a, b in zip(cached.model_.head.parameters(), streamed.model_.head.parameters(),
                    strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert cached.history_["val_loss"] == pytest.approx(streamed.history_["val_loss"], 1e-4)


def test_probe_start_then_whole_network_fine_tuning_saves_and_loads(tmp_path):
    handler, X, y = _problem()
    rep = rp.FineTuneRepurposer(handler, transfer_layer="conv2", freeze=None, max_epochs=2,
                                head_init="probe", progress=False, random_state=0).fit(X, y)
    assert isinstance(rep.model_.head, StandardizedHead)
    assert rep.model_.head.scale.min() > 0
    loaded = rp.load(rep.save(tmp_path / "ft"), handler=handler)
    np.testing.assert_allclose(loaded.predict_proba(X), rep.predict_proba(X), atol=1e-6)


def test_new_parameters_come_last_and_bad_values_are_named():
    params = list(inspect.signature(rp.FineTuneRepurposer).parameters)
    assert params[-3:] == ["head_init", "probe_C", "wise_alpha"]
    assert params[:6] == ["handler", "transfer_layer", "n_hidden", "freeze", "dropout", "lr"]
    handler, X, y = _problem()
    with pytest.raises(ValueError, match="head_init='lp'"):
        rp.FineTuneRepurposer(handler, head_init="lp", progress=False).fit(X, y)
    with pytest.raises(ValueError, match="n_hidden=16; pass n_hidden=None"):
        rp.FineTuneRepurposer(handler, head_init="probe", n_hidden=16,
                              progress=False).fit(X, y)
    with pytest.raises(ValueError, match="probe_C"):
        rp.FineTuneRepurposer(handler, head_init="probe", probe_C=0.0,
                              progress=False).fit(X, y)
    with pytest.raises(ValueError, match=r"wise_alpha=1\.5; expected a number in \[0, 1\]"):
        rp.FineTuneRepurposer(handler, head_init="probe", wise_alpha=1.5,
                              progress=False).fit(X, y)
    with pytest.raises(ValueError, match="wise_alpha=0.5 .* needs head_init='probe'"):
        rp.FineTuneRepurposer(handler, wise_alpha=0.5, progress=False).fit(X, y)


def _wise(handler, X, y, alpha, freeze=None):
    return rp.FineTuneRepurposer(handler, transfer_layer="conv2", freeze=freeze,
                                 head_init="probe", wise_alpha=alpha, max_epochs=3, lr=0.05,
                                 validation_fraction=0.0, patience=None, progress=False,
                                 random_state=0).fit(X, y)


@pytest.mark.parametrize("freeze", [None, "auto"])  # the whole network; the cached head
def test_wise_ft_averages_the_lp_ft_start_and_the_fine_tuned_weights(freeze):
    handler, X, y = _problem()
    start, end = _wise(handler, X, y, 0.0, freeze), _wise(handler, X, y, 1.0, freeze)
    mid = _wise(handler, X, y, 0.25, freeze)
    probe = rp.LogisticRegressionRepurposer(handler, "conv2", progress=False).fit(X, y)
    np.testing.assert_allclose(start.predict_proba(X), probe.predict_proba(X), atol=1e-4)
    a, b, m = (r.model_.state_dict() for r in (start, end, mid))
    moved = [k for k in a if not torch.equal(a[k], b[k])]
    assert "head.head.layers.0.weight" in moved
    assert ("body.conv1.weight" in moved) == (freeze is None)
    for key in moved:
        torch.testing.assert_close(m[key], 0.75 * a[key] + 0.25 * b[key])


def test_interpolate_weights_keeps_integer_buffers_and_follows_the_line():
    net, start_net = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    with torch.no_grad():
        net.weight.fill_(3.0)
        net.num_batches_tracked.fill_(7)
    start = start_net.state_dict()
    interpolate_weights(net, start, 0.5)
    torch.testing.assert_close(net.weight.detach(), torch.full((3,), 2.0))
    assert int(net.num_batches_tracked) == 7


def test_another_wise_alpha_reuses_a_finished_checkpoint(tmp_path):
    handler, X, y = _problem()
    epochs = []
    kw = {"transfer_layer": "conv2", "freeze": None, "head_init": "probe", "max_epochs": 2,
          "lr": 0.05, "validation_fraction": 0.0, "patience": None, "progress": False,
          "random_state": 0, "callbacks": [lambda epoch, logs: epochs.append(epoch)]}
    rp.FineTuneRepurposer(handler, wise_alpha=0.5, checkpoint_dir=tmp_path, **kw).fit(X, y)
    assert epochs == [0, 1]
    again = rp.FineTuneRepurposer(handler, wise_alpha=0.25, checkpoint_dir=tmp_path,
                                  **kw).fit(X, y)
    assert epochs == [0, 1]  # no epoch trained again: only the average changed
    fresh = rp.FineTuneRepurposer(handler, wise_alpha=0.25, **kw).fit(X, y)
    np.testing.assert_allclose(again.predict_proba(X), fresh.predict_proba(X), atol=1e-6)
