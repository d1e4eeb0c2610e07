"""Feature extraction and prediction on Ray Data: an actor pool, each actor loading once.

The handler (or fitted repurposer) is saved to a directory in its own code-free format
(JSON + safetensors); each actor loads it once in its constructor and then processes
batches. Nothing is pickled but the directory's path and plain settings. On a multi-node
cluster the directory must be on storage every node can read (give ``model_dir``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["extract", "predict", "predict_proba", "read_image_folder"]


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:  # an optional extra
        raise ImportError(
            "repurpose.distributed needs Ray Data: pip install 'repurpose[ray]'"
        ) from err
    return ray


def read_image_folder(root: str | os.PathLike[str], **kwargs: Any) -> Any:
    """A Ray Dataset of the images under ``root/<class>/``, with ``label`` and ``path``.

    Labels are the class folder names, as :class:`repurpose.model_handler.ImageFolder`
    gives them locally. Keyword arguments go to ``ray.data.read_images``.

    Returns
    -------
    ray.data.Dataset
        Columns ``image`` (H, W, 3 uint8), ``path`` and ``label``.
    """
    ray = _ray()
    kwargs.setdefault("mode", "RGB")
    ds = ray.data.read_images(os.fspath(root), include_paths=True, **kwargs)

    def add_label(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        batch["label"] = np.array([Path(p).parent.name for p in batch["path"]])
        return batch

    return ds.map_batches(add_label, batch_format="numpy")


def _saved(obj: Any, model_dir: str | os.PathLike[str] | None, kind: str) -> str:
    """A directory holding ``obj`` in its saved format (written once, read by every actor)."""
    if isinstance(obj, (str, os.PathLike)):
        return os.fspath(obj)
    path = Path(model_dir) if model_dir is not None else Path(
        tempfile.mkdtemp(prefix=f"repurpose-{kind}-"))
    target = path / kind
    if kind == "handler":
        obj.save(target)
        type(obj).load(target)  # fails here, with the reason, if it needs the user's code
    else:
        obj.save(target, include_handler=True)
    return os.fspath(target)


class _Inputs:
    """Turns a batch's input column into model inputs: images go through ``preprocess``
    (as ``ModelHandler.image_folder`` does locally), arrays are used as they are."""

    def __init__(self, column: str, preprocess: Any) -> None:
        self.column, self.preprocess = column, preprocess

    def __call__(self, batch: dict[str, Any]) -> np.ndarray:
        values = batch[self.column]
        if self.column != "image":
            return np.asarray(values, dtype=np.float32)
        from repurpose.model_handler import Preprocess

        pre = self.preprocess or Preprocess()
        return np.stack([pre(np.asarray(image)).numpy() for image in values])


class _Extractor:
    def __init__(self, path: str, layers: Sequence[str], pooling: str | None, device: str,
                 column: str) -> None:
        from repurpose.model_handler import ModelHandler

        self.handler = ModelHandler.load(path, device=device)
        self.layers, self.pooling = list(layers), pooling
        self.inputs = _Inputs(column, self.handler.preprocess)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = self.inputs(batch)
        feats = self.handler.extract(x, self.layers, pooling=self.pooling, batch_size=len(x),
                                     progress=False)
        out = {k: v for k, v in batch.items() if k != self.inputs.column}
        out.update(feats)
        return out


class _Predictor:
    def __init__(self, path: str, device: str, column: str, proba: bool) -> None:
        from repurpose.model_handler import ModelHandler
        from repurpose.repurposers import load

        saved_handler = Path(path) / "handler"
        handler = ModelHandler.load(saved_handler, device=device) if saved_handler.is_dir() \
            else None
        self.rep = load(path, handler=handler)
        self.proba = proba
        self.inputs = _Inputs(column, getattr(self.rep.handler, "preprocess", None))

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        x = self.inputs(batch)
        out = {k: v for k, v in batch.items() if k != self.inputs.column}
        if self.proba:
            out["proba"] = self.rep.predict_proba(x)
        else:
            out["prediction"] = self.rep.predict(x)
        return out


def _map(dataset: Any, actor: type, kwargs: dict[str, Any], batch_size: int,
         num_actors: int | None, device: str) -> Any:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; use a positive int")
    if num_actors is not None and (not isinstance(num_actors, int) or num_actors < 1):
        raise ValueError(f"num_actors={num_actors!r}; use a positive int or None (Ray decides)")
    ray = _ray()
    pool = ray.data.ActorPoolStrategy(size=num_actors) if num_actors is not None else \
        ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, os.cpu_count() or 1))
    return dataset.map_batches(
        actor, fn_constructor_kwargs=kwargs, batch_size=batch_size, compute=pool,
        batch_format="numpy", num_gpus=1 if str(device).startswith("cuda") else 0,
    )


def extract(handler: Any, dataset: Any, layers: str | Sequence[str], pooling: str | None = "avg",
            batch_size: int = 64, num_actors: int | None = None, device: str = "cpu",
            column: str | None = None, model_dir: str | os.PathLike[str] | None = None) -> Any:
    """Features of ``layers`` for every row of a Ray Dataset, on a pool of actors.

    Parameters
    ----------
    handler : ModelHandler or path
        The network, or the directory of a saved handler (``handler.save(dir)``).
    dataset : ray.data.Dataset
        Rows with an input column: ``image`` (from ``ray.data.read_images`` or
        :func:`read_image_folder`; the handler's preprocessing is applied in the actors) or
        ``data`` (arrays, e.g. ``ray.data.from_numpy``). Other columns pass through.
    layers : str or sequence of str
        Layer names, as for ``ModelHandler.extract``.
    pooling : {"avg", "max", "flatten", None}
    batch_size : int
        Rows per forward pass.
    num_actors : int, optional
        Size of the actor pool (default: autoscale from 1 to the CPU count).
    device : str
        Where each actor runs the network (``"cuda"`` gives each actor one GPU).
    column : str, optional
        The input column (default ``image`` if present, else ``data``).
    model_dir : str or Path, optional
        Where the handler is saved for the actors (shared storage on a cluster).

    Returns
    -------
    ray.data.Dataset
        One column per layer (arrays (D,) per row) plus the passed-through columns. Rows come
        out in input order only with ``DataContext.execution_options.preserve_order = True``.
    """
    names = [layers] if isinstance(layers, str) else list(layers)
    path = _saved(handler, model_dir, "handler")
    kwargs = {"path": path, "layers": names, "pooling": pooling, "device": device,
              "column": column or _input_column(dataset)}
    return _map(dataset, _Extractor, kwargs, batch_size, num_actors, device)


def predict(repurposer: Any, dataset: Any, batch_size: int = 64, num_actors: int | None = None,
            device: str = "cpu", column: str | None = None,
            model_dir: str | os.PathLike[str] | None = None) -> Any:
    """Predicted labels of a fitted repurposer for every row (column ``prediction``).

    Parameters are as in :func:`extract`; ``repurposer`` is a fitted repurposer or the
    directory of a saved one (saved with its handler).
    """
    return _predict(repurposer, dataset, batch_size, num_actors, device, column, model_dir,
                    proba=False)


def predict_proba(repurposer: Any, dataset: Any, batch_size: int = 64,
                  num_actors: int | None = None, device: str = "cpu", column: str | None = None,
                  model_dir: str | os.PathLike[str] | None = None) -> Any:
    """Class probabilities for every row (column ``proba``, in the order of ``classes_``)."""
    return _predict(repurposer, dataset, batch_size, num_actors, device, column, model_dir,
                    proba=True)


def _predict(repurposer: Any, dataset: Any, batch_size: int, num_actors: int | None,
             device: str, column: str | None, model_dir: Any, proba: bool) -> Any:
    path = _saved(repurposer, model_dir, "repurposer")
    kwargs = {"path": path, "device": device, "column": column or _input_column(dataset),
              "proba": proba}
    return _map(dataset, _Predictor, kwargs, batch_size, num_actors, device)


def _input_column(dataset: Any) -> str:
    names = list(dataset.columns())
    for name in ("image", "data"):
        if name in names:
            return name
    raise ValueError(f"the dataset has columns {names}; name the input column with column=")
