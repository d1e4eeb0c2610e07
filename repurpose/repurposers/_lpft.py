"""LP-FT pieces: a head that starts at the linear probe, and features cached from a frozen body.

LP-FT (Kumar et al., ICLR 2022) first fits the linear head on the frozen features (that is
the linear probe) and only then fine-tunes, so the pretrained features are not distorted by
the large early gradients of a random head. :class:`StandardizedHead` standardises the
pooled features with fixed training statistics (as the logistic-regression repurposer does)
before its linear layer, so the probe's coefficients are copied in unchanged and a feature
with a tiny spread does not get a huge raw weight that a small change of the body would
blow up. :func:`fit_probe_head` fits that probe with :class:`LogisticRegressionRepurposer`.

:func:`body_features` runs a body once over a split (eval mode, pooled): when nothing in the
body trains, the head is trained on these cached features instead of re-running the body
every epoch.

:func:`interpolate_weights` is WiSE-FT (Wortsman et al., CVPR 2022): the weights of the
LP-FT start (a ``_training.snapshot``) and of the fine-tuned network, averaged.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from repurpose.repurposers._lr import LogisticRegressionRepurposer
from repurpose.repurposers._network import Head, pool_features
from repurpose.repurposers._train_data import Split
from repurpose.repurposers._training import predict_logits

__all__ = ["StandardizedHead", "PooledBody", "body_features", "fit_probe_head",
           "has_dropout", "interpolate_weights"]


class StandardizedHead(nn.Module):
    """``Head`` on pooled features standardised with fixed (buffer) mean and scale."""

    mean: torch.Tensor
    scale: torch.Tensor

    def __init__(self, n_in: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(n_in))
        self.register_buffer("scale", torch.ones(n_in))
        self.head = Head(n_in, n_classes, None, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pool_features(x).flatten(1)
        return self.head((x - self.mean) / self.scale)

    @property
    def linear(self) -> nn.Linear:
        """The output layer (the probe's coefficients go here)."""
        layer = self.head.layers[-1]
        assert isinstance(layer, nn.Linear)
        return layer


class PooledBody(nn.Module):
    """``body(x)`` average-pooled over its spatial axes and flattened to ``(N, C)``."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pool_features(self.body(x)).flatten(1)


def has_dropout(module: nn.Module) -> bool:
    """Whether ``module`` holds a dropout layer (random in training mode, so not cacheable)."""
    return any(isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules())


def body_features(body: nn.Module, data: Split, batch_size: int, device: torch.device,
                  amp: bool = False, num_workers: int = 0) -> torch.Tensor:
    """The pooled body outputs ``(N, C)`` of ``data``: one pass in eval mode, on the CPU."""
    return predict_logits(PooledBody(body), data, batch_size, device, amp, num_workers)


def fit_probe_head(head: StandardizedHead, features: torch.Tensor, y: torch.Tensor,
                   C: float) -> LogisticRegressionRepurposer:
    """Fit the linear probe on ``features`` and copy it into ``head``; return the probe.

    Afterwards ``softmax(head(features))`` equals the probe's ``predict_proba`` (up to
    float32 rounding). A binary probe's single logit ``w x + b`` becomes the two logits
    ``-(w x + b) / 2`` and ``(w x + b) / 2``, whose softmax is the same sigmoid.
    """
    X = features.detach().cpu().double().numpy()
    labels = y.cpu().numpy()
    probe = LogisticRegressionRepurposer(C=C, progress=False)
    probe.fit_features({"features": X}, labels)
    coef, intercept = probe.model_.coef_, probe.model_.intercept_
    if coef.shape[0] == 1:  # sklearn's binary model: one logit
        coef, intercept = np.r_[-coef, coef] / 2, np.r_[-intercept, intercept] / 2
    n_classes = head.linear.out_features
    weight = np.zeros((n_classes, X.shape[1]))
    bias = np.full(n_classes, -1e4)  # classes missing from the data stay improbable
    weight[probe.classes_] = coef
    bias[probe.classes_] = intercept
    with torch.no_grad():
        head.mean.copy_(torch.as_tensor(probe.feature_mean_["features"]))
        head.scale.copy_(torch.as_tensor(probe.feature_scale_["features"]))
        head.linear.weight.copy_(torch.as_tensor(weight))
        head.linear.bias.copy_(torch.as_tensor(bias))
    return probe


def interpolate_weights(model: nn.Module, start: dict[str, torch.Tensor], alpha: float
                        ) -> None:
    """Set every floating-point entry of ``model``'s state to ``(1-alpha)*start + alpha*now``.

    This is WiSE-FT's weight-space ensemble; integer buffers (a BatchNorm's batch count) keep
    their trained value.
    """
    state = model.state_dict()
    with torch.no_grad():
        for key, now in state.items():
            if now.is_floating_point():
                now.copy_(torch.lerp(start[key].to(now.device), now, alpha))
