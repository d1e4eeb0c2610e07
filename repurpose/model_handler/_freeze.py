"""The one freezing mechanism, used by ``ModelHandler.freeze`` and every repurposer.

Freezing a module turns off the gradients of its parameters (so autograd skips its
backward) and keeps every normalisation layer inside it in eval mode, so its running
statistics are used and never updated. Forgetting the second half is the most common
transfer-learning bug: ``model.train()`` silently updates a "frozen" BatchNorm.

A frozen normalisation layer gets a forward pre-hook that puts it back in eval mode before
every call, so it stays frozen whoever calls ``model.train()``. The hook is a module-level
function, so ``copy.deepcopy`` keeps it; a saved handler lists its frozen layers and
:func:`freeze_modules` runs again on load (hooks are not part of a state dict).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

from repurpose.graph._plan import eval_noop

__all__ = [
    "NORM_STATS",
    "freeze_modules",
    "unfreeze_modules",
    "is_frozen",
    "is_frozen_bn",
    "frozen_norm_layers",
    "set_train_mode",
]

NORM_STATS = (_BatchNorm, _InstanceNorm)  # layers whose train mode changes what they compute


@eval_noop  # fused inference plans may fold a frozen norm layer
def _keep_eval(module: nn.Module, _args: Any) -> None:
    if module.training:
        module.train(False)


def is_frozen_bn(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer carrying the frozen-statistics hook."""
    return any(h is _keep_eval for h in module._forward_pre_hooks.values())


def is_frozen(module: nn.Module) -> bool:
    """A module is frozen when it has parameters and none needs a gradient, or is a
    frozen normalisation layer."""
    params = list(module.parameters())
    if is_frozen_bn(module):
        return all(not p.requires_grad for p in params)
    return bool(params) and all(not p.requires_grad for p in params)


def freeze_modules(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """Freeze every module given, and all its submodules, in place.

    Returns
    -------
    list of Module
        The normalisation layers inside them, now held in eval mode.
    """
    norms: list[nn.Module] = []
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
        for sub in module.modules():
            if isinstance(sub, NORM_STATS):
                if not is_frozen_bn(sub):
                    sub.register_forward_pre_hook(_keep_eval)
                sub.train(False)
                norms.append(sub)
    return norms


def unfreeze_modules(modules: Iterable[nn.Module]) -> None:
    """Undo :func:`freeze_modules` (in place)."""
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(True)
        for sub in module.modules():
            hooks = sub._forward_pre_hooks
            for key in [k for k, h in hooks.items() if h is _keep_eval]:
                del hooks[key]


def frozen_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Normalisation layers of ``model`` that are frozen: by :func:`freeze_modules`, or by
    someone who only turned off the gradients of their affine parameters."""
    found: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, NORM_STATS):
            params = list(m.parameters())
            if is_frozen_bn(m) or (params and not any(p.requires_grad for p in params)):
                found.append(m)
    return found


def set_train_mode(model: nn.Module, frozen_norms: Iterable[nn.Module]) -> None:
    """``model.train()``, then put the given normalisation layers back in eval mode."""
    model.train()
    for m in frozen_norms:
        m.eval()
