"""The ModelHandler: a non-mutating wrapper for inspecting, editing and reading a network."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, overload

import numpy as np
import torch
from torch import nn

from repurpose._exceptions import SurgeryError
from repurpose._imported import ImportedModel
from repurpose._memory import reuse_freed_memory
from repurpose._preprocess import Preprocess
from repurpose.graph import GraphNet
from repurpose.model_handler import _freeze, _io, _shards, _surgery, _to_graph
from repurpose.model_handler._data import (
    ImageFolder,
    as_batches,
    num_batches,
    num_samples,
    open_data,
)
from repurpose.model_handler._extract import (
    POOLINGS,
    DiskWriter,
    MemoryWriter,
    Runner,
    eval_mode,
    to_numpy,
)
from repurpose.model_handler._layers import LayerIndex, index_layers, module_of
from repurpose.model_handler._summary import Summary, summarize

__all__ = ["ModelHandler"]

Modules = nn.Module | Sequence[nn.Module] | Mapping[str, nn.Module]


class ModelHandler:
    """Wrap a ``torch.nn.Module`` to list, cut, freeze and read its layers.

    The handler never modifies the module it was given: every operation that changes the
    network returns a new handler with its own copy.

    Parameters
    ----------
    module : torch.nn.Module
        Any network. A :class:`repurpose.graph.GraphNet` (what the Caffe and MXNet
        importers build) is handled through its graph and saves without user code.
    input_shape : sequence of int, optional
        Shape of one input *without* the batch axis, e.g. ``(3, 224, 224)``. Used by
        :meth:`summary`. For a GraphNet it defaults to the graph's declared input shape.
    preprocess : Preprocess, optional
        How images are turned into inputs (applied to image folders).
    device : str or torch.device
        Where the network runs. If the module is elsewhere, the handler keeps a copy
        on ``device``.

    Examples
    --------
    >>> import numpy as np
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> h = ModelHandler(net, input_shape=(4,))
    >>> h.layer_names
    ['0', '1', '2']
    >>> feats = h.extract(np.zeros((10, 4), np.float32), layers=["1"], progress=False)
    >>> feats["1"].shape
    (10, 8)
    """

    def __init__(
        self,
        module: nn.Module,
        input_shape: Sequence[int] | None = None,
        preprocess: Preprocess | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        if preprocess is not None and not isinstance(preprocess, Preprocess):
            raise TypeError(f"preprocess must be a Preprocess, got {type(preprocess).__name__}")
        self.device = torch.device(device)
        self.module = _on_device(module, self.device)
        if input_shape is None and isinstance(module, GraphNet) and module.input_shapes:
            input_shape = module.input_shapes[module.input_names[0]][1:]
        self.input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.preprocess = preprocess

    def __repr__(self) -> str:
        return (
            f"ModelHandler({type(self.module).__name__}, {len(self.layer_names)} layers, "
            f"input_shape={self.input_shape}, device={str(self.device)!r})"
        )

    # ----------------------------------------------------------------- layers
    @cached_property
    def _index(self) -> LayerIndex:
        return index_layers(self.module)

    @property
    def layer_names(self) -> list[str]:
        """Layer names in execution order: leaf modules and functional ops.

        For traceable models the functional ops recorded by torch.fx are included, named
        like torchvision's ``get_graph_node_names`` (``"layer1.0.add"``). For a GraphNet,
        the graph's node names.
        """
        return self._index.names

    @property
    def layer_types(self) -> dict[str, str]:
        """``{layer name: type}``: the module class name (``"Conv2d"``) or the op
        (``"operator.add"``, ``"torch.flatten"``, ``"Tensor.view"``)."""
        return {layer.name: layer.type for layer in self._index.layers}

    def summary(self) -> Summary:
        """A table with one row per layer: type, output shape and parameter count.

        Output shapes come from one forward pass on a zero input of ``input_shape``
        (left empty when ``input_shape`` is not set).

        Returns
        -------
        Summary
            A list of :class:`SummaryRow`; ``print`` it for a table.
        """
        return summarize(self.module, self._index, self.input_shape, self.device)

    def _resolve(self, layers: str | Iterable[str]) -> list[str]:
        return self._index.resolve(layers)

    def _derive(self, module: nn.Module) -> ModelHandler:
        return ModelHandler(module, self.input_shape, self.preprocess, self.device)

    # ---------------------------------------------------------------- surgery
    def truncate(self, at: str) -> ModelHandler:
        """A handler for the network up to and including layer ``at``.

        Parameters
        ----------
        at : str
            A name from :attr:`layer_names`, or a container (``"layer4"``: up to and
            including the block's last layer); its output becomes the network's output.

        Raises
        ------
        LayerNotFoundError
            ``at`` is not a layer.
        SurgeryError
            Cutting there would leave a parallel branch dangling (for example inside an
            inception block); the message names the branch.
        """
        last = self._index.last_layer(at)
        return self._carry(self._derive(_surgery.truncate(self.module, self._index, last)))

    def drop_layers_top(self, n: int = 1) -> ModelHandler:
        """Remove the last ``n`` layers (see :meth:`truncate`)."""
        n = self._check_count(n)
        return self.truncate(self.layer_names[-n - 1])

    def drop_layers_bottom(self, n: int = 1) -> ModelHandler:
        """Remove the first ``n`` layers; the network then takes what layer ``n`` took.

        The handler's ``input_shape`` and ``preprocess`` no longer apply and are dropped.
        """
        n = self._check_count(n)
        module = _surgery.drop_bottom(self.module, self._index, n)
        return self._carry(ModelHandler(module, None, None, self.device))

    def add_layers_top(self, modules: Modules) -> ModelHandler:
        """Append modules after the output.

        Parameters
        ----------
        modules : Module, sequence of Module, or mapping of name to Module
            New layers, applied in order. Unnamed ones are called ``top0``, ``top1``, ...
        """
        return self._add(modules, top=True)

    def add_layers_bottom(self, modules: Modules) -> ModelHandler:
        """Prepend modules before the input. Unnamed ones are called ``bottom0``, ...

        ``preprocess`` still applies to the new input; ``input_shape`` is dropped.
        """
        return self._add(modules, top=False)

    def _add(self, modules: Modules, top: bool) -> ModelHandler:
        taken = set(self.layer_names) | {n for n, _ in self.module.named_children()}
        new = _surgery.named_modules_to_add(modules, "top" if top else "bottom", taken)
        module = _surgery.add_layers(self.module, self._index, new, top)
        handler = ModelHandler(
            module, self.input_shape if top else None, self.preprocess, self.device
        )
        return self._carry(handler)

    def _check_count(self, n: int) -> int:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n={n!r}; give a positive number of layers")
        if n >= len(self.layer_names):
            raise SurgeryError(
                f"cannot drop {n} of the {len(self.layer_names)} layers; at least one must remain"
            )
        return n

    # --------------------------------------------------------------- freezing
    def freeze(self, layers: str | Iterable[str]) -> ModelHandler:
        """A handler whose given layers have no gradients and fixed BatchNorm statistics.

        Parameters
        ----------
        layers : str or iterable of str
            Exact layer names, container names (``"layer4"``: the whole block), or
            fnmatch globs (``"layer1.*"``); never substrings.

        Notes
        -----
        A frozen BatchNorm stays in eval mode even after ``module.train()``: a forward
        pre-hook switches it back before each call, so its running statistics are used
        and never updated. ``save``/``load`` keep the frozen state.
        """
        names = self._resolve(layers)
        handler = self._derive(copy.deepcopy(self.module))
        _freeze.freeze_modules(handler._modules_of(names))
        return handler

    def unfreeze(self, layers: str | Iterable[str]) -> ModelHandler:
        """A handler whose given layers train again (names or globs, as in :meth:`freeze`)."""
        names = self._resolve(layers)
        handler = self._derive(copy.deepcopy(self.module))
        _freeze.unfreeze_modules(handler._modules_of(names))
        return handler

    def freeze_up_to(self, layer: str) -> ModelHandler:
        """Freeze every layer from the input up to and including ``layer`` (for a
        container such as ``"layer3"``, up to and including its last layer)."""
        position = self._index.position[self._index.last_layer(layer)]
        return self.freeze(self.layer_names[: position + 1])

    @property
    def frozen_layers(self) -> list[str]:
        """Layers whose parameters are all frozen (and frozen BatchNorms), in order."""
        return [n for n in self.layer_names if n in self._frozen_names()]

    def _frozen_names(self) -> set[str]:
        out = set()
        for layer in self._index.layers:
            module = module_of(self.module, layer)
            if module is not None and _freeze.is_frozen(module):
                out.add(layer.name)
        return out

    def _modules_of(self, names: Iterable[str]) -> list[nn.Module]:
        """The modules of layers and containers (a container's own module when it has one,
        else the modules of its layers)."""
        index = self._index
        out = []
        for name in names:
            layer = index.get(name)
            if layer.type == "container" and layer.kind == "module":
                out.append(index.modules[name])
                continue
            for member in index.members(name):
                module = module_of(self.module, index.by_name[member])
                if module is not None:
                    out.append(module)
        return out

    def _apply_frozen(self, names: Iterable[str]) -> ModelHandler:
        _freeze.freeze_modules(self._modules_of(names))
        return self

    def _carry(self, handler: ModelHandler) -> ModelHandler:
        """Give the layers of an edited copy the frozen state and train/eval mode they had.

        (GraphNet surgery rebuilds modules, which loses both.)
        """
        handler.module.train(self.module.training)
        for layer in handler._index.layers:
            old = self._index.by_name.get(layer.name)
            new_module = module_of(handler.module, layer)
            if old is not None and new_module is not None:
                old_module = module_of(self.module, old)
                if old_module is not None:
                    new_module.train(old_module.training)
        return handler._apply_frozen(self._frozen_names() & set(handler.layer_names))

    # ------------------------------------------------------------- extraction
    @overload
    def extract(
        self, data: Any, layers: str | Sequence[str], pooling: str | None = ...,
        batch_size: int = ..., progress: bool = ..., out: str | os.PathLike[str] | None = ...,
        return_labels: Literal[False] = ..., on_error: str = ...,
        shard: tuple[int, int] | None = ...,
    ) -> dict[str, np.ndarray]: ...

    @overload
    def extract(
        self, data: Any, layers: str | Sequence[str], pooling: str | None = ...,
        batch_size: int = ..., progress: bool = ..., out: str | os.PathLike[str] | None = ...,
        *, return_labels: Literal[True], on_error: str = ...,
        shard: tuple[int, int] | None = ...,
    ) -> tuple[dict[str, np.ndarray], np.ndarray | None]: ...

    def extract(
        self,
        data: Any,
        layers: str | Sequence[str],
        pooling: str | None = "avg",
        batch_size: int = 64,
        progress: bool = True,
        out: str | os.PathLike[str] | None = None,
        return_labels: bool = False,
        on_error: str = "raise",
        shard: tuple[int, int] | None = None,
    ) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], np.ndarray | None]:
        """Features of several layers from one forward pass per batch.

        Runs in eval mode without gradients, stops each forward pass after the deepest
        requested layer, and restores every submodule's previous mode afterwards.

        Parameters
        ----------
        data : ndarray, Tensor, Dataset, DataLoader, str or Path
            Inputs (N, ...); a Dataset/DataLoader of inputs or (input, label) pairs; or an
            image folder with one subfolder per class (preprocessed by ``preprocess``).
        layers : str or sequence of str
            Layer names (or globs) from :attr:`layer_names`; container names such as
            ``"layer4"`` give the block's output.
        pooling : {"avg", "max", "flatten", None}
            How outputs with spatial axes are reduced to (N, D); ``None`` keeps them.
        batch_size : int
            Samples per forward pass (a DataLoader keeps its own batching).
        progress : bool
            Show a tqdm progress bar.
        out : str or Path, optional
            A directory: each layer streams into ``<out>/<layer>.npy`` (memory-mapped), so
            memory use stays bounded for any N; ``index.json`` maps layers to files.
            The returned arrays are read-only memory maps of those files.
        return_labels : bool
            Also return the labels of the data (None when it has none). The labels of an
            image folder are its class (subfolder) names.
        on_error : {"raise", "skip"}
            For an image folder given as a path: what an unreadable image does (see
            :class:`ImageFolder`; an ``ImageFolder`` object keeps its own setting).
        shard : (int, int), optional
            ``(index, count)``: extract only the ``index``-th of ``count`` contiguous blocks
            of rows, into ``<out>/shard-<index>-of-<count>/`` (``out`` is required). Run
            every index (Slurm array tasks, torchrun ranks), then join them in order with
            :func:`repurpose.merge_features`.

        Returns
        -------
        dict of str to ndarray, or (dict, ndarray or None)
            ``{layer: features (N, D)}``, in the order requested.

        Raises
        ------
        ValueError
            On inputs with NaN or infinite values, images of different sizes, or inputs
            the network cannot take (the message says what to set).

        Examples
        --------
        >>> import numpy as np
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(144, 2))
        >>> h = ModelHandler(net)
        >>> x = np.random.rand(6, 1, 8, 8).astype(np.float32)
        >>> f = h.extract(x, ["0", "1"], pooling="max", batch_size=4, progress=False)
        >>> f["0"].shape, f["1"].shape
        ((6, 4), (6, 4))
        """
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r}; use one of 'avg', 'max', 'flatten', None")
        names = self._resolve(layers)
        if not names:
            raise ValueError("no layers requested; see ModelHandler.layer_names")
        runner = Runner(self.module, self._index, names, stop_early=True, pooling=pooling)
        data = open_data(data, self.preprocess, on_error)
        if shard is not None:
            data, out = self._shard(data, out, shard)
        n = num_samples(data)
        writer = MemoryWriter(names, n) if out is None else DiskWriter(names, n, out)
        labels: list[np.ndarray] = []
        has_labels = True
        batches = as_batches(data, batch_size, preprocess=self.preprocess)
        try:
            with eval_mode(self.module, self._index.modules.values()), torch.no_grad(), \
                    runner, reuse_freed_memory():
                for x, y in _progress(batches, num_batches(data, batch_size), progress):
                    _check_finite_batch(x, writer.pos)
                    writer.write(to_numpy(self._run(runner, x)))
                    if y is None:
                        has_labels = False
                    elif has_labels:
                        labels.append(np.asarray(y))
        finally:
            if isinstance(writer, DiskWriter):
                writer.close()
        all_labels = np.concatenate(labels) if has_labels and labels else None
        if isinstance(writer, DiskWriter):
            features = writer.finish(all_labels)
        else:
            features = writer.result()
        return (features, all_labels) if return_labels else features

    def _shard(self, data: Any, out: Any, shard: Any) -> tuple[Any, Path]:
        if out is None:
            raise ValueError("shard= writes one shard's rows to disk: give out=<directory> "
                             "(the same for every shard), then call repurpose.merge_features")
        index, count = _shards.check_shard(shard)
        data = _shards.shard_data(data, num_samples(data), index, count)
        return data, _shards.shard_dir(out, index, count)

    def _run(self, runner: Runner, x: torch.Tensor) -> dict[str, Any]:
        try:
            return runner(x.to(self.device, non_blocking=True))
        except (torch.OutOfMemoryError, NotImplementedError):
            raise
        except RuntimeError as err:
            expected = "" if self.input_shape is None else f" (it declares {self.input_shape})"
            raise ValueError(
                f"the network cannot take inputs of shape {tuple(x.shape[1:])}{expected}: "
                f"{str(err).splitlines()[0]}. Set the preprocessing (resize, crop, ...) so that "
                "inputs have the shape the network expects"
            ) from err

    def image_folder(self, path: str | os.PathLike[str], on_error: str = "raise") -> ImageFolder:
        """An :class:`ImageFolder` dataset using this handler's ``preprocess``.

        Its ``classes`` are the labels that ``extract``, ``fit`` and ``predict`` report.

        Parameters
        ----------
        path : str or Path
            A folder with one subfolder of images per class.
        on_error : {"raise", "skip"}
            What an unreadable image does: stop with an error naming it, or be left out
            with a warning (the folder's ``skipped`` then lists them). The object is
            accepted wherever a path is (``extract``, ``fit``, ``predict``, ``score``).
        """
        return ImageFolder(path, self.preprocess, on_error)

    # ----------------------------------------------------------- persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the handler to the directory ``path``.

        A GraphNet saves as ``graph.json`` + ``weights.safetensors`` and loads with no
        code; so does a plain module that torch.fx traces into standard ``torch.nn`` layers
        and ops (it is converted, keeping its layer names). Other modules save their state
        dict; load them with ``ModelHandler.load(path, module=<the same architecture>)``.
        ``handler.json`` holds the layer list, input shape, preprocessing and frozen layers.

        Returns
        -------
        Path
            The directory written.
        """
        meta = {
            "module_class": f"{type(self.module).__module__}.{type(self.module).__qualname__}",
            "layer_names": self.layer_names,
            "layer_types": self.layer_types,
            "input_shape": None if self.input_shape is None else list(self.input_shape),
            "frozen": self.frozen_layers,
        }
        module, meta["not_converted"] = _to_graph.for_saving(self.module, self.input_shape)
        return _io.write_handler(path, module, meta, self.preprocess)

    def export_onnx(self, path: str | os.PathLike[str], layers: str | Sequence[str] | None = None,
                    input_shape: Sequence[int] | None = None, opset: int = 17) -> Path:
        """Write the network, or its part up to ``layers`` (then the outputs), to ONNX.

        See :mod:`repurpose.onnx` and ``docs/onnx.md``; ``input_shape`` defaults to the
        handler's. Returns the path written.
        """
        from repurpose.model_handler._onnx_export import export_handler

        return export_handler(self, path, layers, input_shape, opset)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        module: nn.Module | None = None,
        device: str | torch.device = "cpu",
    ) -> ModelHandler:
        """Load a handler written by :meth:`save`.

        Parameters
        ----------
        path : str or Path
            The saved directory.
        module : torch.nn.Module, optional
            Required for plain modules: a freshly built module of the saved architecture,
            into which the weights are loaded (in place). Not needed for GraphNets.
        device : str or torch.device
            Where the network runs.
        """
        module, doc, preprocess = _io.read_handler(path, module)
        handler = cls(module, doc.get("input_shape"), preprocess, device)
        frozen = [n for n in doc.get("frozen", []) if n in handler._index.by_name]
        return handler._apply_frozen(frozen)

    # -------------------------------------------------------------- importers
    @classmethod
    def from_imported(cls, model: ImportedModel,
                      device: str | torch.device = "cpu") -> ModelHandler:
        """Wrap what an importer returned: its graph, input shape and preprocessing.

        Parameters
        ----------
        model : ImportedModel
            From ``repurpose.caffe.import_model``, ``repurpose.mxnet.import_model`` or any
            other importer.
        device : str or torch.device
            Where the network runs.
        """
        if not isinstance(model, ImportedModel):
            raise TypeError(f"model must be an ImportedModel, got {type(model).__name__}")
        return cls(model.net, model.input_shape, model.preprocess, device)

    @classmethod
    def from_caffe(cls, prototxt: str | Path, weights: str | Path | None = None,
                   mean: Any = None, *, device: str | torch.device = "cpu",
                   **kwargs: Any) -> ModelHandler:
        """Import a Caffe model (see :func:`repurpose.caffe.handler_from_caffe`).

        Parameters
        ----------
        prototxt : str or Path
            The network definition (``deploy.prototxt``).
        weights : str or Path, optional
            The ``.caffemodel``; without it the weights are freshly initialised.
        mean : optional
            A ``.binaryproto`` mean file, a mean image, or per-channel means.
        device : str or torch.device
            Where the network runs.
        **kwargs
            Passed on to :func:`repurpose.caffe.import_model` (``input_shape``,
            ``channel_order``, ...).
        """
        from repurpose.caffe._api import import_model  # lazy: caffe's public face imports us

        return cls.from_imported(import_model(prototxt, weights, mean, **kwargs), device)

    @classmethod
    def from_mxnet(cls, symbol_json: str | Path | Mapping[str, Any],
                   params: str | Path | Mapping[str, np.ndarray] | None = None,
                   input_shape: Sequence[int] | None = None, *,
                   device: str | torch.device = "cpu", **kwargs: Any) -> ModelHandler:
        """Import an MXNet model (see :func:`repurpose.mxnet.handler_from_mxnet`).

        Parameters
        ----------
        symbol_json : str, Path or dict
            The ``*-symbol.json`` file (or its parsed content).
        params : str, Path or dict, optional
            The ``.params`` file (or a dict of arrays).
        input_shape : sequence of int, optional
            One input's shape without the batch axis.
        device : str or torch.device
            Where the network runs.
        **kwargs
            Passed on to :func:`repurpose.mxnet.import_model` (``preprocess``).
        """
        from repurpose.mxnet._api import import_model  # lazy: mxnet's public face imports us

        imported = import_model(symbol_json, params, input_shape=input_shape, **kwargs)
        if input_shape is None:
            return cls.from_imported(imported, device)
        return cls(imported.net, input_shape, imported.preprocess, device)

    @classmethod
    def from_onnx(cls, source: Any, preprocess: Preprocess | None = None, *,
                  input_shape: Sequence[int] | None = None, nchw_input: bool = True,
                  device: str | torch.device = "cpu") -> ModelHandler:
        """Import an ONNX model (see :func:`repurpose.onnx.load` and ``docs/onnx.md``).

        Parameters
        ----------
        source : str, Path, bytes or onnx.ModelProto
            The ``.onnx`` file.
        preprocess : Preprocess, optional
            How images become the model's input (ONNX files do not say).
        input_shape : sequence of int, optional
            One input's shape without the batch axis, when the file leaves it open.
        nchw_input : bool
            Drop the NHWC->NCHW transpose of Keras exports, so the net takes NCHW input.
        device : str or torch.device
            Where the network runs.
        """
        from repurpose.onnx._api import load

        net, preprocess = load(source, preprocess, input_shape=input_shape,
                               nchw_input=nchw_input)
        return cls(net, preprocess=preprocess, device=device)

    @classmethod
    def from_mxnet_checkpoint(cls, prefix: str | Path, epoch: int = 0,
                              **kwargs: Any) -> ModelHandler:
        """Import an MXNet checkpoint ``<prefix>-symbol.json`` + ``<prefix>-<epoch>.params``.

        Parameters
        ----------
        prefix : str or Path
            The checkpoint prefix (``"models/resnet-18"``).
        epoch : int
            The epoch number in the params file name.
        **kwargs
            Passed on to :meth:`from_mxnet`.
        """
        from repurpose.mxnet._api import checkpoint_paths

        symbol, params = checkpoint_paths(prefix, epoch)
        return cls.from_mxnet(symbol, params, **kwargs)

    # --------------------------------------------------------- transferability
    def rank_layers(self, data: Any, y: Any = None, layers: str | Sequence[str] | None = None,
                    method: str = "logme", **kwargs: Any) -> Any:
        """Rank layers by transferability to ``(data, y)`` from one forward pass.

        See :func:`repurpose.transferability.rank_layers` (``kwargs``: ``pooling``,
        ``max_dim``, ``batch_size``, ``progress``).

        Returns
        -------
        repurpose.transferability.Ranking
            Rows (layer, dims, score, seconds), best first.
        """
        from repurpose.transferability import rank_layers

        return rank_layers(self, data, y, layers, method, **kwargs)


def _on_device(module: nn.Module, device: torch.device) -> nn.Module:
    tensors = list(module.parameters()) + list(module.buffers())
    if all(_same_device(t.device, device) for t in tensors):
        return module
    try:
        return copy.deepcopy(module).to(device)
    except (RuntimeError, AssertionError) as err:  # torch raises these for missing devices
        raise ValueError(f"cannot use device {str(device)!r}: {err}") from err


def _same_device(a: torch.device, b: torch.device) -> bool:
    if a.type != b.type:
        return False
    return a.index is None or b.index is None or a.index == b.index


def _check_finite_batch(x: torch.Tensor, offset: int) -> None:
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        bad = (~torch.isfinite(x.reshape(x.shape[0], -1))).any(dim=1).nonzero().flatten()
        raise ValueError(
            f"inputs contain NaN or infinite values (sample {offset + int(bad[0])}); "
            "clean or impute them before extracting features"
        )


def _progress(batches: Iterable[Any], total: int | None, progress: bool) -> Iterable[Any]:
    from tqdm.auto import tqdm

    return tqdm(batches, total=total, disable=not progress, desc="extract", unit="batch",
                leave=False)
