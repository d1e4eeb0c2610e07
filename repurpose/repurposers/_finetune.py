"""Fine-tuning done right: a new head on a cut source network, trained with care."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from repurpose.repurposers._network import (
    HEAD_PARAMS,
    Body,
    Head,
    NetworkRepurposer,
    Param,
    copy_module,
    layer_modules,
)
from repurpose.repurposers._registry import register_repurposer

__all__ = ["FineTuneRepurposer"]

UP_TO = "up_to:"
AUTO = "auto"


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
    grow with the number of training images.

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
        return Head(widths[0], n_classes, self.n_hidden, float(self.dropout))
