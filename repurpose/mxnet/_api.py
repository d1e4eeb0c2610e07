"""``import_model`` and ``import_checkpoint``: an MXNet model as a graph.

The handler-returning :func:`repurpose.mxnet.handler_from_mxnet` and
:func:`repurpose.mxnet.handler_from_mxnet_checkpoint` are built on these in
``repurpose.model_handler`` (importers never import the handler).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repurpose._exceptions import ModelFormatError, warn_random_weights
from repurpose._imported import ImportedModel
from repurpose._preprocess import Preprocess
from repurpose.mxnet._convert import load_net

__all__ = ["import_model", "import_checkpoint", "checkpoint_paths"]


def checkpoint_paths(prefix: str | Path, epoch: int = 0) -> tuple[Path, Path]:
    """``prefix-symbol.json`` and ``prefix-%04d.params``, checked to exist."""
    symbol = Path(f"{prefix}-symbol.json")
    params = Path(f"{prefix}-{int(epoch):04d}.params")
    for path in (symbol, params):
        if not path.is_file():
            raise ModelFormatError(f"checkpoint file {path} not found (prefix {str(prefix)!r}, "
                                   f"epoch {epoch}); expected {symbol.name} and {params.name}")
    return symbol, params


def import_model(symbol_json: str | Path | Mapping[str, Any],
                 params: str | Path | Mapping[str, np.ndarray] | None = None,
                 input_shape: Sequence[int] | None = None,
                 preprocess: Preprocess | None = None) -> ImportedModel:
    """Import an MXNet symbol and params.

    Parameters
    ----------
    symbol_json : str, Path or dict
        ``model-symbol.json`` (path, JSON text or decoded document).
    params : str, Path, mapping or None
        ``model-0000.params`` or a ``{name: array}`` dict; None keeps fresh (random)
        weights, with a :class:`repurpose.RandomWeightsWarning`.
    input_shape : sequence of int, optional
        Shape of one input *without* the batch axis (``(3, 224, 224)``); default: the data
        variable's ``__shape__`` hint, if any. Needed only to size layers when ``params``
        is None.
    preprocess : Preprocess, optional
        MXNet checkpoints do not record their preprocessing; give it here to keep it with
        the model.

    Returns
    -------
    ImportedModel
        A :class:`~repurpose.graph.GraphNet` whose layers are the MXNet nodes, and
        ``preprocess``. Wrap it with :meth:`repurpose.ModelHandler.from_imported`, or use
        :func:`repurpose.mxnet.handler_from_mxnet` to do both.
    """
    shape = None if input_shape is None else (1, *(int(d) for d in input_shape))
    if params is None:
        name = symbol_json if isinstance(symbol_json, (str, Path)) else "the symbol"
        warn_random_weights(str(name), "the .params file")
    return ImportedModel(load_net(symbol_json, params, input_shape=shape), preprocess)


def import_checkpoint(prefix: str | Path, epoch: int = 0, **kwargs: Any) -> ImportedModel:
    """Import ``prefix-symbol.json`` + ``prefix-%04d.params`` (Xfer / ``save_checkpoint``).

    Parameters
    ----------
    prefix : str or Path
        Checkpoint prefix, e.g. ``"models/resnet-18"``.
    epoch : int
        Epoch number in the params file name.
    **kwargs
        Passed to :func:`import_model` (``input_shape``, ``preprocess``).

    Returns
    -------
    ImportedModel
    """
    symbol, params = checkpoint_paths(prefix, epoch)
    return import_model(symbol, params, **kwargs)
