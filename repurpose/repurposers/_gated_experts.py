"""A gated mixture of per-layer linear probes, its gate fitted on cross-fitted logits.

Each feature layer gets its own expert: a logistic regression on that layer alone, so
layers of any width are combined without a learnt projection. A gate weighs the experts
per sample, from how confident each expert is on that sample::

    c_i(x) = max_j log softmax(f_i(x))_j            (expert i's confidence)
    r(x)   = softmax_i(a_i + b_i * c_i(x))          (shares over the layers)
    out(x) = exp(t) * sum_i r_i(x) * f_i(x)         (the logits)

The gate has ``2 n + 1`` parameters. Fitted on the experts' training logits it would learn
nothing, because every expert fits its own training examples; so it is fitted on
out-of-fold logits (stacking): each expert is refitted ``folds`` times without one fold
and predicts that fold. The experts kept are fitted on all the data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from repurpose._validation import check_int, check_number
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._registry import register_repurposer

__all__ = ["GatedExpertsRepurposer", "expert_affine", "fit_gate", "mix"]


def expert_affine(coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(weight (n_classes, D), bias (n_classes,))`` of a fitted scikit-learn LR: its
    binary form (one row, the logit of class 1) becomes the two rows ``[0, z]``."""
    coef, intercept = np.asarray(coef), np.asarray(intercept)
    if coef.shape[0] == 1:
        return np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
    return coef, intercept


def _logits(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``(n, n_classes)`` logits of a fitted scikit-learn LR (binary: ``[0, z]``)."""
    weight, bias = expert_affine(coef, intercept)
    return x @ weight.T + bias


def mix(logits: torch.Tensor, bias: torch.Tensor, slope: torch.Tensor,
         log_temperature: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(out, shares)`` for expert logits ``(n_layers, n, n_classes)``."""
    confidence = torch.log_softmax(logits, dim=2).amax(dim=2)
    shares = torch.softmax(bias[:, None] + slope[:, None] * confidence, dim=0)
    out = log_temperature.exp() * (shares[:, :, None] * logits).sum(0)
    return out, shares.T


def fit_gate(logits: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 200
             ) -> dict[str, np.ndarray]:
    """Gate parameters minimising the cross-entropy of the mixture on ``logits``.

    Parameters
    ----------
    logits : ndarray (n_layers, n, n_classes)
        The experts' (out-of-fold) logits.
    y : ndarray (n,)
        Class codes.
    l2 : float
        Penalty on the squared gate biases and slopes (pulls toward equal shares).
    max_iter : int
        L-BFGS iterations.

    Returns
    -------
    dict with ``gate_bias`` and ``gate_slope`` (n_layers,) and ``log_temperature`` (1,).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 200)
    >>> good = 4.0 * np.eye(3)[y] + rng.normal(size=(200, 3))
    >>> noise = 4.0 * rng.normal(size=(200, 3))
    >>> gate = fit_gate(np.stack([noise, good]), y, l2=1e-3)
    >>> bool(gate["gate_bias"][1] > gate["gate_bias"][0])
    True
    """
    lt = torch.as_tensor(logits, dtype=torch.float64)
    target = torch.as_tensor(y, dtype=torch.int64)
    params = [torch.zeros(len(lt), dtype=torch.float64, requires_grad=True),
              torch.zeros(len(lt), dtype=torch.float64, requires_grad=True),
              torch.zeros(1, dtype=torch.float64, requires_grad=True)]
    opt = torch.optim.LBFGS(params, max_iter=int(max_iter), line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        out, _ = mix(lt, *params)
        loss = torch.nn.functional.cross_entropy(out, target)
        loss = loss + l2 * (params[0].square().sum() + params[1].square().sum())
        loss.backward()
        return loss

    opt.step(closure)
    names = ("gate_bias", "gate_slope", "log_temperature")
    return {k: p.detach().numpy().copy() for k, p in zip(names, params, strict=True)}


@register_repurposer("gated_experts")
class GatedExpertsRepurposer(MetaModelRepurposer):
    """Per-layer linear probes mixed by a per-sample gate fitted on out-of-fold logits.

    A gated network whose gate chooses between whole layers' classifiers rather than
    mixing their features: each layer gets a logistic regression of its own (any widths,
    no projection), and the gate gives each expert a share per sample from the expert's
    confidence on that sample (see the module docstring for the formulas). With all gate
    parameters at zero it is the average of the experts' logits; the gate is fitted by
    L-BFGS on out-of-fold (cross-fitted) expert logits, so it learns how far each layer's
    probe can be trusted on unseen data, not how well it fits its own training examples.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        The layers to mix, one expert each (standardised with the training statistics).
    C : float
        Inverse L2 regularisation of every expert's logistic regression.
    folds : int
        Cross-fitting folds for the gate's training logits (at most the size of the
        smallest class; at least 2).
    gate_l2 : float
        Penalty on the squared gate biases and slopes; large values keep equal shares.
    max_iter : int
        L-BFGS iterations of each expert.
    random_state : int, optional
        Seed of the fold assignment.
    pooling, batch_size, progress
        See :class:`MetaModelRepurposer`.

    Attributes
    ----------
    experts_ : list of dict
        ``{"coef", "intercept"}`` of each layer's expert, in ``feature_layers_`` order.
    gate_ : dict of str to ndarray
        ``gate_bias`` and ``gate_slope`` (one per layer) and ``log_temperature``.

    Examples
    --------
    >>> import numpy as np
    >>> import repurpose as rp
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 20)
    >>> feats = {"fc6": rng.normal(size=(60, 8)), "fc7": rng.normal(size=(60, 12))}
    >>> feats["fc7"][:, 5] += 3 * y
    >>> rep = rp.GatedExpertsRepurposer(progress=False, random_state=0)
    >>> rep = rep.fit_features(feats, y)
    >>> rep.gates_(feats).shape
    (60, 2)
    >>> bool(rep.gates_(feats)[:, 1].mean() > 0.5)   # fc7's expert gets most of the weight
    True
    """

    experts_: list[dict[str, np.ndarray]]
    gate_: dict[str, np.ndarray]

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        C: float = 1.0,
        folds: int = 5,
        gate_l2: float = 0.01,
        max_iter: int = 1000,
        random_state: int | None = None,
        pooling: str | None = "avg",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        super().__init__(handler, feature_layers, pooling, "concat", batch_size, progress)
        del self.combine  # each expert sees one layer
        self.C = C
        self.folds = folds
        self.gate_l2 = gate_l2
        self.max_iter = max_iter
        self.random_state = random_state

    @classmethod
    def _test_instance(cls, handler: Any) -> GatedExpertsRepurposer:
        return cls(handler, feature_layers=["fc6", "fc7"], folds=3, progress=False,
                   random_state=0)

    # ----- fitting -----------------------------------------------------------------------
    def _expert(self, x: np.ndarray, y: np.ndarray) -> dict[str, np.ndarray]:
        model = LogisticRegression(C=self.C, max_iter=self.max_iter).fit(x, y)
        return {"coef": model.coef_, "intercept": model.intercept_}

    def _n_folds(self, y: np.ndarray) -> int:
        smallest = int(np.bincount(y, minlength=self.n_classes_).min())
        if smallest < 2:
            raise ValueError(
                f"GatedExpertsRepurposer needs at least 2 examples of every class to "
                f"cross-fit its gate; the smallest class has {smallest}"
            )
        return min(int(self.folds), smallest)

    def _out_of_fold(self, xs: list[np.ndarray], y: np.ndarray) -> np.ndarray:
        """``(n_layers, n, n_classes)`` logits, each row predicted by an expert fitted
        without its fold."""
        out = np.zeros((len(xs), len(y), self.n_classes_))
        # at most as many folds as the smallest class has examples, so every training
        # part keeps every class
        split = StratifiedKFold(self._n_folds(y), shuffle=True, random_state=self.random_state)
        for train, test in split.split(xs[0], y):
            for i, x in enumerate(xs):
                expert = self._expert(x[train], y[train])
                out[i, test] = _logits(x[test], expert["coef"], expert["intercept"])
        return out

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        check_number("C", self.C, 0, low_open=True)
        check_int("folds", self.folds, 2)
        check_number("gate_l2", self.gate_l2, 0)
        xs = self._standardised_layers(features, np.float64)
        self.gate_ = fit_gate(self._out_of_fold(xs, y), y, float(self.gate_l2))
        self.experts_ = [self._expert(x, y) for x in xs]

    def _mixture(self, features: dict[str, np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        xs = self._standardised_layers(features, np.float64)
        logits = np.stack([_logits(x, e["coef"], e["intercept"])
                           for x, e in zip(xs, self.experts_, strict=True)])
        gate = [torch.as_tensor(self.gate_[k], dtype=torch.float64)
                for k in ("gate_bias", "gate_slope", "log_temperature")]
        return mix(torch.as_tensor(logits), *gate)

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return torch.softmax(self._mixture(features)[0], dim=1).numpy()

    def gates_(self, X: Any) -> np.ndarray:
        """The experts' shares ``(n, n_layers)`` for each sample (rows sum to 1).

        ``X`` is anything :meth:`predict_proba` accepts, or features ``{layer: (n, D)}``.
        """
        self._check_fitted()
        features = X if isinstance(X, Mapping) else self._prepare(X, None, labels=False)[0]
        return self._mixture(self._fitted_features(features))[1].numpy()

    # ----- saving ------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {f"expert{i}/{k}": v for i, e in enumerate(self.experts_) for k, v in e.items()}
        arrays.update({f"gate/{k}": v for k, v in self.gate_.items()})
        return {}, arrays

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.experts_ = [{k: np.asarray(arrays[f"expert{i}/{k}"]) for k in ("coef", "intercept")}
                         for i in range(len(self.feature_layers_))]
        self.gate_ = {k: np.asarray(arrays[f"gate/{k}"])
                      for k in ("gate_bias", "gate_slope", "log_temperature")}
