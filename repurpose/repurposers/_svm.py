"""Support vector machine on extracted features, with calibrated probabilities."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics.pairwise import linear_kernel, rbf_kernel
from sklearn.model_selection import StratifiedKFold
from sklearn.multiclass import OneVsRestClassifier
from sklearn.svm import SVC

from repurpose._validation import check_choice, check_int
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._lr import encode_class_weight
from repurpose.repurposers._out_of_core import chunk_slices, feature_rows, fit_linear
from repurpose.repurposers._registry import register_repurposer

__all__ = ["SVMRepurposer"]

_KERNELS = ("linear", "rbf")
_CALIBRATION = ("sigmoid", "isotonic")
_SOLVERS = ("libsvm", "streaming")
_CALIBRATION_ROWS = 100_000


@register_repurposer("svm")
class SVMRepurposer(MetaModelRepurposer):
    """One-vs-rest support vector machines with calibrated probabilities.

    One binary SVM per class is trained on all the data. Its decision values are mapped to
    probabilities by a calibrator (Platt's sigmoid or isotonic regression) fitted on
    out-of-fold decision values (stratified cross-validation with
    ``min(cv, smallest class count)`` folds; with a single example in some class, on the
    training decision values). So ``predict_proba`` always works, even with 5 examples a class.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        Layers to take features from.
    kernel : {"linear", "rbf"}
        SVM kernel. Linear is the default because it wins on CNN features (the usual
        choice for CNN codes, e.g. Razavian et al. 2014): on the digits demo and on real
        photos with SqueezeNet features it beats RBF (``benchmarks/bench_svm_kernel.py``;
        figures in ``docs/repurposers.md``).
    C : float
        Regularisation parameter.
    gamma : "scale" or float
        RBF kernel width (ignored by the linear kernel); "scale" is
        ``1 / (n_features * X.var())`` of the training features.
    class_weight : dict, "balanced" or None
        Weights keyed by the user's own label values.
    calibration : {"sigmoid", "isotonic"}
        How decision values become probabilities.
    cv : int
        Maximum number of calibration folds.
    tol : float
        Stopping tolerance of the SVM solver.
    max_iter : int
        Solver iteration limit (-1: none).
    random_state : int, optional
        Unused by the deterministic solver; kept for a uniform interface.
    solver : {"libsvm", "streaming"}
        ``"libsvm"``: scikit-learn's ``SVC`` on all the features in memory. ``"streaming"``
        (linear kernel only): one-vs-rest linear SVMs with the squared hinge loss
        (``LinearSVC``'s default) minimised by L-BFGS reading the features chunk by chunk,
        for features that do not fit in memory (the memory-mapped arrays of
        ``handler.extract(..., out=dir)``). Its calibrators are fitted on the training
        decision values of at most 100 000 samples (no cross-validation: that would
        cost ``cv`` more fits); with many samples per feature these differ little from
        held-out ones. See docs/scaling.md for the limits.
    pooling, combine, batch_size, progress
        See :class:`MetaModelRepurposer`.
    """

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        kernel: str = "linear",
        C: float = 1.0,
        gamma: str | float = "scale",
        class_weight: Mapping[Any, float] | str | None = None,
        calibration: str = "sigmoid",
        cv: int = 5,
        tol: float = 1e-3,
        max_iter: int = -1,
        random_state: int | None = None,
        pooling: str | None = "avg",
        combine: str = "concat",
        batch_size: int = 64,
        progress: bool = True,
        solver: str = "libsvm",
    ) -> None:
        super().__init__(handler, feature_layers, pooling, combine, batch_size, progress)
        self.kernel = kernel
        self.C = C
        self.gamma = gamma
        self.class_weight = class_weight
        self.calibration = calibration
        self.cv = cv
        self.tol = tol
        self.max_iter = max_iter
        self.random_state = random_state
        self.solver = solver

    def _check_params(self) -> None:
        check_choice("kernel", self.kernel, _KERNELS)
        check_choice("calibration", self.calibration, _CALIBRATION)
        check_int("cv", self.cv, 2)
        if check_choice("solver", self.solver, _SOLVERS) == "streaming" and self.kernel != "linear":
            raise ValueError(f"solver='streaming' trains linear SVMs only; got "
                             f"kernel={self.kernel!r}. Use kernel='linear' or solver='libsvm'")

    def _resolve_gamma(self, X: np.ndarray) -> float:
        if self.gamma == "scale":
            var = float(X.var())
            return 1.0 / (X.shape[1] * var) if var > 0 else 1.0
        if isinstance(self.gamma, (int, float)) and self.gamma > 0:
            return float(self.gamma)
        raise ValueError(f"gamma={self.gamma!r}; use 'scale' or a positive float")

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        self._check_params()
        if self.solver == "streaming":
            self._fit_streaming(features, y)
            return
        X = self._combine(features).astype(np.float64)
        self.gamma_ = self._resolve_gamma(X)
        svc = SVC(
            kernel=self.kernel, C=self.C, gamma=self.gamma_, tol=self.tol,
            max_iter=self.max_iter,
            class_weight=encode_class_weight(self.class_weight, self.classes_),
        )
        base = OneVsRestClassifier(svc)
        folds = min(self.cv, int(np.bincount(y).min()))
        if folds >= 2:
            cal = CalibratedClassifierCV(
                base, method=self.calibration, cv=StratifiedKFold(folds), ensemble=False
            ).fit(X, y)
            self._store(cal.calibrated_classifiers_[0].estimator)
            self.calibrators_ = [
                _calibrator_arrays(c) for c in cal.calibrated_classifiers_[0].calibrators
            ]
        else:
            # A class with one example leaves no held-out data: calibrate on training values.
            self._store(base.fit(X, y))
            dec = self._decision(X)
            cols = [1] if self.n_classes_ == 2 else range(self.n_classes_)
            self.calibrators_ = [self._fit_calibrator(dec[:, min(c, dec.shape[1] - 1)], y == c)
                                 for c in cols]

    def _fit_streaming(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        rows = feature_rows(self._combine, features)
        coef, intercept = fit_linear(
            rows, y, self.n_classes_, loss="squared_hinge", C=float(self.C),
            class_weight=encode_class_weight(self.class_weight, self.classes_),
            max_iter=1000 if self.max_iter < 0 else int(self.max_iter),
            # libsvm's tol bounds dual violations; ours the gradient of the loss divided by n
            tol=float(self.tol) * 1e-2, progress=bool(self.progress))
        keep = [1] if self.n_classes_ == 2 else range(self.n_classes_)  # as one-vs-rest
        self.gamma_ = 0.0
        self.support_vectors_ = [coef[c][None, :] for c in keep]
        self.dual_coef_ = [np.ones(1) for _ in keep]
        self.intercept_ = intercept[list(keep)]
        pick = np.random.default_rng(0).permutation(len(y))[:_CALIBRATION_ROWS]
        pick.sort()
        dec = np.concatenate([self._decision(rows(pick[sl]).astype(np.float64))
                              for sl in chunk_slices(len(pick), 8192)])
        self.calibrators_ = [self._fit_calibrator(dec[:, i], y[pick] == c)
                             for i, c in enumerate(keep)]

    def _fit_calibrator(self, d: np.ndarray, target: np.ndarray) -> dict[str, np.ndarray]:
        if self.calibration == "isotonic":
            return _calibrator_arrays(
                IsotonicRegression(out_of_bounds="clip").fit(d, target.astype(np.float64))
            )
        lr = LogisticRegression(C=1e6).fit(d[:, None], target.astype(int))
        return {"ab": np.array([-float(lr.coef_[0, 0]), -float(lr.intercept_[0])])}

    def _store(self, ovr: OneVsRestClassifier) -> None:
        self.support_vectors_ = [m.support_vectors_ for m in ovr.estimators_]
        self.dual_coef_ = [m.dual_coef_.ravel() for m in ovr.estimators_]
        self.intercept_ = np.array([float(m.intercept_[0]) for m in ovr.estimators_])

    def _decision(self, X: np.ndarray) -> np.ndarray:
        cols = []
        for sv, coef, b in zip(self.support_vectors_, self.dual_coef_, self.intercept_):
            if self.kernel == "linear":
                k = linear_kernel(X, sv)
            else:
                k = rbf_kernel(X, sv, gamma=self.gamma_)
            cols.append(k @ coef + b)
        return np.stack(cols, axis=1)

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        dec = self._decision(self._combine(features).astype(np.float64))
        probs = np.stack(
            [_calibrate(c, dec[:, i]) for i, c in enumerate(self.calibrators_)], axis=1
        )
        if self.n_classes_ == 2:
            return np.c_[1.0 - probs[:, 0], probs[:, 0]]
        total = probs.sum(axis=1, keepdims=True)
        uniform = np.full_like(probs, 1.0 / self.n_classes_)
        return np.where(total > 0, probs / np.where(total > 0, total, 1.0), uniform)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"intercept": self.intercept_}
        for i, (sv, coef) in enumerate(zip(self.support_vectors_, self.dual_coef_)):
            arrays[f"sv/{i}"] = sv
            arrays[f"dual_coef/{i}"] = coef
        for i, cal in enumerate(self.calibrators_):
            arrays.update({f"cal/{i}/{k}": v for k, v in cal.items()})
        meta = {"gamma": self.gamma_, "n_estimators": len(self.support_vectors_),
                "n_calibrators": len(self.calibrators_)}
        return meta, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.gamma_ = float(meta["gamma"])
        n = int(meta["n_estimators"])
        self.intercept_ = arrays["intercept"]
        self.support_vectors_ = [arrays[f"sv/{i}"] for i in range(n)]
        self.dual_coef_ = [arrays[f"dual_coef/{i}"] for i in range(n)]
        self.calibrators_ = [
            {k.split("/")[-1]: v for k, v in arrays.items() if k.startswith(f"cal/{i}/")}
            for i in range(int(meta["n_calibrators"]))
        ]


def _calibrator_arrays(cal: Any) -> dict[str, np.ndarray]:
    if hasattr(cal, "X_thresholds_"):  # IsotonicRegression
        return {"x": np.asarray(cal.X_thresholds_, dtype=np.float64),
                "y": np.asarray(cal.y_thresholds_, dtype=np.float64)}
    return {"ab": np.array([float(cal.a_), float(cal.b_)])}  # Platt sigmoid


def _calibrate(cal: Mapping[str, np.ndarray], d: np.ndarray) -> np.ndarray:
    if "ab" in cal:
        a, b = cal["ab"]
        return expit(-(a * d + b))
    return np.interp(d, cal["x"], cal["y"])  # clipped at the ends, like out_of_bounds="clip"
