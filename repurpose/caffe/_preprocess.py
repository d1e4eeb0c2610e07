"""Caffe preprocessing: mean files, BGR order, raw_scale and input_scale -> ``Preprocess``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from repurpose._exceptions import ModelFormatError
from repurpose._preprocess import Preprocess
from repurpose.caffe import _parse

__all__ = ["load_mean", "caffe_preprocess", "transform_param_of"]


def load_mean(path: str | Path) -> np.ndarray:
    """Load a mean image from a ``.binaryproto`` (BlobProto) or ``.npy`` file.

    Parameters
    ----------
    path : str or Path
        A Caffe mean file (legacy 4-D blob, BGR, 0-255) or a NumPy ``.npy`` array.

    Returns
    -------
    ndarray
        float32 of shape (C, H, W), in the file's channel order (BGR for Caffe files).
    """
    p = Path(path)
    if p.suffix == ".npy":
        try:
            arr = np.load(p, allow_pickle=False)
        except FileNotFoundError as err:
            raise ModelFormatError(f"mean file not found: {str(p)!r}") from err
        except ValueError as err:
            raise ModelFormatError(f"{p} is not a plain .npy array: {err}") from err
    else:
        arr = _parse.read_blobproto(p)
    arr = np.asarray(arr, dtype=np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3:
        raise ModelFormatError(f"mean in {p} has shape {arr.shape}; expected (C, H, W)")
    return arr


def transform_param_of(spec: _parse.NetSpec) -> Any | None:
    """The ``transform_param`` of the net's first data layer, if any."""
    for layer in spec.layers:
        if layer.HasField("transform_param"):
            return layer.transform_param
    return None


def _resolve_mean(mean: Any, spec: _parse.NetSpec, channels: int) -> Any:
    if mean is None:
        tp = transform_param_of(spec)
        if tp is None:
            return None
        if tp.mean_value:
            values = list(tp.mean_value)
            return tuple(values * channels if len(values) == 1 else values)
        if tp.mean_file:
            candidate = Path(spec.path).parent / tp.mean_file
            return load_mean(candidate) if candidate.is_file() else None
        return None
    if isinstance(mean, (str, Path)):
        return load_mean(mean)
    arr = np.asarray(mean, dtype=np.float32)
    if arr.ndim == 0:
        return (float(arr),) * channels
    if arr.ndim == 1:
        return tuple(float(v) for v in arr)
    return arr


def caffe_preprocess(
    spec: _parse.NetSpec,
    input_shape: Sequence[int],
    mean: Any = None,
    *,
    channel_order: str | None = None,
    raw_scale: float = 255.0,
    input_scale: float | None = None,
    resize: int | tuple[int, int] | None = None,
) -> Preprocess:
    """The :class:`repurpose.Preprocess` matching a Caffe net.

    Defaults follow Caffe's ``classify.py``: BGR order for 3-channel input, ``raw_scale``
    255, the mean subtracted after scaling, ``input_scale`` last (from the data layer's
    ``transform_param.scale`` when present). A mean image larger than the input is
    centre-cropped (resize to the mean's size, then crop to the input size).
    """
    channels, height, width = (list(input_shape) + [1, 1, 1])[1:4]
    if channel_order is None:
        channel_order = "BGR" if channels == 3 else "RGB"
    mean_value = _resolve_mean(mean, spec, channels)
    if isinstance(mean_value, tuple) and len(mean_value) != channels:
        raise ModelFormatError(f"mean has {len(mean_value)} values; the net has {channels} "
                               "channels")
    if isinstance(mean_value, np.ndarray) and mean_value.shape[0] != channels:
        raise ModelFormatError(f"mean image has shape {mean_value.shape}; the net has "
                               f"{channels} channels")
    if input_scale is None:
        tp = transform_param_of(spec)
        input_scale = float(tp.scale) if tp is not None else 1.0
    crop = (int(height), int(width))
    if isinstance(mean_value, np.ndarray) and (mean_value.shape[1] < crop[0]
                                               or mean_value.shape[2] < crop[1]):
        raise ModelFormatError(f"mean image is {mean_value.shape[1:]} but the net's input is "
                               f"{crop}; Caffe needs a mean at least as large as the input")
    if resize is None:
        if isinstance(mean_value, np.ndarray) and mean_value.shape[1:] != crop:
            resize = (int(mean_value.shape[1]), int(mean_value.shape[2]))
        else:
            resize = crop
    return Preprocess(channel_order=channel_order, resize=resize, crop=crop,
                      raw_scale=float(raw_scale), mean=mean_value, input_scale=input_scale)
