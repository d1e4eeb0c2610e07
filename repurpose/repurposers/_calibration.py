"""Temperature scaling of any fitted repurposer's probabilities: :func:`calibrate`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar
from sklearn.base import clone
from sklearn.model_selection import train_test_split

from repurpose._exceptions import NotFittedError
from repurpose.repurposers._base import Repurposer, _input_shape, _require_labels
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


def _inner_proba(inner: Repurposer, X: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """The fitted inner repurposer's probabilities on ``X`` and the labels that go with them."""
    if isinstance(X, Mapping) and hasattr(inner, "predict_proba_features"):
        return inner.predict_proba_features(X), np.asarray(_require_labels(y)).ravel()
    data, labels = inner._prepare(X, y, labels=True)
    proba = inner._checked_proba(inner._predict_proba(data))
    return proba, np.asarray(_require_labels(labels)).ravel()


def _encode_against(inner: Repurposer, labels: np.ndarray) -> np.ndarray:
    """Int codes of ``labels`` in ``inner.classes_``; unknown labels are an error."""
    index = {c: i for i, c in enumerate(inner.classes_.tolist())}
    unknown = sorted({v for v in labels.tolist() if v not in index}, key=str)
    if unknown:
        raise ValueError(
            f"validation labels {unknown[:5]} are not classes of the calibrated repurposer "
            f"(classes_: {inner.classes_.tolist()})"
        )
    return np.array([index[v] for v in labels.tolist()], dtype=np.int64)


@register_repurposer("temperature")
class TemperatureScaledRepurposer(Repurposer):
    """A repurposer whose probabilities are rescaled by one learned temperature.

    Predictions are ``softmax(log p / T)``, where ``p`` are the wrapped repurposer's
    probabilities and ``T`` minimises the negative log-likelihood of held-out labels. Two
    ways to fit, as with scikit-learn's ``CalibratedClassifierCV``:

    - ``validation_fraction=None`` (what :func:`calibrate` builds): ``repurposer`` is already
      fitted, on other data, and ``fit(X_val, y_val)`` learns only the temperature.
    - ``validation_fraction=f``: ``repurposer`` is an unfitted template. ``fit(X, y)`` trains a
      clone of it on a stratified ``1 - f`` share of the data and learns the temperature on
      the rest, so the wrapper is an ordinary estimator that can be cloned and refitted.

    Saving stores the temperature and the fitted inner repurposer (in a ``calibrated/``
    subdirectory); :func:`repurpose.load` restores both.

    Parameters
    ----------
    handler : ModelHandler, optional
        The wrapped repurposer's handler (shared, like every handler).
    repurposer : Repurposer
        The repurposer to calibrate (shared, not copied, by ``clone``).
    validation_fraction : float in (0, 1), optional
        Share of ``fit``'s data held out for the temperature; None for a prefit repurposer.
    random_state : int, optional
        Seeds the stratified split.

    Attributes
    ----------
    repurposer_ : Repurposer
        The fitted inner repurposer (``repurposer`` itself in the prefit mode).
    temperature_ : float
    """

    _shared_params = ("handler", "repurposer")

    def __init__(
        self,
        handler: Any = None,
        repurposer: Repurposer | None = None,
        validation_fraction: float | None = None,
        random_state: int | None = None,
    ) -> None:
        self.handler = handler
        self.repurposer = repurposer
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    @classmethod
    def _test_instance(cls, handler: Any) -> TemperatureScaledRepurposer:
        from repurpose.repurposers._lr import LogisticRegressionRepurposer

        template = LogisticRegressionRepurposer(handler, feature_layers=["fc7"], progress=False)
        return cls(handler, repurposer=template, validation_fraction=0.3)

    def _inner(self) -> Repurposer:
        rep = getattr(self, "repurposer_", None)
        if rep is None:
            rep = self.repurposer
        if rep is None or not hasattr(rep, "classes_"):
            raise NotFittedError(
                "calibration needs a fitted repurposer: fit it on training data first, then "
                "call repurpose.calibrate(rep, X_val, y_val) with held-out data (or pass "
                "validation_fraction to fit the wrapped repurposer here)"
            )
        return rep

    def fit(self, X: Any, y: Any = None) -> TemperatureScaledRepurposer:
        """Learn the temperature (and, with ``validation_fraction``, the inner repurposer).

        Parameters
        ----------
        X : same kinds of input as the wrapped repurposer's ``predict_proba``
            Held-out inputs in the prefit mode; all the training data otherwise.
        y : array-like of shape (n,), optional
            Their labels (None: taken from ``X``'s (input, label) pairs).

        Returns
        -------
        self
        """
        if self.validation_fraction is None:
            inner = self._inner()
            proba, labels = _inner_proba(inner, X, y)
        else:
            inner, proba, labels = self._fit_inner_on_split(X, y)
        codes = _encode_against(inner, labels)
        if len(proba) != len(codes):
            raise ValueError(f"X has {len(proba)} samples but y has {len(codes)} labels")
        self.repurposer_ = inner
        self.temperature_ = fit_temperature(proba, codes)
        self.classes_ = inner.classes_
        self.n_classes_ = inner.n_classes_
        self.input_shape_ = getattr(inner, "input_shape_", None)
        return self

    def _fit_inner_on_split(self, X: Any, y: Any) -> tuple[Repurposer, np.ndarray, np.ndarray]:
        fraction = self.validation_fraction
        if not isinstance(fraction, (int, float)) or not 0.0 < float(fraction) < 1.0:
            raise ValueError(f"validation_fraction={fraction!r}; expected a float in (0, 1) "
                             "or None for an already fitted repurposer")
        if self.repurposer is None:
            raise ValueError("repurposer is None; pass the repurposer to calibrate")
        inner = clone(self.repurposer)
        data, labels = inner._prepare(X, y, labels=True, fitting=True)
        labels = np.asarray(_require_labels(labels)).ravel()
        try:
            train, val = train_test_split(np.arange(len(labels)), test_size=float(fraction),
                                          stratify=labels, random_state=self.random_state)
        except ValueError as err:
            raise ValueError(f"cannot hold out {fraction} of the data with every class on both "
                             f"sides ({err}); give more examples per class or None") from err
        if isinstance(data, Mapping):
            inner.fit_features({k: v[train] for k, v in data.items()}, labels[train])
            proba = inner.predict_proba_features({k: v[val] for k, v in data.items()})
        else:
            inner.fit(data[train], labels[train])
            proba = inner.predict_proba(data[val])
        inner.input_shape_ = _input_shape(X)
        return inner, proba, labels[val]

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
        return {"validation_fraction": self.validation_fraction, "random_state": self.random_state}

    def _save_extra(self, path: Path) -> None:
        self._inner().save(path / _INNER_DIR, include_handler=False)

    def _load_extra(self, path: Path) -> None:
        from repurpose.repurposers._io import load

        self.repurposer_ = load(path / _INNER_DIR, handler=self.handler)
        if self.repurposer is None:
            self.repurposer = self.repurposer_


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
