"""Bayes-by-backprop engine of :class:`BNNRepurposer`: mean-field Gaussian VI in plain torch.

Each weight ``w`` has a factorised Gaussian posterior ``N(mu, softplus(rho)^2)`` and prior
``N(0, prior_std^2)``. Training maximises the ELBO with the local reparameterisation trick
(pre-activations are sampled instead of weights: lower-variance gradients, one draw per
example) and a KL weight annealed linearly from 0 to 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["BayesLinear", "BayesMLP", "predict_mc", "train_bbb"]


class BayesLinear(nn.Module):
    """Linear layer with a mean-field Gaussian posterior over weights and biases.

    Args:
        in_features: Input width.
        out_features: Output width.
        prior_std: Standard deviation of the zero-mean Gaussian prior.
        init_std: Initial posterior standard deviation.
    """

    def __init__(
        self, in_features: int, out_features: int, prior_std: float = 1.0, init_std: float = 1e-3
    ) -> None:
        super().__init__()
        self.prior_std = prior_std
        rho = math.log(math.expm1(init_std))
        self.weight_mu = nn.Parameter(torch.empty(out_features, in_features))
        self.weight_rho = nn.Parameter(torch.full((out_features, in_features), rho))
        self.bias_mu = nn.Parameter(torch.zeros(out_features))
        self.bias_rho = nn.Parameter(torch.full((out_features,), rho))
        nn.init.normal_(self.weight_mu, std=1.0 / math.sqrt(in_features))

    def forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Sampled pre-activations (local reparameterisation), one draw per row of ``x``."""
        mean = F.linear(x, self.weight_mu, self.bias_mu)
        var = F.linear(x * x, F.softplus(self.weight_rho) ** 2, F.softplus(self.bias_rho) ** 2)
        eps = torch.randn(mean.shape, generator=gen, dtype=mean.dtype, device=mean.device)
        return mean + var.clamp_min(1e-16).sqrt() * eps

    def kl(self) -> torch.Tensor:
        """KL divergence from the posterior to the prior, summed over all weights."""
        total = torch.zeros((), dtype=self.weight_mu.dtype, device=self.weight_mu.device)
        for mu, rho in ((self.weight_mu, self.weight_rho), (self.bias_mu, self.bias_rho)):
            sigma = F.softplus(rho)
            ratio = sigma / self.prior_std
            total = total + 0.5 * torch.sum(
                ratio**2 + (mu / self.prior_std) ** 2 - 1.0 - 2.0 * torch.log(ratio)
            )
        return total


class BayesMLP(nn.Module):
    """Stack of :class:`BayesLinear` layers with ReLU between them; outputs logits.

    Args:
        in_features: Input width.
        hidden: Hidden-layer widths (empty: Bayesian multinomial logistic regression).
        n_classes: Number of outputs.
        prior_std: Prior standard deviation of every weight.
        init_std: Initial posterior standard deviation.
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        n_classes: int,
        prior_std: float,
        init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden, n_classes]
        self.layers = nn.ModuleList(
            BayesLinear(a, b, prior_std, init_std) for a, b in zip(widths[:-1], widths[1:])
        )

    def forward(self, x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x, gen)
            if i < len(self.layers) - 1:
                x = F.relu(x)
        return x

    def kl(self) -> torch.Tensor:
        """Total KL divergence from the posterior to the prior."""
        layers: list[BayesLinear] = list(self.layers)  # type: ignore[arg-type]
        total = layers[0].kl()
        for layer in layers[1:]:
            total = total + layer.kl()
        return total


def train_bbb(
    net: BayesMLP,
    x: torch.Tensor,
    y: torch.Tensor,
    n_iter: int,
    batch_size: int,
    lr: float,
    kl_warmup: float,
    seed: int,
    progress: bool,
    kl_weight: float = 1.0,
) -> None:
    """Maximise the ELBO by Adam on minibatches; the KL weight rises linearly to ``kl_weight``.

    ``kl_warmup`` is the fraction of the ``n_iter`` steps over which the KL weight goes from 0
    to ``kl_weight`` (0 disables annealing). ``kl_weight`` 1 is the true ELBO; below 1 gives a
    tempered posterior.
    """
    n = x.shape[0]
    gen = torch.Generator(device=x.device).manual_seed(seed)
    order_gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    bs = min(batch_size, n)
    warm = max(1, int(kl_warmup * n_iter))
    perm = torch.randperm(n, generator=order_gen)
    pos = 0
    net.train()
    for step in tqdm(range(n_iter), desc="BNN", disable=not progress, leave=False):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=order_gen), 0
        idx = perm[pos : pos + bs].to(x.device)
        pos += bs
        beta = kl_weight * (min(1.0, (step + 1) / warm) if kl_warmup > 0 else 1.0)
        opt.zero_grad()
        nll = F.cross_entropy(net(x[idx], gen), y[idx])
        loss = nll + beta * net.kl().to(nll.device) / n
        loss.backward()
        opt.step()
    net.eval()


@torch.no_grad()
def predict_mc(
    net: BayesMLP, x: torch.Tensor, n_samples: int, seed: int, batch_size: int = 1024
) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo mean and std of the softmax outputs over ``n_samples`` posterior draws.

    Draws come from a generator seeded with ``seed`` per batch of rows, so predictions are
    reproducible.
    """
    means, stds = [], []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        gen = torch.Generator(device=x.device).manual_seed(seed + start)
        rep = xb.unsqueeze(0).expand(n_samples, *xb.shape).reshape(-1, xb.shape[1])
        p = torch.softmax(net(rep, gen).double(), dim=-1).reshape(n_samples, xb.shape[0], -1)
        means.append(p.mean(0))
        stds.append(p.std(0))
    proba = torch.cat(means).cpu().numpy()
    return proba / proba.sum(1, keepdims=True), torch.cat(stds).cpu().numpy()
