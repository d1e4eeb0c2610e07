"""Symbol + params -> :class:`~repurpose.graph.GraphNet`, through a registry of op converters.

A converter is a function ``f(ctx: ConvertContext) -> None`` that reads the node's
attributes (``ctx.attrs.as_int("num_filter")``), fetches parameters by following the
node's inputs to variable nodes (``ctx.param(1, "weight")``) and calls ``ctx.emit`` once
with a registered graph op. Each MXNet node becomes one graph layer with the same name.
Value names: output 0 of node ``n`` is ``"n"``, output ``k > 0`` is ``"n:k"``; graph
inputs and variables keep their names.
"""

from __future__ import annotations

import difflib
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import ModelFormatError, UnsupportedLayerError
from repurpose._registry import ConverterRegistry
from repurpose.graph import GraphNet, Node, build_op
from repurpose.graph._graph import module_name
from repurpose.mxnet._params import load_params, split_prefixes
from repurpose.mxnet._symbol import Attrs, MXNode, Symbol, load_symbol

__all__ = ["ConvertContext", "register_op", "list_supported_ops", "load_net", "Converter"]

Converter = Callable[["ConvertContext"], None]
_CONVERTERS: ConverterRegistry[Converter] = ConverterRegistry("MXNet op", "choose another name")


def register_op(name: str, converter: Converter | None = None) -> Any:
    """Register a converter for the MXNet op ``name`` (usable as a decorator).

    Parameters
    ----------
    name : str
        The MXNet op name as it appears in symbol JSON (``"Convolution"``).
    converter : callable, optional
        ``f(ctx: ConvertContext) -> None``; it must call ``ctx.emit`` once with an op
        registered in :mod:`repurpose.graph` (so saved models rebuild without it).

    Raises
    ------
    ValueError
        If ``name`` already has a converter.

    Examples
    --------
    >>> import repurpose as rp
    >>> def convert_my_relu(ctx):
    ...     ctx.emit("relu", {})
    >>> rp.mxnet.register_op("MyReLU_doc_example", convert_my_relu)
    """

    return _CONVERTERS.register(name, converter)


def list_supported_ops() -> list[str]:
    """The MXNet op names that have a converter, sorted."""
    return _CONVERTERS.names()


class ConvertContext:
    """What a converter sees of one MXNet node, and how it emits its graph layer."""

    def __init__(self, builder: _Builder, node: MXNode) -> None:
        self._b = builder
        self.node = node
        self.name = node.name
        self.op = node.op
        self.attrs: Attrs = node.attrs
        self.emitted: Node | None = None

    @property
    def num_inputs(self) -> int:
        return len(self.node.inputs)

    def fail(self, what: str) -> UnsupportedLayerError:
        """An error naming this node, for attribute combinations a converter cannot handle."""
        return UnsupportedLayerError(f"node {self.name!r} ({self.op}): {what}")

    def input(self, i: int) -> str:
        """The value name of data input ``i`` (a variable there becomes a graph input)."""
        if i >= self.num_inputs:
            raise ModelFormatError(f"node {self.name!r} ({self.op}) has {self.num_inputs} "
                                   f"inputs; input {i} is needed")
        return self._b.value_of(self.node.inputs[i], self)

    def _param_name(self, i: int, arg: str) -> str:
        if i < self.num_inputs:
            nid, _ = self.node.inputs[i]
            var = self._b.sym.nodes[nid]
            if not var.is_variable:
                raise self.fail(f"input {i} ({arg}) is computed by node {var.name!r}; "
                                "only stored parameters are supported there")
            return var.name
        return f"{self.name}_{arg}"  # pre-0.9 graphs omit weight variables (MXNet's upgrader)

    def param(self, i: int, arg: str) -> np.ndarray | None:
        """The stored array of input ``i`` (``arg`` names it in messages), or ``None``
        when the net is loaded without parameters."""
        name = self._param_name(i, arg)
        self._b.used_params.add(name)
        if self._b.params is None:
            return None
        if name not in self._b.params:
            keys = list(self._b.params)
            close = difflib.get_close_matches(name, keys, n=3)
            raise ModelFormatError(
                f"node {self.name!r} ({self.op}) needs parameter {name!r} ({arg}), which is not "
                f"in the params file ({len(keys)} arrays"
                + (f"; closest: {', '.join(close)}" if close else "")
                + "). Is the params file for this symbol?"
            )
        return self._b.params[name]

    def param_shape(self, i: int, arg: str, infer: Callable[[], Sequence[int]]) -> tuple[int, ...]:
        """Shape of parameter ``i``: from the params, a ``__shape__`` hint, or ``infer()``."""
        array = self.param(i, arg)
        if array is not None:
            return tuple(array.shape)
        hint = self._b.hint_shape(self._param_name(i, arg))
        return hint if hint is not None else tuple(int(d) for d in infer())

    def input_shape(self, i: int) -> tuple[int, ...]:
        """Shape of data input ``i`` (batch axis first), inferred with a batch of zeros."""
        try:
            return tuple(self._b.evaluate(self.input(i)).shape)
        except (RuntimeError, ValueError) as err:  # torch: layers do not fit the input shape
            raise ModelFormatError(f"node {self.name!r} ({self.op}): cannot infer the shape "
                                   f"of its input {i}: {err}") from err

    def emit(self, op: str, attrs: Mapping[str, Any], inputs: Sequence[str] | None = None,
             weights: Mapping[str, np.ndarray | None] | None = None, num_outputs: int = 1) -> None:
        """Add this node's graph layer.

        Parameters
        ----------
        op : str
            A registered graph op (``"conv2d"``, ``"mxnet.pool"``, ...).
        attrs : mapping
            JSON-serialisable keyword arguments of the op.
        inputs : sequence of str, optional
            Value names read; default: data input 0.
        weights : mapping, optional
            State-dict entries of the layer module (``{"weight": array}``); ``None``
            values are skipped.
        num_outputs : int
            Number of values the module returns.
        """
        if self.emitted is not None:
            raise RuntimeError(f"converter of {self.op} emitted twice for node {self.name!r}")
        ins = tuple(inputs) if inputs is not None else (self.input(0),)
        outs = tuple([self.name] + [f"{self.name}:{k}" for k in range(1, num_outputs)])
        self.emitted = Node(self.name, op, ins, outs, dict(attrs))
        self._b.add(self.emitted, weights or {})


class _Builder:
    def __init__(self, sym: Symbol, params: Mapping[str, np.ndarray] | None,
                 input_shapes: Mapping[str, Sequence[int]]) -> None:
        self.sym = sym
        self.params = params
        self.input_shapes = {k: tuple(int(d) for d in v) for k, v in input_shapes.items()
                             if k}
        self.default_shape = tuple(input_shapes[""]) if "" in input_shapes else None
        self.used_params: set[str] = set()
        self.nodes: list[Node] = []
        self.modules: dict[str, nn.Module] = {}
        self.outputs_of: dict[int, int] = {}  # node index -> number of outputs emitted
        self.graph_inputs: list[str] = []
        self.cache: dict[str, torch.Tensor] = {}

    def hint_shape(self, var_name: str) -> tuple[int, ...] | None:
        var = self.sym.node_by_name(var_name)
        if var is None:
            return None
        shape = var.attrs.as_tuple("__shape__")
        if shape is None or any(d is None or d <= 0 for d in shape):
            return None
        return tuple(int(d) for d in shape)

    def value_of(self, entry: tuple[int, int], ctx: ConvertContext) -> str:
        nid, idx = entry
        src = self.sym.nodes[nid]
        if src.is_variable:
            return self._variable(src)
        count = self.outputs_of.get(nid)
        if count is None or idx >= count:
            raise ctx.fail(f"reads output {idx} of node {src.name!r}, which has "
                           f"{count or 0} converted output(s)")
        return src.name if idx == 0 else f"{src.name}:{idx}"

    def _variable(self, var: MXNode) -> str:
        name = var.name
        if name in self.graph_inputs or name in self.modules:
            return name
        if self.params is not None and name in self.params:
            self.used_params.add(name)
            value = self.params[name]
            self.add(Node(name, "mxnet.constant", (), (name,),
                          {"shape": list(value.shape), "dtype": str(value.dtype)}),
                     {"value": value})
            return name
        self.graph_inputs.append(name)
        hint = self.hint_shape(name)
        if name not in self.input_shapes and hint is not None:
            self.input_shapes[name] = hint
        return name

    def add(self, node: Node, weights: Mapping[str, np.ndarray | None]) -> None:
        try:
            module = build_op(node.op, node.attrs)
        except (TypeError, ValueError, RuntimeError) as err:  # torch: e.g. a negative size
            raise ModelFormatError(f"node {node.name!r}: cannot build graph op {node.op!r} "
                                   f"from {node.attrs}: {err}") from err
        state = module.state_dict()
        for key, value in weights.items():
            if value is None:
                continue
            if key not in state:
                raise RuntimeError(f"graph op {node.op!r} has no state entry {key!r}")
            if tuple(state[key].shape) != tuple(value.shape):
                raise ModelFormatError(
                    f"node {node.name!r}: parameter {key} has shape {tuple(value.shape)} but "
                    f"the symbol implies {tuple(state[key].shape)}; is the params file for "
                    "this symbol?"
                )
            with torch.no_grad():
                state[key].copy_(torch.from_numpy(np.ascontiguousarray(value)).to(
                    state[key].dtype))
        self.nodes.append(node)
        self.modules[node.name] = module.eval()

    def evaluate(self, value: str) -> torch.Tensor:
        if value in self.cache:
            return self.cache[value]
        if value in self.graph_inputs:
            shape = self.input_shapes.get(value, self.default_shape)
            if shape is None:
                raise ModelFormatError(
                    f"the shape of input {value!r} is needed to size a layer: pass "
                    f"input_shape (with batch axis), or load the net with its params"
                )
            self.cache[value] = torch.zeros((1,) + tuple(shape[1:]))
            return self.cache[value]
        node = next(n for n in self.nodes if value in n.outputs)
        with torch.no_grad():
            result = self.modules[node.name](*(self.evaluate(v) for v in node.inputs))
        results = result if isinstance(result, tuple | list) else (result,)
        self.cache.update(zip(node.outputs, results))
        return self.cache[value]

    def convert(self, node: MXNode) -> None:
        converter = _CONVERTERS.get(node.op)
        if converter is None:
            raise UnsupportedLayerError(
                f"node {node.name!r} uses MXNet op {node.op!r}, which has no converter. "
                f"Supported ops: {', '.join(list_supported_ops())}. Add one with "
                "repurpose.mxnet.register_op(name, converter)."
            )
        ctx = ConvertContext(self, node)
        converter(ctx)
        if ctx.emitted is None:
            raise RuntimeError(f"the converter of {node.op!r} did not call ctx.emit")
        self.outputs_of[node.index] = len(ctx.emitted.outputs)


def _prepare_params(params: Any) -> dict[str, np.ndarray] | None:
    if params is None:
        return None
    if isinstance(params, str | Path):
        return load_params(params, strip_prefixes=True)
    if isinstance(params, Mapping):
        return split_prefixes({str(k): np.asarray(v) for k, v in params.items()})
    raise TypeError(f"params must be a path, a mapping of arrays or None, not {type(params)}")


def _normalise_shapes(input_shape: Any) -> dict[str, Sequence[int]]:
    if input_shape is None:
        return {}
    if isinstance(input_shape, Mapping):
        return dict(input_shape)
    return {"": tuple(input_shape)}


def load_net(symbol_json: str | Path | Mapping[str, Any],
             params: str | Path | Mapping[str, np.ndarray] | None = None,
             input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
             ) -> GraphNet:
    """Convert an MXNet symbol (and its parameters) into a :class:`~repurpose.graph.GraphNet`.

    Parameters
    ----------
    symbol_json : str, Path or dict
        Path of ``model-symbol.json``, its JSON text, or the decoded document.
    params : str, Path, mapping or None
        Path of ``model-0000.params`` or ``{name: array}`` (``arg:``/``aux:`` prefixes
        optional). ``None`` builds the architecture with freshly initialised weights.
    input_shape : sequence of int or mapping, optional
        Input shape with batch axis (``(1, 3, 224, 224)``), or ``{input_name: shape}``.
        Only needed to size layers when ``params`` is None and the symbol has no
        ``__shape__`` hints. Taken from the data variable's ``__shape__`` otherwise.

    Returns
    -------
    GraphNet
        Layers named like the MXNet nodes (``conv1``, ``relu_fc1``, ``_plus0``). Output
        ``k > 0`` of a multi-output node ``n`` is the value ``"n:k"``. The net is in
        eval mode.

    Raises
    ------
    ModelFormatError
        For malformed files or parameters that do not fit the symbol.
    UnsupportedLayerError
        For ops without a converter (see :func:`register_op`).
    """
    sym = load_symbol(symbol_json)
    arrays = _prepare_params(params)
    shapes = _normalise_shapes(input_shape)
    builder = _Builder(sym, arrays, shapes)
    for node in sym.nodes:
        if not node.is_variable:
            builder.convert(node)
    if "" in shapes:
        if len(builder.graph_inputs) != 1 and builder.graph_inputs:
            raise ModelFormatError(f"the net has inputs {builder.graph_inputs}; pass "
                                   "input_shape as a mapping {name: shape}")
        shapes = {name: shapes[""] for name in builder.graph_inputs}
    heads = [_head_value(builder, entry) for entry in sym.heads]
    for name, shape in shapes.items():
        if name not in builder.graph_inputs:
            raise ModelFormatError(f"input_shape names {name!r}, which is not an input of "
                                   f"the net; inputs: {builder.graph_inputs}")
        builder.input_shapes[name] = tuple(int(d) for d in shape)
    _warn_unused(builder)
    return _assemble(builder, heads)


def _head_value(builder: _Builder, entry: tuple[int, int]) -> str:
    node = builder.sym.nodes[entry[0]]
    if node.is_variable:
        return builder._variable(node)
    count = builder.outputs_of[entry[0]]
    if entry[1] >= count:
        raise ModelFormatError(f"graph output {entry} refers to output {entry[1]} of node "
                               f"{node.name!r}, which has {count}")
    return node.name if entry[1] == 0 else f"{node.name}:{entry[1]}"


def _warn_unused(builder: _Builder) -> None:
    if builder.params is None:
        return
    unused = [k for k in builder.params if k not in builder.used_params]
    if unused and len(unused) == len(builder.params):
        raise ModelFormatError(
            f"none of the {len(unused)} arrays in the params file is used by the symbol "
            f"(e.g. {', '.join(unused[:3])}); is the params file for this symbol?"
        )
    if unused:
        warnings.warn(f"{len(unused)} params are not used by the symbol: "
                      f"{', '.join(unused[:5])}", stacklevel=3)


def _assemble(builder: _Builder, heads: list[str]) -> GraphNet:
    inputs = builder.graph_inputs
    shapes = {k: v for k, v in builder.input_shapes.items() if k in inputs}
    net = GraphNet(builder.nodes, inputs, heads, shapes)
    for node in builder.nodes:
        net.add_module(module_name(node.name), builder.modules[node.name])
    return net.eval()
