"""Importer conveniences that return a :class:`ModelHandler`.

The importers themselves (``repurpose.caffe``, ``repurpose.mxnet``) return an
:class:`~repurpose.ImportedModel` and never import the handler; these functions live here,
above them, and are re-exported under their historical names by the importer packages'
public faces (``repurpose.caffe.handler_from_caffe``, ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repurpose.model_handler._handler import ModelHandler

__all__ = ["handler_from_caffe", "handler_from_mxnet", "handler_from_mxnet_checkpoint"]


def handler_from_caffe(
    prototxt: str | Path,
    weights: str | Path | None = None,
    mean: Any = None,
    *,
    input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    channel_order: str | None = None,
    raw_scale: float = 255.0,
    input_scale: float | None = None,
    resize: int | tuple[int, int] | None = None,
    phase: str = "TEST",
    device: str | torch.device = "cpu",
) -> ModelHandler:
    """Import a Caffe model with its preprocessing as a :class:`ModelHandler`.

    Parameters
    ----------
    prototxt, weights, mean, input_shape, channel_order, raw_scale, input_scale, resize, phase
        As in :func:`repurpose.caffe.import_model`.
    device : str or torch.device
        Where the handler runs.

    Returns
    -------
    ModelHandler
        Wrapping the imported :class:`~repurpose.graph.GraphNet`; layer names are the
        Caffe layer names.
    """
    return ModelHandler.from_caffe(
        prototxt, weights, mean, input_shape=input_shape, channel_order=channel_order,
        raw_scale=raw_scale, input_scale=input_scale, resize=resize, phase=phase,
        device=device,
    )


def handler_from_mxnet(symbol_json: str | Path | Mapping[str, Any],
                       params: str | Path | Mapping[str, np.ndarray] | None = None,
                       input_shape: Sequence[int] | None = None, **kwargs: Any) -> ModelHandler:
    """Import an MXNet symbol and params as a :class:`ModelHandler`.

    Parameters
    ----------
    symbol_json, params, input_shape
        As in :func:`repurpose.mxnet.import_model`.
    **kwargs
        ``preprocess`` and ``device``, as for :class:`ModelHandler`.

    Returns
    -------
    ModelHandler
        Wrapping a :class:`~repurpose.graph.GraphNet` whose layers are the MXNet nodes.
    """
    return ModelHandler.from_mxnet(symbol_json, params, input_shape=input_shape, **kwargs)


def handler_from_mxnet_checkpoint(prefix: str | Path, epoch: int = 0,
                                  **kwargs: Any) -> ModelHandler:
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
    return ModelHandler.from_mxnet_checkpoint(prefix, epoch, **kwargs)
