"""Sharded extraction without a cluster manager: one shard's rows per run, merged in order.

``handler.extract(data, layers, out=dir, shard=(i, k))`` extracts the ``i``-th of ``k``
contiguous blocks of rows into ``dir/shard-0000i-of-0000k/`` (a normal feature directory:
``index.json``, one ``.npy`` per layer, ``labels.npy``). Each Slurm array task or torchrun
rank runs one shard; :func:`merge_features` joins the shards in order, giving what one
unsharded run gives.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from repurpose.model_handler._data import ImageFolder

__all__ = ["merge_features", "shard_bounds", "shard_data", "shard_dir", "check_shard"]

_SHARD = re.compile(r"^shard-(\d{5})-of-(\d{5})$")


def check_shard(shard: Any) -> tuple[int, int]:
    """Validate ``shard=(index, count)``; return it as two ints."""
    ok = (isinstance(shard, (tuple, list)) and len(shard) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in shard))
    if not ok or not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(
            f"shard={shard!r}; give (index, count) with 0 <= index < count, e.g. (0, 4) for "
            "the first of four shards"
        )
    return int(shard[0]), int(shard[1])


def shard_bounds(n: int, index: int, count: int) -> tuple[int, int]:
    """Rows ``[start, stop)`` of shard ``index`` of ``count``: contiguous, sizes differ by <= 1.

    >>> [shard_bounds(10, i, 3) for i in range(3)]
    [(0, 4), (4, 7), (7, 10)]
    """
    base, extra = divmod(n, count)
    start = index * base + min(index, extra)
    return start, start + base + (1 if index < extra else 0)


def shard_dir(out: str | os.PathLike[str], index: int, count: int) -> Path:
    """The directory of one shard below ``out``."""
    return Path(out) / f"shard-{index:05d}-of-{count:05d}"


def shard_data(data: Any, n: int | None, index: int, count: int) -> Any:
    """The rows of one shard of ``data`` (arrays, tensors, map-style Datasets)."""
    if n is None or isinstance(data, (DataLoader, IterableDataset)):
        raise ValueError(
            "shard= needs data whose length is known and which can be indexed: an array, a "
            "tensor, a map-style Dataset or an image folder (not a DataLoader or a stream)"
        )
    start, stop = shard_bounds(n, index, count)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return data[start:stop]
    if isinstance(data, ImageFolder):  # stays a folder: class names as labels, on_error
        part = copy.copy(data)
        part.samples = data.samples[start:stop]
        return part
    if isinstance(data, Dataset):
        return Subset(data, range(start, stop))
    raise ValueError(f"cannot shard data of type {type(data).__name__}")


def merge_features(
    directory: str | os.PathLike[str], return_labels: bool = False
) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Join the shards written by ``extract(..., out=directory, shard=(i, k))``, in order.

    Parameters
    ----------
    directory : str or Path
        The ``out`` directory given to every shard's run.
    return_labels : bool
        Also return the labels (None when the data had none).

    Returns
    -------
    dict of str to ndarray, or (dict, ndarray or None)
        ``{layer: features (N, D)}``, equal to one unsharded run.

    Raises
    ------
    ValueError
        No shards, shards of different runs (counts or layers differ) or missing shards;
        the message names what is missing.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from torch import nn
    >>> from repurpose import ModelHandler, merge_features
    >>> h = ModelHandler(nn.Sequential(nn.Linear(3, 2)))
    >>> x = np.arange(15, dtype=np.float32).reshape(5, 3)
    >>> out = tempfile.mkdtemp()
    >>> for i in range(2):
    ...     _ = h.extract(x, ["0"], out=out, shard=(i, 2), progress=False)
    >>> merged = merge_features(out)
    >>> np.allclose(merged["0"], h.extract(x, ["0"], progress=False)["0"])
    True
    """
    root = Path(directory)
    shards = _find_shards(root)
    indexes = [json.loads((d / "index.json").read_text()) for d in shards]
    layers = [list(i["layers"]) for i in indexes]
    if any(names != layers[0] for names in layers):
        raise ValueError(f"the shards in {str(root)!r} hold different layers: {layers}")
    # a shard with no rows (more shards than samples) wrote no arrays
    kept = [(d, i) for d, i in zip(shards, indexes) if i["n"] > 0]
    shards, indexes = [d for d, _ in kept], [i for _, i in kept]
    if not shards:
        return ({name: np.empty((0,)) for name in layers[0]}, None) if return_labels else {
            name: np.empty((0,)) for name in layers[0]}
    features = {
        name: np.concatenate([np.load(d / i["layers"][name]) for d, i in zip(shards, indexes)])
        for name in layers[0]
    }
    labels = None
    if all(i.get("labels") for i in indexes):
        labels = np.concatenate([np.load(d / i["labels"]) for d, i in zip(shards, indexes)])
    return (features, labels) if return_labels else features


def _find_shards(root: Path) -> list[Path]:
    if not root.is_dir():
        raise ValueError(f"{str(root)!r} is not a directory of extracted shards")
    found: dict[int, set[int]] = {}
    for child in root.iterdir():
        match = _SHARD.match(child.name)
        if match and (child / "index.json").is_file():
            found.setdefault(int(match.group(2)), set()).add(int(match.group(1)))
    if not found:
        raise ValueError(
            f"no finished shards in {str(root)!r}; run extract(..., out=that directory, "
            "shard=(index, count)) for every index first"
        )
    if len(found) > 1:
        raise ValueError(f"{str(root)!r} holds shards of runs with different counts: "
                         f"{sorted(found)}; use one directory per run")
    count, have = next(iter(found.items()))
    missing = sorted(set(range(count)) - have)
    if missing:
        raise ValueError(f"{str(root)!r} lacks shard(s) {missing} of {count}; run them first")
    return [shard_dir(root, i, count) for i in range(count)]
