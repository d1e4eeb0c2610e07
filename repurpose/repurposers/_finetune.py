"""Fine-tuning done right: a new head on a cut source network, trained with care."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from repurpose.repurposers._network import (
    Body,
    Head,
    NetworkRepurposer,
    copy_module,
    layer_modules,
)
from repurpose.repurposers._registry import register_repurposer

__all__ = ["FineTuneRepurposer"]

UP_TO = "up_to:"


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

    Parameters
    ----------
    handler : ModelHandler
        The source network (never modified; training works on a copy).
    transfer_layer : str or None
        The last source layer kept (see ``ModelHandler.layer_names``); None keeps the whole
        network. Spatial outputs are average-pooled before the head.
    n_hidden : int, optional
        Width of one hidden ReLU layer in the new head; None for a linear head.
    freeze : str, list of str or None
        ``"up_to:<layer>"`` (everything from the input to that layer), layer names or globs
        (never substrings), or None to train everything. Frozen layers get no gradients
        (so no backward compute) and their BatchNorm statistics stay fixed.
    dropout : float
        Dropout before the head's output layer.
    lr : float
        Learning rate of the head.
    body_lr_mult : float
        The pretrained body's rate is ``lr * body_lr_mult`` (discriminative rates).
    layer_decay : float, optional
        Further multiply the rate by ``layer_decay`` per layer below the top of the body
        (timm's layer decay; fastai's ``slice(lo, hi)``).
    optimizer : {"adamw", "sgd"}
        AdamW, or SGD with (Nesterov) ``momentum``.
    momentum : float
    weight_decay : float
        Not applied to biases and normalisation parameters, nor to the body under L2-SP.
    l2sp : float
        Strength ``alpha`` of L2-SP (Li et al. 2018): adds ``alpha/2 * ||w - w0||^2`` over the
        trainable pretrained weights, pulling them towards their start rather than to 0.
    schedule : {"cosine", "onecycle", "constant"} or None
        Learning-rate schedule, stepped per batch.
    max_epochs, batch_size : int
    clip_grad_norm : float, optional
        Clip the global gradient norm.
    validation_fraction : float
        Stratified share of the training data held out for early stopping (ignored when
        ``fit`` gets ``X_val``); 0 for none.
    patience : int, optional
        Stop after this many epochs without a better validation loss, and restore the best
        weights; None trains all ``max_epochs``.
    unfreeze_after : int, optional
        Gradual unfreezing: train only the head for this many epochs, then the body too.
    augment : callable, optional
        Applied to each training batch of inputs (a tensor on the device); returns a tensor.
    amp : bool
        Mixed precision (float16 on CUDA, bfloat16 on CPU).
    device : str or torch.device, optional
        Default: the handler's device.
    checkpoint_dir : str or Path, optional
        Save the training state after every epoch; a later ``fit`` with the same directory
        and data resumes where it stopped and ends with the same weights.
    callbacks : sequence of callable, optional
        ``f(epoch, logs)`` after each epoch (logs: loss, acc, val_loss, val_acc, lr).
    random_state : int, optional
        Seed of the head's initialisation, the shuffling and dropout.
    progress : bool
        Show a progress bar with loss and accuracy per epoch.

    Attributes
    ----------
    model_ : ClassifierNet
        The trained network: ``model_.body`` and ``model_.head``.
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
    >>> rep = rp.FineTuneRepurposer(h, transfer_layer="1", freeze="up_to:0", max_epochs=3,
    ...                             progress=False, random_state=0).fit(X, y)
    >>> rep.predict_proba(X).shape
    (40, 2)
    """

    def __init__(
        self,
        handler: Any = None,
        transfer_layer: str | None = "fc7",
        n_hidden: int | None = None,
        freeze: str | Sequence[str] | None = "up_to:conv5",
        dropout: float = 0.0,
        lr: float = 1e-3,
        body_lr_mult: float = 0.1,
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
        self.transfer_layer = transfer_layer
        self.n_hidden = n_hidden
        self.freeze = freeze
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
    def _test_instance(cls, handler: Any) -> FineTuneRepurposer:
        return cls(handler, transfer_layer="fc7", freeze="up_to:conv1", max_epochs=3,
                   batch_size=16, lr=1e-2, progress=False)

    def _build_body(self) -> Body:
        handler = apply_freeze(self.handler, self.freeze)
        if self.transfer_layer is not None:
            handler = handler.truncate(self.transfer_layer)
        module = copy_module(handler.module)
        return Body(module, layer_modules(module, handler.layer_names))

    def _build_head(self, widths: list[int], n_classes: int) -> nn.Module:
        return Head(widths[0], n_classes, self.n_hidden, float(self.dropout))
