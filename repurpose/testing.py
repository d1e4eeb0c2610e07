"""Contract checks for repurposers: :func:`check_repurposer` and its tiny test problem.

Examples
--------
>>> import repurpose as rp
>>> from repurpose.testing import check_repurposer
>>> check_repurposer(lambda h: rp.LogisticRegressionRepurposer(h, ["fc7"], progress=False))
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import clone

from repurpose._exceptions import NotFittedError
from repurpose.repurposers._base import MetaModelRepurposer, Repurposer
from repurpose.repurposers._io import load
from repurpose.repurposers._training import snapshot

__all__ = ["TinyProblem", "tiny_problem", "check_repurposer"]

Factory = Callable[[Any], Repurposer]
_LABEL_NAMES = np.array(["zero", "one", "two", "three", "four"])


@dataclass(frozen=True)
class TinyProblem:
    """A tiny image task for fast checks.

    Attributes
    ----------
    handler : ModelHandler
        A small randomly initialised CNN (:func:`repurpose.datasets.digits_cnn` with layers
        ``conv1, relu1, conv2, relu2, fc6, relu6, fc7, relu7, fc8``; fc6/fc7 16 wide).
    X_train, X_test : ndarray (N, 1, 8, 8) float32
    y_train, y_test : ndarray of int (digit values)
    """

    handler: Any
    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray


def tiny_problem(n_classes: int = 3, n_per_class: int = 8, seed: int = 0) -> TinyProblem:
    """Build the tiny digits task used by :func:`check_repurposer` (no training, < 0.1 s).

    Parameters
    ----------
    n_classes : int
        Digits ``0..n_classes-1`` are the classes (2 to 5).
    n_per_class : int
        Training images per class; the test set has 10 images.
    seed : int
        Seed of the network weights and of the sample choice.

    Returns
    -------
    TinyProblem
    """
    from sklearn.datasets import load_digits

    from repurpose.datasets import digits_cnn
    from repurpose.model_handler import ModelHandler

    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    idx = [rng.permutation(np.flatnonzero(y == c))[: n_per_class + 4] for c in range(n_classes)]
    train = np.concatenate([i[:n_per_class] for i in idx])
    test = np.concatenate([i[n_per_class:] for i in idx])[:10]
    net = digits_cnn(n_classes=n_classes, channels=(4, 8), width=16, seed=seed)
    return TinyProblem(ModelHandler(net), X[train], y[train], X[test], y[test])


def check_repurposer(factory: Factory, problem: TinyProblem | None = None) -> None:
    """Run the repurposer contract checks; raise ``AssertionError`` on the first failure.

    Checks: unfitted predict raises ``NotFittedError``; ``fit`` returns self;
    ``predict_proba`` has shape (n, n_classes) and rows summing to 1; ``predict`` is the
    argmax mapped to the user's labels; string labels; the Xfer aliases on (input, label)
    pairs; save/load (directory and zip) gives identical probabilities; ``clone`` and
    ``get_params``/``set_params`` round-trip; the handler's module is not mutated; fitting
    twice with ``random_state=0`` gives the same result; a wrong input shape, NaN inputs and a
    single class raise ``ValueError`` (also wrong feature widths for meta-models).

    Parameters
    ----------
    factory : callable
        ``factory(handler) -> Repurposer``: a new, unfitted, fast instance on ``handler``.
    problem : TinyProblem, optional
        Defaults to :func:`tiny_problem`.
    """
    p = problem if problem is not None else tiny_problem()
    _check_unfitted(factory(p.handler), p)
    before = _module_snapshot(p.handler.module)
    rep = factory(p.handler)
    fitted = rep.fit(p.X_train, p.y_train)
    assert fitted is rep, "fit must return self"
    _check_module_unchanged(p.handler.module, before)
    proba = _check_proba(rep, p)
    _check_string_labels(factory, p)
    _check_pairs(factory, p)
    _check_save_load(rep, p, proba)
    _check_clone(rep)
    _check_deterministic(factory, p)
    _check_errors(rep, factory, p)


def _check_unfitted(rep: Repurposer, p: TinyProblem) -> None:
    for method in (rep.predict, rep.predict_proba):
        try:
            method(p.X_test)
        except NotFittedError:
            continue
        raise AssertionError(f"{method.__name__} on an unfitted repurposer must raise "
                             "NotFittedError")


def _check_proba(rep: Repurposer, p: TinyProblem) -> np.ndarray:
    n_classes = len(np.unique(p.y_train))
    proba = rep.predict_proba(p.X_test)
    assert proba.shape == (len(p.X_test), n_classes), f"predict_proba shape {proba.shape}"
    assert np.all(proba >= -1e-9) and np.all(proba <= 1 + 1e-9), "probabilities outside [0, 1]"
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-5,
                               err_msg="predict_proba rows must sum to 1")
    np.testing.assert_array_equal(rep.classes_, np.unique(p.y_train))
    np.testing.assert_array_equal(rep.predict(p.X_test), rep.classes_[proba.argmax(axis=1)])
    return proba


def _check_string_labels(factory: Factory, p: TinyProblem) -> None:
    names = _LABEL_NAMES[p.y_train]
    rep = factory(p.handler).fit(p.X_train, names)
    pred = rep.predict(p.X_test)
    assert set(pred.tolist()) <= set(names.tolist()), f"unexpected labels {set(pred.tolist())}"
    np.testing.assert_array_equal(rep.classes_, np.unique(names))


def _check_pairs(factory: Factory, p: TinyProblem) -> None:
    data = torch.utils.data.TensorDataset(torch.as_tensor(p.X_train),
                                          torch.as_tensor(p.y_train))
    rep = factory(p.handler)
    assert rep.repurpose(data) is rep, "repurpose(data) must return self"
    test = torch.utils.data.TensorDataset(torch.as_tensor(p.X_test), torch.as_tensor(p.y_test))
    np.testing.assert_array_equal(rep.predict_label(test), rep.predict(p.X_test))
    # float32 results may differ in the last bits between the two input paths
    np.testing.assert_allclose(rep.predict_probability(test), rep.predict_proba(p.X_test),
                               rtol=1e-4, atol=1e-6)
    score = rep.score(test)
    assert 0.0 <= score <= 1.0


def _check_save_load(rep: Repurposer, p: TinyProblem, proba: np.ndarray) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for target in (Path(tmp) / "saved", Path(tmp) / "saved.zip"):
            rep.save(target)
            loaded = load(target)
            assert type(loaded) is type(rep)
            np.testing.assert_array_equal(loaded.predict_proba(p.X_test), proba,
                                          err_msg="predictions changed after save/load")
            np.testing.assert_array_equal(loaded.classes_, rep.classes_)


def _check_clone(rep: Repurposer) -> None:
    params = rep.get_params(deep=False)
    twin = clone(rep)
    assert type(twin) is type(rep) and not hasattr(twin, "classes_"), "clone must be unfitted"
    twin_params = twin.get_params(deep=False)
    assert twin_params.keys() == params.keys()
    assert twin_params.get("handler") is params.get("handler"), "clone must share the handler"
    for key, value in params.items():
        assert _same(twin_params[key], value), f"clone changed parameter {key!r}"
    twin.set_params(**params)
    assert all(_same(twin.get_params(deep=False)[k], v) for k, v in params.items())


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a is b or a == b)
    except (ValueError, TypeError, RuntimeError):
        return False


def _check_deterministic(factory: Factory, p: TinyProblem) -> None:
    first = factory(p.handler)
    if "random_state" in first.get_params(deep=False):
        first.set_params(random_state=0)
    second = clone(first)
    a = first.fit(p.X_train, p.y_train).predict_proba(p.X_test)
    b = second.fit(p.X_train, p.y_train).predict_proba(p.X_test)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                               err_msg="two fits with random_state=0 differ")


def _expect_value_error(what: str, func: Callable[[], Any]) -> None:
    try:
        func()
    except ValueError as err:
        assert str(err), f"{what}: the error message is empty"
        return
    raise AssertionError(f"{what} must raise ValueError")


def _check_errors(rep: Repurposer, factory: Factory, p: TinyProblem) -> None:
    wrong = np.zeros((3, 1, 8, 9), dtype=np.float32)
    _expect_value_error("predict on inputs of the wrong shape", lambda: rep.predict(wrong))
    nan = p.X_train.copy()
    nan[0, 0, 0, 0] = np.nan
    _expect_value_error("fit on NaN inputs", lambda: factory(p.handler).fit(nan, p.y_train))
    one = np.zeros_like(p.y_train)
    _expect_value_error("fit with a single class", lambda: factory(p.handler).fit(p.X_train, one))
    if isinstance(rep, MetaModelRepurposer):
        feats = {k: np.zeros((2, d + 1), np.float32) for k, d in rep.feature_dims_.items()}
        _expect_value_error("predict_proba_features with the wrong feature count",
                            lambda: rep.predict_proba_features(feats))


def _module_snapshot(module: torch.nn.Module) -> dict[str, Any]:
    return {
        "state": snapshot(module),
        "grad": {k: v.requires_grad for k, v in module.named_parameters()},
        "training": {k: m.training for k, m in module.named_modules()},
    }


def _check_module_unchanged(module: torch.nn.Module, before: dict[str, Any]) -> None:
    after = _module_snapshot(module)
    assert after["grad"] == before["grad"], "fit changed requires_grad of the handler's module"
    assert after["training"] == before["training"], "fit changed the handler module's mode"
    assert after["state"].keys() == before["state"].keys(), "fit changed the module's layers"
    for key, value in before["state"].items():
        assert torch.equal(after["state"][key], value), f"fit changed the handler weight {key!r}"
