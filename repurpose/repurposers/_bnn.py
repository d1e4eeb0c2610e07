"""Bayesian neural network on extracted features (mean-field variational inference)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from repurpose._validation import check_int, check_number
from repurpose.repurposers import _bnn_models as bbm
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._io import arrays_to_module_state, module_state_to_arrays
from repurpose.repurposers._predictive import UncertaintyMixin
from repurpose.repurposers._registry import register_repurposer

__all__ = ["BNNRepurposer"]


@register_repurposer("bnn")
class BNNRepurposer(UncertaintyMixin, MetaModelRepurposer):
    """Bayesian neural network (Bayes by backprop) on the handler's features.

    Every weight has a factorised Gaussian posterior, trained by maximising the evidence lower
    bound with the local reparameterisation trick and a KL weight annealed from 0 to 1 over the
    first ``kl_warmup`` fraction of the steps. Predictive probabilities are the Monte-Carlo
    average of the softmax outputs over ``n_samples`` posterior draws (not vote counts), so
    they are smooth, and reproducible: the draws are seeded by ``random_state``.

    Why mean-field VI rather than a Laplace approximation: it needs no extra dependency, it
    trains the whole network (not just a last layer around a MAP point), it runs on any device
    with plain torch, and its state is just two tensors per weight matrix (posterior means and
    scales), which save as safetensors. A Laplace approximation would add ``laplace-torch``
    and its Hessian machinery for the same small feature-space networks.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        Layers to take features from.
    hidden : tuple of int
        Hidden-layer widths; ``()`` gives Bayesian multinomial logistic regression.
    prior_std : float
        Standard deviation of the Gaussian prior on every weight.
    n_iter : int
        Gradient steps.
    train_batch_size : int
        Minibatch size (the whole set if smaller).
    lr : float
        Adam learning rate.
    kl_warmup : float
        Fraction of the steps over which the KL weight rises from 0 to ``kl_weight``
        (0: no annealing).
    kl_weight : float
        Final weight of the KL term: 1 is the evidence lower bound proper; smaller values
        give a tempered ("cold") posterior, closer to the maximum a posteriori fit.
    n_samples : int
        Posterior draws averaged at prediction time.
    random_state : int, optional
        Seed of initialisation, minibatches, training noise and predictive draws.
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
    >>> bnn = rp.BNNRepurposer(n_iter=200, progress=False, random_state=0)
    >>> bnn = bnn.fit_features(feats, [0] * 20 + [1] * 20)
    >>> bnn.predict_proba_features(feats).shape
    (40, 2)
    """

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        hidden: Sequence[int] = (),
        prior_std: float = 1.0,
        n_iter: int = 1000,
        train_batch_size: int = 128,
        lr: float = 0.01,
        kl_warmup: float = 0.5,
        kl_weight: float = 0.1,
        n_samples: int = 100,
        random_state: int | None = None,
        device: str | torch.device = "cpu",
        pooling: str | None = "avg",
        combine: str = "concat",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        super().__init__(handler, feature_layers, pooling, combine, batch_size, progress)
        self.hidden = hidden
        self.prior_std = prior_std
        self.n_iter = n_iter
        self.train_batch_size = train_batch_size
        self.lr = lr
        self.kl_warmup = kl_warmup
        self.kl_weight = kl_weight
        self.n_samples = n_samples
        self.random_state = random_state
        self.device = device

    @classmethod
    def _test_instance(cls, handler: Any) -> BNNRepurposer:
        return cls(
            handler=handler, feature_layers=["fc6", "fc7"], n_iter=100, n_samples=20,
            progress=False,
        )

    def _check_params(self) -> list[int]:
        hidden = list(self.hidden)
        if not all(isinstance(h, int | np.integer) and h > 0 for h in hidden):
            raise ValueError(f"hidden={self.hidden!r}; use a tuple of positive layer widths")
        for name in ("n_iter", "train_batch_size", "n_samples"):
            check_int(name, getattr(self, name), 1)
        for name in ("prior_std", "lr"):
            check_number(name, getattr(self, name), 0, low_open=True)
        check_number("kl_weight", self.kl_weight, 0, 1, low_open=True)
        check_number("kl_warmup", self.kl_warmup, 0, 1)
        return [int(h) for h in hidden]

    def _make_net(self, in_features: int, hidden: list[int]) -> bbm.BayesMLP:
        net = bbm.BayesMLP(in_features, hidden, self.n_classes_, float(self.prior_std))
        return net.to(torch.device(self.device))

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        hidden = self._check_params()
        seed = (
            int(np.random.default_rng().integers(2**31 - 1))
            if self.random_state is None
            else int(self.random_state)
        )
        x = self._combine(features)
        torch_state = torch.random.get_rng_state()
        torch.manual_seed(seed)  # weight initialisation only
        net = self._make_net(x.shape[1], hidden)
        torch.random.set_rng_state(torch_state)
        dev = torch.device(self.device)
        bbm.train_bbb(
            net,
            torch.as_tensor(x, dtype=torch.float32, device=dev),
            torch.as_tensor(y, dtype=torch.long, device=dev),
            n_iter=int(self.n_iter),
            batch_size=int(self.train_batch_size),
            lr=float(self.lr),
            kl_warmup=float(self.kl_warmup),
            kl_weight=float(self.kl_weight),
            seed=seed,
            progress=self.progress,
        )
        self.net_ = net
        self.seed_ = seed

    def _sample_proba(self, features: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        x = torch.as_tensor(
            self._combine(features), dtype=torch.float32, device=torch.device(self.device)
        )
        return bbm.predict_mc(self.net_, x, int(self.n_samples), self.seed_)

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        return self._sample_proba(features)[0]

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        layers: list[bbm.BayesLinear] = list(self.net_.layers)  # type: ignore[arg-type]
        widths = [int(layer.weight_mu.shape[1]) for layer in layers]
        meta = {"seed": self.seed_, "in_features": widths[0], "hidden": widths[1:]}
        return meta, module_state_to_arrays(self.net_.state_dict(), prefix="net.")

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        net = self._make_net(int(meta["in_features"]), [int(h) for h in meta["hidden"]])
        net.load_state_dict(arrays_to_module_state(arrays, prefix="net."))
        net.eval()
        self.net_ = net
        self.seed_ = int(meta["seed"])
