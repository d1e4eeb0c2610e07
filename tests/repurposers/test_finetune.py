"""FineTuneRepurposer and the shared training engine, on tiny torch models."""

import math

import numpy as np
import pytest
import torch
from torch import nn

import repurpose as rp
from repurpose import RepurposeError
from repurpose.repurposers import _network as network_module
from repurpose.repurposers._freezing import freeze_modules, frozen_norm_layers, match_layers
from repurpose.repurposers._param_groups import (
    body_lr_scales,
    build_param_groups,
    l2sp_penalty,
    layers_from_modules,
)
from repurpose.repurposers._training import Trainer, TrainSettings, lr_factor, split_validation


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3)
    )


def _data(n: int = 90):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    return x, y


def _trainer(net, body_params=(), **kw) -> Trainer:
    settings = TrainSettings(**{"max_epochs": 4, "lr": 1e-2, "progress": False,
                                "patience": None, **kw})
    layers = layers_from_modules(list(net.named_children()), pretrained=False)
    return Trainer(net, build_param_groups(layers, settings.lr, settings.weight_decay), settings,
                   frozen_norms=frozen_norm_layers(net), body_params=body_params)


def test_frozen_batchnorm_keeps_statistics():
    net = _net()
    net[1].running_mean.uniform_()
    freeze_modules([net[0], net[1]])
    before = {k: v.clone() for k, v in net[1].state_dict().items()}
    x, y = _data()
    _trainer(net).fit((x,), y)
    for k, v in net[1].state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not net[0].weight.requires_grad


def test_discriminative_rates_reach_param_groups():
    net = _net()
    layers = layers_from_modules(list(net.named_children()), pretrained=True)
    for layer, scale in zip(layers, body_lr_scales(len(layers), 0.1, 0.5), strict=True):
        layer.lr_scale = scale
    trainer = Trainer(net, build_param_groups(layers, 1e-2, 0.05), TrainSettings(progress=False))
    groups = {g["name"]: g for g in trainer.optimizer.param_groups}
    # three parametrised layers (0, 1, 4): scales 0.1 * 0.5**2, 0.1 * 0.5, 0.1
    assert groups["0"]["lr"] == pytest.approx(1e-2 * 0.025)
    assert groups["1/no_decay"]["lr"] == pytest.approx(1e-2 * 0.05)
    assert groups["4"]["lr"] == pytest.approx(1e-2 * 0.1)
    assert groups["0"]["weight_decay"] == 0.05
    # biases and BatchNorm parameters are never decayed
    assert groups["0/no_decay"]["weight_decay"] == 0.0 and "1" not in groups
    assert groups["0/no_decay"]["params"][0] is net[0].bias


def test_l2sp_changes_the_loss_as_specified():
    net = _net()
    layers = layers_from_modules([("body", net[:4])], pretrained=True)
    layers += layers_from_modules([("head", net[4])], pretrained=False)
    alpha = 0.3
    trainer = Trainer(net, build_param_groups(layers, 1e-2, 1e-3, l2sp=alpha),
                      TrainSettings(l2sp=alpha, progress=False),
                      l2sp_params=list(net[:4].parameters()))
    # under L2-SP the pretrained weights get no weight decay; the head keeps it
    decays = {g["name"]: g["weight_decay"] for g in trainer.optimizer.param_groups}
    assert decays == {"body": 0.0, "body/no_decay": 0.0, "head": 1e-3, "head/no_decay": 0.0}
    x, y = _data(8)
    net.eval()
    logits = net(x)
    base = nn.functional.cross_entropy(logits, y)
    assert trainer.objective(logits, y).item() == pytest.approx(base.item())
    with torch.no_grad():
        net[0].weight.add_(0.1)
        net[4].weight.add_(5.0)  # the head is not anchored
    logits = net(x)
    expected = nn.functional.cross_entropy(logits, y) + alpha / 2 * 0.1**2 * net[0].weight.numel()
    assert trainer.objective(logits, y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert l2sp_penalty([net[0].weight], [net[0].weight.detach()], 1.0).item() == 0.0


def test_checkpoint_resume_gives_identical_weights(tmp_path):
    x, y = _data()
    val = ((x[:20],), y[:20])
    plain = _net()
    _trainer(plain, max_epochs=5, optimizer="sgd").fit((x[20:],), y[20:], val)

    def interrupt(epoch, logs):
        if epoch == 2:
            raise KeyboardInterrupt

    first = _net()
    with pytest.raises(KeyboardInterrupt):
        _trainer(first, max_epochs=5, optimizer="sgd", checkpoint_dir=tmp_path,
                 callbacks=[interrupt]).fit((x[20:],), y[20:], val)
    resumed = _net()
    trainer = _trainer(resumed, max_epochs=5, optimizer="sgd", checkpoint_dir=tmp_path)
    history = trainer.fit((x[20:],), y[20:], val)
    assert len(history["loss"]) == 5
    for (name, a), b in zip(plain.state_dict().items(), resumed.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name
    # the same directory with other data is refused, not silently reused
    with pytest.raises(RepurposeError, match="different run"):
        _trainer(_net(), max_epochs=5, optimizer="sgd", checkpoint_dir=tmp_path).fit(
            (x[:30],), y[:30], val)


def test_early_stopping_restores_best_weights():
    x, y = _data()
    net = _net()
    trainer = _trainer(net, max_epochs=30, lr=0.5, patience=2, schedule=None)
    history = trainer.fit((x[20:],), y[20:], ((x[:20],), y[:20]))
    assert len(history["val_loss"]) < 30
    loss, _ = trainer.evaluate((x[:20],), y[:20])
    assert loss == pytest.approx(min(history["val_loss"]), rel=1e-6)


def test_gradual_unfreezing_trains_head_first():
    x, y = _data()
    net = _net()
    body = list(net[:2].parameters())
    start = [p.detach().clone() for p in body]
    seen = []

    def check(epoch, logs):
        seen.append(all(torch.equal(a, b) for a, b in zip(start, body, strict=True)))

    _trainer(net, max_epochs=3, unfreeze_after=1, body_params=body, callbacks=[check]).fit((x,), y)
    assert seen == [True, False, False]


def test_augmentation_and_clipping_run():
    x, y = _data()
    calls = []

    def augment(xb):
        calls.append(len(xb))
        return xb + 0.01 * torch.randn_like(xb)

    history = _trainer(_net(), max_epochs=2, augment=augment, clip_grad_norm=1.0,
                       batch_size=32).fit((x,), y)
    assert sum(calls) == 2 * len(x) and math.isnan(history["val_loss"][0])


def test_schedules_and_settings():
    assert lr_factor("cosine", 0, 10) == 1.0 and lr_factor("cosine", 10, 10) == pytest.approx(0)
    assert lr_factor("onecycle", 0, 100) == pytest.approx(1 / 25)
    assert lr_factor("onecycle", 30, 100) == pytest.approx(1.0)
    assert lr_factor(None, 5, 10) == 1.0
    with pytest.raises(ValueError, match="optimizer='adam'"):
        TrainSettings(optimizer="adam").validate()
    with pytest.raises(ValueError, match="schedule"):
        TrainSettings(schedule="step").validate()


def test_validation_split_is_stratified():
    y = torch.tensor([0] * 10 + [1] * 10).numpy()
    train, val = split_validation(y, 0.2, seed=0)
    assert val is not None and sorted(y[val].tolist()) == [0, 0, 1, 1]
    assert len(set(train) | set(val)) == 20
    assert split_validation(y, 0.0, 0)[1] is None


def test_match_layers_exact_or_glob_never_substring():
    names = ["conv1", "conv10", "layer1.0.conv1", "fc"]
    assert match_layers("conv1", names) == ["conv1"]
    assert match_layers(["conv1*"], names) == ["conv1", "conv10"]
    assert match_layers("*.conv1", names) == ["layer1.0.conv1"]
    with pytest.raises(Exception, match="'conv2' not found; closest"):
        match_layers("conv2", names)


# ----- FineTuneRepurposer ----------------------------------------------------------------
class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc7 = nn.Linear(6, 8)
        self.fc8 = nn.Linear(8, 5)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x))).mean((2, 3))
        return self.fc8(torch.relu(self.fc7(x)))


@pytest.fixture(scope="module")
def problem():
    torch.manual_seed(0)
    net = _BNNet().eval()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(48, 1, 6, 6)).astype(np.float32)
    y = np.repeat(["a", "b", "c"], 16)
    X[y == "b"] += 0.5
    return rp.ModelHandler(net, input_shape=(1, 6, 6)), X, y


def _ft(handler, **kw):
    args = {"transfer_layer": "fc7", "freeze": None, "max_epochs": 3, "batch_size": 16,
            "lr": 1e-2, "progress": False, "random_state": 0, **kw}
    return rp.FineTuneRepurposer(handler, **args)


class _Spy(Trainer):
    last: Trainer | None = None

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        _Spy.last = self


def test_frozen_body_keeps_batchnorm_statistics(problem):
    handler, X, y = problem
    rep = _ft(handler, freeze="up_to:bn2", max_epochs=2).fit(X, y)
    body = rep.model_.body
    for name in ("bn1", "bn2"):
        for key, value in getattr(handler.module, name).state_dict().items():
            assert torch.equal(getattr(body, name).state_dict()[key], value), (name, key)
    assert torch.equal(body.conv2.weight, handler.module.conv2.weight)
    assert not torch.equal(body.fc7.weight, handler.module.fc7.weight)


def test_unfrozen_batchnorm_does_update(problem):
    handler, X, y = problem
    rep = _ft(handler, freeze=["conv1", "bn1"], max_epochs=1).fit(X, y)
    assert torch.equal(rep.model_.body.bn1.running_mean, handler.module.bn1.running_mean)
    assert not torch.equal(rep.model_.body.bn2.running_mean, handler.module.bn2.running_mean)


def test_discriminative_rates_and_l2sp_reach_the_trainer(problem, monkeypatch):
    handler, X, y = problem
    monkeypatch.setattr(network_module, "Trainer", _Spy)
    _ft(handler, freeze="up_to:bn1", lr=0.1, body_lr_mult=0.5, layer_decay=0.1, l2sp=0.2,
        weight_decay=0.01, max_epochs=1).fit(X, y)
    trainer = _Spy.last
    groups = {g["name"]: (g["initial_lr"], g["weight_decay"])
              for g in trainer.optimizer.param_groups}
    # trainable body: conv2, bn2, fc7 (top); head at the full rate with weight decay
    assert groups["fc7"] == (pytest.approx(0.1 * 0.5), 0.0)
    assert groups["bn2/no_decay"] == (pytest.approx(0.1 * 0.5 * 0.1), 0.0)
    assert groups["conv2"] == (pytest.approx(0.1 * 0.5 * 0.01), 0.0)
    assert groups["head"] == (pytest.approx(0.1), 0.01)
    assert groups["head/no_decay"] == (pytest.approx(0.1), 0.0)
    assert "conv1" not in groups and "bn1/no_decay" not in groups  # frozen
    body = trainer.model.body
    anchored = {id(p) for p in trainer.l2sp_params}
    assert anchored == {id(p) for p in body.parameters() if p.requires_grad}


def test_checkpoint_resume_matches_an_uninterrupted_run(problem, tmp_path):
    handler, X, y = problem
    kw = {"max_epochs": 4, "dropout": 0.3, "freeze": "up_to:conv1"}
    plain = _ft(handler, **kw).fit(X, y)

    def stop(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _ft(handler, checkpoint_dir=tmp_path, callbacks=[stop], **kw).fit(X, y)
    resumed = _ft(handler, checkpoint_dir=tmp_path, **kw).fit(X, y)
    a, b = plain.model_.state_dict(), resumed.model_.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.history_["loss"] == plain.history_["loss"]


def test_validation_set_and_history(problem):
    handler, X, y = problem
    rep = _ft(handler, patience=1, max_epochs=3).fit(X[::2], y[::2], X_val=X[1::2],
                                                    y_val=y[1::2])
    assert set(rep.history_) == {"epoch", "loss", "acc", "val_loss", "val_acc", "lr"}
    assert all(v == v for v in rep.history_["val_loss"])  # not NaN
    with pytest.raises(ValueError, match="not seen in y"):
        _ft(handler).fit(X, y, X_val=X[:2], y_val=["a", "zzz"])


def test_head_freeze_and_augment_options(problem):
    handler, X, y = problem
    seen = []

    def augment(xb):
        seen.append(xb.shape[0])
        return xb.flip(-1)

    rep = _ft(handler, n_hidden=7, dropout=0.1, freeze=["conv*"], augment=augment,
              validation_fraction=0.0, max_epochs=1, optimizer="sgd", schedule="onecycle",
              unfreeze_after=1, clip_grad_norm=1.0).fit(X, y)
    assert sum(seen) == len(X)
    widths = [m.out_features for m in rep.model_.head.modules() if isinstance(m, nn.Linear)]
    assert widths == [7, 3]
    assert not rep.model_.body.conv2.weight.requires_grad
    assert rep.model_.body.bn1.weight.requires_grad
    with pytest.raises(rp.LayerNotFoundError, match="conv5"):
        _ft(handler, freeze="up_to:conv5").fit(X, y)
    with pytest.raises(rp.LayerNotFoundError):
        _ft(handler, transfer_layer="fc9").fit(X, y)
