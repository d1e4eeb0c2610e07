"""Fine-tuning done right: a new head on a cut source network, trained with care."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from repurpose._validation import check_choice, check_number
from repurpose.repurposers._lpft import (
    StandardizedHead,
    body_features,
    fit_probe_head,
    has_dropout,
    interpolate_weights,
)
from repurpose.repurposers._network import (
    HEAD_PARAMS,
    Body,
    ClassifierNet,
    Head,
    NetworkRepurposer,
    Param,
    copy_module,
    layer_modules,
)
from repurpose.repurposers._param_groups import build_param_groups, layers_from_modules
from repurpose.repurposers._registry import register_repurposer
from repurpose.repurposers._train_data import Source, Split, TensorSource
from repurpose.repurposers._training import Trainer, snapshot

__all__ = ["FineTuneRepurposer"]

UP_TO = "up_to:"
AUTO = "auto"
HEAD_INITS = ("random", "probe")

# After every shared training parameter, so that positional calls keep their meaning.
LPFT_PARAMS = (
    Param("head_init", "random", str, '{"random", "probe"}',
          '``"random"`` (default): a freshly initialised head. ``"probe"``: LP-FT (Kumar et '
          "al., ICLR 2022): the head is first fitted as the linear probe (logistic "
          "regression with ``probe_C`` on the pooled, standardised transfer-layer features "
          "of the training part) and fine-tuning starts from there, which keeps the large "
          "early gradients of a random head from distorting the pretrained features. Needs "
          "``n_hidden=None``; the head then standardises its input with the probe's "
          "fixed statistics."),
    Param("probe_C", 1.0, float, "float",
          'Inverse L2 strength of the probe of ``head_init="probe"``.'),
    Param("wise_alpha", 1.0, float, "float",
          "WiSE-FT (Wortsman et al., CVPR 2022): after training, every weight becomes "
          "``(1 - wise_alpha) * start + wise_alpha * fine-tuned``, where the start is the "
          'LP-FT start (pretrained body, probe head). 1 (default) keeps the fine-tuned '
          'network; 0 gives back the probe. Values below 1 need ``head_init="probe"``.'),
)


def default_transfer_layer(handler: Any) -> str:
    """The layer feeding the network's last layer with parameters (its classifier).

    For AlexNet/VGG that is the input of the last fully connected layer (``relu7`` or
    ``drop7``); for SqueezeNet, whose classifier is a convolution (``conv10`` /
    ``conv_final``), the dropout after the last fire module; for a ResNet, the pooled,
    flattened features.
    """
    names = list(handler.layer_names)
    modules = dict(layer_modules(handler.module, names))
    with_params = [i for i, name in enumerate(names)
                   if name in modules and next(modules[name].parameters(), None) is not None]
    if not with_params or with_params[-1] == 0:
        raise ValueError(
            "transfer_layer='auto' needs a layer with parameters (the classifier) that has a "
            "layer below it; pass transfer_layer=<a name from handler.layer_names>, or None "
            "to keep the whole network"
        )
    return names[with_params[-1] - 1]


def apply_freeze(handler: Any, freeze: str | Sequence[str] | None) -> Any:
    """A handler with the freezing policy applied (``handler`` itself is not changed).

    ``"up_to:<layer>"`` freezes every layer from the input up to and including that one; a
    name, glob or list of them freezes those layers; None freezes nothing.
    """
    if freeze is None:
        return handler
    if isinstance(freeze, str) and freeze.startswith(UP_TO):
        return handler.freeze_up_to(freeze[len(UP_TO):])
    if isinstance(freeze, str):
        return handler.freeze([freeze])
    if not all(isinstance(f, str) for f in freeze):
        raise ValueError(
            f"freeze={freeze!r}; use 'up_to:<layer>', a layer name or glob, a list of them, "
            "or None"
        )
    return handler.freeze(list(freeze))


@register_repurposer("finetune")
class FineTuneRepurposer(NetworkRepurposer):
    """Cut the source at ``transfer_layer``, add a new head, and fine-tune.

    Data is read batch by batch (an image folder streams from disk), so memory does not
    grow with the number of training images. When nothing in the body trains (the default
    ``freeze="auto"``, without ``augment`` and without dropout in the body), the body runs
    once over the data and the head trains on those pooled features (same result, one pass
    instead of one per epoch). ``head_init="probe"`` is LP-FT: the head starts as the
    linear probe, then the network is fine-tuned (best with a small ``lr``).

    Parameters
    ----------
    %(parameters)s

    Attributes
    ----------
    model_ : ClassifierNet
        The trained network: ``model_.body`` and ``model_.head``.
    transfer_layer_ : str or None
        The layer the body was cut at (the choice of ``transfer_layer="auto"``).
    frozen_layers_ : list of str
        The body's frozen layers (the choice of ``freeze="auto"``).
    history_ : dict of str to list of float
        Per epoch: epoch, loss, acc, val_loss, val_acc, lr.

    Examples
    --------
    >>> import numpy as np, torch
    >>> from torch import nn
    >>> import repurpose as rp
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    >>> h = rp.ModelHandler(net)
    >>> X = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    >>> y = (X[:, 0] > 0).astype(int)
    >>> rep = rp.FineTuneRepurposer(h, max_epochs=3, progress=False, random_state=0).fit(X, y)
    >>> rep.transfer_layer_, rep.frozen_layers_
    ('1', ['0'])
    >>> rep.predict_proba(X).shape
    (40, 2)
    """

    _own_params = (
        Param("transfer_layer", AUTO, str | None, 'str, "auto" or None',
              "The last source layer kept (see ``ModelHandler.layer_names``). "
              '``"auto"`` (default): the layer feeding the network\'s last layer with '
              "parameters, i.e. the input of its classifier (``relu7`` for AlexNet; for "
              "SqueezeNet, whose classifier is a convolution, the layer before it). None keeps "
              "the whole network. Spatial outputs are average-pooled before the head."),
        HEAD_PARAMS["n_hidden"],
        Param("freeze", AUTO, str | Sequence[str] | None, 'str, list of str or None',
              '``"auto"`` (default): every layer up to and including the transfer layer '
              "(only the new head trains: safe with few images), or nothing when ``lr_mults`` "
              "is given (its lr_mult 0 freezes, as in Caffe); "
              '``"up_to:<layer>"``: every layer from the input to that one; layer names or '
              "globs (never substrings); or None to train everything. Frozen layers get no "
              "gradients (so no backward compute) and their BatchNorm statistics stay fixed."),
        HEAD_PARAMS["dropout"],
    )

    transfer_layer: str | None
    n_hidden: int | None
    freeze: str | Sequence[str] | None
    dropout: float
    head_init: str
    probe_C: float
    wise_alpha: float

    @classmethod
    def all_params(cls) -> list[Param]:
        return [*super().all_params(), *LPFT_PARAMS]

    @classmethod
    def _test_instance(cls, handler: Any) -> FineTuneRepurposer:
        return cls(handler, max_epochs=3, batch_size=16, lr=1e-2, progress=False)

    def _resolved_layers(self) -> tuple[str | None, str | Sequence[str] | None]:
        layer = self.transfer_layer
        if layer == AUTO:
            layer = default_transfer_layer(self.handler)
        freeze = self.freeze
        if freeze == AUTO and self.lr_mults is not None:
            freeze = None
        elif freeze == AUTO:
            freeze = UP_TO + (layer if layer is not None else self.handler.layer_names[-1])
        return layer, freeze

    def _build_body(self) -> Body:
        layer, freeze = self._resolved_layers()
        handler = apply_freeze(self.handler, freeze)
        if layer is not None:
            handler = handler.truncate(layer)
        module = copy_module(handler.module)
        self.transfer_layer_ = layer
        self.frozen_layers_ = list(handler.frozen_layers)
        return Body(module, layer_modules(module, handler.layer_names))

    def _build_head(self, widths: list[int], n_classes: int) -> nn.Module:
        if self.head_init == "probe":
            return StandardizedHead(widths[0], n_classes, float(self.dropout))
        return Head(widths[0], n_classes, self.n_hidden, float(self.dropout))

    # ----- LP-FT and training on cached features -----------------------------------------
    def _check_head_init(self) -> None:
        check_choice("head_init", self.head_init, HEAD_INITS)
        check_number("probe_C", self.probe_C, 0, low_open=True)
        if self.head_init == "probe" and self.n_hidden:
            raise ValueError(
                f"head_init='probe' needs a linear head, but n_hidden={self.n_hidden!r}; "
                "pass n_hidden=None or head_init='random'"
            )
        alpha = check_number("wise_alpha", self.wise_alpha, 0, 1)
        if alpha < 1 and self.head_init != "probe":
            raise ValueError(
                f"wise_alpha={self.wise_alpha!r} averages the fine-tuned weights with the "
                "LP-FT start, which needs head_init='probe' (a random head is no start to "
                "return to); pass head_init='probe' or wise_alpha=1.0"
            )

    def _caches_features(self, body: Body) -> bool:
        """Whether the head can train on features computed once: nothing in the body trains.

        Not with ``augment`` (the inputs change every epoch), with dropout in the body
        (in training mode it is random) or with ``lr_mults``, so the result is that of
        running the body each epoch, at the cost of one pass.
        """
        trainable = any(p.requires_grad for p in body.module.parameters())
        return (not trainable and self.augment is None and not has_dropout(body.module)
                and self.lr_mults is None)  # a recipe's multipliers apply on the full path

    def _fit_model(self, model: ClassifierNet, body: Body, X: Source, y: np.ndarray,
                   seed: int) -> None:
        self._check_head_init()
        cache = self._caches_features(body)
        if not cache and self.head_init != "probe":
            return super()._fit_model(model, body, X, y, seed)
        train, val = self._split(X, y, seed)
        features = self._features(model.body, train)
        if isinstance(model.head, StandardizedHead):  # head_init="probe"
            fit_probe_head(model.head, features.source.tensors[0], features.y,
                           float(self.probe_C))
        start = snapshot(model) if self.wise_alpha < 1 else None  # WiSE-FT's end point
        if cache:
            val_features = None if val is None else self._features(model.body, val)
            self._fit_head(model.head, features, val_features, seed)
        else:
            super()._fit_model(model, body, X, y, seed)
        if start is not None:
            interpolate_weights(model, start, float(self.wise_alpha))
        return None

    def _fit_head(self, head: nn.Module, features: _FeatureSplit,
                  val: _FeatureSplit | None, seed: int) -> None:
        """Train the head alone on the body's cached features."""
        layers = layers_from_modules([("head", head)], pretrained=False)
        groups = build_param_groups(layers, float(self.lr), float(self.weight_decay))
        self.history_ = Trainer(head, groups, self._settings(seed)).fit(features, val=val)

    def _features(self, body: nn.Module, data: Split) -> _FeatureSplit:
        """The pooled outputs of the (frozen) body for ``data``, computed once."""
        feats = body_features(body, data, int(self.batch_size), self._device(),
                              bool(self.amp), self._workers())
        return _FeatureSplit(TensorSource((feats,)), data.y)


class _FeatureSplit(Split):
    """A split of in-memory features (typed, so that ``source.tensors`` is known)."""

    source: TensorSource
