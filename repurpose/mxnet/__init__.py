"""Import MXNet checkpoints (``symbol.json`` + ``.params``) with no mxnet at run time.

Examples
--------
>>> import repurpose as rp
>>> net = rp.mxnet.load_net("model-symbol.json", "model-0000.params")  # doctest: +SKIP
>>> handler = rp.mxnet.handler_from_mxnet_checkpoint("model", epoch=0)  # doctest: +SKIP
"""

from repurpose.mxnet import (
    _converters,  # noqa: F401  (registers the built-in converters)
    _zoo_converters,  # noqa: F401  (ops of model-zoo exports)
)
from repurpose.mxnet._convert import ConvertContext, list_supported_ops, load_net, register_op
from repurpose.mxnet._handler import handler_from_mxnet, handler_from_mxnet_checkpoint
from repurpose.mxnet._params import load_params, save_params
from repurpose.mxnet._verify import verify

__all__ = [
    "ConvertContext",
    "handler_from_mxnet",
    "handler_from_mxnet_checkpoint",
    "list_supported_ops",
    "load_net",
    "load_params",
    "register_op",
    "save_params",
    "verify",
]
