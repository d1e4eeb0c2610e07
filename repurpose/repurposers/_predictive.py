"""Predictive uncertainty shared by the Bayesian repurposers (GP and BNN)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from repurpose.metrics import predictive_entropy

__all__ = ["Uncertainty", "UncertaintyMixin"]


class Uncertainty(NamedTuple):
    """What :meth:`predict_uncertainty` returns.

    Attributes:
        proba: Predictive class probabilities ``(n, n_classes)`` (Monte-Carlo average).
        std: Per-class standard deviation of the class probability under the posterior,
            ``(n, n_classes)``.
        entropy: Predictive entropy of ``proba`` in nats, ``(n,)``; high for inputs the model
            is unsure about (including out-of-distribution inputs).
    """

    proba: np.ndarray
    std: np.ndarray
    entropy: np.ndarray


class UncertaintyMixin:
    """Adds ``predict_uncertainty`` to a meta-model repurposer with a ``_sample_proba`` hook.

    The hook takes checked features and returns ``(proba, std)``.
    """

    def _sample_proba(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def predict_uncertainty(self, X: Any) -> Uncertainty:
        """Predictive probabilities with their per-class std and the predictive entropy.

        Args:
            X: Inputs, as for ``predict_proba``.

        Returns:
            :class:`Uncertainty` ``(proba, std, entropy)``.
        """
        self._check_fitted()  # type: ignore[attr-defined]
        self._check_input_shape(X)  # type: ignore[attr-defined]
        data, _ = self._prepare(X, None, labels=False)  # type: ignore[attr-defined]
        return self.predict_uncertainty_features(data)

    def predict_uncertainty_features(self, features: Any) -> Uncertainty:
        """:meth:`predict_uncertainty` on precomputed features ``{layer: (n, D)}``.

        Args:
            features: One array per feature layer.

        Returns:
            :class:`Uncertainty` ``(proba, std, entropy)``.
        """
        from repurpose.repurposers._base import _select

        self._check_fitted()  # type: ignore[attr-defined]
        checked = _select(dict(features), self.feature_layers_)  # type: ignore[attr-defined]
        dims = self.feature_dims_  # type: ignore[attr-defined]
        for name, arr in checked.items():
            if arr.shape[1] != dims[name]:
                raise ValueError(
                    f"layer {name!r} has {arr.shape[1]} features per sample, but this "
                    f"repurposer was fitted with {dims[name]}"
                )
        proba, std = self._sample_proba(checked)
        return Uncertainty(proba, std, predictive_entropy(proba))
