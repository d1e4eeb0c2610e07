"""The Gated Transfer Network repurposer (Kumar): per-sample gates choose among layers."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import RepurposeError
from repurpose._validation import check_choice, check_int
from repurpose.graph import GraphNet
from repurpose.repurposers._base import MetaModelRepurposer
from repurpose.repurposers._gated_net import GATES, GatedNet
from repurpose.repurposers._io import arrays_to_module_state, module_state_to_arrays
from repurpose.repurposers._network import (
    ClassifierNet,
    TrainingMixin,
    copy_module,
    history_from_json,
    json_history,
    layer_modules,
    params_to_json,
)
from repurpose.repurposers._param_groups import (
    body_lr_scales,
    build_param_groups,
    layers_from_modules,
)
from repurpose.repurposers._registry import register_repurposer
from repurpose.repurposers._train_data import Source, TensorSource, epoch_batches

__all__ = ["GatedRepurposer"]

_E2E_FEATURES = (
    "this GatedRepurposer was trained end to end, so its layers differ from the source's "
    "features; pass inputs instead of a features dict"
)


class LayerTap(nn.Module):
    """Run a body and return the outputs of several of its layers (differentiably)."""

    def __init__(self, body: nn.Module, layers: Sequence[str]) -> None:
        super().__init__()
        self.body = body
        self.layers = list(layers)
        if not isinstance(body, GraphNet):
            found = dict(layer_modules(body, self.layers))
            missing = [n for n in self.layers if n not in found]
            if missing:
                raise RepurposeError(
                    f"end-to-end gating needs module layers; {missing} are functional ops. "
                    "Pick module layers from ModelHandler.layer_names"
                )
            self._modules_by_layer = found

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if isinstance(self.body, GraphNet):
            node = {n.name: n for n in self.body.nodes}
            wanted = [node[n].outputs[0] for n in self.layers]
            values = self.body.run({self.body.input_names[0]: x}, wanted)
            return tuple(values[v] for v in wanted)
        captured: dict[str, torch.Tensor] = {}
        handles = [
            m.register_forward_hook(lambda _m, _i, out, name=name: captured.__setitem__(name, out))
            for name, m in self._modules_by_layer.items()
        ]
        try:
            self.body(x)
        finally:
            for h in handles:
                h.remove()
        return tuple(captured[n] for n in self.layers)


@register_repurposer("gated")
class GatedRepurposer(TrainingMixin, MetaModelRepurposer):
    """Gated Transfer Network: per-sample, per-dimension gates mix several layers.

    For feature layers ``x_i`` (standardised; projected by a learned linear map to a common
    width ``d`` when widths differ), gates ``z_i = sigmoid(W_i x_i + b_i)`` are normalised
    across the layers by a softmax per dimension (``r = softmax(z)``); the combined feature
    ``g = sum_i r_i * x_i`` is classified by a softmax layer.

    Parameters
    ----------
    handler : ModelHandler, optional
        The source network (not needed with :meth:`fit_features`).
    feature_layers : list of str
        Two or more layers to gate (e.g. ``["fc6", "fc7"]``).
    dim : int, optional
        The common width ``d``; default the layers' width, or the smallest when they differ.
    project : bool, optional
        None (the paper): a learned projection only for layers whose width is not ``d``.
        True: project every layer (an extension; it lets the model down-weight a weak layer
        beyond what the bounded gates allow). False: no projections (widths must equal ``d``).
    gate : {"paper", "temperature", "softmax", "diagonal", "lowrank", "layer"}
        The gate form. ``"paper"``: the published sigmoid-then-softmax gates (each layer
        keeps at least about a quarter of every dimension). The others are extensions:
        a learnt temperature on the paper's gates, unbounded logits from a full, diagonal
        or rank-``gate_rank`` matrix, or one weight per layer and sample (see
        :mod:`repurpose.repurposers._gated_net`).
    gate_rank : int
        Rank of the ``"lowrank"`` gate matrices.
    dropout : float
        Dropout on ``g`` during training.
    lr, weight_decay, optimizer, schedule, max_epochs, batch_size, validation_fraction,
    patience, device, checkpoint_dir, random_state, progress
        Training settings, as in :class:`FineTuneRepurposer` (early stopping on the
        validation loss, best weights restored).
    end_to_end : bool
        False (default): a meta-model on cached features, extracted once. True: a network
        repurposer that trains through the (unfrozen) source network too, the body at
        ``lr * body_lr_mult``; the inputs stream batch by batch (as in
        :class:`FineTuneRepurposer`).
    body_lr_mult : float
        The source network's rate multiplier in end-to-end mode.
    pooling, batch_size, progress
        See :class:`MetaModelRepurposer`.
    num_workers : int
        Loader processes reading the data in end-to-end training (see
        :class:`FineTuneRepurposer`).
    distributed, sync_batchnorm
        Training under ``torchrun``, as in :class:`FineTuneRepurposer` (docs/scaling.md).

    Attributes
    ----------
    model_ : GatedNet or ClassifierNet
        The gated network (end to end: the source body plus the gated head).
    history_ : dict of str to list of float

    Examples
    --------
    >>> import numpy as np
    >>> import repurpose as rp
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1, 2], 20)
    >>> feats = {"fc6": rng.normal(size=(60, 8)) + y[:, None], "fc7": rng.normal(size=(60, 8))}
    >>> rep = rp.GatedRepurposer(feature_layers=["fc6", "fc7"], max_epochs=5, progress=False,
    ...                          random_state=0).fit_features(feats, y)
    >>> r = rep.gates_(feats)
    >>> r.shape, bool(np.allclose(r.sum(1), 1))
    ((60, 2, 8), True)
    """

    GATES = GATES  # the accepted values of ``gate``

    model_: Any
    history_: dict[str, list[float]]

    def __init__(
        self,
        handler: Any = None,
        feature_layers: str | Sequence[str] | None = None,
        dim: int | None = None,
        project: bool | None = None,
        dropout: float = 0.2,
        lr: float = 1e-2,
        weight_decay: float = 1e-3,
        optimizer: str = "adamw",
        schedule: str | None = "cosine",
        max_epochs: int = 100,
        batch_size: int = 32,
        validation_fraction: float = 0.1,
        patience: int | None = 10,
        end_to_end: bool = False,
        body_lr_mult: float = 0.1,
        pooling: str | None = "avg",
        device: Any = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        random_state: int | None = None,
        progress: bool = True,
        num_workers: int = 0,
        gate: str = "paper",
        gate_rank: int = 8,
        distributed: str | bool = "auto",
        sync_batchnorm: bool = False,
    ) -> None:
        super().__init__(handler, feature_layers, pooling, "concat", batch_size, progress)
        del self.combine  # the gates do the combining
        self.dim = dim
        self.project = project
        self.gate = gate
        self.gate_rank = gate_rank
        self.dropout = dropout
        self.lr = lr
        self.weight_decay = weight_decay
        self.optimizer = optimizer
        self.schedule = schedule
        self.max_epochs = max_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.end_to_end = end_to_end
        self.body_lr_mult = body_lr_mult
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.num_workers = num_workers
        self.distributed = distributed
        self.sync_batchnorm = sync_batchnorm

    @classmethod
    def _test_instance(cls, handler: Any) -> GatedRepurposer:
        return cls(handler, feature_layers=["fc6", "fc7"], max_epochs=5, progress=False)

    @classmethod
    def _demo_instance(
        cls, handler: Any, feature_layers: list[str]
    ) -> GatedRepurposer | None:
        """Gating needs two or more layers; the demo's single-layer rows leave it out."""
        if len(feature_layers) < 2:
            return None
        return cls(handler, feature_layers=feature_layers, progress=False, random_state=0)

    # ----- helpers -----------------------------------------------------------------------
    def _gated_net(self, widths: Sequence[int], seed: int) -> GatedNet:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return GatedNet(widths, self.n_classes_, self.dim, float(self.dropout), self.project,
                            gate=check_choice("gate", self.gate, GATES),
                            rank=check_int("gate_rank", self.gate_rank, 1))

    # ----- cached features (default) -----------------------------------------------------
    def _fit_features(self, features: dict[str, np.ndarray], y: np.ndarray) -> None:
        if len(self.feature_layers_) < 2:
            raise ValueError(
                f"feature_layers={self.feature_layers_!r}; the gated network needs 2 or more "
                "layers to choose between"
            )
        seed = self._seed()
        inputs = tuple(torch.as_tensor(features[k], dtype=torch.float32)
                       for k in self.feature_layers_)
        net = self._gated_net([x.shape[1] for x in inputs], seed)
        net.set_standardisation(inputs)
        groups = build_param_groups(layers_from_modules([("gated", net)], pretrained=False),
                                    float(self.lr), float(self.weight_decay))
        self._train(net, groups, TensorSource(inputs), y, seed)
        self.model_ = net.eval()

    def _predict_proba_features(self, features: dict[str, np.ndarray]) -> np.ndarray:
        inputs = tuple(torch.as_tensor(features[k], dtype=torch.float32)
                       for k in self.feature_layers_)
        return self._proba(self._gate_net(), inputs)

    def _gate_net(self) -> GatedNet:
        net = self.model_.head.net if self.end_to_end else self.model_
        assert isinstance(net, GatedNet)  # internal invariant, not user input
        return net

    # ----- end to end --------------------------------------------------------------------
    def _prepare(self, X: Any, y: Any = None, *, labels: bool, fitting: bool = False
                 ) -> tuple[Any, Any]:
        """Cached features (the meta-model path), or a stream of inputs (end to end)."""
        if self.end_to_end:
            return self._stream(X, y, labels=labels)
        return super()._prepare(X, y, labels=labels, fitting=fitting)

    def _build_tap(self) -> tuple[LayerTap, list[tuple[str, nn.Module]]]:
        layers = self._layers_to_extract(True)
        order = {n: i for i, n in enumerate(self.handler.layer_names)}
        deepest = max(layers, key=lambda n: order.get(n, -1))
        cut = self.handler.truncate(deepest)
        body = copy_module(cut.module)
        return LayerTap(body, layers), layer_modules(body, cut.layer_names)

    def _fit(self, X: Any, y: np.ndarray) -> None:
        if self.end_to_end:
            self._fit_end_to_end(X, y)
        else:
            super()._fit(X, y)

    def _fit_end_to_end(self, X: Any, y: np.ndarray) -> None:
        if self.handler is None or not isinstance(X, Source):
            raise ValueError(
                "end_to_end=True trains through the source network: use fit(X, y) with a "
                "handler, not fit_features"
            )
        seed = self._seed()
        tap, body_layers = self._build_tap()
        self.feature_layers_ = list(tap.layers)
        pooled = _tap_features(tap, X, int(self.batch_size), self._workers())
        self.feature_dims_ = {k: int(f.shape[1])
                              for k, f in zip(self.feature_layers_, pooled, strict=True)}
        self.n_features_in_ = int(sum(self.feature_dims_.values()))
        # the gated net standardises its inputs itself; the base's scalers stay neutral
        self.feature_mean_ = {k: np.zeros(d, np.float32) for k, d in self.feature_dims_.items()}
        self.feature_scale_ = {k: np.ones(d, np.float32) for k, d in self.feature_dims_.items()}
        net = self._gated_net(list(self.feature_dims_.values()), seed)
        net.set_standardisation(pooled)
        model = ClassifierNet(tap, _PooledGate(net))
        layers = layers_from_modules(body_layers, pretrained=True)
        for layer, scale in zip(layers, body_lr_scales(len(layers), self.body_lr_mult, None),
                                strict=True):
            layer.lr_scale = scale
        layers += layers_from_modules([("gated", net)], pretrained=False)
        groups = build_param_groups(layers, float(self.lr), float(self.weight_decay))
        self._train(model, groups, X, y, seed)
        self.model_ = model.eval()

    def _predict_proba(self, X: Any) -> np.ndarray:
        if not self.end_to_end:
            return super()._predict_proba(X)
        if isinstance(X, Mapping):
            raise ValueError(_E2E_FEATURES)
        return self._proba(self.model_, X)

    # ----- gates -------------------------------------------------------------------------
    def gates_(self, X: Any) -> np.ndarray:
        """Per-sample, per-dimension normalised gate values ``r``.

        Parameters
        ----------
        X : data or dict of str to ndarray
            Inputs (anything :meth:`predict_proba` accepts), or precomputed features
            ``{layer: (n, D)}`` for a repurposer trained on cached features.

        Returns
        -------
        ndarray of shape (n, n_layers, d)
            ``r[k, i, j]`` is layer ``i``'s share of dimension ``j`` for sample ``k``;
            it sums to 1 over the layers.
        """
        self._check_fitted()
        net = self._gate_net()
        with torch.inference_mode():
            if isinstance(X, Mapping) and self.end_to_end:
                raise ValueError(_E2E_FEATURES)
            if isinstance(X, Mapping):
                inputs = [torch.as_tensor(np.asarray(X[k]), dtype=torch.float32)
                          for k in self.feature_layers_]
            elif self.end_to_end:
                data, _ = self._prepare(X, None, labels=False)
                inputs = _tap_features(self.model_.body, data, int(self.batch_size),
                                       self._workers())
            else:
                feats, _ = self._prepare(X, None, labels=False)
                inputs = [torch.as_tensor(feats[k], dtype=torch.float32)
                          for k in self.feature_layers_]
            device = next(net.parameters()).device
            return net.gates(*[x.to(device) for x in inputs]).cpu().numpy()

    # ----- saving ------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {"widths": list(self.feature_dims_.values()),
                "history": json_history(self.history_)}
        return meta, module_state_to_arrays(self.model_.state_dict(), "model/")

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        net = self._gated_net([int(w) for w in meta["widths"]], 0)
        model: nn.Module = net
        if self.end_to_end:
            tap, _ = self._build_tap()
            model = ClassifierNet(tap, _PooledGate(net))
        model.load_state_dict(arrays_to_module_state(arrays, "model/"))
        self.model_ = model.to(self._device()).eval()
        self.history_ = history_from_json(meta)

    def _params_to_json(self) -> dict[str, Any]:
        return params_to_json(super()._params_to_json())


@torch.no_grad()
def _tap_features(tap: nn.Module, data: Source, batch_size: int,
                  num_workers: int = 0) -> list[torch.Tensor]:
    """Pooled outputs of the tapped layers for all of ``data``, streamed in eval mode."""
    device = next(tap.parameters()).device
    was_training = tap.training
    tap.eval()
    try:
        batches = epoch_batches(len(data), batch_size, merge_single=False)
        parts = [[f.float().cpu() for f in _pooled(tap(xb[0].to(device)))]
                 for xb in data.read(batches, num_workers=num_workers,
                                     pin_memory=device.type == "cuda")]
    finally:
        tap.train(was_training)
    return [torch.cat([p[j] for p in parts]) for j in range(len(parts[0]))]


def _pooled(feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    return [f.flatten(2).mean(2) if f.ndim > 2 else f.flatten(1) for f in feats]


class _PooledGate(nn.Module):
    """The gated head on raw layer outputs: average-pool spatial maps, then gate."""

    def __init__(self, net: GatedNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, *feats: torch.Tensor) -> torch.Tensor:
        return self.net(*_pooled(feats))
