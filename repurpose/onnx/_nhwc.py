"""Find the NHWC -> NCHW transpose at the input of a Keras model exported to ONNX, and
the values that stay NHWC inside the graph.

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

__all__ = ["NHWCEntry", "nhwc_entry", "nhwc_values"]

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
            return NHWCEntry(node, tuple(chain)) if _perm(node) == NCHW_PERM else None
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


# ops whose output has the axes of their input (read the first input; others constant)
_KEEP = _UNARY | {"LeakyRelu", "Elu", "Selu", "HardSigmoid", "HardSwish", "Softplus",
                  "Softsign", "Erf", "Not", "Sign", "Sin", "Cos", "Mish", "Gelu"}
# elementwise ops of several operands: all of one layout, or constants of rank <= 4
_ELEMENTWISE = _SCALAR_BINARY | {"Pow", "Max", "Min", "Sum", "Mean", "Greater", "Less",
                                 "Equal", "GreaterOrEqual", "LessOrEqual", "And", "Or",
                                 "Xor", "Where", "PRelu"}
# ops whose 4-D output is NCHW by the ONNX standard
_NCHW_OPS = {"Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization",
             "InstanceNormalization", "LpPool"}
NHWC_PERM = [0, 2, 3, 1]


def nhwc_values(model: onnx.ModelProto, input_is_nchw: bool) -> set[str]:
    """Names of the values whose axes are (N, H, W, C), as far as the graph shows it.

    A value is NCHW when a convolution, pooling or batch norm computes it, or when a
    ``Transpose(perm=[0, 3, 1, 2])`` of an NHWC value does; it is NHWC when a
    ``Transpose(perm=[0, 2, 3, 1])`` of an NCHW value computes it, when a
    ``Transpose(perm=[0, 3, 1, 2])`` in front of a convolution reads it (or a value it
    is computed from elementwise), or (``input_is_nchw`` false) when it is the NHWC input
    of :func:`nhwc_entry` or its chain. Elementwise ops keep the layout of their operands;
    every other op ends it (unknown: not listed).
    """
    layout: dict[str, str] = {}
    entry = nhwc_entry(model)
    if entry is not None:
        for value in (_input_name(model), *entry.chain):
            layout[value] = "NCHW" if input_is_nchw else "NHWC"
        if input_is_nchw:  # the importer drops the transpose: its output is its input
            layout[entry.transpose.output[0]] = "NCHW"
    ranks = _constant_ranks(model)
    for value in _nhwc_by_use(model, ranks):
        layout.setdefault(value, "NHWC")
    for node in model.graph.node:
        found = _node_layout(node, layout, ranks)
        if found is not None and node.output and node.output[0] not in layout:
            layout[node.output[0]] = found
    return {v for v, lay in layout.items() if lay == "NHWC"}


def _nhwc_by_use(model: onnx.ModelProto, ranks: dict[str, int]) -> list[str]:
    """The inputs of ``Transpose(perm=[0, 3, 1, 2])`` nodes that feed a convolution (or
    another op that reads NCHW), and the values they are computed from elementwise."""
    producer = {o: n for n in model.graph.node for o in n.output}
    readers: dict[str, list[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node.op_type)
    found = []
    for node in model.graph.node:
        if node.op_type != "Transpose" or _perm(node) != NCHW_PERM:
            continue
        if not set(readers.get(node.output[0], [])) & _NCHW_OPS:
            continue
        value: str | None = node.input[0]
        while value is not None and value not in found:
            found.append(value)
            node_before = producer.get(value)
            data = None if node_before is None else _computed_operands(node_before, ranks)
            value = data[0] if data is not None and len(data) == 1 else None
    return found


def _computed_operands(node: onnx.NodeProto, ranks: dict[str, int]) -> list[str] | None:
    """The non-constant inputs of an elementwise ``node`` whose output has their axes
    (the other inputs are constants of rank <= 4, so broadcasting keeps the axes); None
    for any other node."""
    if node.domain not in ("", "ai.onnx") or len(node.output) != 1 or not node.input:
        return None
    if node.op_type in _KEEP:
        rest_const = all(n in ranks for n in node.input[1:] if n)
        return [node.input[0]] if rest_const else None
    if node.op_type in _ELEMENTWISE:
        small = all(ranks[n] <= 4 for n in node.input if n in ranks)
        return [n for n in node.input if n and n not in ranks] if small else None
    return None


def _perm(node: onnx.NodeProto) -> list[int] | None:
    from onnx import helper

    perm = [list(helper.get_attribute_value(a)) for a in node.attribute if a.name == "perm"]
    return perm[0] if perm else None


def _input_name(model: onnx.ModelProto) -> str:
    inits = {i.name for i in model.graph.initializer}
    return next(v.name for v in model.graph.input if v.name not in inits)


def _node_layout(node: onnx.NodeProto, layout: dict[str, str], ranks: dict[str, int]
                 ) -> str | None:
    """The layout of ``node``'s output from those of its inputs; None when unknown."""
    if node.domain not in ("", "ai.onnx") or not node.input:
        return None
    if node.op_type in _NCHW_OPS:
        return "NCHW"
    if node.op_type == "Transpose":
        first, perm = layout.get(node.input[0]), _perm(node)
        if perm == NHWC_PERM and first == "NCHW":
            return "NHWC"
        return "NCHW" if perm == NCHW_PERM and first == "NHWC" else None
    data = _computed_operands(node, ranks)
    found = {layout.get(n) for n in data or ()}
    return found.pop() if len(found) == 1 else None


def _constant_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """The rank of each initializer and ``Constant`` output."""
    from onnx import helper

    ranks = {i.name: len(i.dims) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            for attr in node.attribute:
                if attr.name == "value":
                    ranks[node.output[0]] = len(helper.get_attribute_value(attr).dims)
                elif attr.name in ("value_float", "value_int"):
                    ranks[node.output[0]] = 0
    return ranks
