"""The Gated Transfer Network module (Kumar, Stanford CS231n report).

For ``n`` feature layers ``x_i`` (each standardised, then projected to a common width
``d`` by a learned linear map when the widths differ), the network computes gates
``z_i = sigmoid(W_i x_i + b_i)``, normalises them across the layers with a softmax per
dimension, ``r = softmax(z)``, combines ``g = sum_i r_i * x_i`` and classifies ``g`` with a
linear softmax layer.

That is the paper's gate (``gate="paper"``). Its shares are bounded: a softmax over values in
(0, 1) gives every layer at least ``1 / (1 + (n - 1) e)`` of each dimension (0.27 for two
layers), and each layer's full ``d x d`` gate matrix overfits a few labelled examples per
class. The other gates (an extension) lift one limit or the other:

``"temperature"``
    The paper's gate with a learnt temperature: ``r = softmax(z / t)``; as ``t`` falls the
    shares can approach 0 and 1.
``"softmax"``
    Unbounded gate logits ``a_i = W_i x_i + b_i`` (no sigmoid), ``r = softmax(a)``.
``"diagonal"``
    Unbounded logits from one weight and one bias per dimension: ``a_i = w_i * x_i + b_i``
    (``2 d`` parameters per layer instead of ``d^2 + d``).
``"lowrank"``
    Unbounded logits through a rank-``rank`` matrix: ``a_i = U_i V_i x_i + b_i``.
``"layer"``
    One unbounded logit per layer and sample, ``a_i = w_i . x_i + b_i``, shared by all
    dimensions: per-sample layer weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["GATES", "GatedNet"]

GATES = ("paper", "temperature", "softmax", "diagonal", "lowrank", "layer")


class _Diagonal(nn.Module):
    """Elementwise gate logits ``w * x + b`` (both start at zero)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight + self.bias


def _gate_module(gate: str, dim: int, rank: int) -> nn.Module:
    """One layer's gate-logit map; its output starts at zero (equal shares)."""
    if gate == "diagonal":
        return _Diagonal(dim)
    if gate == "lowrank":
        up = nn.Linear(int(rank), dim)
        nn.init.zeros_(up.weight)
        nn.init.zeros_(up.bias)
        return nn.Sequential(nn.Linear(dim, int(rank), bias=False), up)
    out = nn.Linear(dim, 1 if gate == "layer" else dim)
    nn.init.zeros_(out.weight)
    nn.init.zeros_(out.bias)
    return out


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
    gate : str
        The gate form, one of :data:`GATES` (see the module docstring); ``"paper"`` is
        the published one.
    rank : int
        The rank of the ``"lowrank"`` gate matrices.
    """

    def __init__(
        self, in_dims: Sequence[int], n_classes: int, dim: int | None = None,
        dropout: float = 0.0, project: bool | None = None, gate: str = "paper",
        rank: int = 8,
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
        if gate not in GATES:
            raise ValueError(f"gate={gate!r}; expected one of {list(GATES)}")
        self.kind = gate
        # Every gate starts from equal shares (r = 1/n): it then learns only the per-sample
        # deviations that the data supports, instead of starting from random mixing.
        self.gate = nn.ModuleList(_gate_module(gate, self.dim, rank) for _ in range(n))
        if gate == "temperature":
            self.log_temperature = nn.Parameter(torch.zeros(1))  # 1-d: safetensors-friendly
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
        z = torch.stack([g(h).expand_as(h) for g, h in zip(self.gate, hs, strict=True)], 1)
        if self.kind in ("paper", "temperature"):
            z = torch.sigmoid(z)
        if self.kind == "temperature":
            z = z / self.log_temperature.exp()
        return torch.softmax(z, dim=1)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        hs = self.project(xs)
        r = self._gates(hs)
        g = (r * torch.stack(hs, 1)).sum(1)
        return self.classifier(self.dropout(g))
