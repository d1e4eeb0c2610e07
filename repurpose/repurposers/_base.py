"""Base classes of every repurposer.

A repurposer is a scikit-learn estimator that turns a trained network (wrapped in a
:class:`repurpose.ModelHandler`, the ``handler`` parameter) into a classifier for a new task.
``__init__`` only stores its arguments (same names); all work happens in ``fit``. Learned state
ends in ``_`` (``classes_``, ...). ``get_params``/``set_params``/``clone`` come from
:class:`sklearn.base.BaseEstimator`; ``clone`` shares the handler (a big network is never
deep-copied), every other parameter is copied.

The base class does the shared work: label encoding (``classes_`` holds the user's own label
values, of any sortable type; hooks always see ints ``0..n_classes_-1``), input checks (NaN,
input shape), probability checks, ``predict``/``score``, the Xfer aliases, and saving.

Family 1: meta-model repurposers (subclass :class:`MetaModelRepurposer`)
-----------------------------------------------------------------------
Features are extracted once through the handler; a model is trained on them. Hooks:

``_fit_features(self, features: dict[str, ndarray], y: ndarray) -> None``
    ``features`` maps each name of ``self.feature_layers_`` to an array ``(n, D_layer)``,
    already checked (2-D, finite, right widths). ``y`` holds int64 codes ``0..n_classes_-1``.
    Call ``self._combine(features)`` to get one ``(n, D)`` matrix, standardised per layer on
    the training set and concatenated (``combine="concat"``) or averaged (``"average"``).
``_predict_proba_features(self, features) -> ndarray``
    Returns ``(n, n_classes_)`` probabilities (rows sum to 1).
``_get_state(self) -> tuple[dict, dict[str, ndarray]]`` and ``_set_state(self, meta, arrays)``
    What ``save`` stores about the fitted model: a JSON-able dict and named numeric arrays.
    ``_set_state`` is called on a freshly constructed instance (same params, same handler)
    after the base state (``classes_``, scalers, feature widths) is restored.

A subclass whose ``__init__`` omits ``pooling``, ``combine``, ``batch_size`` or ``progress``
gets the class defaults below (they are then not settable through ``set_params``).

Family 2: network repurposers (subclass :class:`Repurposer` directly)
---------------------------------------------------------------------
They train a torch module end to end on raw inputs (fine-tuning, gated nets). Hooks:

``_fit(self, X: torch.Tensor, y: ndarray) -> None``
    ``X`` is a float tensor ``(N, ...)`` of preprocessed inputs (the base turns arrays,
    Datasets, DataLoaders and image folders into one tensor with ``self._prepare``; override
    ``_prepare(X, y, labels=..., fitting=...)`` to stream instead). ``y`` holds int codes as above.
``_predict_proba(self, X: torch.Tensor) -> ndarray``
    ``(N, n_classes_)`` probabilities.
``_get_state`` / ``_set_state``
    As above. Store torch weights as arrays with :func:`module_state_to_arrays` (a state dict
    becomes ``{prefix + key: ndarray}``, saved as safetensors) and restore with
    :func:`arrays_to_module_state`. ``_set_state`` rebuilds the module from
    ``self.handler`` plus the params and ``meta`` (e.g. ``n_classes_``), then loads the weights.
    Never mutate ``self.handler.module``: copy it (``copy.deepcopy``) before training.

Optional hooks (both families)
------------------------------
``_save_extra(self, path: Path)`` / ``_load_extra(self, path: Path)``
    Write/read extra files in the save directory (e.g. member repurposers of an ensemble
    saved with their own ``save``). Called after the arrays are written / state is set.
``_params_to_json(self) -> dict`` / ``_params_from_json(cls, params: dict) -> dict``
    Override only if a parameter is not JSON-able (nested estimators, ...).
``_test_instance(cls, handler) -> Repurposer`` (classmethod)
    An unfitted, *fast* instance built on the tiny test handler of
    :func:`repurpose.testing.tiny_problem` (layers ``conv1, conv2, fc6, fc7, fc8`` on 1x8x8
    images, 3 classes). ``tests/test_common.py`` runs
    :func:`repurpose.testing.check_repurposer` with it on every registered class. The default
    is ``cls(handler=handler)`` (``feature_layers=["fc6", "fc7"]`` for meta-models); override
    it to pass small settings (few epochs). Return ``None`` to opt out (say why in a comment).
``_demo_instance(cls, handler, feature_layers)`` (classmethod, meta-models only)
    The instance ``repurpose demo`` trains for each feature layer (default: defaults, with
    ``progress=False`` and ``random_state=0`` when those parameters exist). Keep it fast (the
    whole demo must run in 2 minutes); return ``None`` to leave these layers (or the class)
    out of the demo.

Examples
--------
A complete custom meta-model (nearest class mean):

>>> import numpy as np
>>> import repurpose as rp
>>> class NearestMean(rp.MetaModelRepurposer):
...     def _fit_features(self, features, y):
...         X = self._combine(features)
...         self.means_ = np.stack([X[y == c].mean(0) for c in range(self.n_classes_)])
...     def _predict_proba_features(self, features):
...         X = self._combine(features)
...         d = ((X[:, None, :] - self.means_[None]) ** 2).sum(-1)
...         e = np.exp(-(d - d.min(1, keepdims=True)))
...         return e / e.sum(1, keepdims=True)
...     def _get_state(self):
...         return {}, {"means": self.means_}
...     def _set_state(self, meta, arrays):
...         self.means_ = arrays["means"]
>>> rng = np.random.default_rng(0)
>>> feats = {"fc7": np.r_[rng.normal(0, 1, (10, 4)), rng.normal(3, 1, (10, 4))]}
>>> rep = NearestMean().fit_features(feats, ["cat"] * 10 + ["dog"] * 10)
>>> rep.predict_features(feats)[:2].tolist()
['cat', 'cat']
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

from repurpose._exceptions import NotFittedError, RepurposeError
from repurpose.repurposers._out_of_core import all_finite, column_moments

__all__ = ["Repurposer", "MetaModelRepurposer"]

_COMBINE = ("concat", "average")


class Repurposer(BaseEstimator, abc.ABC):
    """Abstract base of every repurposer (scikit-learn estimator contract).

    Subclasses take ``handler`` as their first parameter and implement ``_fit`` and
    ``_predict_proba`` (see the module docstring for the full list of hooks).
    """

    _registry_name: ClassVar[str | None] = None
    # Parameters that clone() passes through instead of copying.
    _shared_params: ClassVar[tuple[str, ...]] = ("handler",)
    # Default for subclasses whose __init__ has no batch_size (used by _prepare).
    batch_size: int = 64

    handler: Any
    classes_: np.ndarray
    n_classes_: int

    # ----- hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def _fit(self, X: Any, y: np.ndarray) -> None:
        """Train on prepared data ``X`` and int-coded labels ``y``."""

    @abc.abstractmethod
    def _predict_proba(self, X: Any) -> np.ndarray:
        """Return ``(n, n_classes_)`` probabilities for prepared data ``X``."""

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        raise RepurposeError(
            f"{type(self).__name__} cannot be saved: it does not implement "
            "_get_state/_set_state (see repurpose.repurposers._base)"
        )

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        raise RepurposeError(
            f"{type(self).__name__} cannot be loaded: it does not implement _set_state"
        )

    def _save_extra(self, path: Path) -> None:
        """Write extra files into the save directory ``path`` (optional hook)."""

    def _load_extra(self, path: Path) -> None:
        """Read the extra files written by :meth:`_save_extra` (optional hook)."""

    @classmethod
    def _test_instance(cls, handler: Any) -> Repurposer | None:
        """A fast unfitted instance on the tiny test handler (see the module docstring)."""
        return cls(handler=handler)  # type: ignore[call-arg]

    # ----- data preparation -------------------------------------------------------------
    def _prepare(
        self, X: Any, y: Any = None, *, labels: bool, fitting: bool = False
    ) -> tuple[Any, Any]:
        """Turn user data into what the hooks take: here one float tensor, plus labels.

        With ``labels=True`` and ``y is None`` the labels are read from ``X``'s pairs.
        ``fitting`` is True when called from ``fit``.
        """
        _check_finite_input(X)
        if isinstance(X, (np.ndarray, torch.Tensor)):
            return _float_tensor(X), y
        from repurpose.model_handler import as_batches

        preprocess = getattr(self.handler, "preprocess", None)
        xs: list[torch.Tensor] = []
        ys: list[np.ndarray | None] = []
        for xb, yb in as_batches(X, int(self.batch_size), preprocess=preprocess):
            xs.append(xb)
            ys.append(yb)
        if not xs:
            raise ValueError("the data is empty; give at least one sample per class")
        found: np.ndarray | None = None
        if all(v is not None for v in ys):
            found = np.concatenate([v for v in ys if v is not None])
        return torch.cat(xs), (y if y is not None else found)

    # ----- public API --------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None) -> Repurposer:
        """Train the repurposer.

        Parameters
        ----------
        X : ndarray, Tensor, Dataset, DataLoader or path
            Inputs (N, ...), or data yielding ``(input, label)`` pairs, or an image folder.
        y : array-like of shape (N,), optional
            Labels of any sortable type (str, int, ...). If None, taken from ``X``'s pairs.

        Returns
        -------
        self
        """
        data, labels = self._prepare(X, y, labels=True, fitting=True)
        return self._fit_prepared(data, labels, _input_shape(X))

    def _fit_prepared(self, data: Any, labels: Any,
                      input_shape: tuple[int, ...] | None) -> Repurposer:
        """``fit`` on what :meth:`_prepare` returned (read the data once, fit and score)."""
        classes, y_enc = _encode(_require_labels(labels))
        if isinstance(data, torch.Tensor):
            _check_n_samples(data, y_enc)
        self._fit_encoded(data, classes, y_enc, input_shape)
        return self

    def _predict_proba_prepared(self, data: Any) -> np.ndarray:
        """Checked probabilities for what :meth:`_prepare` returned."""
        return self._checked_proba(self._predict_proba(data))

    def _fit_encoded(self, data: Any, classes: np.ndarray, y: np.ndarray,
                     input_shape: tuple[int, ...] | None) -> None:
        """Run ``_fit``; the estimator counts as fitted (``classes_``) only if it succeeds."""
        self._clear_fitted()
        self.classes_, self.n_classes_, self.input_shape_ = classes, len(classes), input_shape
        try:
            self._fit(data, y)
        except BaseException:
            self._clear_fitted()
            raise

    def _clear_fitted(self) -> None:
        for name in ("classes_", "n_classes_"):
            self.__dict__.pop(name, None)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape ``(n, n_classes)``, columns in the order of ``classes_``.

        Parameters
        ----------
        X : ndarray, Tensor, Dataset, DataLoader or path
            Same kinds of input as :meth:`fit` (labels, if any, are ignored).

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        self._check_fitted()
        self._check_input_shape(X)
        data, _ = self._prepare(X, None, labels=False)
        return self._checked_proba(self._predict_proba(data))

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels, in the user's own label values (``classes_``).

        Parameters
        ----------
        X : ndarray, Tensor, Dataset, DataLoader or path

        Returns
        -------
        ndarray of shape (n,)
        """
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def score(self, X: Any, y: Any = None, sample_weight: Any = None) -> float:
        """Mean accuracy on ``X`` (labels from ``y``, or from ``X``'s pairs if ``y`` is None).

        Returns
        -------
        float
        """
        self._check_fitted()
        self._check_input_shape(X)
        data, labels = self._prepare(X, y, labels=True)
        proba = self._checked_proba(self._predict_proba(data))
        y_true = np.asarray(_require_labels(labels)).ravel()
        pred = self.classes_[np.argmax(proba, axis=1)]
        if len(y_true) != len(pred):
            raise ValueError(f"X has {len(pred)} samples but y has {len(y_true)} labels")
        return float(np.average(pred == y_true, weights=sample_weight))

    def save(self, path: str | Path, include_handler: bool = True) -> Path:
        """Save to a directory (or a ``.zip`` file) with no pickle: JSON plus safetensors.

        Parameters
        ----------
        path : str or Path
            A directory (created; must be empty or a previous save) or a path ending in ``.zip``.
        include_handler : bool
            Also save the handler (its own format) so the file predicts on its own.

        Returns
        -------
        Path
            ``path``.
        """
        from repurpose.repurposers._io import save_repurposer

        return save_repurposer(self, path, include_handler=include_handler)

    # Xfer names
    def export_onnx(self, path: str | Path, input_shape: Any = None, opset: int = 17) -> Path:
        """Write the fitted repurposer to ONNX: input tensor in, ``probabilities`` out
        (columns in ``classes_`` order). GP and BNN repurposers do not export (a clear
        error says so). See ``docs/onnx.md``."""
        from repurpose.repurposers._onnx_export import export_repurposer

        return export_repurposer(self, path, input_shape, opset)

    def repurpose(self, data: Any) -> Repurposer:
        """Xfer alias of ``fit(data)``; ``data`` yields ``(input, label)`` pairs."""
        return self.fit(data)

    def predict_label(self, data: Any) -> np.ndarray:
        """Xfer alias of :meth:`predict`."""
        return self.predict(data)

    def predict_probability(self, data: Any) -> np.ndarray:
        """Xfer alias of :meth:`predict_proba`."""
        return self.predict_proba(data)

    # ----- shared machinery --------------------------------------------------------------
    def __sklearn_clone__(self) -> Repurposer:
        params = self.get_params(deep=False)
        shared = {k: params.pop(k) for k in self._shared_params if k in params}
        copied = {k: clone(v, safe=False) for k, v in params.items()}
        return type(self)(**copied, **shared)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "classes_")

    def _check_fitted(self) -> None:
        if not hasattr(self, "classes_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet; call fit (or fit_features) "
                "before predicting"
            )

    def _encode_labels(self, y: Any) -> np.ndarray:
        """Int codes of ``y``; sets ``classes_`` (kept for subclasses that call it)."""
        classes, codes = _encode(y)
        self.classes_, self.n_classes_ = classes, len(classes)
        return codes

    def _checked_proba(self, proba: Any) -> np.ndarray:
        proba = np.asarray(proba, dtype=np.float64)
        if proba.ndim != 2 or proba.shape[1] != self.n_classes_:
            raise RepurposeError(
                f"{type(self).__name__} returned probabilities of shape {proba.shape}; "
                f"expected (n, {self.n_classes_})"
            )
        return proba

    def _check_input_shape(self, X: Any) -> None:
        expected = getattr(self, "input_shape_", None)
        got = _input_shape(X)
        if expected is not None and got is not None and tuple(got) != tuple(expected):
            raise ValueError(
                f"inputs have shape (N, {', '.join(map(str, got))}) but this repurposer was "
                f"fitted on (N, {', '.join(map(str, expected))})"
            )

    # state shared by all repurposers; subclasses of the base chain with super()
    def _base_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        shape = getattr(self, "input_shape_", None)
        return {"input_shape": None if shape is None else list(shape)}, {}

    def _set_base_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        shape = meta.get("input_shape")
        self.input_shape_ = None if shape is None else tuple(int(d) for d in shape)

    def _params_to_json(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        for name in self._shared_params:
            params.pop(name, None)
        return params

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        return params


class MetaModelRepurposer(Repurposer):
    """Base of repurposers that train a model on features extracted by the handler.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network. Not needed with :meth:`fit_features`.
    feature_layers : str or list of str, optional
        Layers whose outputs are the features. Required by :meth:`fit`; with
        :meth:`fit_features`, None means every layer in the features dict.
    pooling : {"avg", "max", None}
        How the handler pools spatial outputs (see ``ModelHandler.extract``).
    combine : {"concat", "average"}
        Multi-layer features: per-layer standardisation (fitted on the training set), then
        concatenation, or the mean over layers (all layers must have the same width).
    batch_size : int
        Extraction batch size.
    progress : bool
        Show a progress bar while extracting.
    """

    pooling: str | None = "avg"
    combine: str = "concat"
    progress: bool = True
    feature_layers: Any = None

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        pooling: str | None = "avg",
        combine: str = "concat",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        self.handler = handler
        self.feature_layers = feature_layers
        self.pooling = pooling
        self.combine = combine
        self.batch_size = batch_size
        self.progress = progress

    # ----- hooks -------------------------------------------------------------------------
    @abc.abstractmethod
    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        """Train on checked features (``{layer: (n, D)}``) and int-coded labels."""

    @abc.abstractmethod
    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        """Return ``(n, n_classes_)`` probabilities for checked features."""

    @classmethod
    def _test_instance(cls, handler: Any) -> Repurposer | None:
        return cls._demo_instance(handler, ["fc6", "fc7"])

    @classmethod
    def _demo_instance(
        cls, handler: Any, feature_layers: list[str]
    ) -> MetaModelRepurposer | None:
        """The instance ``repurpose demo`` uses (quiet, seeded); override to tune it."""
        rep = cls(handler=handler, feature_layers=feature_layers)  # type: ignore[call-arg]
        params = rep.get_params(deep=False)
        quiet = {"progress": False, "random_state": 0}
        rep.set_params(**{k: v for k, v in quiet.items() if k in params})
        return rep

    # ----- public API --------------------------------------------------------------------
    def fit_features(self, features: Mapping[str, Any], y: Any) -> MetaModelRepurposer:
        """Train on precomputed features (from ``handler.extract`` or an ``.npz`` file).

        Parameters
        ----------
        features : dict of str to ndarray (n, D)
            One array per layer; layers not in ``feature_layers`` are ignored.
        y : array-like of shape (n,)
            Labels of any sortable type.

        Returns
        -------
        self
        """
        classes, codes = _encode(y)
        self._fit_encoded(dict(features), classes, codes, None)
        return self

    def predict_proba_features(self, features: Mapping[str, Any]) -> np.ndarray:
        """Class probabilities from precomputed features.

        Parameters
        ----------
        features : dict of str to ndarray (n, D)

        Returns
        -------
        ndarray of shape (n, n_classes)
        """
        self._check_fitted()
        return self._checked_proba(self._predict_proba(dict(features)))

    def predict_features(self, features: Mapping[str, Any]) -> np.ndarray:
        """Predicted labels (user's values) from precomputed features."""
        proba = self.predict_proba_features(features)
        return self.classes_[np.argmax(proba, axis=1)]

    # ----- the Repurposer hooks ----------------------------------------------------------
    def _prepare(
        self, X: Any, y: Any = None, *, labels: bool, fitting: bool = False
    ) -> tuple[Any, Any]:
        if self.handler is None:
            raise ValueError(
                f"{type(self).__name__} has no handler; pass handler=ModelHandler(...) to "
                "extract features, or use fit_features/predict_proba_features"
            )
        _check_finite_input(X)
        layers = self._layers_to_extract(fitting)
        kwargs = {"pooling": self.pooling, "batch_size": self.batch_size,
                  "progress": self.progress}
        if labels and y is None:
            return self.handler.extract(X, layers, return_labels=True, **kwargs)
        return self.handler.extract(X, layers, **kwargs), y

    def _layers_to_extract(self, fitting: bool) -> list[str]:
        if not fitting and hasattr(self, "feature_layers_"):
            return list(self.feature_layers_)
        layers = _layer_list(self.feature_layers)
        if layers is None:
            names = ", ".join(getattr(self.handler, "layer_names", []))
            raise ValueError(
                f"feature_layers is None; choose one or more of the handler's layers: {names}"
            )
        return layers

    def _fit(self, X: Any, y: np.ndarray) -> None:
        if self.combine not in _COMBINE:
            raise ValueError(f"combine={self.combine!r}; use one of {_COMBINE}")
        layers = _layer_list(self.feature_layers) or list(X)
        features = _select(X, layers)
        _check_n_samples(next(iter(features.values())), y)
        self.feature_layers_ = layers
        self.feature_dims_ = {k: int(v.shape[1]) for k, v in features.items()}
        self.n_features_in_ = int(sum(self.feature_dims_.values()))
        self._check_average_widths()
        # chunked for long (memory-mapped) arrays: no temporary the size of the features
        moments = {k: column_moments(v) for k, v in features.items()}
        self.feature_mean_ = {k: mean for k, (mean, _) in moments.items()}
        self.feature_scale_ = {k: _safe_scale(std) for k, (_, std) in moments.items()}
        self._fit_features(features, y)

    def _predict_proba(self, X: Any) -> np.ndarray:
        return self._predict_proba_features(self._fitted_features(X))

    def _fitted_features(self, X: Any) -> dict[str, np.ndarray]:
        """The fitted layers of features ``X`` (a dict), checked against the fitted widths."""
        features = _select(X, self.feature_layers_)
        for name, arr in features.items():
            if arr.shape[1] != self.feature_dims_[name]:
                raise ValueError(
                    f"layer {name!r} has {arr.shape[1]} features per sample, but this "
                    f"repurposer was fitted with {self.feature_dims_[name]}"
                )
        return features

    def _check_average_widths(self) -> None:
        widths = set(self.feature_dims_.values())
        if self.combine == "average" and len(widths) > 1:
            sizes = ", ".join(f"{k}: {d}" for k, d in self.feature_dims_.items())
            raise ValueError(
                f"combine='average' needs layers of equal width; got {sizes}. "
                "Use combine='concat' or layers of the same size"
            )

    def _combine(self, features: Mapping[str, np.ndarray]) -> np.ndarray:
        """Standardise each layer with the training statistics, then concat or average.

        Parameters
        ----------
        features : dict of str to ndarray (n, D)

        Returns
        -------
        ndarray of shape (n, D_total) (concat) or (n, D) (average)
        """
        parts = self._standardised_layers(features)
        if self.combine == "average":
            return np.mean(parts, axis=0)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)

    def _standardised_layers(self, features: Mapping[str, np.ndarray],
                             dtype: Any = None) -> list[np.ndarray]:
        """Each fitted layer standardised with the training statistics, in layer order
        (read as ``dtype`` first, when given)."""
        return [(np.asarray(features[k], dtype=dtype) - self.feature_mean_[k])
                / self.feature_scale_[k] for k in self.feature_layers_]

    def _base_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = super()._base_state()
        meta["feature_layers"] = list(self.feature_layers_)
        meta["feature_dims"] = dict(self.feature_dims_)
        for k in self.feature_layers_:
            arrays[f"mean/{k}"] = np.ascontiguousarray(self.feature_mean_[k])
            arrays[f"scale/{k}"] = np.ascontiguousarray(self.feature_scale_[k])
        return meta, arrays

    def _set_base_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        super()._set_base_state(meta, arrays)
        self.feature_layers_ = [str(k) for k in meta["feature_layers"]]
        self.feature_dims_ = {str(k): int(v) for k, v in meta["feature_dims"].items()}
        self.n_features_in_ = int(sum(self.feature_dims_.values()))
        self.feature_mean_ = {k: arrays[f"mean/{k}"] for k in self.feature_layers_}
        self.feature_scale_ = {k: arrays[f"scale/{k}"] for k in self.feature_layers_}


# ----- helpers ---------------------------------------------------------------------------
def _layer_list(layers: str | Sequence[str] | None) -> list[str] | None:
    if layers is None:
        return None
    if isinstance(layers, str):
        return [layers]
    out = list(layers)
    if not out or not all(isinstance(v, str) for v in out):
        raise ValueError(f"feature_layers={layers!r}; give a layer name or a list of names")
    return out


def _select(features: Any, layers: Sequence[str]) -> dict[str, np.ndarray]:
    if not isinstance(features, Mapping):
        raise ValueError(
            f"features must be a dict of layer name to array (n, D); got {type(features).__name__}"
        )
    missing = [k for k in layers if k not in features]
    if missing:
        raise ValueError(
            f"features have no layer(s) {missing}; available: {', '.join(map(str, features))}"
        )
    out: dict[str, np.ndarray] = {}
    for k in layers:
        arr = np.asarray(features[k])
        if arr.ndim != 2:
            raise ValueError(f"features[{k!r}] has shape {arr.shape}; expected (n, D)")
        if arr.dtype.kind not in "fiub":
            raise ValueError(f"features[{k!r}] has dtype {arr.dtype}; expected numbers")
        if not all_finite(arr):
            raise ValueError(f"features[{k!r}] contains NaN or infinite values")
        out[k] = arr if arr.dtype.kind == "f" else arr.astype(np.float64)
    counts = {k: len(v) for k, v in out.items()}
    if len(set(counts.values())) > 1:
        raise ValueError(f"layers have different numbers of samples: {counts}")
    return out


def _safe_scale(std: np.ndarray) -> np.ndarray:
    # A constant feature carries no information; dividing by 1 keeps it at 0.
    return np.where(std > 1e-12, std, 1.0).astype(std.dtype)


def _float_tensor(X: np.ndarray | torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(X)
    return t if t.is_floating_point() else t.to(torch.float32)


def _input_shape(X: Any) -> tuple[int, ...] | None:
    if isinstance(X, (np.ndarray, torch.Tensor)) and X.ndim >= 2:
        return tuple(int(d) for d in X.shape[1:])
    return None


def _check_finite_input(X: Any) -> None:
    if isinstance(X, np.ndarray) and X.dtype.kind == "f" and not np.all(np.isfinite(X)):
        raise ValueError("X contains NaN or infinite values")
    if isinstance(X, torch.Tensor) and X.is_floating_point() and not bool(torch.isfinite(X).all()):
        raise ValueError("X contains NaN or infinite values")


def _require_labels(labels: Any) -> Any:
    if labels is None:
        raise ValueError(
            "no labels: pass y, or data that yields (input, label) pairs "
            "(a Dataset, DataLoader or image folder)"
        )
    return labels


def _encode(y: Any) -> tuple[np.ndarray, np.ndarray]:
    """The sorted classes of ``y`` and its int64 codes ``0..n_classes-1``."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D (one label per sample); got shape {y.shape}")
    if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
        raise ValueError("y contains NaN or infinite labels")
    try:
        classes, codes = np.unique(y, return_inverse=True)
    except TypeError as err:
        raise ValueError(
            f"labels must be mutually sortable (all str or all numbers); got {err}"
        ) from err
    if len(classes) < 2:
        found = repr(classes[0].item()) if len(classes) else "none"
        raise ValueError(
            f"y has a single class ({found}); a repurposer needs at least 2 classes"
        )
    return classes, codes.astype(np.int64).ravel()


def _check_n_samples(data: Any, y: np.ndarray) -> None:
    n = len(data)
    if n != len(y):
        raise ValueError(f"X has {n} samples but y has {len(y)} labels")
