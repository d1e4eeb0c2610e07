"""Import MXNet checkpoints (``symbol.json`` + ``.params``) with no mxnet at run time.

This ``__init__`` is the package's public face: it re-exports the importer (the private
modules, which return an :class:`~repurpose.ImportedModel` and never import the handler)
and the ``handler_from_*`` functions, which live with :class:`~repurpose.ModelHandler`.

Examples
--------
>>> import repurpose as rp
>>> net = rp.mxnet.load_net("model-symbol.json", "model-0000.params")  # doctest: +SKIP
>>> handler = rp.mxnet.handler_from_mxnet_checkpoint("model", epoch=0)  # doctest: +SKIP
"""

from repurpose.model_handler._importers import (
    handler_from_mxnet,
    handler_from_mxnet_checkpoint,
)
from repurpose.mxnet import (
    _converters,  # noqa: F401  (registers the built-in converters)
    _zoo_converters,  # noqa: F401  (ops of model-zoo exports)
)
from repurpose.mxnet._api import import_checkpoint, import_model
from repurpose.mxnet._convert import ConvertContext, list_supported_ops, load_net, register_op
from repurpose.mxnet._params import load_params, save_params
from repurpose.mxnet._verify import verify

__all__ = [
    "ConvertContext",
    "handler_from_mxnet",
    "handler_from_mxnet_checkpoint",
    "import_checkpoint",
    "import_model",
    "list_supported_ops",
    "load_net",
    "load_params",
    "register_op",
    "save_params",
    "verify",
]
