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

# registers the caffe.* graph ops and the converters beyond _layers
from repurpose.caffe import _detection, _extended, _ops  # noqa: F401
from repurpose.caffe._api import import_model
from repurpose.caffe._convert import load_net
from repurpose.caffe._detection import caffe_rows
from repurpose.caffe._layers import (
    Converted,
    LayerContext,
    register_layer,
    supported_layers,
)
from repurpose.caffe._preprocess import load_mean
from repurpose.caffe._solver import CaffeSolver, read_lr_mults, read_solver
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
    "caffe_rows",
    "CaffeSolver",
    "read_solver",
    "read_lr_mults",
]
