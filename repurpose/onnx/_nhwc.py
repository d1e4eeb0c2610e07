"""Find the NHWC -> NCHW transpose at the input of a Keras model exported to ONNX.

tf2onnx keeps a Keras model's NHWC input and transposes it to NCHW in front of the first
convolution. Layers that do not care about the layout may come before that transpose:
Keras's ``Rescaling`` layer (``include_preprocessing=True`` in MobileNetV3) becomes a
``Mul`` and an ``Add`` by scalars on the NHWC input. Such a chain gives the same numbers
on NCHW data, so the importer can feed it NCHW and drop the transpose.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = ["NHWCEntry", "nhwc_entry"]

NCHW_PERM = [0, 3, 1, 2]
# ops that compute element by element, so the layout of their input does not matter
_UNARY = {"Relu", "Clip", "Identity", "Neg", "Abs", "Sigmoid", "Tanh", "Exp", "Log", "Sqrt",
          "Reciprocal", "Floor", "Ceil", "Round", "Cast"}
_SCALAR_BINARY = {"Add", "Sub", "Mul", "Div"}  # when the other operand is a single number
_MAX_CHAIN = 16


@dataclass(frozen=True)
class NHWCEntry:
    """The input's transpose to NCHW and the layout-free values computed before it."""

    transpose: onnx.NodeProto
    chain: tuple[str, ...]  # values between the input and the transpose, in order


def nhwc_entry(model: onnx.ModelProto) -> NHWCEntry | None:
    """The ``Transpose(perm=[0, 3, 1, 2])`` that the only (4-D) input reaches through at
    most a chain of elementwise ops with scalar operands, each value read once; or None."""
    from onnx import helper

    scalars = _scalar_constants(model)
    inits = {i.name for i in model.graph.initializer}
    inputs = [v for v in model.graph.input if v.name not in inits]
    if len(inputs) != 1 or len(inputs[0].type.tensor_type.shape.dim) != 4:
        return None
    outputs = {o.name for o in model.graph.output}
    value, chain = inputs[0].name, list[str]()
    for _ in range(_MAX_CHAIN):
        readers = [n for n in model.graph.node if value in n.input]
        if len(readers) != 1 or value in outputs:
            return None
        node = readers[0]
        if node.op_type == "Transpose":
            perm = [helper.get_attribute_value(a) for a in node.attribute if a.name == "perm"]
            ok = bool(perm) and list(perm[0]) == NCHW_PERM
            return NHWCEntry(node, tuple(chain)) if ok else None
        if not _layout_free(node, value, scalars):
            return None
        value = node.output[0]
        chain.append(value)
    return None


def _layout_free(node: onnx.NodeProto, value: str, scalars: set[str]) -> bool:
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1:
        return False
    if node.op_type in _UNARY:  # Clip's bounds are scalars by definition, but check
        return node.input[0] == value and all(n in scalars for n in node.input[1:] if n)
    if node.op_type in _SCALAR_BINARY and len(node.input) == 2:
        return all(n == value or n in scalars for n in node.input)
    return False


def _scalar_constants(model: onnx.ModelProto) -> set[str]:
    """Initializers and ``Constant`` outputs that hold a single number."""
    from onnx import helper

    names = {i.name for i in model.graph.initializer if int(np.prod(i.dims)) == 1}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    if int(np.prod(helper.get_attribute_value(attr).dims)) == 1:
                        names.add(node.output[0])
                elif attr.name in ("value_float", "value_int"):
                    names.add(node.output[0])
    return names
