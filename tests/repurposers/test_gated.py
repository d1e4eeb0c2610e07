"""The Gated Transfer Network: its maths, the repurposer, end-to-end mode and the plot."""

import numpy as np
import pytest
import torch

import repurpose as rp
from repurpose.repurposers._gated_net import GATES, GatedNet
from repurpose.testing import check_repurposer, tiny_problem


def _features(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], n // 3)
    return {"fc6": rng.normal(size=(n, 8)) + y[:, None], "fc7": rng.normal(size=(n, 8))}, y


def test_gated_net_computes_the_specified_combination():
    torch.manual_seed(0)
    net = GatedNet([4, 6], n_classes=3).eval()
    assert net.dim == 4 and isinstance(net.proj[0], torch.nn.Identity)
    xs = [torch.randn(5, 4), torch.randn(5, 6)]
    net.set_standardisation(xs)
    h = [(x - x.mean(0)) / x.std(0, unbiased=False) for x in xs]
    h[1] = net.proj[1](h[1])
    z = torch.stack([torch.sigmoid(g(v)) for g, v in zip(net.gate, h, strict=True)], 1)
    r = torch.softmax(z, 1)
    expected = net.classifier((r * torch.stack(h, 1)).sum(1))
    torch.testing.assert_close(net(*xs), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(net.gates(*xs), r, rtol=1e-5, atol=1e-6)


def test_gates_sum_to_one_across_layers():
    feats, y = _features()
    rep = rp.GatedRepurposer(feature_layers=["fc6", "fc7"], max_epochs=5, progress=False,
                             random_state=0).fit_features(feats, y)
    r = rep.gates_(feats)
    assert r.shape == (60, 2, 8)
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-6)
    assert rep.predict_features(feats).shape == (60,)


def test_gates_from_inputs_and_the_plot(tmp_path):
    p = tiny_problem()
    rep = rp.GatedRepurposer(p.handler, ["conv2", "fc7"], max_epochs=3, progress=False,
                             random_state=0).fit(p.X_train, p.y_train)
    r = rep.gates_(p.X_test)
    assert r.shape == (10, 2, 8)  # conv2 (8 channels) sets d; fc7 (16) is projected
    np.testing.assert_allclose(r.sum(axis=1), 1.0, atol=1e-6)
    import matplotlib

    matplotlib.use("Agg")
    from repurpose.plot import gates

    fig = gates(rep, p.X_test, n_samples=6)
    assert [ax.get_title().split(" ")[0] for ax in fig.axes[:2]] == ["conv2", "fc7"]
    fig.savefig(tmp_path / "gates.png")
    with pytest.raises(ValueError, match="shape"):
        gates(np.zeros((3, 4)))


def test_end_to_end_trains_the_source_and_passes_the_contract():
    check_repurposer(lambda h: rp.GatedRepurposer(h, ["fc6", "fc7"], end_to_end=True,
                                                  max_epochs=2, progress=False))
    p = tiny_problem()
    rep = rp.GatedRepurposer(p.handler, ["fc6", "fc7"], end_to_end=True, max_epochs=2,
                             progress=False, random_state=0).fit(p.X_train, p.y_train)
    body = dict(rep.model_.body.body.named_parameters())
    source = dict(p.handler.module.named_parameters())
    assert not torch.equal(body["fc6.weight"], source["fc6.weight"])
    np.testing.assert_allclose(rep.gates_(p.X_test).sum(1), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="end to end"):
        rep.predict_proba_features({"fc6": np.zeros((2, 16)), "fc7": np.zeros((2, 16))})


def test_needs_two_layers():
    feats, y = _features()
    with pytest.raises(ValueError, match="2 or more"):
        rp.GatedRepurposer(feature_layers=["fc6"], progress=False).fit_features(feats, y)


@pytest.mark.parametrize("gate", GATES)
def test_every_gate_starts_at_equal_shares_and_sums_to_one(gate):
    torch.manual_seed(0)
    net = GatedNet([4, 4, 4], n_classes=3, gate=gate, rank=2)
    xs = [torch.randn(6, 4) for _ in range(3)]
    r = net.gates(*xs)
    assert r.shape == (6, 3, 4)
    torch.testing.assert_close(r, torch.full_like(r, 1 / 3))


def test_the_paper_gate_is_bounded_and_the_extensions_are_not():
    xs = [torch.ones(1, 2), torch.ones(1, 2)]
    shares = {}
    for gate in ("paper", "softmax", "diagonal", "lowrank", "layer", "temperature"):
        net = GatedNet([2, 2], n_classes=2, gate=gate, rank=1)
        with torch.no_grad():
            params = list(net.gate[0].parameters())
            for p in params:
                p.zero_()
            params[-1].fill_(-20.0)  # the bias: push layer 0's gate logits far down
            if gate == "temperature":
                net.log_temperature.fill_(-3.0)
            shares[gate] = float(net.gates(*xs)[0, 0].min())
    bound = 1 / (1 + np.e)  # two layers: a sigmoid-then-softmax share never drops below it
    assert shares["paper"] >= bound - 1e-6
    assert all(v < 0.01 for k, v in shares.items() if k != "paper"), shares


@pytest.mark.parametrize("gate", ["lowrank", "temperature"])
def test_gate_variants_train_save_and_load(tmp_path, gate):
    feats, y = _features()
    rep = rp.GatedRepurposer(feature_layers=["fc6", "fc7"], gate=gate, gate_rank=3,
                             max_epochs=5, progress=False, random_state=0)
    rep.fit_features(feats, y)
    rep.save(tmp_path / "g", include_handler=False)
    loaded = rp.load(tmp_path / "g")
    assert loaded.gate == gate
    np.testing.assert_allclose(loaded.predict_proba_features(feats),
                               rep.predict_proba_features(feats), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("options", "message"), [
    ({"gate": "sparse"}, "gate='sparse'; expected one of"),
    ({"gate": "lowrank", "gate_rank": 0}, "gate_rank=0; expected an integer >= 1"),
])
def test_bad_gate_options_are_named(options, message):
    feats, y = _features()
    with pytest.raises(ValueError, match=message):
        rp.GatedRepurposer(feature_layers=["fc6", "fc7"], max_epochs=1, progress=False,
                           **options).fit_features(feats, y)
