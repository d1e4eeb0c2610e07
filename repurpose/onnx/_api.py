"""``load``: an ONNX model as a graph plus its preprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from repurpose.graph import GraphNet
from repurpose.onnx._convert import load_net

if TYPE_CHECKING:
    import onnx

__all__ = ["load"]


def load(source: str | Path | bytes | onnx.ModelProto, preprocess: Any = None, *,
         input_shape: Sequence[int] | None = None, nchw_input: bool = True
         ) -> tuple[GraphNet, Any]:
    """Import an ONNX model; return the graph and the preprocessing to use with it.

    ONNX files carry no preprocessing, so ``preprocess`` is returned as given: say how
    images were prepared for the model, e.g. ``Preprocess(resize=256, crop=(224, 224),
    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))`` for torchvision-style nets.

    Parameters
    ----------
    source : str, Path, bytes or onnx.ModelProto
        The ``.onnx`` file. It is parsed, never executed.
    preprocess : Preprocess, optional
        How images become the model's input.
    input_shape : sequence of int, optional
        Shape of one input without the batch axis, when the file leaves it open.
    nchw_input : bool
        Take NCHW input when the file's NHWC input is only transposed to NCHW
        (Keras models converted by tf2onnx). See :func:`load_net`.

    Returns
    -------
    (GraphNet, Preprocess or None)
    """
    return load_net(source, input_shape=input_shape, nchw_input=nchw_input), preprocess
