"""Xfer's second fine-tuning method: drop the top, re-initialise some layers, freeze others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from repurpose.repurposers._freezing import freeze_modules, match_layers, reinit_module
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

__all__ = ["RandomFreezeRepurposer"]


@register_repurposer("random_freeze")
class RandomFreezeRepurposer(NetworkRepurposer):
    """Drop the top layers, add a new classifier, re-initialise and freeze chosen layers.

    This is Xfer's ``NeuralNetworkRandomFreezeRepurposer``, with one fix: layers are
    matched by exact name or glob, never by substring (Xfer re-initialised ``conv10`` when
    asked for ``conv1``).

    Parameters
    ----------
    %(parameters)s

    Attributes
    ----------
    model_ : ClassifierNet
        The trained network (``model_.body``, ``model_.head``).
    random_layers_, fixed_layers_ : list of str
        The layer names the patterns matched.
    history_ : dict of str to list of float
    """

    _own_params = (
        Param("num_layers_to_drop", 2, int, "int",
              "Layers removed from the top (Xfer's default 2: the output layer and the one "
              "below)."),
        Param("random_layers", None, str | Sequence[str] | None, "str or list of str, optional",
              "Layers (names or globs from ``ModelHandler.layer_names``, or container "
              "modules) whose weights are re-initialised. They train at the full rate ``lr``."),
        Param("fixed_layers", None, str | Sequence[str] | None, "str or list of str, optional",
              "Layers frozen during training (no gradients; BatchNorm statistics fixed). A "
              "layer in both lists keeps its new random weights (random features)."),
        HEAD_PARAMS["n_hidden"],
        HEAD_PARAMS["dropout"],
    )
    # Xfer trains every kept layer at one rate
    _param_defaults = {"body_lr_mult": 1.0}

    num_layers_to_drop: int
    random_layers: str | Sequence[str] | None
    fixed_layers: str | Sequence[str] | None
    n_hidden: int | None
    dropout: float

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
