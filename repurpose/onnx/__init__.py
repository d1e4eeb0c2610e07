"""Import ONNX models into the layer graph, and export networks and repurposers to ONNX.

Needs the optional ``onnx`` package (``pip install repurpose[onnx]``).

Examples
--------
>>> import repurpose as rp
>>> net, preprocess = rp.onnx.load("model.onnx")          # doctest: +SKIP
>>> handler = rp.ModelHandler.from_onnx("model.onnx")     # doctest: +SKIP
"""

from repurpose.onnx import _converters, _ops  # noqa: F401  (register converters and ops)
from repurpose.onnx._api import load
from repurpose.onnx._convert import ConvertContext, list_supported_ops, load_net, register_op
from repurpose.onnx._verify import NodeDiff, VerifyReport, verify
from repurpose.repurposers._onnx_export import register_head

__all__ = [
    "ConvertContext",
    "list_supported_ops",
    "load",
    "load_net",
    "NodeDiff",
    "register_head",
    "register_op",
    "verify",
    "VerifyReport",
]
