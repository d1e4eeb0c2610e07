"""Layer listing: names in execution order, types, name resolution with helpful errors.

Plain modules are traced with torch.fx so that functional ops (``x + y``, ``torch.flatten``)
become addressable layers. Their names follow the convention of torchvision's
``get_graph_node_names``: the qualified name of the enclosing module, a dot, the op name,
and a ``_<k>`` suffix counted per enclosing module (``layer1.0.add``, ``layer1.0.add_1``).
Modules with no children, and the standard ``torch.nn`` layers, are not traced into.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from torch import fx, nn

from repurpose._exceptions import LayerNotFoundError
from repurpose.graph import GraphNet
from repurpose.model_handler._match import containers_of, not_found, select

__all__ = ["Layer", "LayerIndex", "index_layers", "trace"]

_SUFFIX = re.compile(r"^(.*)_(\d+)$")
NAME_KEY = "repurpose_layer"  # fx node.meta key holding the layer name


@dataclass(frozen=True)
class Layer:
    """One addressable layer.

    ``kind`` is ``"module"`` (a leaf module, reached with a forward hook), ``"op"`` (a
    functional op of an fx trace) or ``"node"`` (a node of a GraphNet). ``value`` is the
    fx node name or the GraphNet value the layer produces.
    """

    name: str
    type: str
    kind: str
    value: str


class _NamingTracer(fx.Tracer):
    """An fx tracer that records the torchvision-style qualified name of every node."""

    def __init__(self) -> None:
        super().__init__()
        self._scope = ""
        self.qualnames: dict[fx.Node, str] = {}
        self._counts: dict[str, int] = {}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if isinstance(m, GraphNet):
            return False
        return len(m._modules) == 0 or super().is_leaf_module(m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Any, args: Any, kwargs: Any) -> Any:
        outer = self._scope
        self._scope = self.path_of_module(m)
        try:
            return super().call_module(m, forward, args, kwargs)
        finally:
            self._scope = outer

    def create_proxy(self, kind: str, target: Any, args: Any, kwargs: Any, *rest: Any,
                     **kw: Any) -> fx.Proxy:
        proxy = super().create_proxy(kind, target, args, kwargs, *rest, **kw)
        node = proxy.node
        if kind == "call_module":
            qual = str(target)
        elif kind in ("call_function", "call_method"):
            base = _SUFFIX.sub(r"\1", node.name)
            qual = f"{self._scope}.{base}" if self._scope else base
        else:
            return proxy
        # Number repeats per enclosing module: a module called twice gives
        # "layer1.0.relu" and "layer1.0.relu_1"; ops are counted the same way.
        count = self._counts.get(qual, 0)
        self._counts[qual] = count + 1
        self.qualnames[node] = qual if count == 0 else f"{qual}_{count}"
        return proxy


def trace(module: nn.Module) -> tuple[fx.GraphModule, dict[str, str]]:
    """Trace ``module`` with fx; return the graph module and ``{layer name: fx node name}``.

    Raises whatever fx raises for an untraceable model.
    """
    if isinstance(module, fx.GraphModule) and any(NAME_KEY in n.meta for n in module.graph.nodes):
        gm = module  # made by our surgery: its nodes already carry their layer names
    else:
        tracer = _NamingTracer()
        graph = tracer.trace(module)
        for node, qual in tracer.qualnames.items():
            node.meta[NAME_KEY] = qual
        gm = fx.GraphModule(tracer.root, graph, type(module).__name__)
    names: dict[str, str] = {}
    for node in gm.graph.nodes:
        qual = node.meta.get(NAME_KEY)
        if qual is not None and qual not in names:
            names[qual] = node.name
    return gm, names


class LayerIndex:
    """The ordered layers of a module, plus the fx trace when one exists.

    Names are resolved by the one matcher (:mod:`repurpose.model_handler._match`): a
    container name (``"layer4"``) stands for its whole block.
    """

    def __init__(self, layers: Sequence[Layer], gm: fx.GraphModule | None,
                 trace_error: str | None = None,
                 modules: dict[str, nn.Module] | None = None) -> None:
        self.layers = list(layers)
        self.modules = modules or {}  # every named submodule, computed once
        self.by_name = {layer.name: layer for layer in self.layers}
        self.position = {layer.name: i for i, layer in enumerate(self.layers)}
        self.gm = gm
        self.trace_error = trace_error
        self.is_graph = False  # a GraphNet: its modules are flat, containers are name prefixes
        self.calls_containers = True  # False when the module calls its leaves directly

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    @cached_property
    def containers(self) -> dict[str, list[str]]:
        """``{container name: its layers in order}``."""
        return containers_of(self.names, () if self.is_graph else self.modules)

    def get(self, name: str) -> Layer:
        """The layer called ``name``; a container is returned as a layer computing the
        block's output (its module, or else its last layer's value)."""
        if name in self.by_name:
            return self.by_name[name]
        if name in self.containers:
            members = self.containers[name]
            last = self.by_name[members[-1]] if members else None
            if name in self.modules and self.calls_containers:
                return Layer(name, "container", "module", last.value if last else name)
            if last is not None:
                return Layer(name, "container", last.kind, last.value)
        raise not_found(name, [*self.names, *self.containers])

    def members(self, name: str) -> list[str]:
        """The layers a layer or container name stands for, in execution order."""
        self.get(name)
        return list(self.containers.get(name, [name]))

    def last_layer(self, name: str) -> str:
        """``name`` itself for a layer; a container's last layer (its output)."""
        members = self.members(name)
        if not members:
            raise LayerNotFoundError(
                f"container {name!r} holds no layer that runs in the forward pass; "
                "see ModelHandler.layer_names"
            )
        return members[-1]

    def resolve(self, patterns: str | Iterable[str]) -> list[str]:
        """Expand exact names, container names and fnmatch globs, in the order asked."""
        return select(patterns, self.names, self.containers)


def index_layers(module: nn.Module) -> LayerIndex:
    """List the layers of ``module`` in execution order."""
    index = _index_layers(module)
    index.modules = dict(module.named_modules())
    index.is_graph = isinstance(module, GraphNet)
    # a GraphNet or an fx GraphModule (what surgery returns) never calls a container module,
    # so a container's output is read from its last layer rather than with a hook
    index.calls_containers = not isinstance(module, GraphNet | fx.GraphModule)
    return index


def _index_layers(module: nn.Module) -> LayerIndex:
    if isinstance(module, GraphNet):
        return _graph_index(module)
    try:
        gm, names = trace(module)
    except Exception as err:  # fx raises many types for untraceable code
        return _leaf_index(module, f"{type(err).__name__}: {err}")
    nodes = {node.name: node for node in gm.graph.nodes}
    layers = [_fx_layer(module, qual, nodes[node_name]) for qual, node_name in names.items()]
    return LayerIndex(layers, gm)


def _fx_layer(module: nn.Module, name: str, node: fx.Node) -> Layer:
    if node.op == "call_module":
        sub = module.get_submodule(str(node.target))
        # a repeated call of a module is read from the fx graph, not with a hook
        kind = "module" if name == node.target else "op"
        return Layer(name, type(sub).__name__, kind, node.name)
    if node.op == "call_method":
        return Layer(name, f"Tensor.{node.target}", "op", node.name)
    target = node.target
    mod = getattr(target, "__module__", None) or ""
    qual = getattr(target, "__name__", str(target))
    if mod in ("_operator", "operator"):
        mod = "operator"
    return Layer(name, f"{mod}.{qual}" if mod else qual, "op", node.name)


def _leaf_index(module: nn.Module, error: str) -> LayerIndex:
    layers = [
        Layer(name, type(m).__name__, "module", name)
        for name, m in module.named_modules()
        if name and len(m._modules) == 0
    ]
    return LayerIndex(layers, None, error)


def _graph_index(net: GraphNet) -> LayerIndex:
    layers = []
    for node in net.nodes:
        module = net.layer(node.name)
        layers.append(Layer(node.name, type(module).__name__, "node", node.outputs[0]))
    return LayerIndex(layers, None)


def module_of(module: nn.Module, layer: Layer) -> nn.Module | None:
    """The module that computes ``layer``, or None for a functional op."""
    if layer.kind == "op":
        return None
    if layer.kind == "node":
        assert isinstance(module, GraphNet)
        return module.layer(layer.name)
    return module.get_submodule(layer.name)
