"""Multi-layer feature extraction in one forward pass per batch.

Leaf modules are read with forward hooks; the pass is cut short (by an exception raised
from the hook of the last requested layer) once every requested layer has run. When a
requested layer is a functional op, an fx graph that outputs exactly the requested nodes
is built once (dead code removed, so it also stops early). GraphNets use ``run``, which
only runs the layers the requested values depend on.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import fx, nn

from repurpose.graph import GraphNet
from repurpose.model_handler._layers import LayerIndex

__all__ = [
    "Runner",
    "eval_mode",
    "graph_module",
    "pool",
    "MemoryWriter",
    "DiskWriter",
    "POOLINGS",
]

POOLINGS = ("avg", "max", "flatten", None)


class _Stop(Exception):
    """Raised from a hook to end the forward pass after the last requested layer."""


class Runner:
    """Computes the outputs of a fixed set of layers for one batch at a time."""

    def __init__(self, module: nn.Module, index: LayerIndex, names: Sequence[str],
                 stop_early: bool = True, pooling: str | None = None) -> None:
        self.module = module
        self.names = list(names)
        self.stop_early = stop_early
        self.pooling = pooling
        modules = index.modules or dict(module.named_modules())
        self._handles: list[Any] = []
        self._attach: Callable[[], None] | None = None
        self._call: Callable[[torch.Tensor], dict[str, Any]]
        if isinstance(module, GraphNet):
            self._call = self._graph_call(module, index)
        elif all(index.get(n).kind == "module" for n in self.names):
            self._call = self._hook_call({n: modules[n] for n in self.names})
        else:
            if index.gm is None:
                raise ValueError(f"functional-op layers need an fx trace: {index.trace_error}")
            self._call = self._fx_call(index)

    def __call__(self, x: torch.Tensor) -> dict[str, Any]:
        return self._call(x)

    def _graph_call(self, net: GraphNet, index: LayerIndex) -> Callable[..., dict[str, Any]]:
        if len(net.input_names) != 1:
            raise ValueError(
                f"this graph has {len(net.input_names)} inputs {net.input_names}; "
                "extraction supports single-input graphs"
            )
        values = [index.get(n).value for n in self.names]
        layer_of = {v: n for n, v in zip(self.names, values)}
        feed = net.input_names[0]

        def reduce(value: str, x: torch.Tensor) -> Any:
            # pooled as soon as it is computed, so the executor can free the full blob
            return pool(x, self.pooling, layer_of[value], nhwc=value in net.nhwc_values)

        def call(x: torch.Tensor) -> dict[str, Any]:
            out = net.run({feed: x}, values, capture=reduce)
            return {n: out[v] for n, v in zip(self.names, values)}

        return call

    def _hook_call(self, targets: Mapping[str, nn.Module]) -> Callable[..., dict[str, Any]]:
        wanted = len(targets)
        captured: dict[str, Any] = {}

        def make_hook(name: str) -> Callable[..., None]:
            def hook(_m: nn.Module, _args: Any, output: Any) -> None:
                if name not in captured:
                    # Pool now: a later in-place op (ReLU(inplace=True)) may overwrite it.
                    captured[name] = _detached(pool(output, self.pooling, name), output)
                    if self.stop_early and len(captured) == wanted:
                        raise _Stop

            return hook

        def attach() -> None:
            self._handles = [m.register_forward_hook(make_hook(n)) for n, m in targets.items()]

        def call(x: torch.Tensor) -> dict[str, Any]:
            captured.clear()
            temporary = not self._handles
            if temporary:
                attach()
            try:
                self.module(x)
            except _Stop:
                pass
            finally:
                if temporary:
                    self.detach()
            missing = [n for n in self.names if n not in captured]
            if missing:
                raise ValueError(f"layers {missing} did not run during the forward pass")
            return {n: captured.pop(n) for n in self.names}

        self._attach = attach
        return call

    def __enter__(self) -> Runner:
        """Keep the hooks attached across calls (instead of attaching them per batch)."""
        if self._attach is not None and not self._handles:
            self._attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def detach(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _fx_call(self, index: LayerIndex) -> Callable[..., dict[str, Any]]:
        assert index.gm is not None
        node_names = [index.get(n).value for n in self.names]
        sub = fx_outputs(index.gm, node_names, self.pooling, self.names)

        def call(x: torch.Tensor) -> dict[str, Any]:
            return dict(zip(self.names, sub(x)))

        return call


def capture(value: Any, mode: str | None, layer: str) -> Any:
    """Pool a layer output as soon as it exists, so later in-place ops cannot change it."""
    return _detached(pool(value, mode, layer), value)


def fx_outputs(gm: fx.GraphModule, node_names: Sequence[str], pooling: str | None = None,
               layers: Sequence[str] | None = None) -> fx.GraphModule:
    """A graph module returning the named nodes' values, captured (and pooled) right
    where they are computed, and computing nothing more."""
    layers = list(layers or node_names)
    wanted = dict(zip(node_names, layers))
    graph = fx.Graph()
    env: dict[str, fx.Node] = {}
    captured: dict[str, fx.Node] = {}
    for node in gm.graph.nodes:
        if node.op == "output":
            continue
        env[node.name] = graph.node_copy(node, lambda n: env[n.name])
        if node.name in wanted:
            captured[node.name] = graph.call_function(
                capture, (env[node.name], pooling, wanted[node.name])
            )
    graph.output(tuple(captured[n] for n in node_names))
    return graph_module(gm, graph)


def graph_module(root: nn.Module, graph: fx.Graph, name: str = "GraphModule") -> fx.GraphModule:
    """An fx GraphModule of ``graph`` with unused nodes removed."""
    gm = fx.GraphModule(root, graph, name)
    gm.graph.eliminate_dead_code()
    gm.recompile()
    return fx.GraphModule(gm, gm.graph, name)  # drops submodules no node uses any more


def _detached(value: Any, output: Any) -> Any:
    """``value``, copied if it shares memory with the layer's raw output."""
    if isinstance(value, torch.Tensor) and isinstance(output, torch.Tensor) and (
        value.untyped_storage().data_ptr() == output.untyped_storage().data_ptr()
    ):
        return value.clone()
    return value


def pool(value: Any, mode: str | None, layer: str, nhwc: bool = False) -> Any:
    """Reduce a layer output to (B, D) per ``mode`` (``None`` keeps the shape).

    ``nhwc`` says a 4-D output's axes are (N, H, W, C) (see ``GraphNet.nhwc_values``): it is
    reduced over H and W, and flattened in (C, H, W) order, as its NCHW twin would be.
    """
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        if mode is None:
            return value
        raise ValueError(f"layer {layer!r} outputs {type(value).__name__}, not a tensor")
    if mode is None or value.dim() <= 2:
        return value
    if nhwc and value.dim() == 4:
        value = value.permute(0, 3, 1, 2)
    if mode == "avg":
        return value.mean(dim=tuple(range(2, value.dim())))
    if mode == "max":
        return value.amax(dim=tuple(range(2, value.dim())))
    return value.flatten(1)


def to_numpy(values: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Move a batch of features to host memory, with one transfer when shapes allow."""
    tensors = list(values.values())
    for name, t in values.items():
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"layer {name!r} outputs {type(t).__name__}, not a tensor")
    same = len({(t.dtype, t.device) for t in tensors}) == 1
    if len(tensors) > 1 and same and all(t.dim() == 2 for t in tensors):
        host = torch.cat([t.detach() for t in tensors], dim=1).cpu().numpy()
        out, start = {}, 0
        for name, t in values.items():
            out[name] = host[:, start : start + t.shape[1]]
            start += t.shape[1]
        return out
    return {k: v.detach().cpu().numpy() for k, v in values.items()}


class MemoryWriter:
    """Collects features in memory (preallocated when the sample count is known)."""

    def __init__(self, names: Sequence[str], n: int | None) -> None:
        self.names, self.n = list(names), n
        self.arrays: dict[str, np.ndarray] = {}
        self.chunks: dict[str, list[np.ndarray]] = {k: [] for k in names}
        self.pos = 0

    def write(self, batch: Mapping[str, np.ndarray]) -> None:
        size = next(iter(batch.values())).shape[0]
        if self.n is not None and self.pos + size > self.n:
            raise ValueError(f"data yielded more than the {self.n} samples it declared")
        for name, arr in batch.items():
            if self.n is None:
                self.chunks[name].append(arr.copy())
                continue
            if name not in self.arrays:
                self.arrays[name] = self._allocate(name, arr)
            self.arrays[name][self.pos : self.pos + size] = arr
        self.pos += size

    def _allocate(self, name: str, arr: np.ndarray) -> np.ndarray:
        assert self.n is not None
        return np.empty((self.n, *arr.shape[1:]), dtype=arr.dtype)

    def result(self) -> dict[str, np.ndarray]:
        if self.n is None:
            return {k: np.concatenate(v) if v else np.empty((0,)) for k, v in self.chunks.items()}
        return {k: self.arrays[k][: self.pos] for k in self.names if k in self.arrays}


class DiskWriter:
    """Streams each layer into ``<out>/<layer>.npy`` with plain file writes.

    Nothing is kept in memory and no page is mapped into the process while writing, so
    the resident memory does not grow with N. The ``.npy`` header is rewritten with the
    final sample count at the end, so data of unknown length works too.
    """

    def __init__(self, names: Sequence[str], n: int | None, out: str | os.PathLike[str]) -> None:
        self.names, self.n = list(names), n
        self.dir = Path(out)
        if self.dir.exists() and not self.dir.is_dir():
            raise ValueError(f"out={str(self.dir)!r} exists and is not a directory")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.files = _file_names(names)
        self.streams: dict[str, _NpyStream] = {}
        self.pos = 0

    def write(self, batch: Mapping[str, np.ndarray]) -> None:
        size = next(iter(batch.values())).shape[0]
        if self.n is not None and self.pos + size > self.n:
            raise ValueError(f"data yielded more than the {self.n} samples it declared")
        for name, arr in batch.items():
            if name not in self.streams:
                self.streams[name] = _NpyStream(self.dir / self.files[name])
            self.streams[name].write(arr)
        self.pos += size

    def close(self) -> None:
        for stream in self.streams.values():
            stream.close()

    def finish(self, labels: np.ndarray | None) -> dict[str, np.ndarray]:
        self.close()
        index: dict[str, Any] = {"n": self.pos, "layers": self.files, "labels": None}
        if labels is not None:
            np.save(self.dir / "labels.npy", labels)
            index["labels"] = "labels.npy"
        (self.dir / "index.json").write_text(json.dumps(index, indent=1))
        # no rows (empty data, or an empty shard): no file was opened for the layer
        return {k: np.load(self.dir / f, mmap_mode="r") if k in self.streams
                else np.empty((0,), np.float32) for k, f in self.files.items()}


class _NpyStream:
    """Append rows to a ``.npy`` file (format 1.0) whose header is fixed at the end."""

    HEADER = 256  # bytes reserved for magic + header, enough for any realistic shape

    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = open(path, "wb")  # closed in close()
        self.rows = 0
        self.dtype: np.dtype | None = None
        self.row_shape: tuple[int, ...] = ()

    def write(self, arr: np.ndarray) -> None:
        if self.dtype is None:
            self.dtype, self.row_shape = arr.dtype, tuple(arr.shape[1:])
            self.file.write(self._header())
        elif arr.dtype != self.dtype or tuple(arr.shape[1:]) != self.row_shape:
            raise ValueError(
                f"{self.path.name}: batch of shape {arr.shape} ({arr.dtype}) does not match "
                f"earlier batches (*, {self.row_shape}) ({self.dtype})"
            )
        self.file.write(np.ascontiguousarray(arr).data)
        self.rows += arr.shape[0]

    def close(self) -> None:
        if self.file.closed:
            return
        if self.dtype is not None:
            self.file.seek(0)
            self.file.write(self._header())
        self.file.close()

    def _header(self) -> bytes:
        assert self.dtype is not None
        desc = repr({"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                     "shape": (self.rows, *self.row_shape)})
        body = desc.encode("latin1")
        pad = self.HEADER - 10 - len(body) - 1
        if pad < 0:
            raise ValueError(f"shape {(self.rows, *self.row_shape)} is too long for a header")
        body += b" " * pad + b"\n"
        return b"\x93NUMPY\x01\x00" + len(body).to_bytes(2, "little") + body


def _file_names(names: Sequence[str]) -> dict[str, str]:
    files: dict[str, str] = {}
    used: set[str] = {"labels.npy"}
    for name in names:
        stem = re.sub(r"[^A-Za-z0-9._-]", "_", name).strip(".") or "layer"
        file, k = f"{stem}.npy", 1
        while file in used:
            file, k = f"{stem}_{k}.npy", k + 1
        used.add(file)
        files[name] = file
    return files


@contextlib.contextmanager
def eval_mode(module: nn.Module, modules: Iterable[nn.Module] | None = None) -> Iterator[None]:
    """Eval mode for the duration; then every submodule gets its own mode back.

    ``modules`` (all submodules of ``module``) may be given to save walking the tree.
    """
    modes = [(m, m.training) for m in (module.modules() if modules is None else modules)]
    if any(mode for _, mode in modes):
        module.eval()
    try:
        yield
    finally:
        for m, mode in modes:
            if m.training != mode:
                m.training = mode
