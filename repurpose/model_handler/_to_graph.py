"""Plain torch modules -> :class:`~repurpose.graph.GraphNet`, so they save without user code.

The module is traced with torch.fx (the tracer that names the handler's layers), and each
fx node becomes one graph node named like the handler's layer (``layer1.0.conv1``,
``layer1.0.add``). Leaf modules must be standard ``torch.nn`` layers: each is rebuilt from
its class name and constructor arguments, and the rebuilt layer must print exactly like
the original (``repr``), so nothing that the arguments do not capture is lost. Functional
ops are mapped one by one (``+``, ``*``, ``torch.cat``, ``torch.flatten``,
``x.view(x.size(0), -1)``, ``F.relu``, ``F.adaptive_avg_pool2d``, ...).

Anything else stops the conversion with an :class:`UnsupportedLayerError` that names the
layer; the handler then saves the module's state dict as before.
"""

from __future__ import annotations

import inspect
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from repurpose._exceptions import UnsupportedLayerError
from repurpose.graph import GraphNet, Node
from repurpose.graph._graph import module_name
from repurpose.graph._torch_ops import TORCH_LAYERS, torch_layer
from repurpose.model_handler._layers import NAME_KEY, trace

__all__ = ["to_graph", "for_saving"]

_JSON_SCALARS = (bool, int, float, str, type(None))


def for_saving(module: nn.Module, input_shape: Sequence[int] | None
               ) -> tuple[nn.Module, str | None]:
    """``(graph, None)`` when ``module`` converts (and, with a known input shape, computes
    the same outputs), else ``(module, why not)``."""
    if isinstance(module, GraphNet):
        return module, None
    try:
        net = to_graph(module, input_shape)
    except UnsupportedLayerError as err:
        return module, str(err)
    if input_shape is not None:
        problem = _compare(module, net, input_shape)
        if problem:
            return module, problem
    return net, None


def to_graph(module: nn.Module, input_shape: Sequence[int] | None = None) -> GraphNet:
    """Convert an fx-traceable module built from standard layers into a GraphNet.

    Parameters
    ----------
    module : nn.Module
        The network (not modified). Weights are copied; each layer keeps its train/eval
        mode.
    input_shape : sequence of int, optional
        One input's shape without the batch axis, stored as the graph's input shape.

    Returns
    -------
    GraphNet
        Layers named as ``ModelHandler(module).layer_names`` names them.

    Raises
    ------
    UnsupportedLayerError
        Naming the layer (or op) that has no graph equivalent.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 2))
    >>> net = to_graph(module, (3, 4, 4))
    >>> net.layer_names
    ['0', '1', '2', '3']
    >>> x = torch.rand(2, 3, 4, 4)
    >>> bool(torch.equal(net(x), module(x)))
    True
    """
    try:
        gm, _ = trace(module)
    except Exception as err:  # fx raises many types for untraceable code
        raise UnsupportedLayerError(f"torch.fx cannot trace {type(module).__name__}: "
                                    f"{type(err).__name__}: {err}") from err
    builder = _Builder(gm)
    for node in gm.graph.nodes:
        builder.convert(node)
    if not builder.outputs:
        raise UnsupportedLayerError("the traced module returns no tensor")
    shapes = {} if input_shape is None else {
        builder.inputs[0]: [1, *(int(d) for d in input_shape)]}
    net = GraphNet(builder.nodes, builder.inputs, builder.outputs, shapes)
    for name, layer in builder.modules.items():
        net.add_module(module_name(name), layer)
    net.train(module.training)
    for name, layer in builder.modules.items():
        layer.train(builder.training[name])
    return net


class _Builder:
    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.nodes: list[Node] = []
        self.modules: dict[str, nn.Module] = {}
        self.training: dict[str, bool] = {}
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self.batch_sizes: set[str] = set()  # fx nodes holding x.size(0) / x.shape[0]
        self.shapes: set[str] = set()  # fx nodes holding x.shape
        self.called: set[str] = set()  # modules already converted

    def convert(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            self.inputs.append(node.name)
        elif node.op == "output":
            outs = node.args[0]
            outs = outs if isinstance(outs, tuple | list) else (outs,)
            self.outputs = [self._value(o, node) for o in outs]
        elif node.op == "call_module":
            self._module(node)
        elif node.op in ("call_function", "call_method"):
            self._function(node)
        else:
            raise self._fail(node, f"{node.op} nodes (tensors used directly) are not supported")

    def _name(self, node: fx.Node) -> str:
        return str(node.meta.get(NAME_KEY, node.name))

    def _fail(self, node: fx.Node, what: str) -> UnsupportedLayerError:
        return UnsupportedLayerError(f"layer {self._name(node)!r}: {what}")

    def _value(self, arg: Any, node: fx.Node) -> str:
        if not isinstance(arg, fx.Node):
            raise self._fail(node, f"reads {arg!r} where a tensor is expected")
        if arg.name in self.batch_sizes or arg.name in self.shapes:
            raise self._fail(node, "uses a tensor's shape as data")
        return arg.name

    def _emit(self, node: fx.Node, layer: nn.Module, op: str, attrs: dict[str, Any],
              inputs: Sequence[Any], training: bool = False) -> None:
        name = self._name(node)
        ins = tuple(self._value(a, node) for a in inputs)
        self.nodes.append(Node(name, op, ins, (node.name,), attrs))
        self.modules[name] = layer
        self.training[name] = training

    # ----- leaf modules ------------------------------------------------------------------
    def _module(self, node: fx.Node) -> None:
        original = self.gm.get_submodule(str(node.target))
        if node.target in self.called and original.state_dict():
            raise self._fail(node, f"module {node.target!r} is called more than once (shared "
                                   "weights); a graph holds one layer per call")
        self.called.add(str(node.target))
        kind = type(original).__name__
        if type(original) is not getattr(nn, kind, None) or kind not in TORCH_LAYERS:
            raise self._fail(node, f"{type(original).__module__}.{type(original).__qualname__}"
                                   " is not a standard torch.nn layer")
        if node.kwargs or len(node.args) != 1:
            raise self._fail(node, f"{kind} is called with {len(node.args)} arguments")
        kwargs = _constructor_args(original)
        if kwargs is None:
            raise self._fail(node, f"the arguments of {kind} are not JSON values")
        if repr(torch_layer(kind, kwargs)) != repr(original):
            raise self._fail(node, f"{original!r} cannot be rebuilt from its arguments")
        if kwargs.get("inplace"):
            # A graph keeps every value for later readers (extraction of several layers):
            # an in-place activation would overwrite its input there.
            kwargs["inplace"] = False
        layer = torch_layer(kind, kwargs)
        layer.load_state_dict(original.state_dict())
        self._emit(node, layer, "torch.nn", {"type": kind, "kwargs": kwargs}, node.args,
                   original.training)

    # ----- functional ops ----------------------------------------------------------------
    def _function(self, node: fx.Node) -> None:
        target, args, kwargs = node.target, node.args, dict(node.kwargs)
        if self._metadata(node):
            return
        if node.op == "call_method":
            method = _METHODS.get(str(target))
            if method is None:
                raise self._fail(node, f"the tensor method .{target}() is not supported")
            return method(self, node, args, kwargs)
        if target in _BINARY and len(args) == 2 and all(isinstance(a, fx.Node) for a in args):
            op = _BINARY[target]
            return self._emit(node, _graph_op(op, {}), op, {}, args)
        handler = _FUNCTIONS.get(target)
        if handler is None:
            name = getattr(target, "__name__", str(target))
            raise self._fail(node, f"the function {name} (with these arguments) is not "
                                   "supported")
        handler(self, node, args, kwargs)

    def _metadata(self, node: fx.Node) -> bool:
        """Record ``x.size(0)``, ``x.shape``, ``x.shape[0]``; they feed a reshape."""
        args = node.args
        if node.op == "call_method" and node.target == "size" and len(args) == 2 \
                and args[1] == 0:
            self.batch_sizes.add(node.name)
            return True
        if node.op == "call_function" and node.target is getattr and args[1] == "shape":
            self.shapes.add(node.name)
            return True
        if node.op == "call_function" and node.target is operator.getitem and \
                isinstance(args[0], fx.Node) and args[0].name in self.shapes and args[1] == 0:
            self.batch_sizes.add(node.name)
            return True
        return False

    def reshape(self, node: fx.Node, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        if kwargs:
            raise self._fail(node, "reshape with keyword arguments is not supported")
        x, dims = args[0], args[1:]
        if len(dims) == 1 and isinstance(dims[0], tuple | list):
            dims = tuple(dims[0])
        shape = []
        for i, d in enumerate(dims):
            if isinstance(d, fx.Node) and d.name in self.batch_sizes and i == 0:
                shape.append(0)  # 0 keeps the input's size: the batch
            elif isinstance(d, int):
                shape.append(d)
            else:
                raise self._fail(node, f"reshape to {dims!r}: only x.size(0) and integers "
                                       "are supported")
        attrs = {"shape": shape}
        self._emit(node, _graph_op("reshape", attrs), "reshape", attrs, [x])

    def flatten(self, node: fx.Node, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        start = kwargs.get("start_dim", args[1] if len(args) > 1 else 0)
        end = kwargs.get("end_dim", args[2] if len(args) > 2 else -1)
        self._layer(node, "Flatten", {"start_dim": start, "end_dim": end}, args[0])

    def cat(self, node: fx.Node, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        tensors = kwargs.get("tensors", args[0] if args else None)
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        if not isinstance(tensors, tuple | list) or not isinstance(dim, int):
            raise self._fail(node, "torch.cat needs a list of tensors and an int dim")
        self._emit(node, _graph_op("concat", {"dim": dim}), "concat", {"dim": dim}, tensors)

    def _layer(self, node: fx.Node, kind: str, kwargs: dict[str, Any], x: Any) -> None:
        layer = torch_layer(kind, kwargs)
        self._emit(node, layer, "torch.nn", {"type": kind, "kwargs": kwargs}, [x])


def _activation(kind: str, **params: str) -> Callable[..., None]:
    """A converter for ``f(x, ...)`` -> ``nn.<kind>``; ``params`` maps the function's
    argument names to the layer's."""

    def convert(builder: _Builder, node: fx.Node, args: Sequence[Any],
                kwargs: dict[str, Any]) -> None:
        names = list(params)
        values = dict(zip(names, args[1:]))
        values.update({k: v for k, v in kwargs.items() if k in params})
        unknown = [k for k in kwargs if k not in params and k != "inplace"]
        if unknown or len(args) - 1 > len(names):
            raise builder._fail(node, f"{kind} with arguments {unknown or args[1:]} is "
                                      "not supported")
        builder._layer(node, kind, {params[k]: v for k, v in values.items()}, args[0])

    return convert


def _graph_op(op: str, attrs: dict[str, Any]) -> nn.Module:
    from repurpose.graph import build_op

    return build_op(op, attrs)


def _constructor_args(module: nn.Module) -> dict[str, Any] | None:
    """The constructor arguments of a standard layer, read back from its attributes."""
    out: dict[str, Any] = {}
    for name, param in inspect.signature(type(module).__init__).parameters.items():
        if name in ("self", "device", "dtype") or param.kind in (
                param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name in ("bias", "elementwise_affine", "affine") and not _plain(
                getattr(module, name, None)):
            value: Any = getattr(module, name, None) is not None
        elif hasattr(module, name):
            value = getattr(module, name)
        else:
            continue
        if isinstance(value, torch.Tensor) or not _plain(value):
            return None
        out[name] = list(value) if isinstance(value, tuple) else value
    return out


def _plain(value: Any) -> bool:
    if isinstance(value, tuple | list):
        return all(isinstance(v, _JSON_SCALARS) for v in value)
    return isinstance(value, _JSON_SCALARS)


def _compare(module: nn.Module, net: GraphNet, input_shape: Sequence[int]) -> str | None:
    """Why the converted net differs from the module on a random batch (None if it does not)."""
    from repurpose.model_handler._extract import eval_mode

    param = next(iter(module.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    x = torch.randn((2, *(int(d) for d in input_shape)), generator=torch.Generator()
                    .manual_seed(0)).to(device)
    with torch.no_grad(), eval_mode(module, list(module.modules())), \
            eval_mode(net, list(net.modules())):
        try:
            a, b = module(x), net.to(device)(x)
        except Exception as err:  # the module's own code may raise anything
            return f"running the converted graph failed: {type(err).__name__}: {err}"
    a = a if isinstance(a, tuple | list) else (a,)
    b = b if isinstance(b, tuple | list) else (b,)
    if len(a) != len(b) or any(not torch.allclose(p, q, rtol=1e-5, atol=1e-6)
                               for p, q in zip(a, b)):
        return "the converted graph computes different outputs than the module"
    return None


_BINARY: dict[Any, str] = {operator.add: "add", torch.add: "add", operator.iadd: "add",
                           operator.mul: "mul", torch.mul: "mul", operator.imul: "mul"}

_B = _Builder
_FUNCTIONS: dict[Any, Callable[..., None]] = {
    torch.flatten: _B.flatten,
    torch.cat: _B.cat,
    torch.concat: _B.cat,
    torch.relu: _activation("ReLU"),
    F.relu: _activation("ReLU"),
    F.relu6: _activation("ReLU6"),
    torch.sigmoid: _activation("Sigmoid"),
    torch.tanh: _activation("Tanh"),
    F.hardswish: _activation("Hardswish"),
    F.silu: _activation("SiLU"),
    F.gelu: _activation("GELU", approximate="approximate"),
    torch.softmax: _activation("Softmax", dim="dim"),
    F.softmax: _activation("Softmax", dim="dim"),
    F.adaptive_avg_pool2d: _activation(
        "AdaptiveAvgPool2d", output_size="output_size"),
    F.max_pool2d: _activation(
        "MaxPool2d", kernel_size="kernel_size", stride="stride", padding="padding"),
    F.avg_pool2d: _activation(
        "AvgPool2d", kernel_size="kernel_size", stride="stride", padding="padding"),
}
_METHODS: dict[str, Callable[..., None]] = {
    "view": _B.reshape,
    "reshape": _B.reshape,
    "flatten": _B.flatten,
    "relu": _activation("ReLU"),
    "sigmoid": _activation("Sigmoid"),
    "tanh": _activation("Tanh"),
}


def load_into(module: nn.Module, net: GraphNet, source: str) -> None:
    """Copy the weights of a converted graph back into a freshly built ``module`` of the
    original architecture (``ModelHandler.load(path, module=...)`` on a converted save)."""
    from repurpose._exceptions import ModelFormatError

    state = {f"{node.name}.{key}": value for node in net.nodes
             for key, value in net.layer(node.name).state_dict().items()}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as err:
        detail = " ".join(str(err).split())
        raise ModelFormatError(f"cannot load {source} into {type(module).__name__}: "
                               f"{detail}") from err
    if missing or unexpected:
        raise ModelFormatError(
            f"the weights in {source} do not fit {type(module).__name__}: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; build the module "
            "exactly as it was when saved")
