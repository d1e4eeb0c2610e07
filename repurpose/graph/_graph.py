"""A serialisable layer graph: the common form of every imported network.

Importers (Caffe, MXNet) translate a source network into a list of :class:`Node` records.
Each node names an *op* from a registry and carries JSON-serialisable attributes, from
which the op's ``nn.Module`` is rebuilt. A :class:`GraphNet` therefore saves as a JSON
document plus a safetensors file of its state dict, and loads with no source files and
no user code.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from repurpose._exceptions import (
    LayerNotFoundError,
    ModelFormatError,
    RepurposeError,
    UnsupportedLayerError,
)
from repurpose._header import check_header, header, read_document
from repurpose._validation import check_choice
from repurpose.graph._plan import Plan, plan_for

__all__ = [
    "Node",
    "GraphNet",
    "register_op",
    "list_ops",
    "build_op",
    "save_graph",
    "load_graph",
    "FORMAT_NAME",
]

FORMAT_NAME = "repurpose.graph"
LAYOUTS = ("contiguous", "channels_last")
FORMAT_VERSION = 1
CONFIG_FILE = "graph.json"
WEIGHTS_FILE = "weights.safetensors"

OpFactory = Callable[..., nn.Module]
_OPS: dict[str, OpFactory] = {}


def register_op(name: str) -> Callable[[OpFactory], OpFactory]:
    """Register a factory ``f(**attrs) -> nn.Module`` under an op name.

    Parameters
    ----------
    name : str
        The op name stored in saved graphs. Importer-specific ops use a prefix
        (``"caffe.pool"``); generic ones do not (``"conv2d"``).

    Raises
    ------
    ValueError
        If ``name`` is already registered.

    Examples
    --------
    >>> from torch import nn
    >>> @register_op("example.double")
    ... class Double(nn.Module):
    ...     def forward(self, x):
    ...         return 2 * x
    >>> "example.double" in list_ops()
    True
    """

    def decorator(factory: OpFactory) -> OpFactory:
        if name in _OPS:
            raise ValueError(f"op {name!r} is already registered; choose another name")
        _OPS[name] = factory
        return factory

    return decorator


def list_ops() -> list[str]:
    """Return the registered op names, sorted."""
    return sorted(_OPS)


def build_op(op: str, attrs: Mapping[str, Any]) -> nn.Module:
    """Build the module of one node from its op name and attributes."""
    try:
        factory = _OPS[op]
    except KeyError:
        raise UnsupportedLayerError(
            f"graph op {op!r} is not registered; known ops: {', '.join(list_ops())}. "
            "Register it with repurpose.graph.register_op."
        ) from None
    return factory(**dict(attrs))


def build_node(node: Node) -> nn.Module:
    """Build the module of ``node``; attributes that do not fit its op are a format error."""
    try:
        return build_op(node.op, node.attrs)
    except (TypeError, ValueError, RuntimeError) as err:
        if isinstance(err, RepurposeError):
            raise
        raise ModelFormatError(
            f"layer {node.name!r}: cannot build graph op {node.op!r} from attrs "
            f"{node.attrs}: {err}"
        ) from err


@dataclass(frozen=True)
class Node:
    """One layer of a :class:`GraphNet`.

    Attributes
    ----------
    name : str
        The layer name from the source framework (``"conv1"``).
    op : str
        A registered op name.
    inputs, outputs : tuple of str
        Value names read and written. Every value is written exactly once.
    attrs : dict
        JSON-serialisable arguments of the op factory.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "op": self.op,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "attrs": self.attrs,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> Node:
        try:
            return cls(
                name=str(obj["name"]),
                op=str(obj["op"]),
                inputs=tuple(str(v) for v in obj["inputs"]),
                outputs=tuple(str(v) for v in obj["outputs"]),
                attrs=dict(obj.get("attrs", {})),
            )
        except (KeyError, TypeError) as err:
            raise ModelFormatError(f"malformed graph node {obj!r}: {err}") from err


def module_name(layer_name: str) -> str:
    """The attribute name of a layer's module (``.`` is not allowed in module names)."""
    return layer_name.replace(".", "_") or "_"


class GraphNet(nn.Module):
    """An ``nn.Module`` that runs a list of :class:`Node` in order.

    Each node's module is registered under the node's name, so ``named_modules()``,
    forward hooks and freezing address layers by their original names.

    Parameters
    ----------
    nodes : sequence of Node
        In execution (topological) order.
    inputs : sequence of str
        Names of the values fed to ``forward``, in argument order.
    outputs : sequence of str
        Names of the values ``forward`` returns.
    input_shapes : mapping, optional
        Declared input shapes (with batch axis), kept as metadata.
    layout : {"contiguous", "channels_last"}
        Memory layout of 4-D inputs while the net runs. ``"channels_last"`` makes many
        convolutional nets markedly faster on CPU with the same results (the Caffe importer
        sets it: 2x on a ResNet-18-shaped net in ``bench_caffe.py``); it is saved with the graph.
    nhwc_values : iterable of str, optional
        Values (inputs or layer outputs) whose axes are (N, H, W, C) rather than (N, C, H,
        W): an imported Keras model keeps some. Feature pooling reduces their axes 1 and 2.
        Saved with the graph.
    """

    def __init__(
        self,
        nodes: Sequence[Node],
        inputs: Sequence[str],
        outputs: Sequence[str],
        input_shapes: Mapping[str, Sequence[int]] | None = None,
        layout: str = "contiguous",
        nhwc_values: Iterable[str] = (),
    ) -> None:
        super().__init__()
        self.layout: str = check_choice("layout", layout, LAYOUTS)
        self.nodes: list[Node] = list(nodes)
        self.input_names: list[str] = list(inputs)
        self.output_names: list[str] = list(outputs)
        self.input_shapes: dict[str, list[int]] = {
            k: [int(d) for d in v] for k, v in (input_shapes or {}).items()
        }
        self._producer = self._validate()
        self.nhwc_values: frozenset[str] = self._known_values("nhwc_values", nhwc_values)
        for node in self.nodes:
            self.add_module(module_name(node.name), build_node(node))
        self._register_load_state_dict_pre_hook(_accept_dotted_keys, with_module=True)

    def _validate(self) -> dict[str, int]:
        producer: dict[str, int] = {}
        defined = set(self.input_names)
        names: set[str] = set()
        for i, node in enumerate(self.nodes):
            if module_name(node.name) in names:
                raise ModelFormatError(f"two layers are named {node.name!r}; names must be unique")
            names.add(module_name(node.name))
            missing = [v for v in node.inputs if v not in defined]
            if missing:
                raise ModelFormatError(
                    f"layer {node.name!r} reads {missing} before any layer writes them"
                )
            for value in node.outputs:
                if value in defined:
                    raise ModelFormatError(
                        f"value {value!r} is written twice (again by layer {node.name!r})"
                    )
                defined.add(value)
                producer[value] = i
        unknown = [v for v in self.output_names if v not in defined]
        if unknown:
            raise ModelFormatError(f"graph outputs {unknown} are not produced by any layer")
        return producer

    def _known_values(self, what: str, values: Iterable[str]) -> frozenset[str]:
        found = frozenset(str(v) for v in values)
        unknown = sorted(found - set(self._producer) - set(self.input_names))
        if unknown:
            raise ModelFormatError(f"{what} names values no layer or input has: {unknown[:5]}")
        return found

    def nhwc_within(self, values: Iterable[str]) -> frozenset[str]:
        """The :attr:`nhwc_values` among ``values`` (to build a net from part of this one)."""
        return self.nhwc_values & frozenset(values)

    @property
    def layer_names(self) -> list[str]:
        """Node names in execution order."""
        return [node.name for node in self.nodes]

    def node(self, name: str) -> Node:
        """Return the node called ``name``."""
        for node in self.nodes:
            if node.name == name:
                return node
        raise LayerNotFoundError(
            f"layer {name!r} not found; see GraphNet.layer_names for the {len(self.nodes)} layers"
        )

    def layer(self, name: str) -> nn.Module:
        """Return the module of layer ``name``."""
        self.node(name)
        return self.get_submodule(module_name(name))

    def _needed(self, wanted: Iterable[str]) -> list[int]:
        """Indices of the nodes needed to compute ``wanted``, in order."""
        stack = [v for v in wanted if v not in self.input_names]
        needed: set[int] = set()
        while stack:
            value = stack.pop()
            if value not in self._producer:
                raise LayerNotFoundError(f"value {value!r} is not produced by any layer")
            i = self._producer[value]
            if i not in needed:
                needed.add(i)
                stack.extend(v for v in self.nodes[i].inputs if v not in self.input_names)
        return sorted(needed)

    def run(
        self, feeds: Mapping[str, torch.Tensor], wanted: Sequence[str], *,
        fuse: bool = True, capture: Callable[[str, torch.Tensor], Any] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Compute the named values, running only the layers they depend on.

        The pass stops after the last layer needed, so asking for an early value is cheap,
        and every value is dropped as soon as no later layer reads it (unless requested).
        In eval mode with gradients off, the pass follows a fused plan (see :meth:`plan`);
        its results equal the layer-by-layer ones to float rounding.

        Parameters
        ----------
        feeds : mapping of str to Tensor
            Input values by name.
        wanted : sequence of str
            The values to return.
        fuse : bool
            Allow the fused plan. ``False`` runs every layer as is (used by ``verify``).
        capture : callable, optional
            ``capture(name, value)`` is called on each requested value as soon as it is
            computed; its result is returned in place of the value. Reducing a value there
            (e.g. pooling it) lets the executor free the full value early.

        Examples
        --------
        >>> import torch
        >>> net = GraphNet([Node("c", "conv2d", ("x",), ("y",),
        ...                      {"in_channels": 1, "out_channels": 2, "kernel_size": 1}),
        ...                 Node("r", "relu", ("y",), ("z",))], ["x"], ["z"]).eval()
        >>> with torch.no_grad():
        ...     out = net.run({"x": torch.ones(1, 1, 2, 2)}, ["z"],
        ...                   capture=lambda name, v: v.mean((2, 3)))
        >>> out["z"].shape
        torch.Size([1, 2])
        """
        # a trace (torch.onnx.export, torch.jit) must record the layers as they are
        tracing = torch.jit.is_tracing() or torch.onnx.is_in_onnx_export()
        plan = self.plan(wanted, fused=fuse and not torch.is_grad_enabled() and not tracing)
        return plan({k: self._in_layout(v) for k, v in feeds.items()}, capture)

    def plan(self, wanted: Sequence[str], fused: bool = True) -> Plan:
        """The execution plan :meth:`run` follows for ``wanted`` (built once, then cached).

        A fused plan folds BatchNorm and Caffe Scale/Bias layers into the convolution or
        InnerProduct before them and fuses a following ReLU, wherever the values in
        between are not requested, have one reader and their layers carry no hooks; it is
        meant for eval mode without gradients. ``Plan.describe()`` lists its steps.
        """
        return plan_for(self, wanted, fused)

    def _in_layout(self, x: torch.Tensor) -> torch.Tensor:
        if self.layout == "channels_last" and x.dim() == 4 and x.is_floating_point():
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, *args: torch.Tensor) -> Any:
        if len(args) != len(self.input_names):
            raise TypeError(
                f"this net takes {len(self.input_names)} input(s) {self.input_names}, "
                f"got {len(args)}"
            )
        values = self.run(dict(zip(self.input_names, args)), self.output_names)
        outs = [values[v] for v in self.output_names]
        return outs[0] if len(outs) == 1 else tuple(outs)

    def subgraph(self, outputs: Sequence[str]) -> GraphNet:
        """A new net that computes ``outputs`` with only the layers they need (weights copied)."""
        keep = self._needed(outputs)
        nodes = [self.nodes[i] for i in keep]
        inputs = [v for v in self.input_names if any(v in n.inputs for n in nodes)]
        shapes = {k: self.input_shapes[k] for k in inputs if k in self.input_shapes}
        values = {*inputs, *(v for n in nodes for v in n.outputs)}
        net = GraphNet(nodes, inputs, outputs, shapes, layout=self.layout,
                       nhwc_values=self.nhwc_within(values))
        net.adopt_modules(self)
        return net

    def adopt_modules(self, source: GraphNet) -> None:
        """Replace this net's modules by deep copies of ``source``'s, for every layer name
        both nets have.

        A net built from layer specs has fresh modules; adopting keeps what a spec does not
        hold: the weights, a user's edits to a module (a dropout's ``p``, a swapped
        submodule, an attribute), parameters' ``requires_grad`` and train/eval mode.
        """
        for node in self.nodes:
            key = module_name(node.name)
            if key in source._modules:
                self._modules[key] = copy.deepcopy(source._modules[key])

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable description of the graph (everything but the weights)."""
        return {
            **header(FORMAT_NAME, FORMAT_VERSION),
            "inputs": self.input_names,
            "outputs": self.output_names,
            "input_shapes": self.input_shapes,
            "layout": self.layout,
            **({"nhwc_values": sorted(self.nhwc_values)} if self.nhwc_values else {}),
            "nodes": [node.to_json() for node in self.nodes],
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> GraphNet:
        """Rebuild a net (with freshly initialised weights) from :meth:`config`."""
        config = check_header(config, FORMAT_NAME, FORMAT_VERSION, "the graph document")
        try:
            nodes = [Node.from_json(n) for n in config["nodes"]]
            return cls(nodes, config["inputs"], config["outputs"], config.get("input_shapes"),
                       layout=config.get("layout", "contiguous"),
                       nhwc_values=config.get("nhwc_values", ()))
        except KeyError as err:
            raise ModelFormatError(f"graph document lacks the key {err}") from err
        except TypeError as err:
            raise ModelFormatError(f"graph document is malformed: {err}") from err


def _accept_dotted_keys(net: GraphNet, state: dict[str, Any], prefix: str, *args: Any) -> None:
    """Also accept state-dict keys that spell a layer's name with its dots (``layer1.0.conv1.
    weight``), as the torch module a graph was converted from wrote them."""
    dotted = {n.name: module_name(n.name) for n in net.nodes if "." in n.name}
    if not dotted:
        return
    for key in [k for k in state if k.startswith(prefix)]:
        rest = key[len(prefix):]
        cut = rest.rfind(".")
        while cut > 0:
            if rest[:cut] in dotted:
                state[prefix + dotted[rest[:cut]] + rest[cut:]] = state.pop(key)
                break
            cut = rest.rfind(".", 0, cut)


def save_graph(net: GraphNet, directory: str | Path) -> Path:
    """Write ``graph.json`` and ``weights.safetensors`` into ``directory``."""
    from safetensors.torch import save_file

    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    (path / CONFIG_FILE).write_text(json.dumps(net.config(), indent=1))
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(state, str(path / WEIGHTS_FILE))
    return path


def load_graph(directory: str | Path) -> GraphNet:
    """Load a net written by :func:`save_graph`. Runs no code from the files."""
    from safetensors.torch import load_file

    path = Path(directory)
    config = read_document(path / CONFIG_FILE, FORMAT_NAME, FORMAT_VERSION,
                           "is it a directory written by repurpose.graph.save_graph?")
    net = GraphNet.from_config(config)
    try:
        state = load_file(str(path / WEIGHTS_FILE))
    except Exception as err:  # safetensors raises its own error types
        raise ModelFormatError(f"cannot read {path / WEIGHTS_FILE}: {err}") from err
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ModelFormatError(
            f"weights do not match the graph: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return net
