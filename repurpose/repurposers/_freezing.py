"""Freezing layers by exact name or glob, with BatchNorm statistics kept frozen.

A frozen layer has ``requires_grad=False`` on its parameters, so autograd skips its
backward entirely, and its normalisation layers stay in eval mode during training, so
their running statistics never move. Forgetting the second half is the most common
transfer-learning bug: ``model.train()`` silently updates a "frozen" BatchNorm.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Sequence

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repurpose._exceptions import LayerNotFoundError

__all__ = [
    "match_layers",
    "freeze_modules",
    "frozen_norm_layers",
    "set_train_mode",
    "reinit_module",
]

_NORM_STATS = (_BatchNorm, nn.modules.instancenorm._InstanceNorm)


def match_layers(
    patterns: str | Iterable[str], names: Sequence[str], what: str = "layer"
) -> list[str]:
    """Names matching each pattern exactly or as an fnmatch glob, never as a substring.

    Parameters
    ----------
    patterns : str or iterable of str
        Exact layer names or glob patterns (``"layer1.*"``).
    names : sequence of str
        The available names, in order; the result keeps this order.

    Raises
    ------
    LayerNotFoundError
        If a pattern matches nothing. The message lists the closest names.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    chosen: set[str] = set()
    for pattern in patterns:
        if pattern in names:
            chosen.add(pattern)
            continue
        hits = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        if not hits:
            close = difflib.get_close_matches(pattern, list(names), n=3) or list(names)[:5]
            raise LayerNotFoundError(
                f"{what} {pattern!r} not found; closest: {', '.join(close)}. "
                "Layers are matched by exact name or glob (see ModelHandler.layer_names)."
            )
        chosen.update(hits)
    return [n for n in names if n in chosen]


def freeze_modules(modules: Iterable[nn.Module]) -> list[nn.Module]:
    """Set ``requires_grad=False`` on every parameter of ``modules``.

    Returns the normalisation layers inside them, which must stay in eval mode during
    training (pass them to :func:`set_train_mode`).
    """
    norms: list[nn.Module] = []
    for module in modules:
        for p in module.parameters():
            p.requires_grad_(False)
        norms.extend(m for m in module.modules() if isinstance(m, _NORM_STATS))
    return norms


def frozen_norm_layers(model: nn.Module) -> list[nn.Module]:
    """Normalisation layers whose affine parameters are all frozen.

    This finds layers frozen by someone else (for example ``ModelHandler.freeze``), so
    that a model frozen outside this library also keeps its statistics.
    """
    found: list[nn.Module] = []
    for m in model.modules():
        if isinstance(m, _NORM_STATS):
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                found.append(m)
    return found


def set_train_mode(model: nn.Module, frozen_norms: Iterable[nn.Module]) -> None:
    """``model.train()``, then put the frozen normalisation layers back in eval mode."""
    model.train()
    for m in frozen_norms:
        m.eval()


def reinit_module(module: nn.Module) -> int:
    """Re-initialise every submodule that has ``reset_parameters``; return how many did."""
    count = 0
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset) and any(True for _ in m.parameters(recurse=False)):
            reset()
            count += 1
        if isinstance(m, _BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
    return count
