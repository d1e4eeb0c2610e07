"""Gaussian-process engine of :class:`GPRepurposer`, on plain feature arrays.

Model: Dirichlet-based GP classification (Milios et al., NeurIPS 2018). Each class ``c`` gets a
latent GP ``f_c``; the labels are turned into regression targets ``y_c = log(a_c) - s_c / 2``
with heteroscedastic Gaussian noise ``s_c = log(1 / a_c + 1)``, where ``a_c = eps + [y == c]``.
The latent GPs share one kernel and one constant prior mean, so far from the training data every
class falls back to the same prior and the prediction becomes uniform: high entropy.

Two fits share one model class, a whitened sparse variational GP (gpytorch ``ApproximateGP``):

- ``fit_exact`` maximises the exact marginal likelihood (Cholesky, O(n^3)), then writes the
  exact posterior into the sparse form with the training points as inducing points. Predictions
  then equal the exact GP's, and saving needs nothing but the model's state dict.
- ``fit_svgp`` trains the same model by minibatch ELBO with ``m`` inducing points initialised by
  k-means: O(n m^2) time per epoch and O(n) memory.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import gpytorch
import numpy as np
import torch
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultivariateNormal
from gpytorch.kernels import Kernel, MaternKernel, RBFKernel, ScaleKernel
from gpytorch.variational import CholeskyVariationalDistribution, VariationalStrategy
from tqdm.auto import tqdm

__all__ = [
    "DirichletSVGP", "build_kernel", "dirichlet_targets", "fit_exact", "fit_svgp",
    "loo_latent", "loo_temperature", "softmax_draws", "softmax_expectation",
]

KERNELS = ("rbf", "matern52")
MIN_LENGTHSCALE = 0.25  # relative to the median pairwise distance of the block


def dirichlet_targets(
    y: np.ndarray, n_classes: int, alpha_epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression targets and noise variances ``(n_classes, n)`` for labels ``y`` (0..C-1)."""
    onehot = np.zeros((n_classes, len(y)))
    onehot[y, np.arange(len(y))] = 1.0
    alpha = onehot + alpha_epsilon
    noise = np.log(1.0 / alpha + 1.0)
    targets = np.log(alpha) - noise / 2.0
    return torch.as_tensor(targets), torch.as_tensor(noise)


def build_kernel(
    blocks: Sequence[tuple[int, int]], kernel: str, ard: bool, scales: Sequence[float]
) -> Kernel:
    """Sum of one scaled kernel per feature block ``(start, stop)`` of the concatenated features.

    Lengthscales start at ``scales`` (one per block; the median pairwise distance works well),
    so that high-dimensional features do not start with an all-zero kernel matrix. They are
    kept above ``MIN_LENGTHSCALE`` times that scale: with few labels the marginal likelihood
    otherwise sometimes drives one block's lengthscale to 0, turning it into white noise that
    explains the training labels and predicts nothing.
    """
    parts = []
    for (start, stop), scale in zip(blocks, scales):
        dims = tuple(range(start, stop))
        ard_dims = len(dims) if ard else None
        bound = GreaterThan(MIN_LENGTHSCALE * float(scale))
        if kernel == "rbf":
            base: Kernel = RBFKernel(
                ard_num_dims=ard_dims, active_dims=dims, lengthscale_constraint=bound
            )
        else:
            base = MaternKernel(
                nu=2.5, ard_num_dims=ard_dims, active_dims=dims, lengthscale_constraint=bound
            )
        base.lengthscale = torch.full_like(base.lengthscale, float(scale))
        scaled = ScaleKernel(base)
        scaled.outputscale = 1.0 / len(blocks)
        parts.append(scaled)
    out = parts[0]
    for part in parts[1:]:
        out = out + part
    return out


def median_distance(x: np.ndarray, rng: np.random.Generator, max_points: int = 500) -> float:
    """Median pairwise Euclidean distance of (a random subset of) the rows of ``x``."""
    if len(x) > max_points:
        x = x[rng.choice(len(x), max_points, replace=False)]
    xt = torch.as_tensor(x, dtype=torch.float64)
    d = torch.cdist(xt, xt)
    vals = d[torch.triu_indices(len(x), len(x), offset=1).unbind()]
    med = float(vals.median()) if vals.numel() else 1.0
    return med if med > 1e-6 else 1.0


class DirichletSVGP(gpytorch.models.ApproximateGP):
    """``n_classes`` latent GPs with shared kernel, prior mean and inducing points (whitened SVGP).

    Args:
        inducing_points: Initial inducing inputs ``(m, d)``.
        n_classes: Number of latent functions.
        kernel: Covariance module over the ``d`` inputs.
        learn_inducing_locations: Whether training moves the inducing inputs.
    """

    def __init__(
        self,
        inducing_points: torch.Tensor,
        n_classes: int,
        kernel: Kernel,
        learn_inducing_locations: bool = True,
    ) -> None:
        dist = CholeskyVariationalDistribution(
            inducing_points.shape[0], batch_shape=torch.Size([n_classes])
        )
        strategy = VariationalStrategy(
            self, inducing_points, dist, learn_inducing_locations=learn_inducing_locations
        )
        super().__init__(strategy)
        self.mean_module = gpytorch.means.ConstantMean()
        self.covar_module = kernel

    def forward(self, x: torch.Tensor) -> MultivariateNormal:  # type: ignore[override]
        return MultivariateNormal(self.mean_module(x), self.covar_module(x))

    @torch.no_grad()
    def latent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and variance of the latent functions, each ``(n_classes, n)``."""
        f = self(x)
        return f.mean, f.variance.clamp_min(1e-10)


def _exact_objective(
    kernel: Kernel,
    mean: torch.Tensor,
    x: torch.Tensor,
    targets: torch.Tensor,
    members: Sequence[torch.Tensor],
    noise_in: float,
    noise_out: float,
) -> tuple[float, torch.Tensor]:
    """Negative exact log marginal likelihood per data point (summed over classes).

    Returns the value and a surrogate whose gradient equals the value's gradient: the gradient
    with respect to the kernel matrix has the closed form ``-(alpha alpha^T - A^{-1}) / 2``,
    much cheaper than differentiating through Cholesky factorisations.

    Class ``c``'s covariance is ``A_c = B - delta P_c`` with ``B = K + noise_out I`` shared by
    all classes and ``P_c`` selecting the ``n_c`` members of class ``c``: one Cholesky of
    ``B`` plus Woodbury updates of size ``n_c`` cost O(n^3) in total instead of O(C n^3).
    """
    n = x.shape[0]
    k = kernel(x).to_dense()
    with torch.no_grad():
        eye = torch.eye(n, dtype=k.dtype, device=k.device)
        chol_b, info = torch.linalg.cholesky_ex(k + noise_out * eye)
        if bool(info):
            chol_b = torch.linalg.cholesky(k + (noise_out + 1e-4) * eye)
        b_inv = torch.cholesky_inverse(chol_b)
        r = targets - mean
        beta = r @ b_inv  # (C, n): B^{-1} r_c
        logdet_b = 2.0 * torch.log(torch.diagonal(chol_b)).sum()
        delta = noise_out - noise_in
        alpha = beta.clone()
        a_inv_sum = len(members) * b_inv
        value = torch.zeros((), dtype=k.dtype, device=k.device)
        for c, idx in enumerate(members):
            value += logdet_b
            if len(idx) == 0:
                continue
            m = torch.eye(len(idx), dtype=k.dtype, device=k.device) / delta - b_inv[idx][:, idx]
            chol_m = torch.linalg.cholesky(m)
            cols = b_inv[:, idx]  # (n, n_c)
            alpha[c] += cols @ torch.cholesky_solve(beta[c, idx].unsqueeze(-1), chol_m).squeeze(-1)
            half = torch.linalg.solve_triangular(chol_m, cols.T, upper=False)  # (n_c, n)
            a_inv_sum += half.T @ half
            value += len(idx) * math.log(delta) + 2.0 * torch.log(torch.diagonal(chol_m)).sum()
        value += (r * alpha).sum() + targets.numel() * math.log(2 * math.pi)
        value = 0.5 * value / n
        grad_k = -0.5 * (alpha.T @ alpha - a_inv_sum) / n
        grad_mean = -alpha.sum() / n
    surrogate = (grad_k * k).sum() + grad_mean * mean
    return float(value), surrogate


def fit_exact(
    x: torch.Tensor,
    y: np.ndarray,
    n_classes: int,
    alpha_epsilon: float,
    kernel: Kernel,
    n_iter: int,
    progress: bool,
) -> DirichletSVGP:
    """Fit hyperparameters by exact marginal likelihood; return the posterior in sparse form.

    The hyperparameters are found by L-BFGS (at most ``n_iter`` evaluations) in float32: the
    Dirichlet noise (at least ``log 2``) keeps the matrices well conditioned. The posterior
    is then computed in float64 and the returned float64 model has the training points ``x``
    as its inducing points.
    """
    targets, noise = dirichlet_targets(y, n_classes, alpha_epsilon)
    targets, noise = targets.to(x.device), noise.to(x.device)
    noise_in, noise_out = float(noise.min()), float(noise.max())
    members = [torch.as_tensor(np.flatnonzero(y == c), device=x.device) for c in range(n_classes)]
    x32, t32 = x.float(), targets.float()
    kernel = kernel.float()
    mean = torch.nn.Parameter(t32.mean().reshape(()))
    opt = torch.optim.LBFGS(
        [*kernel.parameters(), mean], lr=1.0, max_iter=n_iter, line_search_fn="strong_wolfe"
    )
    bar = tqdm(total=n_iter, desc="GP (exact)", disable=not progress, leave=False)

    def closure() -> torch.Tensor:
        opt.zero_grad()
        value, surrogate = _exact_objective(
            kernel, mean, x32, t32, members, noise_in, noise_out
        )
        surrogate.backward()
        bar.update()
        return torch.tensor(value)

    opt.step(closure)
    bar.close()
    kernel = kernel.double()
    model = DirichletSVGP(x.clone(), targets.shape[0], kernel, learn_inducing_locations=False)
    model = model.to(device=x.device, dtype=torch.float64)
    with torch.no_grad():
        model.mean_module.constant.fill_(float(mean))
        _set_exact_posterior(model, x, targets - float(mean), noise)
    model.eval()
    return model


@torch.no_grad()
def _set_exact_posterior(
    model: DirichletSVGP, x: torch.Tensor, resid: torch.Tensor, noise: torch.Tensor
) -> None:
    """Write the exact posterior q(f(X)) into the whitened variational parameters.

    With ``K = L L^T`` (plus the strategy's jitter) and ``A_c = K + diag(noise_c)``, the exact
    posterior at the inducing points X in whitened coordinates is ``m_c = L^T A_c^{-1} r_c`` and
    ``S_c = I - L^T A_c^{-1} L``; SVGP prediction with these equals exact GP prediction.
    """
    n = x.shape[0]
    strategy = model.variational_strategy
    k = model.covar_module(x).to_dense()
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    chol_k = torch.linalg.cholesky(k + strategy.jitter_val * eye)
    a = k.unsqueeze(0) + torch.diag_embed(noise)
    chol_a = torch.linalg.cholesky(a)
    # B_c = L_A^{-1} L, so L^T A^{-1} = B^T L_A^{-1} and L^T A^{-1} L = B^T B.
    b = torch.linalg.solve_triangular(chol_a, chol_k.expand_as(a), upper=False)
    w = torch.linalg.solve_triangular(chol_a, resid.unsqueeze(-1), upper=False)
    m = (b.mT @ w).squeeze(-1)
    s = eye - b.mT @ b
    s = 0.5 * (s + s.mT)
    chol_s, info = torch.linalg.cholesky_ex(s + 1e-10 * eye)
    if bool(info.any()):
        evals, evecs = torch.linalg.eigh(s)
        chol_s = torch.linalg.cholesky(evecs @ torch.diag_embed(evals.clamp_min(1e-9)) @ evecs.mT)
    dist = strategy._variational_distribution
    dist.variational_mean.copy_(m)
    dist.chol_variational_covar.copy_(chol_s)
    # Otherwise gpytorch re-initialises q(u) from the prior on the first call.
    strategy.variational_params_initialized.fill_(1)


def init_inducing(x: np.ndarray, m: int, seed: int) -> np.ndarray:
    """``m`` inducing inputs: k-means centres of ``x`` (all of ``x`` when ``m >= len(x)``)."""
    if m >= len(x):
        return x.copy()
    from sklearn.cluster import MiniBatchKMeans

    km = MiniBatchKMeans(n_clusters=m, random_state=seed, n_init=1, batch_size=max(1024, 3 * m))
    sample = x
    if len(x) > 20 * m:
        sample = x[np.random.default_rng(seed).choice(len(x), 20 * m, replace=False)]
    return km.fit(sample).cluster_centers_.astype(x.dtype)


def _elbo_loss(
    model: DirichletSVGP, xb: torch.Tensor, yb: torch.Tensor, nb: torch.Tensor, n: int
) -> torch.Tensor:
    """Negative ELBO per data point; the Gaussian expected log-likelihood is analytic."""
    f = model(xb)
    mu, var = f.mean, f.variance
    ell = -0.5 * (torch.log(2 * math.pi * nb) + ((yb - mu) ** 2 + var) / nb)
    kl = model.variational_strategy.kl_divergence().sum()
    return -(ell.sum() * (n / xb.shape[0]) - kl) / n


def fit_svgp(
    x: torch.Tensor,
    targets: torch.Tensor,
    noise: torch.Tensor,
    model: DirichletSVGP,
    lr: float,
    n_epochs: int,
    batch_size: int,
    seed: int,
    progress: bool,
) -> DirichletSVGP:
    """Train ``model`` by minibatch ELBO for ``n_epochs`` passes over the rows of ``x``."""
    n = x.shape[0]
    with torch.no_grad():
        model.mean_module.constant.fill_(float(targets.mean()))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    bs = min(batch_size, n)
    for _ in tqdm(range(n_epochs), desc="GP (SVGP)", disable=not progress, leave=False):
        perm = torch.randperm(n, generator=gen)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            opt.zero_grad()
            loss = _elbo_loss(model, x[idx], targets[:, idx], noise[:, idx], n)
            loss.backward()
            opt.step()
    model.eval()
    return model


def _normal_draws(n_classes: int, n_samples: int) -> torch.Tensor:
    """Fixed standard-normal draws ``(n_samples, n_classes, 1)``: a scrambled Sobol sequence
    (quasi Monte Carlo: much lower error than pseudo-random draws for the same count)."""
    sobol = torch.quasirandom.SobolEngine(n_classes, scramble=True, seed=0)
    u = sobol.draw(n_samples, dtype=torch.float64).clamp(1e-9, 1 - 1e-9)
    return torch.special.ndtri(u).unsqueeze(-1)


@torch.no_grad()
def loo_latent(
    model: DirichletSVGP, x: torch.Tensor, y: np.ndarray, alpha_epsilon: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Leave-one-out mean and standard deviation of the latent values, each ``(C, n)``.

    The exact GP's closed form (Rasmussen and Williams 2006, section 5.4.2): for class ``c``
    with ``A_c = K + diag(noise_c)``, the mean is ``t_i - [A_c^-1 r_c]_i / [A_c^-1]_ii`` and
    the variance ``1 / [A_c^-1]_ii - noise_ci``, with the hyperparameters of the full fit.
    """
    n_classes = model.variational_strategy._variational_distribution.batch_shape[0]
    targets, noise = dirichlet_targets(y, n_classes, alpha_epsilon)
    targets, noise = targets.to(x), noise.to(x)
    k = model.covar_module(x).to_dense()
    a_inv = torch.cholesky_inverse(torch.linalg.cholesky(k.unsqueeze(0) + torch.diag_embed(noise)))
    resid = targets - model.mean_module.constant.to(x)
    diag = torch.diagonal(a_inv, dim1=-2, dim2=-1)
    mu = targets - (a_inv @ resid.unsqueeze(-1)).squeeze(-1) / diag
    return mu, (1.0 / diag - noise).clamp_min(1e-10).sqrt()


@torch.no_grad()
def loo_temperature(
    model: DirichletSVGP,
    x: torch.Tensor,
    y: np.ndarray,
    alpha_epsilon: float,
    n_samples: int,
    temperatures: Sequence[float] = tuple(np.geomspace(0.01, 2.0, 24)),
    variance_scales: Sequence[float] = (1.0, 0.3, 0.1, 0.03, 0.01),
) -> tuple[float, float]:
    """``(T, s)`` of ``E[softmax((mu + sqrt(s var) eps) / T)]`` minimising the LOO NLL.

    The exact GP's leave-one-out predictions have a closed form (for class ``c`` with
    ``A_c = K + diag(noise_c)``: mean ``t_i - [A_c^-1 r_c]_i / [A_c^-1]_ii`` and variance
    ``1 / [A_c^-1]_ii - noise_ci``), so both are fitted on the training data alone, without
    a held-out split. With few labels the Dirichlet targets leave the latent posterior wide
    and ``E[softmax]`` too flat: a temperature ``T < 1`` sharpens the mean and a variance
    scale ``s < 1`` narrows the spread. ``(1, 1)`` is kept unless another pair does better.
    """
    mu, sd = loo_latent(model, x, y, alpha_epsilon)
    eps = _normal_draws(mu.shape[0], n_samples).to(x)
    rows = torch.arange(len(y), device=x.device)
    labels = torch.as_tensor(y, device=x.device)
    best, best_loss = (1.0, 1.0), float("inf")
    for s in (1.0, *variance_scales):
        for t in (1.0, *temperatures):
            p = softmax_draws(mu, (s ** 0.5) * sd, eps, t).mean(0)[labels, rows]
            loss = float(-p.clamp_min(1e-12).log().mean())
            if loss < best_loss - 1e-9:
                best, best_loss = (float(t), float(s)), loss
    return best


@torch.no_grad()
def predict_latent_proba(
    model: DirichletSVGP,
    x: torch.Tensor,
    n_samples: int,
    batch_size: int = 1000,
    temperature: float = 1.0,
    variance_scale: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Monte-Carlo ``E[softmax(f / T)]``, ``f ~ N(mu, s var)``, and its std, each ``(n, C)``.

    The normal draws are fixed (quasi Monte Carlo), so predictions are deterministic.
    """
    model.eval()
    n_classes = model.variational_strategy._variational_distribution.batch_shape[0]
    eps = _normal_draws(n_classes, n_samples)
    probs, stds = [], []
    for start in range(0, x.shape[0], batch_size):
        mu, var = model.latent(x[start : start + batch_size])
        sd = (variance_scale * var.double()).sqrt()
        p = softmax_draws(mu.double(), sd, eps.to(mu.device), temperature)
        probs.append(p.mean(0).T)
        stds.append(p.std(0).T)
    proba = torch.cat(probs).cpu().numpy()
    return proba / proba.sum(1, keepdims=True), torch.cat(stds).cpu().numpy()


def softmax_draws(mu: torch.Tensor, sd: torch.Tensor, eps: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """``softmax((mu + sd eps) / T)`` per draw: ``(n_samples, C, n)`` from ``(C, n)``."""
    return torch.softmax((mu.unsqueeze(0) + sd.unsqueeze(0) * eps) / temperature, dim=1)


@torch.no_grad()
def softmax_expectation(mu: torch.Tensor, sd: torch.Tensor, n_samples: int,
                        temperature: float = 1.0) -> np.ndarray:
    """Quasi-Monte-Carlo ``E[softmax(f / T)]``, ``f ~ N(mu, sd^2)``, as ``(n, C)``."""
    eps = _normal_draws(mu.shape[0], n_samples).to(mu)
    return softmax_draws(mu, sd, eps, temperature).mean(0).T.cpu().numpy()
