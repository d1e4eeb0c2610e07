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

from repurpose.model_handler._handler import ModelHandler

__all__ = ["handler_from_caffe", "handler_from_mxnet", "handler_from_mxnet_checkpoint"]


def handler_from_caffe(prototxt: str | Path, weights: str | Path | None = None,
                       mean: Any = None, **kwargs: Any) -> ModelHandler:
    """Import a Caffe model with its preprocessing as a :class:`ModelHandler`.

    Parameters
    ----------
    prototxt, weights, mean
        As in :func:`repurpose.caffe.import_model`.
    **kwargs
        ``device`` (where the handler runs), and the keyword arguments of
        :func:`repurpose.caffe.import_model` (``input_shape``, ``channel_order``,
        ``raw_scale``, ``input_scale``, ``resize``, ``phase``).

    Returns
    -------
    ModelHandler
        Wrapping the imported :class:`~repurpose.graph.GraphNet`; layer names are the
        Caffe layer names.
    """
    return ModelHandler.from_caffe(prototxt, weights, mean, **kwargs)


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
    """Import an MXNet checkpoint as a :class:`ModelHandler`.

    Arguments as in :func:`repurpose.mxnet.import_checkpoint`, plus ``device``.
    """
    return ModelHandler.from_mxnet_checkpoint(prefix, epoch, **kwargs)
