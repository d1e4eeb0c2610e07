"""Execution plans of :meth:`GraphNet.run`: free blobs early, fold and fuse for inference.

A :class:`Plan` is built for one request (the values wanted) and cached on the net. It
runs only the layers the request needs, drops every value after its last reader (unless
it was requested), and, for inference (eval mode, gradients off), also

* folds BatchNorm and a following Caffe Scale / Bias into the preceding convolution or
  InnerProduct (or, without one, into a single per-channel multiply-add),
* fuses a following ReLU / LeakyReLU into that step (oneDNN's conv+ReLU on CPU),
* overwrites a value in place (ReLU, per-channel affine, two-input sum) when no one else
  can see it: one reader, not requested, not a feed, made by a layer that returns new
  memory, and no other live value shares its storage.

Only layers whose intermediate values are not requested and have one reader are fused,
and never a layer that carries hooks (its module is called as usual so hooks fire) or is
in training mode. Folded weights are derived copies: the net's parameters are never
changed, and the plan is rebuilt when a parameter's storage or version changes, when a
layer module is replaced, or when a module's mode or hooks change.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.nn.modules import module as _module_state

from repurpose.graph._fuse import (
    ConvSpec,
    activation,
    affine_call,
    affine_of,
    compose,
    conv_spec,
    fc_call,
    merge_convs,
)

if TYPE_CHECKING:
    from repurpose.graph._graph import GraphNet, Node

__all__ = ["Plan", "Step", "plan_for"]

Capture = Callable[[str, torch.Tensor], Any]

# Ops whose (registered) module always returns newly allocated memory, so a reader may
# overwrite it. Variadic ops qualify only with two or more inputs (one input may pass
# through unchanged).
_FRESH_OPS = frozenset({
    "conv2d", "conv_transpose2d", "linear", "batch_norm", "mxnet.batch_norm", "caffe.scale",
    "caffe.bias", "caffe.pool", "caffe.lrn", "caffe.conv2d_shared", "relu", "sigmoid",
    "tanh", "elu", "softmax", "log_softmax",
})
_FRESH_VARIADIC = frozenset({"concat", "add", "mul", "max"})


@dataclass
class Step:
    """One unit of a plan: a layer, or a chain of layers fused into one call.

    ``call(args, writable)`` returns the step's output (a tuple for several outputs);
    ``writable[i]`` says whether it may overwrite ``args[i]``.
    """

    layers: tuple[str, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    call: Callable[[list[Any], list[bool]], Any]
    fresh: bool
    overwrites: bool = False
    kind: str = "layer"
    conv: ConvSpec | None = None

    def describe(self) -> str:
        return f"{self.kind}: {' + '.join(self.layers)}"


@dataclass
class Plan:
    """The steps that compute one request, with the values to drop after each step.

    Attributes
    ----------
    steps : list of Step
    wanted : tuple of str
    fused : bool
        Whether this plan folds and fuses (built for inference).
    peak_live : int
        The largest number of values held at once during the last call (instrumentation).
    live_counts : list of int
        The number of values held after each step of the last call.
    overwrites : int
        How many steps of the last call were allowed to overwrite an input.
    """

    steps: list[Step]
    wanted: tuple[str, ...]
    fused: bool
    release: list[tuple[str, ...]]
    keep: frozenset[str]
    signature: Callable[[], tuple[Any, ...]]
    key: tuple[Any, ...] = ()
    peak_live: int = 0
    live_counts: list[int] = field(default_factory=list)
    overwrites: int = 0

    def describe(self) -> list[str]:
        """One line per step: the layers each step runs (fused chains joined by ``+``)."""
        return [s.describe() for s in self.steps]

    def __call__(self, feeds: Mapping[str, torch.Tensor],
                 capture: Capture | None = None) -> dict[str, Any]:
        if self.fused and torch.is_grad_enabled():
            raise RuntimeError("a fused plan computes no gradients (its folded weights are "
                               "copies); call it under torch.no_grad(), or use GraphNet.run")
        wanted = set(self.wanted)
        values: dict[str, Any] = dict(feeds)
        results = {v: _capture(capture, v, values[v]) for v in self.wanted if v in feeds}
        fresh: set[str] = set()
        counts, overwrites = [], 0
        for step, drop in zip(self.steps, self.release):
            args = [values[v] for v in step.inputs]
            writable = [False] * len(args)
            if self.fused and step.overwrites:
                writable = [_may_overwrite(v, a, fresh, drop, values, results)
                            for v, a in zip(step.inputs, args)]
                overwrites += any(writable)
            out = step.call(args, writable)
            del args
            for v in drop:
                values.pop(v, None)
                fresh.discard(v)
            outs = (out,) if len(step.outputs) == 1 else tuple(out)
            for v, o in zip(step.outputs, outs):
                if v in wanted:
                    results[v] = _capture(capture, v, o)
                if v in self.keep:
                    values[v] = o
                    if step.fresh:
                        fresh.add(v)
            del out, outs
            counts.append(len(values))
        self.live_counts, self.overwrites = counts, overwrites
        self.peak_live = max(counts, default=len(values))
        return {v: results[v] for v in self.wanted}


def _capture(capture: Capture | None, name: str, value: Any) -> Any:
    return value if capture is None else capture(name, value)


def _storage(x: Any) -> int | None:
    return x.untyped_storage().data_ptr() if isinstance(x, torch.Tensor) else None


def _may_overwrite(name: str, x: Any, fresh: set[str], drop: Iterable[str],
                   values: Mapping[str, Any], results: Mapping[str, Any]) -> bool:
    """Whether ``x`` (value ``name``) is memory no one else can see after this step."""
    if name not in fresh or name not in drop or not isinstance(x, torch.Tensor):
        return False
    if x.requires_grad or torch.is_grad_enabled():
        return False
    ptr = _storage(x)
    others = [v for k, v in values.items() if k != name]
    return all(_storage(v) != ptr for v in [*others, *results.values()])


# --------------------------------------------------------------------------- building


def eval_noop(hook: Callable[..., Any]) -> Callable[..., Any]:
    """Mark a forward pre-hook as doing nothing to a module already in eval mode (as
    freezing's "keep this BatchNorm in eval mode" hook), so a fused plan may skip it."""
    hook.eval_noop = True  # type: ignore[attr-defined]
    return hook


def _hooked(m: nn.Module) -> bool:
    """Whether calling ``m`` would run hooks that a fused step would skip."""
    if m._forward_hooks or m._backward_hooks or m._backward_pre_hooks:
        return True
    return any(m.training or not getattr(h, "eval_noop", False)
               for h in m._forward_pre_hooks.values())


def _global_hooks() -> bool:
    return bool(_module_state._global_forward_hooks
                or _module_state._global_forward_pre_hooks
                or _module_state._global_backward_hooks
                or _module_state._global_backward_pre_hooks)


def _built_by(node: Node, m: nn.Module) -> bool:
    """Whether ``m`` is exactly the class registered for the node's op (not a replacement)."""
    from repurpose.graph._graph import _OPS

    factory = _OPS.get(node.op)
    if isinstance(factory, type):
        return type(m) is factory
    return node.op == "relu" and type(m) in (nn.ReLU, nn.LeakyReLU) and \
        not getattr(m, "inplace", False)


def _fresh(node: Node, m: nn.Module) -> bool:
    if not _built_by(node, m) or _hooked(m):
        return False
    if node.op in _FRESH_VARIADIC:
        return len(node.inputs) >= 2
    return node.op in _FRESH_OPS


def _plain(node: Node, m: nn.Module, fresh: bool) -> Step:
    def call(args: list[Any], _w: list[bool]) -> Any:
        return m(*args)

    return Step((node.name,), node.inputs, node.outputs, call, fresh)


class _Builder:
    def __init__(self, net: GraphNet, wanted: Sequence[str], fuse: bool) -> None:
        from repurpose.graph._graph import module_name

        self.net, self.wanted, self.fuse = net, set(wanted), fuse and not _global_hooks()
        self.order = net._needed(wanted)
        self.modules = {i: net.get_submodule(module_name(net.nodes[i].name)) for i in self.order}
        self.readers: dict[str, list[int]] = {}
        for i in self.order:
            for v in net.nodes[i].inputs:
                self.readers.setdefault(v, []).append(i)
        self.names = {i: module_name(net.nodes[i].name) for i in self.order}
        self.folded: list[str] = []  # modules whose weights a fused step copied
        self._index = {net.nodes[i].name: i for i in self.order}

    def steps(self) -> list[Step]:
        steps, taken = [], set()
        for i in self.order:
            if i in taken:
                continue
            node, m = self.net.nodes[i], self.modules[i]
            step, chain = (self._fused(i) if self.fuse else (None, [i]))
            taken.update(chain)
            if step is None:
                step = _plain(node, m, self.fuse and _fresh(node, m))
                if self.fuse and not _hooked(m) and not m.training:
                    step = _in_place_variant(node, m, step)
            steps.append(step)
        return self.merged(steps) if self.fuse else steps

    def _usable(self, i: int) -> bool:
        m = self.modules[i]
        return not m.training and not _hooked(m) and _built_by(self.net.nodes[i], m)

    def _next(self, i: int) -> int | None:
        """The one reader of node ``i``'s one output, if it may be fused into ``i``."""
        node = self.net.nodes[i]
        if len(node.outputs) != 1 or node.outputs[0] in self.wanted:
            return None
        readers = self.readers.get(node.outputs[0], [])
        if len(readers) != 1 or len(self.net.nodes[readers[0]].inputs) != 1:
            return None
        j = readers[0]
        return j if self._usable(j) else None

    def _fused(self, i: int) -> tuple[Step | None, list[int]]:
        node, m = self.net.nodes[i], self.modules[i]
        if not self._usable(i) or len(node.inputs) != 1 or len(node.outputs) != 1:
            return None, [i]
        head = _head_kind(node, m)
        if head is None:
            return None, [i]
        rank = {"conv": 4, "linear": 2}.get(head)
        affine = affine_of(node, m, None) if head == "affine" else None
        chain, act = [i], None
        j = self._next(i)
        while j is not None and act is None:
            nj, mj = self.net.nodes[j], self.modules[j]
            ab = affine_of(nj, mj, rank)
            if ab is not None:
                affine = ab if affine is None else compose(affine, ab)
            elif type(mj) in (nn.ReLU, nn.LeakyReLU):
                act = mj
            else:
                break
            chain.append(j)
            j = self._next(j)
        if head == "linear" and len(chain) == 1:
            return None, [i]
        self.folded.extend(self.names[k] for k in chain)
        nodes = [self.net.nodes[k] for k in chain]
        layers, outputs = tuple(n.name for n in nodes), nodes[-1].outputs
        if head == "affine":
            assert affine is not None
            # A BN/Scale/Bias run with no conv before it: one multiply-add (+ activation).
            return Step(layers, node.inputs, outputs, affine_call(affine, act), True,
                        overwrites=True, kind="affine"), chain
        if head == "linear":
            call = fc_call(m, affine, act)  # type: ignore[arg-type]
            return Step(layers, node.inputs, outputs, call, True, kind="linear"), chain
        spec = conv_spec(m, affine, act)  # type: ignore[arg-type]
        return Step(layers, node.inputs, outputs, spec.call(), True, kind="conv",
                    conv=spec), chain

    def merged(self, steps: list[Step]) -> list[Step]:
        """Replace sibling convolutions with one kernel size feeding a channel
        concatenation by one conv.

        Siblings of different kernel sizes (a Fire or Inception module's 1x1 and 3x3) stay
        apart: zero-padding the 1x1 kernel to 3x3 costs nine times its work, more than the
        concatenation saves (SqueezeNet ran 0.75x as fast merged, channels-last on CPU).
        """
        producer = {v: k for k, s in enumerate(steps) for v in s.outputs}
        drop: set[int] = set()
        for c, step in enumerate(steps):
            parts = self._siblings(step, producer, steps)
            if parts is None or len({steps[k].conv.weight.shape[2:]  # type: ignore[union-attr]
                                     for k in parts}) != 1:
                continue
            spec = merge_convs([steps[k].conv for k in parts])  # type: ignore[misc]
            if spec is None:
                continue
            layers = tuple(x for k in parts for x in steps[k].layers) + step.layers
            steps[c] = Step(layers, steps[parts[0]].inputs, step.outputs, spec.call(), True,
                            kind="conv", conv=spec)
            drop.update(parts)
        return [s for k, s in enumerate(steps) if k not in drop]

    def _siblings(self, step: Step, producer: Mapping[str, int],
                  steps: Sequence[Step]) -> list[int] | None:
        i = self._index.get(step.layers[-1])
        if i is None or step.kind != "layer" or self.net.nodes[i].op != "concat" or \
                getattr(self.modules[i], "dim", None) != 1 or not self._usable(i):
            return None
        parts = [producer.get(v, -1) for v in step.inputs]
        if len(set(parts)) != len(parts) or min(parts) < 0:
            return None
        for v, k in zip(step.inputs, parts):
            if steps[k].conv is None or v in self.wanted or len(self.readers[v]) != 1 \
                    or steps[k].inputs != steps[parts[0]].inputs:
                return None
        return parts


def _tensors(m: nn.Module) -> list[torch.Tensor]:
    return [*m.parameters(recurse=False), *(b for b in m.buffers(recurse=False)
                                            if b is not None)]


def _head_kind(node: Node, m: nn.Module) -> str | None:
    if isinstance(m, nn.Conv2d) and node.op in ("conv2d", "caffe.conv2d_shared"):
        return "conv" if m.padding_mode == "zeros" else None
    if node.op == "linear" and getattr(m, "axis", None) == 1:
        return "linear"
    if affine_of(node, m, None) is not None:
        return "affine"
    return None


def _in_place_variant(node: Node, m: nn.Module, step: Step) -> Step:
    """ReLU and two-input sums that overwrite an input no one else can see."""
    if node.op == "relu" and type(m) in (nn.ReLU, nn.LeakyReLU):
        act = activation(m)

        def relu(args: list[Any], writable: list[bool]) -> Any:
            return act(args[0]) if writable[0] else m(args[0])

        return Step(step.layers, step.inputs, step.outputs, relu, step.fresh, True)
    if node.op == "add" and _built_by(node, m) and len(node.inputs) == 2 and \
            getattr(m, "coeffs", None) is None:

        def add(args: list[Any], writable: list[bool]) -> Any:
            a, b = args
            if a.shape == b.shape and a.dtype == b.dtype:
                if writable[0]:
                    return a.add_(b)
                if writable[1]:
                    return b.add_(a)
            return m(a, b)

        return Step(step.layers, step.inputs, step.outputs, add, step.fresh, True)
    return step


def _signature(net: GraphNet, names: Sequence[str],
               folded: Sequence[str]) -> Callable[[], tuple[Any, ...]]:
    """What a plan depends on: the layer modules (identity, mode, hooks) and the storage
    and version of every tensor it folded."""

    def signature() -> tuple[Any, ...]:
        mods = [net._modules.get(n) for n in names]
        state = tuple((id(m), m.training, _hooked(m)) for m in mods if m is not None)
        tensors = tuple((t.data_ptr(), t._version, t.device) for n in folded
                        for t in _tensors(net.get_submodule(n)))
        return (len(net.nodes), _global_hooks(), state, tensors)

    return signature


_CACHE: weakref.WeakKeyDictionary[nn.Module, dict[tuple[Any, ...], Plan]] = \
    weakref.WeakKeyDictionary()
_MAX_PLANS = 8


def plan_for(net: GraphNet, wanted: Sequence[str], fuse: bool) -> Plan:
    """The (cached) plan computing ``wanted``; fused only when ``fuse`` is true."""
    wanted = tuple(dict.fromkeys(wanted))
    plans = _CACHE.setdefault(net, {})
    plan = plans.get((wanted, fuse))
    if plan is not None and plan.key == plan.signature():
        return plan
    plan = _build(net, wanted, fuse)
    if len(plans) >= _MAX_PLANS:
        plans.pop(next(iter(plans)))
    plans[(wanted, fuse)] = plan
    return plan


def _build(net: GraphNet, wanted: tuple[str, ...], fuse: bool) -> Plan:
    with torch.no_grad():
        builder = _Builder(net, wanted, fuse)
        steps = builder.steps()
    last: dict[str, int] = {}
    for k, step in enumerate(steps):
        for v in step.inputs:
            last[v] = k
    release: list[list[str]] = [[] for _ in steps]
    for v, k in last.items():
        release[k].append(v)
    keep = frozenset(last)
    names = [builder.names[i] for i in builder.order]
    signature = _signature(net, names, builder.folded)
    plan = Plan(steps, wanted, builder.fuse, [tuple(r) for r in release], keep, signature)
    plan.key = signature()
    return plan
