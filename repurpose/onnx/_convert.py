"""ONNX graph -> :class:`~repurpose.graph.GraphNet`, through a registry of op converters.

Each ONNX node that computes on the input becomes one graph layer named after its first
output, and every value keeps its ONNX name, so layers and values can be compared with
``onnxruntime`` one by one. Nodes whose inputs are all constants (``Constant``,
initializers, ``Shape`` of a value of known shape, and whatever is computed from those)
are folded: they are evaluated once with ``onnx.reference`` and never become layers.

Shapes are followed by running the layers built so far on two probe batches of
different sizes; a folded value that differs between the two depends on the batch size
(``Shape(x)[0]``), which a ``Reshape`` then reads from its input at run time.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import ModelFormatError, UnsupportedLayerError
from repurpose._registry import ConverterRegistry
from repurpose.graph import GraphNet, Node, build_op
from repurpose.graph._graph import module_name
from repurpose.onnx._nhwc import nhwc_entry, nhwc_values

if TYPE_CHECKING:
    import onnx

__all__ = ["ConvertContext", "register_op", "list_supported_ops", "load_net", "MIN_OPSET",
           "MAX_OPSET", "PROBE_BATCHES"]

MIN_OPSET, MAX_OPSET = 9, 21
PROBE_BATCHES = (2, 3)

Converter = Callable[["ConvertContext"], None]
_CONVERTERS: ConverterRegistry[Converter] = ConverterRegistry("ONNX op", "choose another name")


def register_op(name: str, converter: Converter | None = None) -> Any:
    """Register a converter for the ONNX op type ``name`` (usable as a decorator).

    Parameters
    ----------
    name : str
        The ONNX op type (``"Conv"``), default domain only.
    converter : callable, optional
        ``f(ctx: ConvertContext) -> None``; it must call ``ctx.emit`` once with an op
        registered in :mod:`repurpose.graph`.

    Raises
    ------
    ValueError
        If ``name`` already has a converter.

    Examples
    --------
    >>> import repurpose as rp
    >>> def convert_my_relu(ctx):
    ...     ctx.emit("relu", {})
    >>> rp.onnx.register_op("MyRelu_doc_example", convert_my_relu)
    """

    return _CONVERTERS.register(name, converter)


def list_supported_ops() -> list[str]:
    """The ONNX op types that convert to layers, sorted (constant folding handles more)."""
    return _CONVERTERS.names()


@dataclass
class _Folded:
    """A constant: its value at each probe batch (equal unless it depends on the batch)."""

    values: tuple[np.ndarray, ...]

    @property
    def batch_dependent(self) -> bool:
        first = self.values[0]
        return any(v.shape != first.shape or not np.array_equal(v, first)
                   for v in self.values[1:])


class ConvertContext:
    """What a converter sees of one ONNX node, and how it emits its graph layer."""

    def __init__(self, builder: _Builder, node: onnx.NodeProto) -> None:
        from onnx import helper

        self._b = builder
        self.node = node
        self.op = node.op_type
        self.name = node.output[0]
        self.opset = builder.opset
        self._attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        self.emitted: Node | None = None

    def fail(self, what: str) -> UnsupportedLayerError:
        """An error naming this node, for attribute combinations a converter cannot handle."""
        return UnsupportedLayerError(f"node {self.name!r} ({self.op}): {what}")

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute value (bytes decoded to str), or ``default``."""
        value = self._attrs.get(name, default)
        if isinstance(value, bytes):
            return value.decode()
        if isinstance(value, list) and value and isinstance(value[0], bytes):
            return [v.decode() for v in value]
        return value

    def has_input(self, i: int) -> bool:
        return i < len(self.node.input) and self.node.input[i] != ""

    def is_const(self, i: int) -> bool:
        return self.has_input(i) and self.node.input[i] in self._b.folded

    def const(self, i: int, what: str = "") -> np.ndarray:
        """The constant value of input ``i`` (``what`` names it in messages)."""
        if not self.is_const(i):
            raise self.fail(f"input {i} {what}must be a constant (an initializer or computed "
                            "from constants only)")
        folded = self._b.folded[self.node.input[i]]
        if folded.batch_dependent:
            raise self.fail(f"input {i} {what}depends on the batch size")
        return folded.values[0]

    def folded(self, i: int) -> _Folded:
        """Input ``i`` as folded, at each probe batch (it may depend on the batch size)."""
        return self._b.folded[self.node.input[i]]

    def input(self, i: int) -> str:
        """The value name of input ``i``; a constant there becomes an ``onnx.constant`` layer."""
        if not self.has_input(i):
            raise ModelFormatError(f"node {self.name!r} ({self.op}) lacks its input {i}")
        return self._b.value(self.node.input[i], self)

    def shape(self, i: int) -> tuple[int, ...]:
        """Shape of input ``i`` at the first probe batch (axis 0 is the batch)."""
        name = self.node.input[i]
        if name in self._b.folded:
            return tuple(self._b.folded[name].values[0].shape)
        return tuple(self._b.samples[self._b.value(name, self)][0].shape)

    def shapes(self, i: int) -> tuple[tuple[int, ...], ...]:
        """Shape of input ``i`` at each probe batch (they differ where the batch enters)."""
        name = self.node.input[i]
        if name in self._b.folded:
            return tuple(tuple(v.shape) for v in self._b.folded[name].values)
        return tuple(tuple(s.shape) for s in self._b.samples[self._b.value(name, self)])

    def batched(self, i: int) -> bool:
        """Whether axis 0 of input ``i`` is the batch axis."""
        samples = self._b.samples[self._b.value(self.node.input[i], self)]
        return samples[0].dim() > 0 and samples[0].shape[0] != samples[1].shape[0]

    def alias(self, i: int = 0) -> None:
        """Make the node's output another name for input ``i`` (an identity is dropped)."""
        self._b.aliases[self.name] = self.input(i)
        self.emitted = Node(self.name, "identity", (), ())

    def emit(self, op: str, attrs: Mapping[str, Any], inputs: Sequence[str] | None = None,
             weights: Mapping[str, np.ndarray | None] | None = None,
             num_outputs: int = 1) -> None:
        """Add this node's graph layer (see :meth:`repurpose.mxnet.ConvertContext.emit`)."""
        if self.emitted is not None:
            raise RuntimeError(f"converter of {self.op} emitted twice for node {self.name!r}")
        ins = tuple(inputs) if inputs is not None else (self.input(0),)
        outs = tuple(self.node.output[:num_outputs])
        self.emitted = Node(self.name, op, ins, outs, dict(attrs))
        self._b.add(self.emitted, weights or {})


class _Builder:
    def __init__(self, model: onnx.ModelProto, input_shape: Sequence[int] | None,
                 nchw_input: bool) -> None:
        self.model = model
        self.graph = model.graph
        self.opset = _default_opset(model)
        self.folded: dict[str, _Folded] = {}
        self.samples: dict[str, tuple[torch.Tensor, ...]] = {}
        self.aliases: dict[str, str] = {}
        self.nodes: list[Node] = []
        self.modules: dict[str, nn.Module] = {}
        self.input_shapes: dict[str, tuple[int, ...]] = {}
        self.graph_inputs: list[str] = []
        self.dropped_transpose: str | None = None
        self.declared_batch: int | None = None  # a fixed batch size in the file, if any
        self.broken: set[str] = set()  # values of unsupported nodes
        self._read_initializers()
        self._read_inputs(input_shape, nchw_input)

    # ----- inputs ------------------------------------------------------------------------
    def _read_initializers(self) -> None:
        from onnx import numpy_helper

        for init in self.graph.initializer:
            value = numpy_helper.to_array(init)
            self.folded[init.name] = _Folded((value,) * len(PROBE_BATCHES))

    def _read_inputs(self, input_shape: Sequence[int] | None, nchw_input: bool) -> None:
        inputs = [v for v in self.graph.input if v.name not in self.folded]
        if not inputs:
            raise ModelFormatError("the ONNX graph has no inputs")
        for i, value in enumerate(inputs):
            shape = _declared_shape(value, input_shape if i == 0 else None)
            dims = value.type.tensor_type.shape.dim
            if i == 0 and dims and dims[0].HasField("dim_value"):
                self.declared_batch = int(dims[0].dim_value)
            self.graph_inputs.append(value.name)
            self.input_shapes[value.name] = shape
            dtype = _input_dtype(value)
            gen = torch.Generator().manual_seed(i)
            self.samples[value.name] = tuple(
                torch.rand((b, *shape[1:]), generator=gen).to(dtype) for b in PROBE_BATCHES)
        if nchw_input:
            self._drop_nhwc_transpose()

    def _drop_nhwc_transpose(self) -> None:
        """An NHWC input transposed to NCHW (tf2onnx's pattern, see :mod:`._nhwc`) becomes
        an NCHW input, as :class:`~repurpose.Preprocess` produces; layout-free ops before
        the transpose then run on NCHW data."""
        entry = nhwc_entry(self.model)
        if entry is None:
            return
        transpose = entry.transpose
        name = self.graph_inputs[0]
        n, h, w, c = self.input_shapes[name]
        self.input_shapes[name] = (n, c, h, w)
        self.samples[name] = tuple(s.permute(0, 3, 1, 2).contiguous()
                                   for s in self.samples[name])
        self.aliases[transpose.output[0]] = transpose.input[0]
        self.dropped_transpose = transpose.output[0]

    # ----- values ------------------------------------------------------------------------
    def value(self, name: str, ctx: ConvertContext) -> str:
        name = self.aliases.get(name, name)
        if name in self.samples:
            return name
        if name in self.folded:
            return self._materialise(name)
        raise ModelFormatError(f"node {ctx.name!r} ({ctx.op}) reads {name!r}, which no "
                               "earlier node computes")

    def _materialise(self, name: str) -> str:
        folded = self.folded[name]
        if folded.batch_dependent:
            raise UnsupportedLayerError(f"value {name!r} is a shape that depends on the batch "
                                        "size and is used as data; this is not supported")
        value = folded.values[0]
        dtype = str(value.dtype)
        self.add(Node(name, "onnx.constant", (), (name,),
                      {"shape": list(value.shape), "dtype": dtype}), {"value": value})
        return name

    def add(self, node: Node, weights: Mapping[str, np.ndarray | None]) -> None:
        try:
            module = build_op(node.op, node.attrs)
        except (TypeError, ValueError) as err:
            raise ModelFormatError(f"node {node.name!r}: cannot build graph op {node.op!r} "
                                   f"from {node.attrs}: {err}") from err
        _load_weights(node, module, weights)
        module.eval()
        with torch.no_grad():
            results = [module(*(self.samples[v][k] for v in node.inputs))
                       for k in range(len(PROBE_BATCHES))]
        if len(node.outputs) == 1:
            self.samples[node.outputs[0]] = tuple(results)
        else:
            for j, out in enumerate(node.outputs):
                self.samples[out] = tuple(r[j] for r in results)
        self.nodes.append(node)
        self.modules[node.name] = module

    def fold(self, node: onnx.NodeProto) -> None:
        """Evaluate a node whose inputs are all constants, at each probe batch."""
        from onnx.reference import ReferenceEvaluator

        if node.op_type == "Shape":
            return self._fold_shape(node)
        evaluator = ReferenceEvaluator(_single_node_model(node, self.model))
        per_batch = []
        for k in range(len(PROBE_BATCHES)):
            feeds = {n: self.folded[n].values[k] for n in node.input if n}
            per_batch.append(list(evaluator.run(None, feeds)))
        for j, out in enumerate(node.output):
            if out:
                self.folded[out] = _Folded(tuple(np.asarray(r[j]) for r in per_batch))

    def _fold_shape(self, node: onnx.NodeProto) -> None:
        from onnx import helper

        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        source = self.aliases.get(node.input[0], node.input[0])
        if source in self.folded:
            shapes = [v.shape for v in self.folded[source].values]
        else:
            shapes = [s.shape for s in self.samples[source]]
        start, end = attrs.get("start", 0), attrs.get("end", None)
        self.folded[node.output[0]] = _Folded(tuple(
            np.array(list(s)[start:end], dtype=np.int64) for s in shapes))

    def is_foldable(self, node: onnx.NodeProto) -> bool:
        names = [self.aliases.get(n, n) for n in node.input if n]
        if node.op_type == "Shape":
            return True
        if node.op_type in _NEVER_FOLD:
            return False
        return all(n in self.folded for n in names)


_NEVER_FOLD = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli"}


def _load_weights(node: Node, module: nn.Module, weights: Mapping[str, np.ndarray | None]
                  ) -> None:
    state = module.state_dict()
    for key, value in weights.items():
        if value is None:
            continue
        if key not in state:
            raise RuntimeError(f"graph op {node.op!r} has no state entry {key!r}")
        if tuple(state[key].shape) != tuple(value.shape):
            raise ModelFormatError(f"node {node.name!r}: {key} has shape {tuple(value.shape)}, "
                                   f"the layer expects {tuple(state[key].shape)}")
        with torch.no_grad():
            state[key].copy_(torch.as_tensor(np.array(value)).to(state[key].dtype))


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ModelFormatError("the ONNX model imports no version of the default (ai.onnx) opset")


def _declared_shape(value: onnx.ValueInfoProto, override: Sequence[int] | None
                    ) -> tuple[int, ...]:
    dims = value.type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]
    if override is not None:
        shape = [1, *(int(d) for d in override)]
        if declared and len(declared) != len(shape):
            raise ModelFormatError(f"input_shape {tuple(override)} has {len(override)} axes, "
                                   f"but input {value.name!r} has {len(declared) - 1} after "
                                   "the batch axis")
        return tuple(shape)
    if not declared:
        raise ModelFormatError(f"input {value.name!r} declares no shape; pass input_shape "
                               "(without the batch axis)")
    unknown = [i for i, d in enumerate(declared[1:], 1) if not d]
    if unknown:
        raise ModelFormatError(
            f"input {value.name!r} has shape {_show(declared)} with unknown axes {unknown}; "
            "pass input_shape (without the batch axis), e.g. input_shape=(3, 224, 224)")
    return (1, *(int(d) for d in declared[1:]))  # type: ignore[arg-type]


def _show(dims: Sequence[int | None]) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in dims) + ")"


def _input_dtype(value: onnx.ValueInfoProto) -> torch.dtype:
    from onnx import TensorProto

    elem = value.type.tensor_type.elem_type
    if elem in (TensorProto.FLOAT, TensorProto.UNDEFINED):
        return torch.float32
    if elem == TensorProto.DOUBLE:
        return torch.float64
    raise ModelFormatError(f"input {value.name!r} has element type "
                           f"{TensorProto.DataType.Name(elem)}; only float inputs are supported")


def _single_node_model(node: onnx.NodeProto, model: onnx.ModelProto) -> onnx.ModelProto:
    from onnx import TensorProto, helper

    def info(name: str) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, TensorProto.UNDEFINED, None)

    graph = helper.make_graph([node], "fold", [info(n) for n in node.input if n],
                              [info(n) for n in node.output if n])
    return helper.make_model(graph, opset_imports=list(model.opset_import),
                             ir_version=model.ir_version)


def read_model(source: str | Path | bytes | onnx.ModelProto) -> onnx.ModelProto:
    """Parse an ONNX file (or bytes, or a ModelProto) without running anything in it."""
    import onnx
    from google.protobuf.message import DecodeError

    if isinstance(source, onnx.ModelProto):
        return source
    try:
        if isinstance(source, bytes):
            return onnx.load_from_string(source)
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"ONNX file {str(path)!r} does not exist")
        return onnx.load(str(path))
    except (DecodeError, onnx.onnx_cpp2py_export.checker.ValidationError) as err:
        raise ModelFormatError(f"{source!r} is not a valid ONNX model: {err}") from err


def load_net(source: str | Path | bytes | onnx.ModelProto,
             input_shape: Sequence[int] | None = None, nchw_input: bool = True) -> GraphNet:
    """Convert an ONNX model into a :class:`~repurpose.graph.GraphNet`.

    Parameters
    ----------
    source : str, Path, bytes or onnx.ModelProto
        The ``.onnx`` file (weights in it or in external-data files beside it).
    input_shape : sequence of int, optional
        Shape of one input without the batch axis; needed when the file leaves axes
        other than the batch unknown.
    nchw_input : bool
        When the only input is NHWC and is transposed to NCHW (the pattern of Keras
        exports by tf2onnx), drop that transpose so the net takes NCHW images like every
        other network in repurpose. Elementwise ops with scalar operands may come before
        the transpose (Keras's ``Rescaling`` layer): they then run on the NCHW input, so
        their values are NCHW here while the file has them NHWC.

    Returns
    -------
    GraphNet
        In eval mode; layers named after the first output of their ONNX node.

    Raises
    ------
    UnsupportedLayerError
        Listing every unsupported op of the model at once.
    ModelFormatError
        For malformed models.
    """
    model = read_model(source)
    builder = _Builder(model, input_shape, nchw_input)
    if builder.opset < MIN_OPSET:
        raise UnsupportedLayerError(f"the model uses opset {builder.opset}; opsets "
                                    f"{MIN_OPSET} to {MAX_OPSET} are supported. Upgrade it "
                                    "with onnx.version_converter.convert_version")
    if builder.opset > MAX_OPSET:
        warnings.warn(f"the model uses opset {builder.opset}; repurpose is tested with opsets "
                      f"{MIN_OPSET} to {MAX_OPSET}. Compare the import with "
                      "repurpose.onnx.verify", stacklevel=2)
    missing: dict[str, list[str]] = {}
    _convert_nodes(builder, model.graph.node, missing)
    if missing:
        listed = "; ".join(f"{op} ({len(names)} node(s), e.g. {names[0]!r}{_not_onnx(op)})"
                           for op, names in sorted(missing.items()))
        raise UnsupportedLayerError(
            f"the ONNX model uses {len(missing)} unsupported op(s): {listed}. Supported: "
            f"{', '.join(list_supported_ops())} (plus any op computed from constants "
            "only, and If on a constant condition). Add a converter with "
            "repurpose.onnx.register_op.")
    nhwc = nhwc_values(model, builder.dropped_transpose is not None)
    return _assemble(builder, [o.name for o in model.graph.output], nhwc)


def _convert_nodes(builder: _Builder, nodes: Sequence[onnx.NodeProto],
                   missing: dict[str, list[str]]) -> None:
    """Convert or fold ``nodes`` in order; record unsupported ones in ``missing`` and
    skip what depends on them, so one error can list them all."""
    broken: set[str] = builder.broken
    for node in nodes:
        if node.output and node.output[0] == builder.dropped_transpose:
            continue
        default = node.domain in ("", "ai.onnx")
        supported = default and node.op_type in _CONVERTERS
        if any(n in broken for n in node.input):
            if not supported and node.op_type not in _FOLD_ONLY:
                _record(missing, node)
            broken.update(node.output)
            continue
        if default and node.op_type == "If" and _inline_if(builder, node, missing):
            continue
        if default and builder.is_foldable(node):
            builder.fold(node)
            continue
        if not supported:
            _record(missing, node)
            broken.update(node.output)
            continue
        ctx = ConvertContext(builder, node)
        _CONVERTERS[node.op_type](ctx)
        if ctx.emitted is None:
            raise RuntimeError(f"the converter of {node.op_type!r} did not call ctx.emit")


# ops that never become layers: behind an unsupported node they are not reported themselves
_FOLD_ONLY = {"If", "Shape", "Size"}


def _not_onnx(op: str) -> str:
    """A note for an op type that is no ONNX operator at all (an exporter left a
    framework op in the file, e.g. tf2onnx's ``Erfc`` or ``StatefulPartitionedCall``)."""
    from onnx import defs

    if "." in op or defs.has(op):
        return ""
    return ("; not an ONNX op: the exporter could not convert it, and onnxruntime cannot "
            "run it either. Re-export the model avoiding it")


def _record(missing: dict[str, list[str]], node: onnx.NodeProto) -> None:
    key = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
    missing.setdefault(key, []).append(node.output[0] if node.output else node.name)


def _inline_if(builder: _Builder, node: onnx.NodeProto, missing: dict[str, list[str]]
               ) -> bool:
    """Replace an ``If`` whose condition is a constant by the nodes of the branch taken."""
    from onnx import helper

    cond = builder.folded.get(node.input[0])
    if cond is None or cond.batch_dependent:
        return False
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    branch = attrs["then_branch" if bool(np.asarray(cond.values[0]).reshape(-1)[0])
                   else "else_branch"]
    _convert_nodes(builder, branch.node, missing)
    for out, inner in zip(node.output, (o.name for o in branch.output)):
        inner = builder.aliases.get(inner, inner)
        if inner in builder.folded:
            builder.folded[out] = builder.folded[inner]
        elif inner in builder.broken:
            builder.broken.add(out)
        else:
            builder.aliases[out] = inner
    return True


def _assemble(builder: _Builder, heads: list[str], nhwc: set[str]) -> GraphNet:
    outputs = []
    for head in heads:
        name = builder.aliases.get(head, head)
        if name not in builder.samples:
            if name in builder.folded:
                name = builder._materialise(name)
            else:
                raise ModelFormatError(f"graph output {head!r} is not computed by any node")
        outputs.append(name)
    shapes = {k: builder.input_shapes[k] for k in builder.graph_inputs}
    # an aliased ONNX value is the same tensor as the graph value it names
    nhwc = {builder.aliases.get(v, v) for v in nhwc} & set(builder.samples)
    net = GraphNet(builder.nodes, builder.graph_inputs, outputs, shapes, nhwc_values=nhwc)
    for node in builder.nodes:
        net.add_module(module_name(node.name), builder.modules[node.name])
    return net.eval()
