"""A Caffe training recipe driving the fine-tuning repurposers: the rates each optimizer step
really applies, Caffe's SGD update, lr_mult 0 freezing, decay_mult, max_steps, errors."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

import repurpose as rp
from repurpose.caffe import CaffeSolver, read_recipe
from repurpose.repurposers._recipe import CaffeSGD
from repurpose.testing import check_repurposer

SOLVERS = {
    "fixed": CaffeSolver(base_lr=0.02, max_iter=23, momentum=0.9, weight_decay=5e-4),
    "step": CaffeSolver(base_lr=0.02, lr_policy="step", gamma=0.1, stepsize=7, max_iter=23,
                        momentum=0.9, weight_decay=5e-4),
    "multistep": CaffeSolver(base_lr=0.05, lr_policy="multistep", gamma=0.5,
                             stepvalue=(3, 9, 10, 20), max_iter=23, momentum=0.9),
    "poly": CaffeSolver(base_lr=0.02, lr_policy="poly", power=0.9, max_iter=23),
    "inv": CaffeSolver(base_lr=0.02, lr_policy="inv", gamma=0.1, power=0.75, max_iter=23,
                       weight_decay=1e-3),
    "exp": CaffeSolver(base_lr=0.02, lr_policy="exp", gamma=0.9, max_iter=23),
    "sigmoid": CaffeSolver(base_lr=0.02, lr_policy="sigmoid", gamma=-0.3, stepsize=10,
                           max_iter=23),
}
# per-blob (lr_mult, decay_mult) of the body's first layer "0" and of the new head; "2" is
# the source's classifier, cut away by transfer_layer="auto" (so ignored)
MULTS = {"0": ((1, 1), (2, 0)), "2": ((0, 0), (0, 0)), "fc_new": ((10, 1), (20, 0))}
EXPECTED = {"0/weight": (1, 1), "0/bias": (2, 0), "head/layers.0.weight": (10, 1),
            "head/layers.0.bias": (20, 0)}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def _data(n: int = 40) -> tuple[np.ndarray, np.ndarray]:
    X = np.random.default_rng(0).normal(size=(n, 4)).astype(np.float32)
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


@pytest.fixture
def applied() -> Iterator[list[dict[str, tuple[float, float]]]]:
    """Per optimizer step: each named group's (lr, weight_decay) as the step reads them."""
    steps: list[dict[str, tuple[float, float]]] = []

    def record(optimizer, args, kwargs):
        steps.append({g["name"]: (g["lr"], g["weight_decay"]) for g in optimizer.param_groups})

    handle = register_optimizer_step_pre_hook(record)
    yield steps
    handle.remove()


@pytest.mark.parametrize("policy", sorted(SOLVERS))
def test_applied_rate_is_caffes_at_every_step(policy, applied) -> None:
    solver = SOLVERS[policy]
    recipe = read_recipe(solver, MULTS, head="fc_new")
    X, y = _data()
    # 40 samples in batches of 8: 5 steps an epoch, max_iter 23 cuts the 5th epoch short
    rep = rp.FineTuneRepurposer(rp.ModelHandler(_net()), **recipe, batch_size=8,
                                progress=False, random_state=0).fit(X, y)
    assert len(applied) == 23 and len(rep.history_["epoch"]) == 5
    for t, groups in enumerate(applied):
        for name, (lr_mult, decay_mult) in EXPECTED.items():
            lr, wd = groups[name]
            assert lr == pytest.approx(solver.learning_rate(t) * lr_mult, rel=1e-12, abs=0)
            assert wd == pytest.approx(solver.weight_decay * decay_mult, rel=1e-12, abs=0)
    assert type(rep.history_) is dict and all(math.isfinite(v) for v in rep.history_["loss"])


def test_unlisted_layers_follow_body_lr_mult(applied) -> None:
    recipe = read_recipe(SOLVERS["step"], {"0": ((3, 1), (3, 1))})
    X, y = _data()
    rp.FineTuneRepurposer(rp.ModelHandler(_net()), **{**recipe, "body_lr_mult": 0.5},
                          batch_size=8, progress=False, random_state=0).fit(X, y)
    first = applied[0]
    assert first["0/weight"][0] == pytest.approx(0.06)
    assert first["1/no_decay"][0] == pytest.approx(0.01)  # the BatchNorm, not listed
    assert first["head"][0] == pytest.approx(0.02)


def _caffe_reference(w, grads, rates, momentum, decay, nesterov):
    """Caffe's Regularize + ComputeUpdateValue + Update, in float64 numpy."""
    w, v = np.array(w, dtype=np.float64), np.zeros(len(w))
    for g, rate in zip(grads, rates, strict=True):
        diff = np.asarray(g) + decay * w
        v_old, v = v, momentum * v + rate * diff
        w = w - ((1 + momentum) * v - momentum * v_old if nesterov else v)
    return w


@settings(max_examples=60, deadline=None)
@given(rates=st.lists(st.floats(1e-4, 1.0), min_size=1, max_size=8),
       momentum=st.floats(0.0, 0.99), decay=st.floats(0.0, 0.1), nesterov=st.booleans(),
       seed=st.integers(0, 1000))
def test_caffe_sgd_is_caffes_update(rates, momentum, decay, nesterov, seed) -> None:
    rng = np.random.default_rng(seed)
    w0 = rng.normal(size=5)
    grads = rng.normal(size=(len(rates), 5))
    p = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
    opt = CaffeSGD([p], lr=rates[0], momentum=momentum, weight_decay=decay, nesterov=nesterov)
    for g, rate in zip(grads, rates, strict=True):
        opt.param_groups[0]["lr"] = rate
        p.grad = torch.tensor(g)
        opt.step()
    expected = _caffe_reference(w0, grads, rates, momentum, decay, nesterov)
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-10, atol=1e-12)


def test_caffe_sgd_differs_from_torch_sgd_after_a_rate_change() -> None:
    """Why the Caffe form matters: torch's SGD rescales the momentum to the new rate."""
    ours = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    theirs = nn.Parameter(torch.zeros(1, dtype=torch.float64))
    a = CaffeSGD([ours], lr=1.0, momentum=0.9)
    b = torch.optim.SGD([theirs], lr=1.0, momentum=0.9)
    for rate in (1.0, 0.1):
        for opt, p in ((a, ours), (b, theirs)):
            opt.param_groups[0]["lr"] = rate
            p.grad = torch.ones(1, dtype=torch.float64)
            opt.step()
    assert ours.item() == pytest.approx(-(1.0 + 0.9 + 0.1))  # v = 0.9 * 1 + 0.1 * 1
    assert theirs.item() == pytest.approx(-(1.0 + 0.1 * 1.9))  # v = 0.9 * 1 + 1, times 0.1


def test_lr_mult_zero_freezes_layers_and_blobs() -> None:
    net = _net()
    X, y = _data()
    recipe = read_recipe(SOLVERS["fixed"], {"0": ((1, 1), (0, 0)), "1": ((0, 0), (0, 0))})
    rep = rp.FineTuneRepurposer(rp.ModelHandler(net), **recipe, batch_size=8,
                                progress=False, random_state=0).fit(X, y)
    body = rep.model_.body
    trained, bn = body.get_submodule("0"), body.get_submodule("1")
    assert torch.equal(trained.bias, net[0].bias)  # lr_mult 0 on the bias blob only
    assert not torch.equal(trained.weight, net[0].weight)
    for name in ("weight", "bias", "running_mean", "running_var"):  # all 0: frozen, BN in eval
        assert torch.equal(getattr(bn, name), getattr(net[1], name)), name
    assert rep.frozen_layers_ == []  # freeze="auto" leaves freezing to the recipe


def test_recipe_drives_random_freeze(applied) -> None:
    X, y = _data()
    recipe = read_recipe(SOLVERS["step"], {"0": ((0, 0), (0, 0)), "head": ((10, 1), (20, 0))})
    net = _net()
    rep = rp.RandomFreezeRepurposer(rp.ModelHandler(net), num_layers_to_drop=1, **recipe,
                                    batch_size=8, progress=False, random_state=0).fit(X, y)
    assert torch.equal(rep.model_.body.get_submodule("0").weight, net[0].weight)
    assert applied[-1]["head/layers.0.bias"][0] == pytest.approx(
        SOLVERS["step"].learning_rate(22) * 20)


@settings(max_examples=15, deadline=None)
@given(n=st.integers(2, 30), batch_size=st.integers(1, 9), max_steps=st.integers(1, 12))
def test_max_steps_counts_optimizer_steps(n, batch_size, max_steps) -> None:
    X = np.random.default_rng(n).normal(size=(n, 4)).astype(np.float32)
    y = np.arange(n) % 2
    steps: list[int] = []
    handle = register_optimizer_step_pre_hook(
        lambda *_: steps.append(1))
    try:
        rp.FineTuneRepurposer(rp.ModelHandler(_net()), max_steps=max_steps, max_epochs=1,
                              batch_size=batch_size, validation_fraction=0.0, patience=None,
                              progress=False, random_state=0).fit(X, y)
    finally:
        handle.remove()
    assert len(steps) == max_steps  # max_epochs=1 is ignored


def test_recipe_passes_the_estimator_contract() -> None:
    recipe = read_recipe(SOLVERS["multistep"], {"conv1": ((0, 0), (0, 0)),
                                                "fc8": ((10, 1), (20, 0))}, head="fc8")
    check_repurposer(lambda h: rp.FineTuneRepurposer(
        h, **{**recipe, "max_steps": 6}, batch_size=16, progress=False))


def test_saved_config_holds_the_recipe_not_a_path(tmp_path: Path) -> None:
    recipe = read_recipe(SOLVERS["multistep"], {"0": ((0, 0), (0, 0)),
                                                "fc8": ((10, 1), (20, 0))}, head="fc8")
    X, y = _data()
    rep = rp.FineTuneRepurposer(rp.ModelHandler(_net()), **recipe, batch_size=8,
                                progress=False, random_state=0).fit(X, y)
    rep.save(tmp_path / "saved")
    params = json.loads((tmp_path / "saved" / "config.json").read_text())["params"]
    assert params["schedule"] == {"lr_policy": "multistep", "gamma": 0.5,
                                  "stepvalue": [3, 9, 10, 20]}
    assert params["lr_mults"] == {"0": [[0, 0], [0, 0]], "head": [[10, 1], [20, 0]]}
    assert (params["optimizer"], params["max_steps"], params["lr"]) == ("caffe_sgd", 23, 0.05)
    loaded = rp.load(tmp_path / "saved")
    assert loaded.get_params()["lr_mults"] == params["lr_mults"]
    np.testing.assert_array_equal(loaded.predict_proba(X), rep.predict_proba(X))


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"lr_mults": {"conv9": 0}}, r"lr_mults names layer\(s\) \['conv9'\].*'head'"),
    ({"lr_mults": {"0": ((-1, 1),)}}, r"lr_mults\['0'\].*must be >= 0"),
    ({"lr_mults": {"0": "fast"}}, r"lr_mults\['0'\]='fast'.*pairs"),
    ({"lr_mults": [("0", 1)]}, r"lr_mults=.*expected a mapping"),
    ({"max_steps": 0}, r"max_steps"),
    ({"schedule": {"lr_policy": "step", "gamma": 0.1}}, r"'step' needs stepsize"),
    ({"schedule": {"lr_policy": "cyclic"}}, r"lr_policy must be one of"),
    ({"schedule": {"lr_policy": "fixed", "gama": 1}}, r"unknown field.*gama"),
    ({"schedule": {"lr_policy": "step", "gamma": 0.1, "stepsize": "x"}}, r"integers"),
    ({"schedule": {"lr_policy": "step", "gamma": 0.1, "stepsize": 0}},
     r"stepsize must be positive"),
    ({"optimizer": "caffe"}, r"optimizer"),
])
def test_bad_recipe_settings_are_named(kwargs, match) -> None:
    X, y = _data(12)
    rep = rp.FineTuneRepurposer(rp.ModelHandler(_net()), **kwargs, max_epochs=1,
                                progress=False)
    with pytest.raises(ValueError, match=match):
        rep.fit(X, y)


def test_head_pairs_apply_to_each_of_its_layers(applied) -> None:
    X, y = _data()
    recipe = read_recipe(SOLVERS["fixed"], {"head": ((10, 1), (20, 0))})
    rp.FineTuneRepurposer(rp.ModelHandler(_net()), **recipe, n_hidden=5, batch_size=8,
                          progress=False, random_state=0).fit(X, y)
    rates = {name: lr for name, (lr, _) in applied[0].items() if name.startswith("head")}
    assert rates == pytest.approx({"head/layers.0.weight": 0.2, "head/layers.0.bias": 0.4,
                                   "head/layers.2.weight": 0.2, "head/layers.2.bias": 0.4})


def test_an_interrupted_recipe_run_resumes_exactly(tmp_path: Path) -> None:
    """The step budget, the schedule and Caffe SGD's momentum carry over a checkpoint."""
    X, y = _data()
    kw = {**read_recipe(SOLVERS["step"], {"0": ((1, 1), (2, 0))}), "max_steps": 13,
          "batch_size": 8, "progress": False, "random_state": 0}
    plain = rp.FineTuneRepurposer(rp.ModelHandler(_net()), **kw).fit(X, y)

    def stop(epoch, logs):
        if epoch == 1:
            raise KeyboardInterrupt

    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        rp.FineTuneRepurposer(rp.ModelHandler(_net()), checkpoint_dir=ckpt, callbacks=[stop],
                              **kw).fit(X, y)
    resumed = rp.FineTuneRepurposer(rp.ModelHandler(_net()), checkpoint_dir=ckpt,
                                    **kw).fit(X, y)
    assert len(resumed.history_["epoch"]) == 3  # 13 steps: 5 + 5 + 3
    for key, value in plain.model_.state_dict().items():
        assert torch.equal(value, resumed.model_.state_dict()[key]), key
