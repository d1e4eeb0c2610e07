"""GPRepurposer: uncertainty, exact vs sparse inference, saving, options, errors.

The generic contract checks run in tests/test_common.py (registered as "gp").
"""

from __future__ import annotations

import numpy as np
import pytest

import repurpose as rp
from repurpose.metrics import predictive_entropy


def blobs(n_per_class: int, seed: int = 0, dim: int = 4, n_classes: int = 3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (n_classes, dim))
    y = np.repeat(np.arange(n_classes), n_per_class)
    x = centres[y] + rng.normal(0, 1, (len(y), dim))
    return {"a": x[:, : dim // 2], "b": x[:, dim // 2 :]}, y


@pytest.fixture(scope="module")
def data():
    feats, y = blobs(30)
    train = np.arange(len(y)) % 30 < 20
    return ({k: v[train] for k, v in feats.items()}, y[train]), {
        k: v[~train] for k, v in feats.items()
    }


@pytest.fixture(scope="module")
def exact_gp(data):
    (train, y), _ = data
    return rp.GPRepurposer(progress=False, random_state=0).fit_features(train, y)


def test_entropy_is_higher_out_of_distribution(exact_gp, data):
    _, test = data
    far = {k: v + 25.0 for k, v in test.items()}
    u_in = exact_gp.predict_uncertainty_features(test)
    u_out = exact_gp.predict_uncertainty_features(far)
    assert u_out.entropy.mean() > u_in.entropy.mean() + 0.5
    # Far from the data every class falls back to the shared prior: nearly uniform.
    np.testing.assert_allclose(u_out.proba, 1 / 3, atol=0.05)


def test_predict_uncertainty_is_consistent(exact_gp, data):
    _, test = data
    u = exact_gp.predict_uncertainty_features(test)
    assert u.proba.shape == u.std.shape == (len(test["a"]), 3)
    np.testing.assert_allclose(u.proba, exact_gp.predict_proba_features(test))
    np.testing.assert_allclose(u.entropy, predictive_entropy(u.proba))
    np.testing.assert_allclose(u.proba.sum(1), 1.0, atol=1e-9)
    assert np.all(u.std >= 0)


def test_exact_and_sparse_inference_agree(exact_gp, data):
    (train, y), test = data
    assert exact_gp.exact_
    svgp = rp.GPRepurposer(
        exact_threshold=0, n_inducing=60, n_epochs=400, train_batch_size=60, lr=0.03,
        progress=False, random_state=0,
    ).fit_features(train, y)
    assert not svgp.exact_ and svgp.n_inducing_ == 60
    p_exact = exact_gp.predict_proba_features(test)
    p_svgp = svgp.predict_proba_features(test)
    assert np.mean(p_exact.argmax(1) == p_svgp.argmax(1)) >= 0.95
    assert np.abs(p_exact - p_svgp).mean() < 0.05


def test_sparse_save_load_is_identical_and_holds_no_training_set(tmp_path, data):
    (train, y), test = data
    gp = rp.GPRepurposer(
        exact_threshold=10, n_inducing=8, n_epochs=5, progress=False, random_state=0
    ).fit_features(train, y)
    gp.save(tmp_path / "gp.zip", include_handler=False)
    loaded = rp.load(tmp_path / "gp.zip")
    np.testing.assert_array_equal(
        loaded.predict_proba_features(test), gp.predict_proba_features(test)
    )
    state = loaded.model_.state_dict()
    assert state["variational_strategy.inducing_points"].shape == (8, 4)


def test_exact_save_load_is_identical(tmp_path, exact_gp, data):
    _, test = data
    exact_gp.save(tmp_path / "gp", include_handler=False)
    loaded = rp.load(tmp_path / "gp")
    assert loaded.exact_
    np.testing.assert_array_equal(
        loaded.predict_uncertainty_features(test).std,
        exact_gp.predict_uncertainty_features(test).std,
    )


@pytest.mark.parametrize(
    ("options", "n_kernels"),
    [({}, 2), ({"kernel_per_layer": False}, 1), ({"combine": "average"}, 1)],
)
def test_one_kernel_per_layer_by_default(data, options, n_kernels):
    (train, y), _ = data
    gp = rp.GPRepurposer(n_iter=5, progress=False, random_state=0, **options)
    gp.fit_features(train, y)
    kernels = getattr(gp.model_.covar_module, "kernels", [gp.model_.covar_module])
    assert len(kernels) == n_kernels


def test_ard_and_matern_options(data):
    (train, y), test = data
    gp = rp.GPRepurposer(kernel="matern52", ard=True, n_iter=10, progress=False)
    gp.fit_features(train, y)
    lengthscale = gp.model_.covar_module.kernels[0].base_kernel.lengthscale
    assert lengthscale.shape[-1] == 2
    assert gp.predict_proba_features(test).shape == (30, 3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"kernel": "cubic"}, "kernel='cubic'; expected one of"),
        ({"n_inducing": 0}, "n_inducing=0; expected an integer >= 1"),
        ({"alpha_epsilon": 2.0}, r"alpha_epsilon=2.0; expected a number in \(0, 1\)"),
    ],
)
def test_bad_parameters_are_named(data, options, message):
    (train, y), _ = data
    with pytest.raises(ValueError, match=message):
        rp.GPRepurposer(progress=False, **options).fit_features(train, y)


def test_loo_temperature_is_fitted_and_keeps_the_predicted_labels(data):
    (train, y), test = data
    plain = rp.GPRepurposer(temperature=None, progress=False, random_state=0)
    plain.fit_features(train, y)
    assert (plain.temperature_, plain.variance_scale_) == (1.0, 1.0)
    loo = rp.GPRepurposer(progress=False, random_state=0).fit_features(train, y)
    assert loo.variance_scale_ in (1.0, 0.3, 0.1, 0.03, 0.01)
    assert 0.01 <= loo.temperature_ <= 2.0 and (loo.temperature_, loo.variance_scale_) != (1, 1)
    assert not np.allclose(plain.predict_proba_features(test), loo.predict_proba_features(test))
    # the same latent posterior; only the mapping to probabilities changes
    np.testing.assert_array_equal(plain.predict_features(test), loo.predict_features(test))
    fixed = rp.GPRepurposer(temperature=0.5, progress=False, random_state=0)
    assert fixed.fit_features(train, y).temperature_ == 0.5


def test_a_bad_temperature_is_named(data):
    (train, y), _ = data
    with pytest.raises(ValueError, match=r"temperature=-1.0; expected a number in \(0, inf\)"):
        rp.GPRepurposer(temperature=-1.0, progress=False).fit_features(train, y)


def test_closed_form_leave_one_out_matches_refitting_without_each_point(exact_gp, data):
    """The latent LOO mean and sd agree with the exact posterior computed n times from the
    other n - 1 points (same hyperparameters), to 1e-6."""
    import torch

    from repurpose.repurposers import _gp_models as gpm

    (train, y), _ = data
    model = exact_gp.model_
    x = torch.as_tensor(exact_gp._combine(train), dtype=torch.float64)
    mu, sd = gpm.loo_latent(model, x, y, exact_gp.alpha_epsilon)
    targets, noise = gpm.dirichlet_targets(y, exact_gp.n_classes_, exact_gp.alpha_epsilon)
    with torch.no_grad():
        k = model.covar_module(x).to_dense()
        mean = float(model.mean_module.constant)
    for i in (0, 17, len(y) - 1):
        rest = np.flatnonzero(np.arange(len(y)) != i)
        for c in range(exact_gp.n_classes_):
            a = k[rest][:, rest] + torch.diag(noise[c, rest].double())
            w = torch.linalg.solve(a, k[rest, i])
            want_mu = mean + w @ (targets[c, rest].double() - mean)
            want_var = k[i, i] - k[i, rest] @ w
            assert float(mu[c, i]) == pytest.approx(float(want_mu), abs=1e-6)
            assert float(sd[c, i]) ** 2 == pytest.approx(float(want_var), abs=1e-6)
    proba = exact_gp._loo_proba_features(train, y)
    assert proba.shape == (len(y), exact_gp.n_classes_)
    np.testing.assert_allclose(proba.sum(1), 1.0, atol=1e-9)


def test_leave_one_out_needs_exact_inference(data):
    (train, y), _ = data
    svgp = rp.GPRepurposer(exact_threshold=10, n_inducing=8, n_epochs=1, progress=False,
                           random_state=0).fit_features(train, y)
    with pytest.raises(ValueError, match="leave-one-out needs exact inference.*exact_threshold"):
        svgp._loo_proba_features(train, y)
