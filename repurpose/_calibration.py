"""Temperature scaling of any fitted repurposer's probabilities: :func:`calibrate`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from repurpose._exceptions import NotFittedError
from repurpose.repurposers._base import Repurposer, _require_labels
from repurpose.repurposers._registry import register_repurposer

__all__ = ["calibrate", "TemperatureScaledRepurposer", "fit_temperature", "apply_temperature"]

_INNER_DIR = "calibrated"
_LOG_T_BOUNDS = (-5.0, 5.0)  # temperatures from ~0.007 to ~150


def apply_temperature(proba: np.ndarray, temperature: float) -> np.ndarray:
    """Rescale probabilities: ``softmax(log(proba) / temperature)``.

    Args:
        proba: Probabilities ``(n, n_classes)``.
        temperature: Above 1 softens the predictions, below 1 sharpens them.

    Returns:
        Rescaled probabilities, same shape, rows summing to 1.
    """
    logits = np.log(np.clip(np.asarray(proba, dtype=np.float64), 1e-300, None)) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    out = np.exp(logits)
    return out / out.sum(axis=1, keepdims=True)


def fit_temperature(proba: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising the NLL of int labels ``y`` (0..n_classes-1) under ``proba``.

    A bounded scalar search over ``log T`` in [-5, 5]; one parameter cannot change which class
    is predicted, only how confident the predictions are.
    """
    idx = np.arange(len(y))

    def nll(log_t: float) -> float:
        p = apply_temperature(proba, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[idx, y], 1e-300, None))))

    result = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded")
    return float(np.exp(result.x))


@register_repurposer("temperature")
class TemperatureScaledRepurposer(Repurposer):
    """A fitted repurposer whose probabilities are rescaled by one learned temperature.

    Built by :func:`calibrate`. ``fit(X_val, y_val)`` learns the temperature on held-out data
    (the wrapped repurposer must already be fitted, on other data); predictions are
    ``softmax(log p / T)`` where ``p`` are the wrapped repurposer's probabilities. Saving
    stores the temperature and the wrapped repurposer (in a ``calibrated/`` subdirectory);
    :func:`repurpose.load` restores both.

    Parameters
    ----------
    handler : ModelHandler, optional
        The wrapped repurposer's handler (shared, like every handler).
    repurposer : Repurposer
        The fitted repurposer to calibrate (shared, not copied, by ``clone``).
    """

    _shared_params = ("handler", "repurposer")

    def __init__(self, handler: Any = None, repurposer: Repurposer | None = None) -> None:
        self.handler = handler
        self.repurposer = repurposer

    @classmethod
    def _test_instance(cls, handler: Any) -> None:
        # Opts out of the generic checks: it needs an already fitted repurposer and takes its
        # classes from it (fitting on string labels the inner model never saw must fail).
        # tests/test_calibration.py covers fit, save/load and errors.
        return None

    def _inner(self) -> Repurposer:
        rep = self.repurposer
        if rep is None or not hasattr(rep, "classes_"):
            raise NotFittedError(
                "calibration needs a fitted repurposer: fit it on training data first, then "
                "call repurpose.calibrate(rep, X_val, y_val) with held-out data"
            )
        return rep

    def fit(self, X: Any, y: Any = None) -> TemperatureScaledRepurposer:
        """Learn the temperature on validation data.

        Parameters
        ----------
        X : same kinds of input as the wrapped repurposer's ``predict_proba``
            Held-out inputs (not the wrapped model's training data).
        y : array-like of shape (n,), optional
            Their labels, values among the wrapped repurposer's ``classes_``.

        Returns
        -------
        self
        """
        inner = self._inner()
        if isinstance(X, Mapping) and hasattr(inner, "predict_proba_features"):
            proba, labels = inner.predict_proba_features(X), np.asarray(_require_labels(y))
        else:
            data, labels = inner._prepare(X, y, labels=True)
            proba = inner._checked_proba(inner._predict_proba(data))
        labels = np.asarray(_require_labels(labels)).ravel()
        index = {c: i for i, c in enumerate(inner.classes_.tolist())}
        unknown = sorted({v for v in labels.tolist() if v not in index}, key=str)
        if unknown:
            raise ValueError(
                f"validation labels {unknown[:5]} are not classes of the calibrated repurposer "
                f"(classes_: {inner.classes_.tolist()})"
            )
        codes = np.array([index[v] for v in labels.tolist()], dtype=np.int64)
        if len(proba) != len(codes):
            raise ValueError(f"X has {len(proba)} samples but y has {len(codes)} labels")
        self.temperature_ = fit_temperature(proba, codes)
        self.classes_ = inner.classes_
        self.n_classes_ = inner.n_classes_
        self.input_shape_ = getattr(inner, "input_shape_", None)
        return self

    def _fit(self, X: Any, y: np.ndarray) -> None:  # pragma: no cover - fit is overridden
        raise NotImplementedError

    def _prepare(
        self, X: Any, y: Any = None, *, labels: bool, fitting: bool = False
    ) -> tuple[Any, Any]:
        return self._inner()._prepare(X, y, labels=labels)

    def _predict_proba(self, X: Any) -> np.ndarray:
        inner = self._inner()
        return apply_temperature(inner._checked_proba(inner._predict_proba(X)), self.temperature_)

    def predict_proba_features(self, features: Any) -> np.ndarray:
        """Calibrated probabilities from precomputed features (meta-model repurposers only)."""
        self._check_fitted()
        inner = self._inner()
        if not hasattr(inner, "predict_proba_features"):
            raise TypeError(
                f"{type(inner).__name__} takes raw inputs, not features; use predict_proba"
            )
        return apply_temperature(inner.predict_proba_features(features), self.temperature_)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"temperature": self.temperature_}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.temperature_ = float(meta["temperature"])

    def _params_to_json(self) -> dict[str, Any]:
        return {}

    def _save_extra(self, path: Path) -> None:
        self._inner().save(path / _INNER_DIR, include_handler=False)

    def _load_extra(self, path: Path) -> None:
        from repurpose.repurposers._io import load

        self.repurposer = load(path / _INNER_DIR, handler=self.handler)


def calibrate(rep: Repurposer, X_val: Any, y_val: Any = None) -> TemperatureScaledRepurposer:
    """Temperature-scale a fitted repurposer's probabilities on validation data.

    One temperature ``T`` is fitted by minimising the negative log-likelihood of ``y_val``;
    predictions become ``softmax(log p / T)``. This fixes over- or under-confidence without
    changing any predicted label.

    Parameters
    ----------
    rep : Repurposer
        A fitted repurposer (any kind).
    X_val : inputs accepted by ``rep.predict_proba``, or a features dict
        Held-out validation inputs, not ``rep``'s training data. For meta-model
        repurposers a dict ``{layer: (n, D)}`` of precomputed features also works.
    y_val : array-like of shape (n,), optional
        Their labels (None: taken from ``X_val``'s (input, label) pairs).

    Returns
    -------
    TemperatureScaledRepurposer
        A fitted repurposer (``temperature_``) that saves and loads like any other.

    Examples
    --------
    >>> import numpy as np
    >>> import repurpose as rp
    >>> rng = np.random.default_rng(0)
    >>> def feats(n):
    ...     y = rng.integers(0, 2, n)
    ...     return {"fc7": rng.normal(size=(n, 5)) + y[:, None]}, y
    >>> (f_train, y_train), (f_val, y_val) = feats(20), feats(50)
    >>> rep = rp.LogisticRegressionRepurposer(C=100.0).fit_features(f_train, y_train)
    >>> cal = rp.calibrate(rep, f_val, y_val)  # features work too, for meta-models
    >>> cal.predict_proba_features(f_val).shape
    (50, 2)
    """
    return TemperatureScaledRepurposer(handler=getattr(rep, "handler", None), repurposer=rep).fit(
        X_val, y_val
    )
