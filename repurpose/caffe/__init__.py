"""Import Caffe models (prototxt + caffemodel + mean) as PyTorch graph modules.

This ``__init__`` is the package's public face: it re-exports the importer (the private
modules, which return an :class:`~repurpose.ImportedModel` and never import the handler)
and :func:`handler_from_caffe`, which lives with :class:`~repurpose.ModelHandler`.

>>> import tempfile
>>> from pathlib import Path
>>> import repurpose as rp
>>> proto = Path(tempfile.mkdtemp()) / "deploy.prototxt"
>>> _ = proto.write_text(
...     'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8 '
...     'layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
...     'convolution_param { num_output: 4 kernel_size: 3 } } '
...     'layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }')
>>> net = rp.caffe.load_net(proto)  # with a .caffemodel as 2nd argument: trained weights
>>> net.layer_names
['conv1', 'relu1']

With the weights and the mean, as a handler (``docs/caffe.md`` runs this on SqueezeNet):

>>> handler = rp.caffe.handler_from_caffe("deploy.prototxt", "weights.caffemodel",
...                                       mean=(104, 117, 123))  # doctest: +SKIP
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
from repurpose.caffe._solver import CaffeSolver, read_lr_mults, read_recipe, read_solver
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
    "read_recipe",
]
