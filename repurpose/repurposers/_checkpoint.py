"""Training checkpoints: plain tensors and dicts only, loaded with ``weights_only=True``.

One file, ``state.pt``, holds the model, optimiser, scheduler and grad-scaler states, the
best weights so far, the history and the early-stopping counters. It is written to a
temporary file and then renamed, so an interruption during the write never leaves a
corrupt checkpoint behind.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from repurpose._exceptions import ModelFormatError, RepurposeError

__all__ = ["CHECKPOINT_FILE", "save_checkpoint", "load_checkpoint"]

CHECKPOINT_FILE = "state.pt"
_FORMAT = "repurpose.train-checkpoint/1"


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_to_cpu(v) for v in obj)
    return obj


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Atomically write ``state`` (tensors, dicts, lists, numbers, strings) to the directory."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    target = path / CHECKPOINT_FILE
    tmp = path / (CHECKPOINT_FILE + ".tmp")
    torch.save({"format": _FORMAT, **_to_cpu(state)}, tmp)
    os.replace(tmp, target)
    return target


def load_checkpoint(directory: str | os.PathLike) -> dict[str, Any] | None:
    """Read the checkpoint in ``directory``; None when there is none yet."""
    target = Path(directory) / CHECKPOINT_FILE
    if not target.exists():
        return None
    try:
        state = torch.load(target, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError...
        raise ModelFormatError(
            f"cannot read training checkpoint {str(target)!r}: {err}. Only plain tensors and "
            "dicts are accepted; delete the file to train from scratch."
        ) from err
    if not isinstance(state, dict) or state.get("format") != _FORMAT:
        raise RepurposeError(
            f"{str(target)!r} is not a repurpose training checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else None!r}, expected {_FORMAT!r})"
        )
    return state
