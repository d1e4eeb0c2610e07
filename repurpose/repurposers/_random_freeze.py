"""Xfer's second fine-tuning method: drop the top, re-initialise some layers, freeze others."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from repurpose.repurposers._freezing import freeze_modules, match_layers, reinit_module
from repurpose.repurposers._network import (
    Body,
    Head,
    NetworkRepurposer,
    copy_module,
    layer_modules,
)
from repurpose.repurposers._registry import register_repurposer

__all__ = ["RandomFreezeRepurposer"]


@register_repurposer("random_freeze")
class RandomFreezeRepurposer(NetworkRepurposer):
    """Drop the top layers, add a new classifier, re-initialise and freeze chosen layers.

    This is Xfer's ``NeuralNetworkRandomFreezeRepurposer``, with one fix: layers are
    matched by exact name or glob, never by substring (Xfer re-initialised ``conv10`` when
    asked for ``conv1``).

    Parameters
    ----------
    handler : ModelHandler
        The source network (never modified; training works on a copy).
    num_layers_to_drop : int
        Layers removed from the top (Xfer's default 2: the output layer and the one below).
    random_layers : str or list of str, optional
        Layers (names or globs from ``ModelHandler.layer_names``, or container modules)
        whose weights are re-initialised. They train at the full rate ``lr``.
    fixed_layers : str or list of str, optional
        Layers frozen during training (no gradients; BatchNorm statistics fixed). A layer in
        both lists keeps its new random weights (random features).
    n_hidden : int, optional
        Width of an optional hidden layer in the new classifier.
    dropout : float
        Dropout before the classifier's output layer.
    body_lr_mult : float
        Rate multiplier of the kept pretrained layers (Xfer trains everything at one rate: 1.0).
    lr, layer_decay, optimizer, momentum, weight_decay, l2sp, schedule, max_epochs,
    batch_size, clip_grad_norm, validation_fraction, patience, unfreeze_after, augment, amp,
    device, checkpoint_dir, callbacks, random_state, progress
        As in :class:`FineTuneRepurposer`.

    Attributes
    ----------
    model_ : ClassifierNet
        The trained network (``model_.body``, ``model_.head``).
    random_layers_, fixed_layers_ : list of str
        The layer names the patterns matched.
    history_ : dict of str to list of float
    """

    def __init__(
        self,
        handler: Any = None,
        num_layers_to_drop: int = 2,
        random_layers: str | Sequence[str] | None = None,
        fixed_layers: str | Sequence[str] | None = None,
        n_hidden: int | None = None,
        dropout: float = 0.0,
        lr: float = 1e-3,
        body_lr_mult: float = 1.0,
        layer_decay: float | None = None,
        optimizer: str = "adamw",
        momentum: float = 0.9,
        weight_decay: float = 1e-4,
        l2sp: float = 0.0,
        schedule: str | None = "cosine",
        max_epochs: int = 20,
        batch_size: int = 32,
        clip_grad_norm: float | None = None,
        validation_fraction: float = 0.1,
        patience: int | None = 5,
        unfreeze_after: int | None = None,
        augment: Callable[[Any], Any] | None = None,
        amp: bool = False,
        device: Any = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        callbacks: Sequence[Callable[[int, dict[str, float]], Any]] | None = None,
        random_state: int | None = None,
        progress: bool = True,
    ) -> None:
        self.handler = handler
        self.num_layers_to_drop = num_layers_to_drop
        self.random_layers = random_layers
        self.fixed_layers = fixed_layers
        self.n_hidden = n_hidden
        self.dropout = dropout
        self.lr = lr
        self.body_lr_mult = body_lr_mult
        self.layer_decay = layer_decay
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.l2sp = l2sp
        self.schedule = schedule
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.clip_grad_norm = clip_grad_norm
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.unfreeze_after = unfreeze_after
        self.augment = augment
        self.amp = amp
        self.device = device
        self.checkpoint_dir = checkpoint_dir
        self.callbacks = callbacks
        self.random_state = random_state
        self.progress = progress

    @classmethod
    def _test_instance(cls, handler: Any) -> RandomFreezeRepurposer:
        return cls(handler, num_layers_to_drop=1, random_layers=["fc7"], fixed_layers=["conv1"],
                   max_epochs=3, batch_size=16, lr=1e-2, progress=False)

    def _build_body(self) -> Body:
        n = self.num_layers_to_drop
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"num_layers_to_drop={n!r}; expected an integer >= 0")
        handler = self.handler.drop_layers_top(n) if n > 0 else self.handler
        module = copy_module(handler.module)
        layers = layer_modules(module, handler.layer_names)
        names = [name for name, _ in layers]
        # container modules (e.g. "layer1") can be addressed too
        names += [n for n, _ in module.named_modules() if n and n not in names]
        modules = dict(layers) | {n: m for n, m in module.named_modules() if n}
        self.random_layers_ = self._match(self.random_layers, names, "random_layers")
        self.fixed_layers_ = self._match(self.fixed_layers, names, "fixed_layers")
        for name in self.random_layers_:
            reinit_module(modules[name])
        freeze_modules(modules[name] for name in self.fixed_layers_)
        fresh = {n for n in names if any(n == r or n.startswith(r + ".")
                                         for r in self.random_layers_)}
        return Body(module, layers, frozenset(fresh))

    @staticmethod
    def _match(patterns: str | Sequence[str] | None, names: list[str], what: str) -> list[str]:
        if patterns is None:
            return []
        return match_layers(patterns, names, what=f"{what} entry")

    def _build_head(self, widths: list[int], n_classes: int) -> nn.Module:
        return Head(widths[0], n_classes, self.n_hidden, float(self.dropout))
