"""A small torch multi-layer perceptron on extracted features, with early stopping."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import train_test_split
from torch import nn

from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._io import arrays_to_module_state, module_state_to_arrays
from repurpose.repurposers._registry import register_repurposer
from repurpose.repurposers._training import snapshot

__all__ = ["MLPRepurposer"]


@register_repurposer("mlp")
class MLPRepurposer(MetaModelRepurposer):
    """A small multi-layer perceptron (torch) trained on the handler's features.

    Training uses Adam with weight decay and stops early when the loss on a stratified
    validation split has not improved for ``patience`` epochs; the best weights are kept.
    With fewer than 2 examples in some class there is no validation split and training runs
    for ``max_epochs``.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : str or list of str, optional
        Layers to take features from.
    hidden_sizes : tuple of int
        Widths of the hidden layers (ReLU).
    dropout : float
        Dropout before each hidden layer's output.
    lr : float
        Adam learning rate.
    weight_decay : float
        L2 penalty.
    max_epochs : int
        Upper bound on training epochs.
    train_batch_size : int
        Mini-batch size of training.
    validation_fraction : float
        Share of the training set held out for early stopping.
    patience : int
        Epochs without validation improvement before stopping.
    random_state : int, optional
        Seed of the initialisation, the split and the batch order.
    device : str or torch.device
        Where to train and predict.
    pooling, combine, batch_size, progress
        See :class:`MetaModelRepurposer`.
    """

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        hidden_sizes: Sequence[int] = (128,),
        dropout: float = 0.1,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        max_epochs: int = 100,
        train_batch_size: int = 64,
        validation_fraction: float = 0.2,
        patience: int = 10,
        random_state: int | None = None,
        device: str | torch.device = "cpu",
        pooling: str | None = "avg",
        combine: str = "concat",
        batch_size: int = 64,
        progress: bool = True,
    ) -> None:
        super().__init__(handler, feature_layers, pooling, combine, batch_size, progress)
        self.hidden_sizes = hidden_sizes
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.train_batch_size = train_batch_size
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state
        self.device = device

    @classmethod
    def _test_instance(cls, handler: Any) -> MLPRepurposer:
        return cls(handler=handler, feature_layers=["fc6", "fc7"], max_epochs=20,
                   random_state=0, progress=False)

    def _build(self, in_dim: int) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = in_dim
        for h in self.hidden_sizes:
            layers += [nn.Linear(width, int(h)), nn.ReLU(), nn.Dropout(self.dropout)]
            width = int(h)
        layers.append(nn.Linear(width, self.n_classes_))
        return nn.Sequential(*layers)

    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        X = self._combine(features).astype(np.float32)
        seed = int(np.random.default_rng(self.random_state).integers(2**31))
        X_tr, y_tr, X_val, y_val = self._split(X, y, seed)
        self.input_dim_ = int(X.shape[1])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net = self._build(self.input_dim_).to(self.device)
            self.n_epochs_ = _train(net, X_tr, y_tr, X_val, y_val, self, seed)
        self.module_ = net.eval()

    def _split(
        self, X: np.ndarray, y: np.ndarray, seed: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
        n_val = int(round(self.validation_fraction * len(y)))
        if np.bincount(y).min() < 2 or n_val < self.n_classes_ or len(y) - n_val < self.n_classes_:
            return X, y, None, None
        X_tr, X_val, y_tr, y_val = train_test_split(
            X, y, test_size=n_val, stratify=y, random_state=seed
        )
        return X_tr, y_tr, X_val, y_val

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        X = torch.as_tensor(self._combine(features).astype(np.float32), device=self.device)
        with torch.no_grad():
            return torch.softmax(self.module_(X), dim=1).cpu().numpy().astype(np.float64)

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"input_dim": self.input_dim_, "n_epochs": self.n_epochs_}
        return meta, module_state_to_arrays(self.module_.state_dict(), "module.")

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.input_dim_ = int(meta["input_dim"])
        self.n_epochs_ = int(meta["n_epochs"])
        net = self._build(self.input_dim_)
        net.load_state_dict(arrays_to_module_state(arrays, "module."))
        self.module_ = net.to(self.device).eval()


def _train(
    net: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray | None,
    y_val: np.ndarray | None,
    opts: MLPRepurposer,
    seed: int,
) -> int:
    device = next(net.parameters()).device
    xt, yt = torch.as_tensor(X, device=device), torch.as_tensor(y, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator().manual_seed(seed)
    best, best_state, wait, epochs = np.inf, None, 0, 0
    for epoch in range(1, int(opts.max_epochs) + 1):
        epochs = epoch
        net.train()
        for idx in torch.randperm(len(yt), generator=gen).split(int(opts.train_batch_size)):
            opt.zero_grad()
            loss_fn(net(xt[idx]), yt[idx]).backward()
            opt.step()
        if X_val is None:
            continue
        val = _loss(net, X_val, y_val, loss_fn, device)
        if val < best - 1e-6:
            best, wait = val, 0
            best_state = snapshot(net)
        else:
            wait += 1
            if wait >= opts.patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return epochs


def _loss(net: nn.Module, X: np.ndarray, y: Any, loss_fn: nn.Module, device: Any) -> float:
    net.eval()
    with torch.no_grad():
        out = net(torch.as_tensor(X, device=device))
        return float(loss_fn(out, torch.as_tensor(y, device=device)))
