"""``import_model``: a Caffe model as a graph plus its preprocessing.

The handler-returning :func:`repurpose.caffe.handler_from_caffe` is built on this one in
``repurpose.model_handler`` (importers never import the handler).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from repurpose._exceptions import warn_random_weights
from repurpose._imported import ImportedModel
from repurpose.caffe import _convert, _parse, _preprocess

__all__ = ["import_model"]


def import_model(
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
) -> ImportedModel:
    """Import a Caffe model with its preprocessing.

    Parameters
    ----------
    prototxt : str or Path
        Net definition (deploy or train_val prototxt).
    weights : str or Path, optional
        The ``.caffemodel``. Without it the layers are freshly initialised (random): a
        :class:`repurpose.RandomWeightsWarning` says so.
    mean : str, Path, sequence of float or ndarray, optional
        A ``.binaryproto``/``.npy`` mean image, per-channel values, or an array, in the
        model's channel order (BGR for Caffe models) on the 0-255 scale. Default: the
        data layer's ``mean_value``/``mean_file`` if the prototxt has one, else none.
    input_shape : sequence of int or dict, optional
        Needed when the prototxt declares no input shape.
    channel_order : {"BGR", "RGB"}, optional
        Default BGR for 3-channel inputs (Caffe's convention).
    raw_scale, input_scale : float
        Caffe's ``raw_scale`` (images in [0, 1] are multiplied by it) and ``input_scale``
        (default: the data layer's ``transform_param.scale`` or 1).
    resize : int or (int, int), optional
        Resize before the centre crop to the input size; default the mean image's size.
    phase : {"TEST", "TRAIN"}
        Phase for include/exclude rules.

    Returns
    -------
    ImportedModel
        The :class:`~repurpose.graph.GraphNet` (layer names are the Caffe layer names) and,
        for image inputs, its :class:`~repurpose.Preprocess`. Wrap it with
        :meth:`repurpose.ModelHandler.from_imported`, or use
        :func:`repurpose.caffe.handler_from_caffe` to do both.
    """
    spec = _parse.read_prototxt(prototxt, phase=phase)
    blobs = None
    if weights is not None:
        blobs = _parse.read_caffemodel(weights, ceil_mode=spec.ceil_mode_schema)
    else:
        warn_random_weights(str(prototxt), "the .caffemodel")
    net = _convert.convert_spec(spec, blobs, input_shape=input_shape).eval()
    first = net.input_names[0]
    shape = net.input_shapes[first]
    pre = None
    if len(shape) == 4:
        pre = _preprocess.caffe_preprocess(
            spec, shape, mean, channel_order=channel_order, raw_scale=raw_scale,
            input_scale=input_scale, resize=resize,
        )
    return ImportedModel(net, pre)
