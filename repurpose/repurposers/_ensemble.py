"""An ensemble of per-layer meta-models whose probabilities are averaged."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone

from repurpose._exceptions import RepurposeError
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._registry import get_repurposer_class, register_repurposer

__all__ = ["EnsembleRepurposer"]

MEMBERS_DIR = "members"


@register_repurposer("ensemble")
class EnsembleRepurposer(MetaModelRepurposer):
    """Train one meta-model per feature layer and average their probabilities.

    This is the "ensemble of the softmaxes on FC6 and FC7" baseline of the Gated Transfer
    Network paper, one call away. Features are extracted once for all layers.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        One member is trained per layer.
    estimator : MetaModelRepurposer, optional
        The (unfitted) member prototype, cloned for each layer. Default: a
        :class:`LogisticRegressionRepurposer` (a softmax classifier).
    weights : sequence of float, optional
        Weight of each layer's probabilities in the average (normalised); default equal.
    pooling, batch_size, progress
        See :class:`MetaModelRepurposer`.

    Attributes
    ----------
    members_ : list of MetaModelRepurposer
        The fitted members, in the order of ``feature_layers_``.

    Examples
    --------
    >>> import numpy as np
    >>> import repurpose as rp
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> feats = {"fc6": rng.normal(size=(40, 3)) + y[:, None], "fc7": rng.normal(size=(40, 5))}
    >>> rep = rp.EnsembleRepurposer(feature_layers=["fc6", "fc7"]).fit_features(feats, y)
    >>> rep.predict_proba_features(feats).shape
    (40, 2)
    """

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        estimator: MetaModelRepurposer | None = None,
        weights: Sequence[float] | None = None,
        pooling: str | None = "avg",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        super().__init__(handler, feature_layers, pooling, "concat", batch_size, progress)
        del self.combine  # members combine nothing: each sees one layer
        self.estimator = estimator
        self.weights = weights

    def _prototype(self) -> MetaModelRepurposer:
        if self.estimator is None:
            from repurpose.repurposers._lr import LogisticRegressionRepurposer

            return LogisticRegressionRepurposer()
        if not isinstance(self.estimator, MetaModelRepurposer):
            raise ValueError(
                f"estimator={self.estimator!r}; expected an unfitted MetaModelRepurposer "
                "(for example LogisticRegressionRepurposer())"
            )
        return self.estimator

    def _layer_weights(self, n: int) -> np.ndarray:
        if self.weights is None:
            return np.full(n, 1.0 / n)
        w = np.asarray(self.weights, dtype=float)
        if w.shape != (n,) or np.any(w < 0) or w.sum() <= 0:
            raise ValueError(
                f"weights={list(self.weights)!r}; expected {n} non-negative numbers "
                "(one per feature layer), not all zero"
            )
        return w / w.sum()

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        self._layer_weights(len(self.feature_layers_))
        prototype = self._prototype()
        self.members_ = []
        for layer in self.feature_layers_:
            member = clone(prototype).set_params(handler=None, feature_layers=[layer])
            member.fit_features({layer: features[layer]}, y)
            self.members_.append(member)

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        w = self._layer_weights(len(self.members_))
        probas = [m.predict_proba_features({k: features[k]}) for m, k
                  in zip(self.members_, self.feature_layers_, strict=True)]
        return np.tensordot(w, np.stack(probas), axes=1)

    # ----- saving: members are saved with their own ``save`` -----------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"n_members": len(self.members_)}, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self._n_saved_members = int(meta["n_members"])

    def _save_extra(self, path: Path) -> None:
        for i, member in enumerate(self.members_):
            member.save(path / MEMBERS_DIR / str(i), include_handler=False)

    def _load_extra(self, path: Path) -> None:
        from repurpose.repurposers._io import load

        self.members_ = [load(path / MEMBERS_DIR / str(i))
                         for i in range(self._n_saved_members)]
        del self._n_saved_members

    def _params_to_json(self) -> dict[str, Any]:
        params = super()._params_to_json()
        est = params.get("estimator")
        if est is not None:
            name = type(est)._registry_name
            if name is None:
                raise RepurposeError(
                    f"the ensemble's estimator {type(est).__name__} is not registered, so it "
                    "cannot be saved; decorate it with @repurpose.register_repurposer"
                )
            params["estimator"] = {"class": name, "params": est._params_to_json()}
        return params

    @classmethod
    def _params_from_json(cls, params: dict[str, Any]) -> dict[str, Any]:
        params = dict(params)
        est = params.get("estimator")
        if isinstance(est, dict):
            member_cls = get_repurposer_class(str(est["class"]))
            member_params = member_cls._params_from_json(dict(est["params"]))
            params["estimator"] = member_cls(**member_params)
        return params
