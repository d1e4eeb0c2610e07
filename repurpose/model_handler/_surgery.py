"""Network surgery: cut, drop and add layers without touching the input module.

Three strategies, tried in this order:

* GraphNet: use the graph (``subgraph``, node lists), so the result is still a GraphNet
  that saves without user code.
* ``nn.Sequential`` whose layers are its direct children: slice and re-assemble.
* Anything torch.fx can trace: edit the fx graph. Nodes keep their layer names in
  ``node.meta``, so the new module lists the same names.

Every function returns a new module; the input is never modified.
"""

from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from torch import fx, nn
from torch.nn.modules.batchnorm import _BatchNorm

from repurpose._exceptions import SurgeryError
from repurpose.graph import GraphNet, Node
from repurpose.graph._graph import module_name
from repurpose.graph._ops import AnyBatchNorm, FlattenLinear
from repurpose.model_handler._extract import graph_module
from repurpose.model_handler._layers import NAME_KEY, LayerIndex

__all__ = ["truncate", "drop_bottom", "add_layers", "named_modules_to_add"]


def truncate(module: nn.Module, index: LayerIndex, at: str) -> nn.Module:
    """Keep the layers up to and including ``at``; ``at``'s output becomes the output."""
    layer = index.get(at)
    if isinstance(module, GraphNet):
        return _truncate_graph(module, index, at)
    if _is_flat_sequential(module, index) and at in module._modules:
        keep = list(module._modules)[: list(module._modules).index(at) + 1]
        return copy.deepcopy(nn.Sequential(OrderedDict((k, _child(module, k)) for k in keep)))
    gm = _require_fx(index, "truncate")
    nodes = {n.name: n for n in gm.graph.nodes}
    target = nodes[layer.value]
    # Shape queries (x.size(0), x.shape) may run early for later use; they are not branches.
    ancestors = _fx_ancestors(target) | {n.name for n in gm.graph.nodes if _is_metadata(n)}
    _check_no_dangling(index, at, ancestors, lambda name: index.get(name).value)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    for node in gm.graph.nodes:
        env[node.name] = graph.node_copy(node, lambda n: env[n.name])
        if node is target:
            break
    graph.output(env[target.name])
    return copy.deepcopy(graph_module(gm, graph, type(module).__name__))


def _truncate_graph(net: GraphNet, index: LayerIndex, at: str) -> GraphNet:
    node = net.node(at)
    needed = set(net._needed(node.outputs))
    ancestors = {net.nodes[i].name for i in needed}
    _check_no_dangling(index, at, ancestors, lambda name: name)
    return net.subgraph(list(node.outputs))


def _check_no_dangling(index: LayerIndex, at: str, ancestors: set[str], key: Any) -> None:
    before = index.names[: index.position[at]]
    dangling = [name for name in before if key(name) not in ancestors]
    if dangling:
        shown = ", ".join(dangling[:5]) + (" ..." if len(dangling) > 5 else "")
        raise SurgeryError(
            f"cannot cut at {at!r}: layers {shown} run before it but do not feed it, so they "
            "would be left dangling (a parallel branch). Cut at a layer that every earlier "
            "layer feeds, such as the block's merge (add/concat), or read the branch with "
            "extract(layers=[...]) instead"
        )


def _is_metadata(node: fx.Node) -> bool:
    """Whether ``node`` only reads tensor metadata (shapes, sizes), not values."""
    if node.op == "call_method":
        return node.target in ("size", "dim", "numel")
    if node.op == "call_function":
        if node.target in (getattr, len):
            return True
        if node.target is operator.getitem and isinstance(node.args[0], fx.Node):
            return _is_metadata(node.args[0])
    return False


def _fx_ancestors(node: fx.Node) -> set[str]:
    seen: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if n.name in seen:
            continue
        seen.add(n.name)
        stack.extend(n.all_input_nodes)
    return seen


def drop_bottom(module: nn.Module, index: LayerIndex, n: int) -> nn.Module:
    """Remove the first ``n`` layers; the new input is what layer ``n`` used to receive."""
    last = index.names[n - 1]
    if isinstance(module, GraphNet):
        return _drop_bottom_graph(module, n)
    if _is_flat_sequential(module, index):
        keep = list(module._modules)[n:]
        return copy.deepcopy(nn.Sequential(OrderedDict((k, _child(module, k)) for k in keep)))
    gm = _require_fx(index, "drop_layers_bottom")
    cut = {x.name: x for x in gm.graph.nodes}[index.get(last).value]
    graph = fx.Graph()
    env: dict[str, fx.Node] = {cut.name: graph.placeholder("x")}
    passed = False
    for node in gm.graph.nodes:
        if not passed:
            passed = node is cut
            if node.op != "get_attr":
                continue

        def lookup(x: fx.Node, _node: fx.Node = node) -> fx.Node:
            if x.name not in env:
                raise SurgeryError(
                    f"cannot drop the first {n} layers: {_name(_node)!r} also reads "
                    f"{_name(x)!r}, which would be dropped. Drop fewer or more layers"
                )
            return env[x.name]

        env[node.name] = graph.node_copy(node, lookup)
    return copy.deepcopy(graph_module(gm, graph, type(module).__name__))


def _name(node: fx.Node) -> str:
    return str(node.meta.get(NAME_KEY, node.name))


def _drop_bottom_graph(net: GraphNet, n: int) -> GraphNet:
    last = net.nodes[n - 1]
    kept = net.nodes[n:]
    available = set(last.outputs)
    for node in kept:
        missing = [v for v in node.inputs if v not in available]
        if missing:
            raise SurgeryError(
                f"cannot drop the first {n} layers: layer {node.name!r} reads {missing}, "
                f"which only dropped layers produce (the new input is {last.name!r}'s output)"
            )
        available.update(node.outputs)
    if len(last.outputs) != 1:
        raise SurgeryError(f"cannot use layer {last.name!r}'s outputs as the input: it has "
                           f"{len(last.outputs)} outputs")
    new = GraphNet(kept, list(last.outputs), net.output_names, layout=net.layout,
                   nhwc_values=net.nhwc_within(available))
    new.adopt_modules(net)
    return new


def named_modules_to_add(
    modules: nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module], prefix: str,
    taken: set[str],
) -> list[tuple[str, nn.Module]]:
    """Name the modules to add: mapping keys, else ``<prefix>0``, ``<prefix>1``, ..."""
    if isinstance(modules, Mapping):
        items = [(str(k), v) for k, v in modules.items()]
    elif isinstance(modules, nn.Module):
        items = [(f"{prefix}0", modules)]
    else:
        items = [(f"{prefix}{i}", m) for i, m in enumerate(modules)]
    if not items:
        raise SurgeryError("no modules given to add")
    out = []
    for name, m in items:
        if not isinstance(m, nn.Module):
            raise SurgeryError(f"can only add torch.nn.Module objects, got {type(m).__name__}")
        if "." in name or not name:
            raise SurgeryError(f"layer name {name!r} is not allowed (no dots, not empty)")
        if name in taken:
            raise SurgeryError(f"a layer named {name!r} already exists; pass a dict of new names")
        taken.add(name)
        out.append((name, copy.deepcopy(m)))
    return out


def add_layers(module: nn.Module, index: LayerIndex, new: list[tuple[str, nn.Module]],
               top: bool) -> nn.Module:
    """Add modules after the output (``top``) or before the input."""
    if isinstance(module, GraphNet):
        net = _add_graph(module, new, top)
        if net is not None:
            return net
    if _is_flat_sequential(module, index):
        old = [(k, copy.deepcopy(m)) for k, m in module._modules.items() if m is not None]
        items = old + new if top else new + old
        return nn.Sequential(OrderedDict(items))
    if index.gm is None:
        base = copy.deepcopy(module)
        items = [("base", base)]
        return nn.Sequential(OrderedDict(items + new if top else new + items))
    return _add_fx(module, index.gm, new, top)


def _add_fx(module: nn.Module, gm: fx.GraphModule, new: list[tuple[str, nn.Module]],
            top: bool) -> nn.Module:
    root = nn.Module()
    for name, sub in gm.named_children():
        root.add_module(name, sub)
    for name, sub in new:
        root.add_module(name, sub)
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        raise SurgeryError(f"can only add layers to single-input models; this one takes "
                           f"{len(placeholders)} inputs")
    x = graph.placeholder("x")
    if not top:
        x = _chain(graph, x, new)
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node.name] = x
        elif node.op == "output":
            out = env[node.args[0].name] if isinstance(node.args[0], fx.Node) else None
            if out is None:
                raise SurgeryError("can only add layers to a model with a single tensor output")
            graph.output(_chain(graph, out, new) if top else out)
        else:
            env[node.name] = graph.node_copy(node, lambda n: env[n.name])
    for node in gm.graph.nodes:  # parameters used functionally at the top level
        head = str(node.target).split(".")[0]
        if node.op == "get_attr" and not hasattr(root, head):
            setattr(root, head, getattr(gm, head))
    return copy.deepcopy(graph_module(root, graph, type(module).__name__))


def _add_graph(net: GraphNet, new: list[tuple[str, nn.Module]], top: bool) -> GraphNet | None:
    """The GraphNet with the new layers as nodes, or None if a module has no graph op."""
    specs = [_node_spec(m) for _, m in new]
    if any(spec is None for spec in specs) or len(net.input_names) != 1:
        return None
    if top and len(net.output_names) != 1:
        return None
    taken = set(net.input_names) | {v for n in net.nodes for v in n.outputs}
    value = net.output_names[0] if top else _unique(net.input_names[0] + "_in", taken)
    nodes: list[Node] = []
    for i, ((name, _), spec) in enumerate(zip(new, specs)):
        assert spec is not None
        last_bottom = not top and i == len(new) - 1
        out = net.input_names[0] if last_bottom else _unique(name, taken)
        nodes.append(Node(name, spec[0], (value,), (out,), spec[1]))
        value = out
    if top:
        result = GraphNet([*net.nodes, *nodes], net.input_names, [value], net.input_shapes,
                          layout=net.layout, nhwc_values=net.nhwc_values)
    else:
        result = GraphNet([*nodes, *net.nodes], [nodes[0].inputs[0]], net.output_names,
                          layout=net.layout, nhwc_values=net.nhwc_values)
    state = copy.deepcopy(net.state_dict())
    for (name, m) in new:
        prefix = module_name(name) + "."
        state.update({prefix + k: v.clone() for k, v in m.state_dict().items()})
    try:
        result.load_state_dict(state)
    except RuntimeError:
        return None
    result.adopt_modules(net)  # the existing layers as they are, edits and modes included
    for name, m in new:
        result.layer(name).train(m.training)
    return result


def _unique(name: str, taken: set[str]) -> str:
    out, k = name, 1
    while out in taken:
        out, k = f"{name}_{k}", k + 1
    taken.add(out)
    return out


def _node_spec(m: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """The graph op and attributes that rebuild ``m``, for the common layer types."""
    kind = type(m)
    if isinstance(m, nn.Linear) and kind in (nn.Linear, FlattenLinear):
        axis = getattr(m, "axis", -1)
        return "linear", {"in_features": m.in_features, "out_features": m.out_features,
                          "bias": m.bias is not None, "axis": axis}
    if kind is nn.Conv2d:
        assert isinstance(m, nn.Conv2d)
        return "conv2d", {
            "in_channels": m.in_channels, "out_channels": m.out_channels,
            "kernel_size": list(m.kernel_size), "stride": list(m.stride),
            "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
            "dilation": list(m.dilation), "groups": m.groups, "bias": m.bias is not None,
            "padding_mode": m.padding_mode,
        }
    if isinstance(m, _BatchNorm) and kind in (nn.BatchNorm1d, nn.BatchNorm2d, AnyBatchNorm):
        return "batch_norm", {"num_features": m.num_features, "eps": m.eps,
                              "momentum": m.momentum, "affine": m.affine,
                              "track_running_stats": m.track_running_stats}
    simple: dict[type, tuple[str, list[str]]] = {
        nn.ReLU: ("relu", []), nn.LeakyReLU: ("relu", ["negative_slope"]),
        nn.Sigmoid: ("sigmoid", []), nn.Tanh: ("tanh", []), nn.Identity: ("identity", []),
        nn.ELU: ("elu", ["alpha"]), nn.Dropout: ("dropout", ["p"]),
        nn.Flatten: ("flatten", ["start_dim", "end_dim"]), nn.Softmax: ("softmax", ["dim"]),
        nn.LogSoftmax: ("log_softmax", ["dim"]), nn.PReLU: ("prelu", ["num_parameters"]),
    }
    if kind in simple:
        op, keys = simple[kind]
        return op, {k: getattr(m, k) for k in keys}
    return None


def _chain(graph: fx.Graph, x: fx.Node, new: list[tuple[str, nn.Module]]) -> fx.Node:
    for name, _ in new:
        x = graph.call_module(name, (x,))
        x.meta[NAME_KEY] = name
    return x


def _child(module: nn.Module, name: str) -> nn.Module:
    return module.get_submodule(name)


def _is_flat_sequential(module: nn.Module, index: LayerIndex) -> bool:
    """An nn.Sequential whose layers are exactly its direct children."""
    return type(module) is nn.Sequential and index.names == [
        k for k, m in module._modules.items() if m is not None
    ]


def _require_fx(index: LayerIndex, what: str) -> fx.GraphModule:
    if index.gm is None:
        raise SurgeryError(
            f"{what} needs a model torch.fx can trace (or an nn.Sequential); tracing failed: "
            f"{index.trace_error}"
        )
    return index.gm
