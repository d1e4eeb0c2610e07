"""Import Caffe models (prototxt + caffemodel + mean) as PyTorch graph modules.

This ``__init__`` is the package's public face: it re-exports the importer (the private
modules, which return an :class:`~repurpose.ImportedModel` and never import the handler)
and :func:`handler_from_caffe`, which lives with :class:`~repurpose.ModelHandler`.

>>> import repurpose as rp                                     # doctest: +SKIP
>>> net = rp.caffe.load_net("deploy.prototxt", "weights.caffemodel")   # doctest: +SKIP
>>> model = rp.caffe.import_model("deploy.prototxt", "weights.caffemodel")  # doctest: +SKIP
>>> handler = rp.caffe.handler_from_caffe("deploy.prototxt", "weights.caffemodel",
...                                       mean="mean.binaryproto")     # doctest: +SKIP
"""

from repurpose.caffe import _ops  # noqa: F401  (registers the caffe.* graph ops)
from repurpose.caffe._api import import_model
from repurpose.caffe._convert import load_net
from repurpose.caffe._layers import (
    Converted,
    LayerContext,
    register_layer,
    supported_layers,
)
from repurpose.caffe._preprocess import load_mean
from repurpose.caffe._verify import BlobComparison, verify
from repurpose.model_handler._importers import handler_from_caffe

__all__ = [
    "load_net",
    "import_model",
    "handler_from_caffe",
    "load_mean",
    "verify",
    "BlobComparison",
    "register_layer",
    "supported_layers",
    "Converted",
    "LayerContext",
]
