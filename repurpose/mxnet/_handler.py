"""ModelHandler constructors for MXNet checkpoints."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repurpose._exceptions import ModelFormatError, warn_random_weights
from repurpose.mxnet._convert import load_net

__all__ = ["handler_from_mxnet", "handler_from_mxnet_checkpoint", "checkpoint_paths"]


def checkpoint_paths(prefix: str | Path, epoch: int = 0) -> tuple[Path, Path]:
    """``prefix-symbol.json`` and ``prefix-%04d.params``, checked to exist."""
    symbol = Path(f"{prefix}-symbol.json")
    params = Path(f"{prefix}-{int(epoch):04d}.params")
    for path in (symbol, params):
        if not path.is_file():
            raise ModelFormatError(f"checkpoint file {path} not found (prefix {str(prefix)!r}, "
                                   f"epoch {epoch}); expected {symbol.name} and {params.name}")
    return symbol, params


def handler_from_mxnet(symbol_json: str | Path | Mapping[str, Any],
                       params: str | Path | Mapping[str, np.ndarray] | None = None,
                       input_shape: Sequence[int] | None = None, **kwargs: Any) -> Any:
    """Import an MXNet symbol and params as a :class:`repurpose.ModelHandler`.

    Parameters
    ----------
    symbol_json : str, Path or dict
        ``model-symbol.json`` (path, JSON text or decoded document).
    params : str, Path, mapping or None
        ``model-0000.params`` or a ``{name: array}`` dict; None keeps fresh (random)
        weights, with a :class:`repurpose.RandomWeightsWarning`.
    input_shape : sequence of int, optional
        Shape of one input *without* the batch axis (``(3, 224, 224)``), as for
        ``ModelHandler``; default: the data variable's ``__shape__`` hint, if any.
        Needed only to size layers when ``params`` is None.
    **kwargs
        Passed to ``ModelHandler`` (``preprocess``, ``device``).

    Returns
    -------
    ModelHandler
        Wrapping a :class:`~repurpose.graph.GraphNet` whose layers are the MXNet nodes.
    """
    from repurpose.model_handler import ModelHandler

    shape = None if input_shape is None else (1, *(int(d) for d in input_shape))
    if params is None:
        name = symbol_json if isinstance(symbol_json, (str, Path)) else "the symbol"
        warn_random_weights(str(name), "the .params file")
    net = load_net(symbol_json, params, input_shape=shape)
    return ModelHandler(net, input_shape=input_shape, **kwargs)


def handler_from_mxnet_checkpoint(prefix: str | Path, epoch: int = 0, **kwargs: Any) -> Any:
    """Import ``prefix-symbol.json`` + ``prefix-%04d.params`` (Xfer / ``save_checkpoint``).

    Parameters
    ----------
    prefix : str or Path
        Checkpoint prefix, e.g. ``"models/resnet-18"``.
    epoch : int
        Epoch number in the params file name.
    **kwargs
        Passed to :func:`handler_from_mxnet`.

    Returns
    -------
    ModelHandler
    """
    symbol, params = checkpoint_paths(prefix, epoch)
    return handler_from_mxnet(symbol, params, **kwargs)
