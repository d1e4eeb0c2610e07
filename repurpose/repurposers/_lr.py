"""Logistic regression on extracted features."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression

from repurpose._validation import check_choice
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._out_of_core import feature_rows, fit_linear
from repurpose.repurposers._registry import register_repurposer

__all__ = ["LogisticRegressionRepurposer", "SOLVERS"]

SOLVERS = ("lbfgs", "streaming")


@register_repurposer("lr")
class LogisticRegressionRepurposer(MetaModelRepurposer):
    """Multinomial logistic regression (with intercept) on the handler's features.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        Layers to take features from.
    C : float
        Inverse L2 regularisation strength.
    class_weight : dict, "balanced" or None
        Weights keyed by the user's own label values.
    max_iter : int
        Iterations of the L-BFGS solver.
    tol : float
        Stopping tolerance.
    solver : {"lbfgs", "streaming"}
        ``"lbfgs"``: scikit-learn's solver on all the (standardised) features in memory.
        ``"streaming"``: the same objective and optimum, minimised by L-BFGS that reads the
        features chunk by chunk (one pass per evaluation), for features that do not fit
        in memory, e.g. the memory-mapped arrays of ``handler.extract(..., out=dir)``.
        See docs/scaling.md for its limits.
    random_state : int, optional
        Seed (the L-BFGS solver is deterministic; kept for a uniform interface).
    pooling, combine, batch_size, progress
        See :class:`MetaModelRepurposer`.

    Examples
    --------
    >>> import numpy as np
    >>> import repurpose as rp
    >>> rng = np.random.default_rng(0)
    >>> feats = {"fc7": np.r_[rng.normal(0, 1, (20, 3)), rng.normal(2, 1, (20, 3))]}
    >>> rep = rp.LogisticRegressionRepurposer().fit_features(feats, ["a"] * 20 + ["b"] * 20)
    >>> rep.predict_proba_features(feats).shape
    (40, 2)
    """

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        C: float = 1.0,
        class_weight: Mapping[Any, float] | str | None = None,
        max_iter: int = 1000,
        tol: float = 1e-4,
        random_state: int | None = None,
        pooling: str | None = "avg",
        combine: str = "concat",
        batch_size: int = 64,
        progress: bool = True,
        solver: str = "lbfgs",
    ) -> None:
        super().__init__(handler, feature_layers, pooling, combine, batch_size, progress)
        self.C = C
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.solver = solver

    def _make_model(self) -> LogisticRegression:
        return LogisticRegression(
            C=self.C,
            class_weight=encode_class_weight(self.class_weight, self.classes_),
            max_iter=self.max_iter,
            tol=self.tol,
            random_state=self.random_state,
        )

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        if check_choice("solver", self.solver, SOLVERS) == "lbfgs":
            self.model_ = self._make_model().fit(self._combine(features), y)
            return
        coef, intercept = fit_linear(
            feature_rows(self._combine, features), y, self.n_classes_, loss="logistic",
            C=float(self.C), class_weight=encode_class_weight(self.class_weight, self.classes_),
            max_iter=int(self.max_iter), tol=float(self.tol), progress=bool(self.progress))
        arrays = {"coef": coef, "intercept": intercept}
        self.model_ = restore_lr(self._make_model(), arrays, self.n_classes_)

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.model_.predict_proba(self._combine(features))

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {}, {"coef": self.model_.coef_, "intercept": self.model_.intercept_}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.model_ = restore_lr(self._make_model(), arrays, self.n_classes_)


def restore_lr(model: LogisticRegression, arrays: Mapping[str, np.ndarray],
               n_classes: int) -> LogisticRegression:
    """``model`` (unfitted) made fitted from saved ``coef`` and ``intercept`` arrays."""
    model.coef_ = arrays["coef"]
    model.intercept_ = arrays["intercept"]
    model.classes_ = np.arange(n_classes)
    model.n_features_in_ = int(arrays["coef"].shape[1])
    return model


def encode_class_weight(
    class_weight: Mapping[Any, float] | str | None, classes: np.ndarray
) -> dict[int, float] | str | None:
    """Translate class weights keyed by user labels into weights keyed by label codes."""
    if class_weight is None or isinstance(class_weight, str):
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight={class_weight!r}; use a dict, 'balanced' or None")
        return class_weight
    index = {label: i for i, label in enumerate(classes.tolist())}
    unknown = [k for k in class_weight if k not in index]
    if unknown:
        raise ValueError(
            f"class_weight names unknown label(s) {unknown}; the labels are {classes.tolist()}"
        )
    return {index[k]: float(v) for k, v in class_weight.items()}
