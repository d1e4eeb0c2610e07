"""Freezing and layer matching for the network repurposers.

The mechanisms are the handler's (one matcher, one freezer, see docs/architecture.md);
this module re-exports them under the names the repurposers use and adds
:func:`reinit_module`.
"""

from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repurpose.model_handler._freeze import freeze_modules, frozen_norm_layers, set_train_mode
from repurpose.model_handler._match import match_layers

__all__ = [
    "match_layers",
    "freeze_modules",
    "frozen_norm_layers",
    "set_train_mode",
    "reinit_module",
]


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
