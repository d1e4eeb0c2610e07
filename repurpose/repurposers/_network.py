"""Shared machinery of the repurposers that train a torch network (fine-tuning and friends).

:class:`NetworkRepurposer` holds the training hyperparameters common to every network
repurposer and does the work around the :class:`Trainer`: building the parameter groups
(head at ``lr``, body at ``lr * body_lr_mult`` with optional layer decay), the validation
split, early stopping, predicting, and saving the weights. A subclass only builds its
network: :meth:`NetworkRepurposer._build_body` and :meth:`NetworkRepurposer._build_head`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import RepurposeError
from repurpose.graph import GraphNet
from repurpose.repurposers._base import Repurposer
from repurpose.repurposers._freezing import frozen_norm_layers
from repurpose.repurposers._io import arrays_to_module_state, module_state_to_arrays
from repurpose.repurposers._param_groups import (
    NORM_TYPES,
    LayerParams,
    body_lr_scales,
    build_param_groups,
    layers_from_modules,
)
from repurpose.repurposers._training import (
    Trainer,
    TrainSettings,
    predict_logits,
    split_validation,
)

__all__ = ["NetworkRepurposer", "ClassifierNet", "Head", "layer_modules", "pool_features",
           "TRAIN_PARAMS"]

# Constructor arguments that configure the training loop (shared by the network repurposers).
TRAIN_PARAMS = ("lr", "optimizer", "momentum", "weight_decay", "l2sp", "schedule",
                "max_epochs", "batch_size", "clip_grad_norm", "patience", "unfreeze_after",
                "augment", "amp", "checkpoint_dir", "callbacks", "progress")
Data = tuple[tuple[torch.Tensor, ...], torch.Tensor]
# Not JSON-able (callables); saved as None, since predictions do not depend on them.
_RUNTIME_ONLY = ("augment", "callbacks")


def pool_features(x: torch.Tensor) -> torch.Tensor:
    """Average spatial axes away: ``(N, C, ...)`` -> ``(N, C)``; 2-D input is returned as is."""
    return x.flatten(2).mean(2) if x.ndim > 2 else x


def layer_modules(module: nn.Module, names: Sequence[str]) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` for each layer name that is a module (functional ops are skipped)."""
    if isinstance(module, GraphNet):
        known = set(module.layer_names)
        return [(n, module.layer(n)) for n in names if n in known]
    modules = dict(module.named_modules())
    return [(n, modules[n]) for n in names if n in modules]


class Head(nn.Module):
    """New classifier: pool spatial axes, optional hidden layer, linear output layer."""

    def __init__(self, n_in: int, n_classes: int, n_hidden: int | None = None,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        if n_hidden:
            layers += [nn.Linear(n_in, int(n_hidden)), nn.ReLU()]
            n_in = int(n_hidden)
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(n_in, n_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(pool_features(x).flatten(1))


class ClassifierNet(nn.Module):
    """``head(*body(x))``: a (pretrained) body and a new head."""

    def __init__(self, body: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        return self.head(*feats) if isinstance(feats, tuple | list) else self.head(feats)


@dataclass
class Body:
    """A network body and its layers in input-to-output order.

    ``fresh`` names layers that are newly initialised (trained like the head: full rate,
    no L2-SP anchor).
    """

    module: nn.Module
    layers: list[tuple[str, nn.Module]]
    fresh: frozenset[str] = frozenset()


class NetworkRepurposer(Repurposer):
    """Base of repurposers that train a body (from the handler) plus a new head.

    Subclasses define ``__init__`` (storing all parameters, including every name in
    ``TRAIN_PARAMS`` plus ``body_lr_mult``, ``layer_decay``, ``validation_fraction``,
    ``device`` and ``random_state``), :meth:`_build_body` and :meth:`_build_head`.
    """

    body_lr_mult: float = 0.1
    layer_decay: float | None = None
    validation_fraction: float = 0.1
    device: Any = None
    random_state: int | None = None
    model_: ClassifierNet
    history_: dict[str, list[float]]

    # ----- hooks -------------------------------------------------------------------------
    def _build_body(self) -> Body:
        """Build the body from ``self.handler`` (a copy: never the handler's own module)."""
        raise NotImplementedError

    def _build_head(self, widths: list[int], n_classes: int) -> nn.Module:
        """Build the head for body outputs of the given (pooled) widths."""
        raise NotImplementedError

    # ----- fit / predict -----------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, *, X_val: Any = None, y_val: Any = None
            ) -> NetworkRepurposer:
        """Train the network.

        Parameters
        ----------
        X : ndarray, Tensor, Dataset, DataLoader or path
            Inputs (N, ...), data yielding ``(input, label)`` pairs, or an image folder.
        y : array-like of shape (N,), optional
            Labels of any sortable type; if None, taken from ``X``'s pairs.
        X_val, y_val : optional
            A validation set for early stopping (then ``validation_fraction`` is ignored).

        Returns
        -------
        self
        """
        self._val_data = (X_val, y_val)
        try:
            super().fit(X, y)
        finally:
            del self._val_data
        return self

    def _device(self) -> torch.device:
        if self.device is not None:
            return torch.device(self.device)
        return torch.device(getattr(self.handler, "device", "cpu"))

    def _seed(self) -> int:
        if self.random_state is None:
            return int(np.random.default_rng().integers(2**31 - 1))
        return int(self.random_state)

    def _settings(self, seed: int) -> TrainSettings:
        values = {k: getattr(self, k) for k in TRAIN_PARAMS}
        values["callbacks"] = tuple(values["callbacks"] or ())
        return TrainSettings(**values, device=self._device(), seed=seed)

    def _build_model(self, sample: torch.Tensor | None, widths: list[int] | None,
                     seed: int) -> tuple[ClassifierNet, Body]:
        if self.handler is None:
            raise ValueError(f"{type(self).__name__} needs handler=ModelHandler(...)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            body = self._build_body()
            if widths is None:
                widths = _output_widths(body.module, sample)
            head = self._build_head(widths, self.n_classes_)
        self.head_widths_ = list(widths)
        return ClassifierNet(body.module, head), body

    def _param_layers(self, model: ClassifierNet, body: Body) -> list[LayerParams]:
        pretrained = [(n, m) for n, m in body.layers if n not in body.fresh]
        fresh = [(n, m) for n, m in body.layers if n in body.fresh]
        layers = layers_from_modules(pretrained, pretrained=True)
        covered = {id(p) for layer in layers for p in layer.params}
        covered |= {id(p) for _, m in fresh for p in m.parameters()}
        rest = [p for p in body.module.parameters() if p.requires_grad and id(p) not in covered]
        if rest:  # parameters held by containers rather than by a listed layer
            layers.insert(0, LayerParams("body.other", [p for p in rest if p.ndim > 1],
                                         [p for p in rest if p.ndim <= 1], 1.0, True))
        for layer, scale in zip(layers, body_lr_scales(len(layers), float(self.body_lr_mult),
                                                       self.layer_decay), strict=True):
            layer.lr_scale = scale
        layers += layers_from_modules(fresh, pretrained=False)
        layers += layers_from_modules([("head", model.head)], pretrained=False)
        return layers

    def _fit(self, X: Any, y: np.ndarray) -> None:
        seed = self._seed()
        if not isinstance(X, torch.Tensor):
            raise RepurposeError(f"{type(self).__name__} expected a tensor of inputs")
        model, body = self._build_model(X[:2], None, seed)
        layers = self._param_layers(model, body)
        settings = self._settings(seed)
        groups = build_param_groups(layers, float(self.lr), float(self.weight_decay),
                                    l2sp=float(self.l2sp))
        body_params = [p for p in body.module.parameters() if p.requires_grad]
        anchored = [p for layer in layers if layer.pretrained for p in layer.params]
        trainer = Trainer(
            model, groups, settings, frozen_norms=frozen_norm_layers(model),
            body_params=body_params,
            body_norms=[m for m in body.module.modules() if isinstance(m, NORM_TYPES)],
            l2sp_params=anchored,
        )
        (inputs, labels), val = self._split(X, y, seed)
        self.history_ = trainer.fit(inputs, labels, val)
        self.model_ = model.eval()

    def _split(self, X: torch.Tensor, y: np.ndarray, seed: int) -> tuple[Data, Data | None]:
        X_val, y_val = getattr(self, "_val_data", (None, None))
        yt = torch.as_tensor(y, dtype=torch.long)
        if X_val is not None:
            data, labels = self._prepare(X_val, y_val, labels=True)
            return ((X,), yt), ((data,), torch.as_tensor(self._encode_known(labels)))
        train_idx, val_idx = split_validation(y, float(self.validation_fraction), seed)
        tr = torch.as_tensor(train_idx)
        train = ((X[tr],), yt[tr])
        if val_idx is None:
            return train, None
        va = torch.as_tensor(val_idx)
        return train, ((X[va],), yt[va])

    def _encode_known(self, labels: Any) -> np.ndarray:
        labels = np.asarray(labels).ravel()
        codes = np.searchsorted(self.classes_, labels)
        codes = np.clip(codes, 0, len(self.classes_) - 1)
        unknown = labels[self.classes_[codes] != labels]
        if len(unknown):
            raise ValueError(
                f"y_val has labels not seen in y: {sorted(set(unknown.tolist()))[:5]}; "
                f"known: {self.classes_.tolist()}"
            )
        return codes.astype(np.int64)

    def _predict_proba(self, X: Any) -> np.ndarray:
        logits = predict_logits(self.model_, (X,), int(self.batch_size), self._device(),
                                bool(self.amp))
        return torch.softmax(logits.double(), 1).numpy()

    # ----- saving ------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"head_widths": list(self.head_widths_), "history": _json_history(self.history_)}
        return meta, module_state_to_arrays(self.model_.state_dict(), "model/")

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        model, _ = self._build_model(None, [int(w) for w in meta["head_widths"]], 0)
        model.load_state_dict(arrays_to_module_state(arrays, "model/"))
        self.model_ = model.to(self._device()).eval()
        self.history_ = {k: [float("nan") if v is None else v for v in vs]
                         for k, vs in meta.get("history", {}).items()}

    def _params_to_json(self) -> dict[str, Any]:
        params = super()._params_to_json()
        for name in _RUNTIME_ONLY:
            params[name] = None
        for name in ("checkpoint_dir", "device"):
            if params.get(name) is not None:
                params[name] = os.fspath(params[name]) if name == "checkpoint_dir" else str(
                    params[name])
        return params


def _json_history(history: dict[str, list[float]]) -> dict[str, list[float | None]]:
    return {k: [None if v != v else float(v) for v in vs] for k, vs in history.items()}


@torch.no_grad()
def _output_widths(body: nn.Module, sample: torch.Tensor | None) -> list[int]:
    if sample is None:
        raise RepurposeError("cannot size the head without a sample input")
    device = next((p.device for p in body.parameters()), torch.device("cpu"))
    was_training = body.training
    body.eval()
    try:
        out = body(sample[:1].to(device))
    finally:
        body.train(was_training)
    outs = out if isinstance(out, tuple | list) else (out,)
    return [int(pool_features(o).flatten(1).shape[1]) for o in outs]


def copy_module(module: nn.Module) -> nn.Module:
    """A deep copy, so that training never touches the handler's module."""
    return copy.deepcopy(module)

