"""Freezing: turn off gradients of chosen layers and keep their BatchNorm statistics fixed.

A frozen BatchNorm gets a forward pre-hook that puts it back in eval mode before every
forward pass. So even after ``model.train()`` it normalises with its running statistics
and does not update them. The hook is a module-level function, so ``copy.deepcopy``
keeps it; the saved handler lists its frozen layers and :func:`freeze_modules` runs again
on load (hooks are not part of a state dict).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["freeze_modules", "unfreeze_modules", "is_frozen", "is_frozen_bn"]


def _keep_bn_eval(module: nn.Module, _args: Any) -> None:
    if module.training:
        module.train(False)


def is_frozen_bn(module: nn.Module) -> bool:
    """Whether ``module`` is a BatchNorm carrying the frozen-statistics hook."""
    return any(h is _keep_bn_eval for h in module._forward_pre_hooks.values())


def is_frozen(module: nn.Module) -> bool:
    """A module is frozen when it has parameters and none needs a gradient, or is a frozen BN."""
    params = list(module.parameters())
    if is_frozen_bn(module):
        return all(not p.requires_grad for p in params)
    return bool(params) and all(not p.requires_grad for p in params)


def freeze_modules(modules: Iterable[nn.Module]) -> None:
    """Freeze every module given (in place) and every submodule of it."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
        for sub in module.modules():
            if isinstance(sub, _BatchNorm) and not is_frozen_bn(sub):
                sub.register_forward_pre_hook(_keep_bn_eval)
                sub.train(False)


def unfreeze_modules(modules: Iterable[nn.Module]) -> None:
    """Undo :func:`freeze_modules` (in place)."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
        for sub in module.modules():
            hooks = sub._forward_pre_hooks
            for key in [k for k, h in hooks.items() if h is _keep_bn_eval]:
                del hooks[key]
