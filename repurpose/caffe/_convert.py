"""Turn a parsed Caffe net (+ weights) into a :class:`repurpose.graph.GraphNet`.

Value naming (SSA): every Caffe blob version becomes one graph value. The *last* version
of blob ``b`` keeps the name ``b``; an earlier version written by layer ``L`` and later
overwritten by an in-place layer is called ``b@L``. Node names are the Caffe layer names.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from repurpose._exceptions import ModelFormatError, RepurposeError
from repurpose.caffe import _layers, _parse
from repurpose.graph import GraphNet, Node, build_op
from repurpose.graph._graph import module_name

__all__ = ["load_net", "convert_spec", "SKIPPED_TYPES"]

# Training-only layers: dropped at inference (Caffe's deploy nets never have them).
SKIPPED_TYPES = frozenset({"Accuracy", "Silence", "SoftmaxWithLoss", "EuclideanLoss",
                           "SigmoidCrossEntropyLoss", "HingeLoss", "InfogainLoss",
                           "MultinomialLogisticLoss", "ContrastiveLoss"})
MAX_PARAMETERS = 1 << 30


def load_net(
    prototxt: str | Path,
    caffemodel: str | Path | None = None,
    *,
    input_shape: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
    phase: str = "TEST",
    device: str | torch.device = "cpu",
) -> GraphNet:
    """Import a Caffe net as a :class:`~repurpose.graph.GraphNet` (in eval mode).

    Parameters
    ----------
    prototxt : str or Path
        The net definition (text; V2 ``layer`` or legacy V1 ``layers``).
    caffemodel : str or Path, optional
        Binary weights, matched to layers by name. Without it, layers keep random init.
    input_shape : sequence of int or dict, optional
        Input shape(s) ``(N, C, H, W)``, required when the prototxt declares none (e.g. a
        train_val net with a Data layer); a dict maps input blob names to shapes.
    phase : {"TEST", "TRAIN"}
        Which include/exclude phase rules to apply.
    device : str or torch.device
        Where the returned module lives.

    Returns
    -------
    GraphNet
        Node names are the Caffe layer names; values are blob versions (see module doc).

    Raises
    ------
    ModelFormatError
        Malformed, truncated or mismatched files.
    UnsupportedLayerError
        A layer type without converter (see :func:`register_layer`).
    """
    spec = _parse.read_prototxt(prototxt, phase=phase)
    weights = None
    if caffemodel is not None:
        weights = _parse.read_caffemodel(caffemodel, ceil_mode=spec.ceil_mode_schema)
    net = convert_spec(spec, weights, input_shape=input_shape)
    return net.to(device).eval()


def _given_shapes(input_shape: Any, names: list[str]) -> dict[str, list[int]]:
    if input_shape is None:
        return {}
    if isinstance(input_shape, Mapping):
        return {k: [int(d) for d in v] for k, v in input_shape.items()}
    if not names:
        return {}
    return {names[0]: [int(d) for d in input_shape]}


def _inputs(spec: _parse.NetSpec, input_shape: Any) -> dict[str, list[int]]:
    declared: dict[str, list[int] | None] = dict(spec.inputs)
    for layer in spec.layers:
        if layer.type == "Input":
            declared.update(zip(layer.top, _parse.input_layer_shapes(layer)))
        elif _is_data_layer(layer):
            declared.update({layer.top[0]: None} if layer.top else {})
    given = _given_shapes(input_shape, list(declared))
    unknown = [k for k in given if k not in declared]
    if unknown:
        raise ModelFormatError(f"input_shape names {unknown} that are not net inputs; "
                               f"inputs are {list(declared)}")
    shapes: dict[str, list[int]] = {}
    for name, dims in declared.items():
        dims = given.get(name, dims)
        if dims is None:
            raise ModelFormatError(
                f"the shape of input {name!r} is not declared in {spec.path}; pass "
                "input_shape=(N, C, H, W)"
            )
        shapes[name] = _parse._check_dims(list(dims), f"input {name!r}")
    if not shapes:
        raise ModelFormatError(f"{spec.path} declares no input (input, input_shape, an Input "
                               "layer or a data layer)")
    return shapes


def _is_data_layer(layer: Any) -> bool:
    """Data layers (and bottom-less Python layers) feed the net: they become inputs."""
    return layer.type in _parse.DATA_LAYER_TYPES and not layer.bottom


class _Builder:
    def __init__(self, spec: _parse.NetSpec, weights: dict[str, list[np.ndarray]] | None,
                 inputs: dict[str, list[int]]) -> None:
        self.spec, self.weights, self.inputs = spec, weights, inputs
        self.layers = [layer for layer in spec.layers if self._kept(layer)]
        params = spec.params if len(spec.params) == len(spec.layers) else []
        self.params = {id(layer): p for layer, p in zip(spec.layers, params)}
        self.fields: dict[str, dict[int, Any]] = getattr(weights, "fields", {})
        self.writes: Counter[str] = Counter(list(inputs))
        for layer in self.layers:
            self.writes.update(layer.top)
        self.current: dict[str, str] = {}
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.nodes: list[Node] = []
        self.state: dict[str, torch.Tensor] = {}
        self.n_params = 0
        self.missing: list[str] = []
        self.used: set[str] = set()
        self.input_values: dict[str, list[int]] = {}

    def _kept(self, layer: Any) -> bool:
        if layer.type == "Input" or _is_data_layer(layer):
            return False
        return layer.type not in SKIPPED_TYPES

    def _value(self, blob: str, layer: str) -> str:
        self.writes[blob] -= 1
        return blob if self.writes[blob] == 0 else f"{blob}@{layer}"

    def build(self) -> GraphNet:
        for name, dims in self.inputs.items():
            value = self._value(name, name)
            self.current[name] = value
            self.shapes[value] = tuple(dims)
            self.input_values[value] = list(dims)
        _layers.check_supported(self.layers)
        for layer in self.layers:
            try:
                self._add(layer)
            except RepurposeError:
                raise
            except (ValueError, RuntimeError, TypeError, IndexError, ZeroDivisionError) as err:
                raise ModelFormatError(
                    f"layer {layer.name!r} ({layer.type}) cannot be built: {err}"
                ) from err
        return self._finish()

    def _add(self, layer: Any) -> None:
        missing = [b for b in layer.bottom if b not in self.current]
        if missing:
            raise ModelFormatError(
                f"layer {layer.name!r} reads blob(s) {missing} that no earlier layer or input "
                "produces"
            )
        ins = [self.current[b] for b in layer.bottom]
        blobs = None if self.weights is None else self.weights.get(layer.name)
        ctx = _layers.LayerContext(layer, [self.shapes[v] for v in ins], blobs,
                                   self.params.get(id(layer), {}),
                                   self.fields.get(layer.name, {}))
        conv = _layers.get_converter(layer)(ctx)
        with torch.device("meta"):
            module = build_op(conv.op, conv.attrs).eval()
            result = module(*(torch.empty(self.shapes[v]) for v in ins))
        outs = list(result) if isinstance(result, tuple) else [result]
        if len(outs) != len(layer.top):
            raise ModelFormatError(f"layer {layer.name!r} ({layer.type}) produces {len(outs)} "
                                   f"output(s) but lists {len(layer.top)} top(s)")
        self._take_weights(layer, module, conv, blobs)
        values = [self._value(t, layer.name) for t in layer.top]
        for top, value, out in zip(layer.top, values, outs):
            self.current[top] = value
            self.shapes[value] = tuple(out.shape)
        self.nodes.append(Node(layer.name, conv.op, tuple(ins), tuple(values), conv.attrs))

    def _take_weights(self, layer: Any, module: torch.nn.Module, conv: Any,
                      blobs: list[np.ndarray] | None) -> None:
        expected = module.state_dict()
        self.n_params += sum(math.prod(t.shape) for t in expected.values())
        if self.n_params > MAX_PARAMETERS:
            raise ModelFormatError(f"the net needs more than {MAX_PARAMETERS} parameters "
                                   f"(at layer {layer.name!r}); refusing an absurd size")
        if blobs is not None:
            self.used.add(layer.name)
        elif any(True for _ in module.parameters()) or (
                conv.op == "batch_norm" and conv.attrs.get("track_running_stats")):
            self.missing.append(layer.name)
        prefix = layer.name.replace(".", "_") or "_"
        for key, arr in conv.state.items():
            if key not in expected or tuple(expected[key].shape) != arr.shape:
                shape = None if key not in expected else tuple(expected[key].shape)
                raise ModelFormatError(f"layer {layer.name!r}: converter gave {key} of shape "
                                       f"{arr.shape}; the op expects {shape}")
            self.state[f"{prefix}.{key}"] = torch.from_numpy(np.ascontiguousarray(arr))

    def _finish(self) -> GraphNet:
        self._check_weights()
        consumed = {v for node in self.nodes for v in node.inputs}
        produced = [v for node in self.nodes for v in node.outputs]
        outputs = [v for v in produced if v not in consumed and "@" not in v]
        if not outputs and produced:
            outputs = [produced[-1]]
        if not outputs:
            outputs = list(self.input_values)
        # Built on the meta device, so that weights read from the caffemodel are not first
        # randomly initialised (a third of CaffeNet's import time); layers the caffemodel
        # does not fill completely are then rebuilt normally.
        with torch.device("meta"):
            net = GraphNet(self.nodes, list(self.input_values), outputs, self.input_values,
                           layout="channels_last")
        for node in self.nodes:
            name = module_name(node.name)
            module = net.get_submodule(name)
            keys = [f"{name}.{k}" for k in module.state_dict()]
            tensors = len(list(module.parameters())) + len(list(module.buffers()))
            if keys and tensors == len(keys) and all(k in self.state for k in keys):
                module.to_empty(device="cpu")
            else:
                net.add_module(name, build_op(node.op, node.attrs))
        missing, unexpected = net.load_state_dict(self.state, strict=False)
        if unexpected:
            raise ModelFormatError(f"internal: unexpected weights {unexpected[:5]}")
        return net

    def _check_weights(self) -> None:
        if self.weights is None:
            return
        needing = [n.name for n in self.nodes if n.name in self.used or n.name in self.missing]
        if needing and not self.used:
            raise ModelFormatError(
                "the weights file matches none of the net's layers: the net's layers with "
                f"weights are {needing[:8]}, the file has {sorted(self.weights)[:8]}. "
                "Is it the caffemodel of another architecture?"
            )
        if self.missing:
            warnings.warn(f"no weights in the caffemodel for layer(s) {self.missing}; they keep "
                          "their random initialisation", stacklevel=4)
        extra = sorted(set(self.weights) - self.used)
        if extra:
            warnings.warn(f"caffemodel layer(s) {extra} have no counterpart in the prototxt "
                          "(ignored)", stacklevel=4)


def convert_spec(spec: _parse.NetSpec, weights: dict[str, list[np.ndarray]] | None = None,
                 *, input_shape: Any = None) -> GraphNet:
    """Build the GraphNet of a parsed net (see :func:`load_net`)."""
    return _Builder(spec, weights, _inputs(spec, input_shape)).build()
