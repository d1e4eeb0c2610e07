"""A Head2Toe-style multi-layer probe (Evci et al., ICML 2022): select features, then refit.

Pooled features of many layers are standardised and concatenated. A multinomial linear head
is trained with a group-lasso penalty whose groups are the individual features (each
feature's weights across all classes), so that whole features drop out. The features with
the largest weight norms are kept, and a plain logistic regression is refitted on them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from repurpose._validation import check_int, check_number
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._lr import restore_lr
from repurpose.repurposers._registry import register_repurposer

__all__ = ["Head2ToeRepurposer", "group_lasso_scores"]


def group_lasso_scores(x: np.ndarray, y: np.ndarray, n_classes: int, alpha: float,
                       n_iter: int) -> np.ndarray:
    """Per-feature weight norms of a group-lasso multinomial logistic regression.

    Minimises ``mean CE(x W + b, y) + alpha * alpha_max * sum_j ||W_j||_2`` by accelerated
    proximal gradient (FISTA) with a fixed step from the loss's Lipschitz bound. ``alpha``
    is relative to ``alpha_max``, the smallest strength that zeroes every feature, so it is
    free of the features' scale.

    Parameters
    ----------
    x : ndarray (n, D)
        Standardised features.
    y : ndarray (n,)
        Class codes ``0..n_classes-1``.
    n_classes : int
    alpha : float
        Penalty as a fraction of ``alpha_max`` (0: none; 1: every weight zero).
    n_iter : int
        Proximal gradient steps.

    Returns
    -------
    ndarray (D,)
        ``||W_j||_2`` for each feature ``j`` (0 for features the penalty removed).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 20)
    >>> x = rng.normal(size=(60, 6))
    >>> x[:, 2] += 3 * y
    >>> int(np.argmax(group_lasso_scores(x, y, 3, alpha=0.3, n_iter=200)))
    2
    """
    xt = torch.as_tensor(x, dtype=torch.float64)
    n, dim = xt.shape
    onehot = torch.nn.functional.one_hot(torch.as_tensor(y), n_classes).double()
    prior = onehot.mean(0).clamp_min(1e-12)
    # At W = 0 with the best intercept (the log class frequencies), the gradient of feature j
    # is x_j^T (p - Y) / n; the penalty that keeps every group at zero is its largest norm.
    grad0 = xt.T @ (prior - onehot) / n
    alpha_max = float(grad0.norm(dim=1).max())
    penalty = float(alpha) * alpha_max
    # The softmax cross-entropy's Hessian is at most 1/2 x^T x / n in each class direction.
    lipschitz = 0.5 * _top_eigenvalue(xt) / n + 1e-12
    step = 1.0 / lipschitz
    w = torch.zeros(dim, n_classes, dtype=torch.float64)
    b = prior.log()
    w_prev, v_w, v_b, t = w, w, b, 1.0
    for _ in range(int(n_iter)):
        p = torch.softmax(xt @ v_w + v_b, dim=1)
        resid = (p - onehot) / n
        w_new = _group_shrink(v_w - step * (xt.T @ resid), step * penalty)
        b_new = v_b - step * resid.sum(0)
        t_new = (1.0 + (1.0 + 4.0 * t * t) ** 0.5) / 2.0
        v_w = w_new + ((t - 1.0) / t_new) * (w_new - w_prev)
        v_b = b_new + ((t - 1.0) / t_new) * (b_new - b)
        w_prev, w, b, t = w_new, w_new, b_new, t_new
    return w.norm(dim=1).numpy()


def _top_eigenvalue(x: torch.Tensor, n_iter: int = 50) -> float:
    """Largest eigenvalue of ``x^T x`` by power iteration, with a 5% margin (cheaper than
    an SVD of a wide matrix; the margin keeps the step size safe)."""
    v = torch.ones(x.shape[1], dtype=x.dtype) / x.shape[1] ** 0.5
    value = 0.0
    for _ in range(n_iter):
        w = x.T @ (x @ v)
        value = float(w.norm())
        if value == 0.0:
            return 1.0
        v = w / value
    return 1.05 * value


def _group_shrink(w: torch.Tensor, threshold: float) -> torch.Tensor:
    """The group-lasso proximal step: shrink each row's norm by ``threshold`` (or to 0)."""
    norms = w.norm(dim=1, keepdim=True)
    return w * (1.0 - threshold / norms.clamp_min(1e-30)).clamp_min(0.0)


@register_repurposer("head2toe")
class Head2ToeRepurposer(MetaModelRepurposer):
    """Multi-layer probe: group-lasso feature selection over many layers, then a linear refit.

    Following Head2Toe (Evci et al., "Head2Toe: Utilizing Intermediate Representations for
    Better Transfer Learning", ICML 2022): features from many layers (pooled, standardised
    per layer, concatenated) feed a multinomial linear head trained with a group-lasso
    penalty, one group per feature (its weights across the classes). The features are
    ranked by the norm of their weights, the best ``keep`` of them are kept, and a logistic
    regression is refitted on those alone.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        The layers to select from (the more, the better: this is what the probe is for).
    keep : float or int
        A fraction in (0, 1] of all features, or a number of features (>= 1), to keep.
    alpha : float
        Group-lasso strength as a fraction of the smallest strength that removes every
        feature (in [0, 1)); it only ranks the features.
    C : float
        Inverse L2 regularisation of the refitted logistic regression.
    n_iter : int
        Proximal-gradient steps of the group-lasso fit.
    max_iter : int
        L-BFGS iterations of the refit.
    random_state : int, optional
        Kept for a uniform interface (both fits are deterministic).
    pooling, batch_size, progress
        See :class:`MetaModelRepurposer`.

    Attributes
    ----------
    feature_scores_ : ndarray (D,)
        The group-lasso weight norm of every feature (concatenated in layer order).
    selected_ : ndarray of int
        Indices (into the concatenated features) of the kept features, ascending.
    selection_ : dict of str to ndarray of int
        The kept features of each layer, as indices into that layer.
    model_ : sklearn LogisticRegression
        The refitted head.

    Examples
    --------
    >>> import numpy as np
    >>> import repurpose as rp
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 20)
    >>> feats = {"fc6": rng.normal(size=(60, 8)), "fc7": rng.normal(size=(60, 8))}
    >>> feats["fc7"][:, 5] += 3 * y
    >>> rep = rp.Head2ToeRepurposer(keep=1, progress=False).fit_features(feats, y)
    >>> {k: v.tolist() for k, v in rep.selection_.items() if len(v)}
    {'fc7': [5]}
    """

    feature_scores_: np.ndarray
    selected_: np.ndarray
    model_: LogisticRegression

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        keep: float = 0.05,
        alpha: float = 0.1,
        C: float = 1.0,
        n_iter: int = 300,
        max_iter: int = 1000,
        random_state: int | None = None,
        pooling: str | None = "avg",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        super().__init__(handler, feature_layers, pooling, "concat", batch_size, progress)
        del self.combine  # always the concatenation
        self.keep = keep
        self.alpha = alpha
        self.C = C
        self.n_iter = n_iter
        self.max_iter = max_iter
        self.random_state = random_state

    @classmethod
    def _test_instance(cls, handler: Any) -> Head2ToeRepurposer:
        return cls(handler, feature_layers=["fc6", "fc7"], keep=0.5, n_iter=50,
                   progress=False)

    # ----- fitting -----------------------------------------------------------------------
    def _n_keep(self, total: int) -> int:
        keep = self.keep
        if isinstance(keep, (int, np.integer)) and not isinstance(keep, bool) and keep >= 1:
            return min(int(keep), total)
        frac = check_number("keep", keep, 0, 1, low_open=True)
        return max(1, int(round(frac * total)))

    def _make_model(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, max_iter=self.max_iter)

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        check_number("alpha", self.alpha, 0, 1, high_open=True)
        check_number("C", self.C, 0, low_open=True)
        check_int("n_iter", self.n_iter, 1)
        x = self._combine(features)
        n_keep = self._n_keep(x.shape[1])
        self.feature_scores_ = group_lasso_scores(x, y, self.n_classes_, float(self.alpha),
                                                  int(self.n_iter))
        # stable sort: ties (e.g. features the penalty zeroed) keep their layer order
        order = np.argsort(-self.feature_scores_, kind="stable")
        self._set_selection(np.sort(order[:n_keep]))
        self.model_ = self._make_model().fit(x[:, self.selected_], y)

    def _set_selection(self, selected: np.ndarray) -> None:
        self.selected_ = selected.astype(np.int64)
        bounds = np.cumsum([0, *(self.feature_dims_[k] for k in self.feature_layers_)])
        self.selection_ = {
            k: self.selected_[(self.selected_ >= a) & (self.selected_ < b)] - a
            for k, a, b in zip(self.feature_layers_, bounds[:-1], bounds[1:], strict=True)
        }

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self.model_.predict_proba(self._combine(features)[:, self.selected_])

    # ----- saving ------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"coef": self.model_.coef_, "intercept": self.model_.intercept_,
                  "selected": self.selected_, "scores": self.feature_scores_}
        return {}, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.feature_scores_ = np.asarray(arrays["scores"])
        self._set_selection(np.asarray(arrays["selected"]))
        self.model_ = restore_lr(self._make_model(), arrays, self.n_classes_)
