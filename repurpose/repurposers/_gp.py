"""Gaussian-process classification on extracted features (gpytorch)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from repurpose._validation import check_choice, check_int, check_number
from repurpose.repurposers import _gp_models as gpm
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._io import arrays_to_module_state, module_state_to_arrays
from repurpose.repurposers._predictive import UncertaintyMixin
from repurpose.repurposers._registry import register_repurposer

__all__ = ["GPRepurposer"]


@register_repurposer("gp")
class GPRepurposer(UncertaintyMixin, MetaModelRepurposer):
    """Multi-class Gaussian-process classifier on the handler's features.

    One GP model covers all classes: a Dirichlet-based GP classifier (Milios et al. 2018), i.e.
    one latent GP per class on log-transformed one-hot targets with heteroscedastic Gaussian
    noise. The latent GPs share one kernel and one constant prior mean, so predictions fall
    back to the uniform distribution (maximum entropy) far from the training data. Class
    probabilities are ``E[softmax(f)]`` over the Gaussian posterior of the latent values,
    computed with ``n_samples`` fixed quasi-Monte-Carlo draws (deterministic).

    Inference is exact (Cholesky; hyperparameters by L-BFGS on the marginal likelihood) for up
    to ``exact_threshold`` training points, and a sparse variational GP (SVGP; Adam on
    minibatches, ``n_inducing`` inducing points initialised by k-means) above it.

    Features are standardised per layer by the base class. With ``combine="concat"`` and
    ``kernel_per_layer=True`` (the default) the kernel is a sum of one scaled kernel per
    feature layer; otherwise one kernel on all features. Lengthscales start at the median
    pairwise distance of their layer's features.

    What ``save`` stores: the kernel hyperparameters, the prior mean, the inducing points and
    the variational parameters (mean and Cholesky factor of the covariance, one per class). An
    SVGP save holds no training data. An exact fit is stored in the same sparse form, with the
    (standardised) training features as inducing points and the exact posterior written into
    the variational parameters: loading re-solves nothing and predicts exactly as before, but
    the file holds the training features and ``n_classes * n**2`` numbers, so it grows as
    ``n**2`` up to ``exact_threshold``.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        Layers to take features from.
    kernel : {"rbf", "matern52"}
        Base kernel.
    kernel_per_layer : bool
        Sum of one kernel per feature layer (True) or one kernel on the concatenation.
    ard : bool
        One lengthscale per feature dimension instead of one per kernel.
    alpha_epsilon : float
        Dirichlet prior concentration of the classes a point does not belong to; smaller
        values give more confident predictions.
    exact_threshold : int
        Largest training set fitted by exact inference; larger ones use SVGP.
    n_inducing : int
        Number of inducing points of the SVGP.
    n_iter : int
        Maximum function evaluations of L-BFGS in exact inference.
    n_epochs : int
        Passes over the data in SVGP training.
    train_batch_size : int
        SVGP minibatch size.
    lr : float
        Adam learning rate of SVGP training.
    n_samples : int
        Quasi-Monte-Carlo draws for the predictive probabilities.
    temperature : "loo", float or None
        Probabilities are ``E[softmax(f / T)]`` with ``f ~ N(mu, s var)``. ``"loo"``
        (default) fits ``T`` and the variance scale ``s`` on the exact GP's closed-form
        leave-one-out predictions of the training data (the Dirichlet GP is otherwise
        under-confident with few labels); SVGP fits use ``T = s = 1``. A number fixes
        ``T`` (and ``s = 1``); None means ``T = s = 1``.
    random_state : int, optional
        Seed of k-means and minibatch order (SVGP).
    device : str or torch.device
        Device for training and prediction.
    pooling, combine, batch_size, progress
        See :class:`MetaModelRepurposer`.

    Examples
    --------
    >>> import numpy as np
    >>> import repurpose as rp
    >>> rng = np.random.default_rng(0)
    >>> feats = {"fc7": np.r_[rng.normal(0, 1, (20, 3)), rng.normal(3, 1, (20, 3))]}
    >>> gp = rp.GPRepurposer(progress=False).fit_features(feats, [0] * 20 + [1] * 20)
    >>> u = gp.predict_uncertainty_features({"fc7": np.array([[0.0, 0, 0], [30, -30, 30]])})
    >>> bool(u.entropy[1] > u.entropy[0])
    True
    """

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        kernel: str = "rbf",
        kernel_per_layer: bool = True,
        ard: bool = False,
        alpha_epsilon: float = 0.001,
        exact_threshold: int = 1000,
        n_inducing: int = 256,
        n_iter: int = 50,
        n_epochs: int = 20,
        train_batch_size: int = 512,
        lr: float = 0.02,
        n_samples: int = 256,
        random_state: int | None = None,
        device: str | torch.device = "cpu",
        pooling: str | None = "avg",
        combine: str = "concat",
        batch_size: int = 64,
        progress: bool = True,
        temperature: str | float | None = "loo",
    ) -> None:
        super().__init__(handler, feature_layers, pooling, combine, batch_size, progress)
        self.kernel = kernel
        self.kernel_per_layer = kernel_per_layer
        self.ard = ard
        self.alpha_epsilon = alpha_epsilon
        self.exact_threshold = exact_threshold
        self.n_inducing = n_inducing
        self.n_iter = n_iter
        self.n_epochs = n_epochs
        self.train_batch_size = train_batch_size
        self.lr = lr
        self.n_samples = n_samples
        self.temperature = temperature
        self.random_state = random_state
        self.device = device

    @classmethod
    def _test_instance(cls, handler: Any) -> GPRepurposer:
        return cls(handler=handler, feature_layers=["fc6", "fc7"], n_iter=20, progress=False)

    # ----- fitting -----------------------------------------------------------------------
    def _check_params(self) -> None:
        check_choice("kernel", self.kernel, gpm.KERNELS)
        checks = {
            "exact_threshold": (self.exact_threshold, 0),
            "n_inducing": (self.n_inducing, 1),
            "n_iter": (self.n_iter, 1),
            "n_epochs": (self.n_epochs, 1),
            "train_batch_size": (self.train_batch_size, 1),
            "n_samples": (self.n_samples, 2),
        }
        for name, (value, low) in checks.items():
            check_int(name, value, low)
        check_number("alpha_epsilon", self.alpha_epsilon, 0, 1, low_open=True, high_open=True)
        check_number("lr", self.lr, 0, low_open=True)
        if self.temperature not in ("loo", None):
            check_number("temperature", self.temperature, 0, low_open=True)

    def _blocks(self) -> list[tuple[int, int]]:
        dims = [self.feature_dims_[k] for k in self.feature_layers_]
        if self.combine == "average":
            return [(0, dims[0])]
        if not self.kernel_per_layer:
            return [(0, sum(dims))]
        bounds = np.cumsum([0, *dims])
        return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        self._check_params()
        seed = _seed(self.random_state)
        x = self._combine(features)
        blocks = self._blocks()
        rng = np.random.default_rng(seed)
        scales = [gpm.median_distance(x[:, a:b], rng) for a, b in blocks]
        kernel = gpm.build_kernel(blocks, self.kernel, self.ard, scales)
        eps = float(self.alpha_epsilon)
        dev = torch.device(self.device)
        self.exact_ = len(x) <= self.exact_threshold
        if self.exact_:
            xt = torch.as_tensor(x, dtype=torch.float64, device=dev)
            model = gpm.fit_exact(
                xt, y, self.n_classes_, eps, kernel.to(dev), self.n_iter, self.progress
            )
        else:
            targets, noise = gpm.dirichlet_targets(y, self.n_classes_, eps)
            z = gpm.init_inducing(x.astype(np.float32), self.n_inducing, seed)
            model = gpm.DirichletSVGP(torch.as_tensor(z), self.n_classes_, kernel).to(dev)
            model = gpm.fit_svgp(
                torch.as_tensor(x, dtype=torch.float32, device=dev),
                targets.float().to(dev),
                noise.float().to(dev),
                model,
                lr=float(self.lr),
                n_epochs=self.n_epochs,
                batch_size=self.train_batch_size,
                seed=seed,
                progress=self.progress,
            )
        self.model_ = model
        self.n_inducing_ = int(model.variational_strategy.inducing_points.shape[0])
        self.temperature_, self.variance_scale_ = self._fit_temperature(x, y)

    def _fit_temperature(self, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        if self.temperature is None or (self.temperature == "loo" and not self.exact_):
            return 1.0, 1.0
        if self.temperature != "loo":
            return float(self.temperature), 1.0
        xt = torch.as_tensor(x, dtype=torch.float64, device=torch.device(self.device))
        return gpm.loo_temperature(self.model_, xt, y, float(self.alpha_epsilon), 64)

    def _loo_proba_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> np.ndarray:
        """Closed-form leave-one-out class probabilities ``(n, C)`` of the training data.

        ``features`` and ``y`` (label codes) must be what the model was fitted on; exact
        inference only. The hyperparameters, temperature and variance scale are those of the
        full fit (the usual GP practice: Rasmussen and Williams 2006, section 5.4.2).
        """
        if not self.exact_:
            raise ValueError("leave-one-out needs exact inference; this fit used SVGP "
                             f"({self.n_inducing_} inducing points; raise exact_threshold)")
        x = torch.as_tensor(self._combine(features), dtype=torch.float64,
                            device=torch.device(self.device))
        mu, sd = gpm.loo_latent(self.model_, x, y, float(self.alpha_epsilon))
        return gpm.softmax_expectation(mu, sd * self.variance_scale_ ** 0.5, self.n_samples,
                                       self.temperature_)

    # ----- prediction --------------------------------------------------------------------
    def _sample_proba(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        param = next(self.model_.parameters())
        x = torch.as_tensor(self._combine(features), dtype=param.dtype, device=param.device)
        return gpm.predict_latent_proba(self.model_, x, self.n_samples,
                                        temperature=self.temperature_,
                                        variance_scale=self.variance_scale_)

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self._sample_proba(features)[0]

    # ----- saving ------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "exact": bool(self.exact_),
            "n_inducing": self.n_inducing_,
            "blocks": [list(b) for b in self._blocks()],
            "temperature": self.temperature_,
            "variance_scale": self.variance_scale_,
        }
        return meta, module_state_to_arrays(self.model_.state_dict(), prefix="gp.")

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        state = arrays_to_module_state(arrays, prefix="gp.")
        z = state["variational_strategy.inducing_points"]
        blocks = [(int(a), int(b)) for a, b in meta["blocks"]]
        kernel = gpm.build_kernel(blocks, self.kernel, self.ard, [1.0] * len(blocks))
        exact = bool(meta["exact"])
        model = gpm.DirichletSVGP(
            torch.zeros_like(z), self.n_classes_, kernel, learn_inducing_locations=not exact
        )
        model = model.to(dtype=z.dtype, device=torch.device(self.device))
        model.load_state_dict(state)
        model.eval()
        self.exact_ = exact
        self.n_inducing_ = int(meta["n_inducing"])
        # saves written before the temperature existed predict as they did then
        self.temperature_ = float(meta.get("temperature", 1.0))
        self.variance_scale_ = float(meta.get("variance_scale", 1.0))
        self.model_ = model


def _seed(random_state: int | None) -> int:
    if random_state is None:
        return int(np.random.default_rng().integers(2**31 - 1))
    return int(random_state)
