"""Parameter groups for fine-tuning: discriminative rates, no decay on biases/norms, L2-SP.

A network to fine-tune is described as a list of :class:`LayerParams`, ordered from the
input to the output. Each layer gets its own learning rate (a multiplier of the base rate),
and its parameters are split into a group with weight decay and one without (biases and
normalisation parameters are never decayed).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = [
    "LayerParams",
    "NORM_TYPES",
    "body_lr_scales",
    "build_param_groups",
    "l2sp_penalty",
    "layers_from_modules",
]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    _BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass
class LayerParams:
    """The trainable parameters of one layer and how to train them.

    Attributes
    ----------
    name : str
        The layer name (used to name the optimiser's parameter groups).
    decay : list of Parameter
        Parameters that get weight decay (weights of conv / linear layers).
    no_decay : list of Parameter
        Biases and normalisation parameters: never decayed.
    lr_scale : float
        Multiplier of the base learning rate.
    pretrained : bool
        True for layers of the source network (the L2-SP anchor applies to them).
    """

    name: str
    decay: list[nn.Parameter] = field(default_factory=list)
    no_decay: list[nn.Parameter] = field(default_factory=list)
    lr_scale: float = 1.0
    pretrained: bool = False

    @property
    def params(self) -> list[nn.Parameter]:
        return self.decay + self.no_decay


def _split_decay(
    named: Iterable[tuple[str, nn.Parameter]], norm_ids: set[int]
) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for _, p in named:
        # ndim <= 1 covers biases and the affine parameters of every norm layer.
        (no_decay if p.ndim <= 1 or id(p) in norm_ids else decay).append(p)
    return decay, no_decay


def layers_from_modules(
    modules: Sequence[tuple[str, nn.Module]], *, pretrained: bool, trainable_only: bool = True
) -> list[LayerParams]:
    """Describe each ``(name, module)`` as one :class:`LayerParams`.

    Parameters shared by several modules are assigned to the first one only. Layers with no
    (trainable) parameters are left out.
    """
    seen: set[int] = set()
    layers: list[LayerParams] = []
    for name, module in modules:
        norm_ids = {
            id(p) for m in module.modules() if isinstance(m, NORM_TYPES) for p in m.parameters()
        }
        named = [
            (n, p)
            for n, p in module.named_parameters()
            if id(p) not in seen and (p.requires_grad or not trainable_only)
        ]
        seen.update(id(p) for _, p in named)
        if not named:
            continue
        decay, no_decay = _split_decay(named, norm_ids)
        layers.append(LayerParams(name, decay, no_decay, 1.0, pretrained))
    return layers


def body_lr_scales(n_layers: int, body_lr_mult: float, layer_decay: float | None) -> list[float]:
    """Learning-rate multipliers of the body layers, ordered from input to output.

    Every body layer gets ``body_lr_mult``; with ``layer_decay`` the layer ``j`` steps below
    the top of the body gets ``body_lr_mult * layer_decay ** j`` (timm's layer decay, the
    same idea as fastai's ``slice(lo, hi)``).
    """
    if layer_decay is None:
        return [body_lr_mult] * n_layers
    return [body_lr_mult * layer_decay ** (n_layers - 1 - i) for i in range(n_layers)]


def build_param_groups(
    layers: Sequence[LayerParams], lr: float, weight_decay: float, *, l2sp: float = 0.0,
    mults: Mapping[int, Any] | None = None,
) -> list[dict]:
    """Turn layers into optimiser parameter groups.

    Each layer gives up to two groups named ``"<layer>"`` (decayed) and
    ``"<layer>/no_decay"``. With L2-SP (``l2sp > 0``) the pretrained layers get no weight
    decay: the L2-SP penalty replaces it (Li et al. 2018), pulling them towards their
    starting values instead of towards zero.

    ``mults`` maps ``id(parameter)`` to its own multipliers (``lr_mult``, ``decay_mult``,
    ``name``, as from ``lr_mults``): such a parameter gets a group of its own with
    ``lr * lr_mult`` and ``weight_decay * decay_mult`` (Caffe's per-blob ``param``),
    whatever the layer's ``lr_scale`` and whether it is a bias.
    """
    mults = mults or {}
    groups: list[dict] = []
    for layer in layers:
        wd = 0.0 if (l2sp > 0 and layer.pretrained) else weight_decay
        own = [p for p in layer.params if id(p) in mults]
        groups += [_mult_group(p, mults[id(p)], lr, wd) for p in own]
        decay = [p for p in layer.decay if id(p) not in mults]
        no_decay = [p for p in layer.no_decay if id(p) not in mults]
        if decay:
            groups.append(
                {"params": decay, "lr": lr * layer.lr_scale, "weight_decay": wd,
                 "name": layer.name}
            )
        if no_decay:
            groups.append(
                {"params": no_decay, "lr": lr * layer.lr_scale, "weight_decay": 0.0,
                 "name": f"{layer.name}/no_decay"}
            )
    return groups


def _mult_group(p: nn.Parameter, mult: Any, lr: float, weight_decay: float) -> dict:
    return {"params": [p], "lr": lr * mult.lr_mult, "weight_decay": weight_decay * mult.decay_mult,
            "name": mult.name}


def l2sp_penalty(
    params: Sequence[torch.Tensor], anchors: Sequence[torch.Tensor], alpha: float
) -> torch.Tensor:
    """``alpha / 2 * sum_i ||w_i - w0_i||^2``, the L2-SP term of Li et al. (2018).

    Parameters whose ``requires_grad`` is False (frozen) contribute nothing that could
    change, so they are skipped.
    """
    terms = [
        (p - a).pow(2).sum() for p, a in zip(params, anchors, strict=True) if p.requires_grad
    ]
    if not terms:
        return torch.zeros(())
    return 0.5 * alpha * torch.stack(terms).sum()
