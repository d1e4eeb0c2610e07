"""The Gated Transfer Network module (Kumar, Stanford CS231n report).

For ``n`` feature layers ``x_i`` (each standardised, then projected to a common width
``d`` by a learned linear map when the widths differ), the network computes gates
``z_i = sigmoid(W_i x_i + b_i)``, normalises them across the layers with a softmax per
dimension, ``r = softmax(z)``, combines ``g = sum_i r_i * x_i`` and classifies ``g`` with a
linear softmax layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GatedNet"]


class GatedNet(nn.Module):
    """Gate several feature vectors into one and classify it.

    Parameters
    ----------
    in_dims : sequence of int
        Width of each feature layer, in order.
    n_classes : int
    dim : int, optional
        The common width ``d``. Default: the width shared by all layers; when the widths
        differ, the smallest one. A layer whose width is not ``d`` is projected linearly.
    dropout : float
        Dropout on the combined vector ``g`` (training only).
    project : bool, optional
        Learn a linear projection for every layer (True), for none (False), or only for the
        layers whose width is not ``d`` (None, the paper's choice).
    """

    def __init__(
        self, in_dims: Sequence[int], n_classes: int, dim: int | None = None,
        dropout: float = 0.0, project: bool | None = None,
    ) -> None:
        super().__init__()
        self.in_dims = [int(d) for d in in_dims]
        self.dim = int(dim) if dim is not None else (
            self.in_dims[0] if len(set(self.in_dims)) == 1 else min(self.in_dims)
        )
        n = len(self.in_dims)
        # Per-layer standardisation, fitted on the training set (buffers: saved with the model).
        for i, d in enumerate(self.in_dims):
            self.register_buffer(f"mean{i}", torch.zeros(d))
            self.register_buffer(f"scale{i}", torch.ones(d))
        self.proj = nn.ModuleList(
            nn.Linear(d, self.dim) if project or (project is None and d != self.dim)
            else nn.Identity()
            for d in self.in_dims
        )
        if project is False and any(d != self.dim for d in self.in_dims):
            raise ValueError(
                f"project=False needs layers of width dim={self.dim}; got widths {self.in_dims}"
            )
        gates = [nn.Linear(self.dim, self.dim) for _ in range(n)]
        for gate in gates:
            # Start from equal shares (r = 1/n): the gates then learn only the per-sample
            # deviations that the data supports, instead of starting from random mixing.
            nn.init.zeros_(gate.weight)
            nn.init.zeros_(gate.bias)
        self.gate = nn.ModuleList(gates)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(self.dim, n_classes)

    @torch.no_grad()
    def set_standardisation(self, features: Sequence[torch.Tensor]) -> None:
        """Fit the per-layer mean and scale on training features ``(N, D_i)``."""
        for i, x in enumerate(features):
            x = x.float()
            mean = x.mean(0)
            std = x.std(0, unbiased=False) if len(x) > 1 else torch.ones_like(mean)
            getattr(self, f"mean{i}").copy_(mean)
            getattr(self, f"scale{i}").copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))

    def project(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Standardise and project each layer to the common width: a list of ``(B, d)``."""
        out = []
        for i, x in enumerate(xs):
            x = x.flatten(1).float()
            x = (x - getattr(self, f"mean{i}")) / getattr(self, f"scale{i}")
            out.append(self.proj[i](x))
        return out

    def gates(self, *xs: torch.Tensor) -> torch.Tensor:
        """Normalised gates ``r``: ``(B, n_layers, d)``, summing to 1 over the layers."""
        return self._gates(self.project(xs))

    def _gates(self, hs: Sequence[torch.Tensor]) -> torch.Tensor:
        z = torch.stack([torch.sigmoid(g(h)) for g, h in zip(self.gate, hs, strict=True)], 1)
        return torch.softmax(z, dim=1)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        hs = self.project(xs)
        r = self._gates(hs)
        g = (r * torch.stack(hs, 1)).sum(1)
        return self.classifier(self.dropout(g))
