"""Layer listing: names in execution order, types, name resolution with helpful errors.

Plain modules are traced with torch.fx so that functional ops (``x + y``, ``torch.flatten``)
become addressable layers. Their names follow the convention of torchvision's
``get_graph_node_names``: the qualified name of the enclosing module, a dot, the op name,
and a ``_<k>`` suffix counted per enclosing module (``layer1.0.add``, ``layer1.0.add_1``).
Modules with no children, and the standard ``torch.nn`` layers, are not traced into.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import fx, nn

from repurpose._exceptions import LayerNotFoundError
from repurpose.graph import GraphNet

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
    """The ordered layers of a module, plus the fx trace when one exists."""

    def __init__(self, layers: Sequence[Layer], gm: fx.GraphModule | None,
                 trace_error: str | None = None,
                 modules: dict[str, nn.Module] | None = None) -> None:
        self.layers = list(layers)
        self.modules = modules or {}  # every named submodule, computed once
        self.by_name = {layer.name: layer for layer in self.layers}
        self.position = {layer.name: i for i, layer in enumerate(self.layers)}
        self.gm = gm
        self.trace_error = trace_error

    @property
    def names(self) -> list[str]:
        return [layer.name for layer in self.layers]

    def get(self, name: str, modules: Collection[str] = ()) -> Layer:
        """The layer called ``name``; container modules listed in ``modules`` are accepted too."""
        if name in self.by_name:
            return self.by_name[name]
        if name in modules:
            return Layer(name, "container", "module", name)
        raise not_found(name, self.names)

    def resolve(self, patterns: str | Iterable[str], modules: Iterable[str] = ()) -> list[str]:
        """Expand exact names and fnmatch globs into layer names, in execution order."""
        if isinstance(patterns, str):
            patterns = [patterns]
        module_names = set(modules)
        found: list[str] = []
        for pattern in patterns:
            if not isinstance(pattern, str):
                raise TypeError(f"layer names must be strings, got {pattern!r}")
            if pattern in self.by_name or pattern in module_names:
                matched = [pattern]
            elif any(c in pattern for c in "*?["):
                matched = fnmatch.filter(self.names, pattern)
                if not matched:
                    raise LayerNotFoundError(
                        f"pattern {pattern!r} matches no layer; see ModelHandler.layer_names"
                    )
            else:
                raise not_found(pattern, self.names)
            found.extend(m for m in matched if m not in found)
        return found


def not_found(name: str, names: Sequence[str]) -> LayerNotFoundError:
    """A LayerNotFoundError naming ``name`` and its closest matches."""
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"{len(names)} layers exist"
    return LayerNotFoundError(
        f"layer {name!r} not found; {hint}. See ModelHandler.layer_names"
    )


def index_layers(module: nn.Module) -> LayerIndex:
    """List the layers of ``module`` in execution order."""
    index = _index_layers(module)
    index.modules = dict(module.named_modules())
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
