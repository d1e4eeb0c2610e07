"""Training data that streams: sources read batch by batch, addressed by sample index.

The network repurposers never hold a whole data set in one tensor. A :class:`Source`
knows its length and reads the samples of given indices, one batch at a time:

- :class:`TensorSource` wraps arrays/tensors already in memory (one or several inputs per
  sample); a batch is an index into them, so nothing is copied up front.
- :class:`DatasetSource` wraps a map-style torch ``Dataset`` (an image folder, or the
  user's own); batches are read by a ``DataLoader`` driven by the index batches we give it
  (``batch_sampler``), with ``num_workers`` and pinned memory on CUDA. Only one batch
  (per worker) is in memory at a time.

:class:`Split` is a source plus the int-coded labels of some of its samples (the training
or the validation part, as indices: no copy). Labels are read without loading inputs
where the data allows it (:func:`dataset_labels`: an image folder's file list, a
``TensorDataset``'s label tensor, a ``targets`` attribute).

:func:`epoch_batches` turns an order of ``n`` positions into batches; a final batch of
one is merged into the previous batch (a batch of one breaks BatchNorm in train mode).
"""

from __future__ import annotations

import abc
import hashlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset, TensorDataset

from repurpose.model_handler import ImageFolder, as_batches

__all__ = ["Source", "TensorSource", "DatasetSource", "Split", "as_source", "dataset_labels",
           "epoch_batches"]

Inputs = tuple[torch.Tensor, ...]
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)


def epoch_batches(n: int, batch_size: int, order: torch.Tensor | None = None,
                  merge_single: bool = True) -> list[torch.Tensor]:
    """Split positions ``0..n-1`` (in ``order``, default ascending) into batches.

    Every position appears in exactly one batch. With ``merge_single`` (training) and
    ``batch_size > 1``, a final batch of one sample is merged into the batch before it.

    Examples
    --------
    >>> [b.tolist() for b in epoch_batches(5, 2)]
    [[0, 1], [2, 3, 4]]
    """
    idx = order if order is not None else torch.arange(n)
    chunks = list(torch.split(idx, batch_size))
    if merge_single and batch_size > 1 and len(chunks) > 1 and len(chunks[-1]) == 1:
        last = chunks.pop()
        chunks[-1] = torch.cat([chunks[-1], last])
    return chunks


class Source(abc.ABC):
    """Samples addressable by index, read in batches of inputs (a tuple of tensors)."""

    @abc.abstractmethod
    def __len__(self) -> int: ...

    @abc.abstractmethod
    def read(self, batches: Sequence[torch.Tensor], *, num_workers: int = 0,
             pin_memory: bool = False, seed: int = 0) -> Iterator[Inputs]:
        """Yield the inputs of each batch of indices, in order."""

    @abc.abstractmethod
    def fingerprint(self) -> str:
        """A cheap digest identifying the data (for matching checkpoints to runs)."""

    def first(self) -> Inputs:
        """The inputs of sample 0 (a batch of one)."""
        return next(self.read([torch.zeros(1, dtype=torch.long)]))


class TensorSource(Source):
    """Inputs already in memory: tensors (or arrays) with the samples on axis 0."""

    def __init__(self, tensors: Sequence[Any]) -> None:
        self.tensors = tuple(torch.as_tensor(t) for t in tensors)
        n = {int(t.shape[0]) for t in self.tensors}
        if len(n) != 1:
            raise ValueError(f"inputs have different numbers of samples: {sorted(n)}")
        self._n = n.pop()

    def __len__(self) -> int:
        return self._n

    def read(self, batches: Sequence[torch.Tensor], *, num_workers: int = 0,
             pin_memory: bool = False, seed: int = 0) -> Iterator[Inputs]:
        for idx in batches:
            yield tuple(_as_float(t[idx]) for t in self.tensors)

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for t in self.tensors:
            h.update(str(tuple(t.shape)).encode())
            flat = t.reshape(-1)
            step = max(1, flat.numel() // 100_000)
            h.update(flat[::step].float().cpu().numpy().tobytes())
        return h.hexdigest()


class DatasetSource(Source):
    """A map-style ``Dataset`` yielding inputs or ``(input, label)`` pairs, read by a
    ``DataLoader`` per pass (labels, if any, are dropped: the caller holds them)."""

    def __init__(self, dataset: Dataset, collate_fn: Any = None) -> None:
        self.dataset = dataset
        self.collate_fn = collate_fn
        self._n = len(dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self._n

    def read(self, batches: Sequence[torch.Tensor], *, num_workers: int = 0,
             pin_memory: bool = False, seed: int = 0) -> Iterator[Inputs]:
        loader = DataLoader(
            self.dataset, batch_sampler=[b.tolist() for b in batches],
            num_workers=num_workers, pin_memory=pin_memory, collate_fn=self.collate_fn,
            # seeds the workers (their random augmentations) without touching global RNG
            generator=torch.Generator().manual_seed(seed),
        )
        for batch in loader:
            yield (_inputs_of(batch),)

    def fingerprint(self) -> str:
        h = hashlib.sha256(f"{type(self.dataset).__name__}:{self._n}".encode())
        files = _file_list(self.dataset)
        if files is not None:
            for path in files:
                h.update(f"{path.name}:{path.stat().st_size}".encode())
        # a few decoded samples catch content changes the file list cannot
        picks = sorted({0, self._n // 2, self._n - 1})
        for (x,) in self.read([torch.tensor([i]) for i in picks]):
            h.update(x.float().numpy().tobytes())
        return h.hexdigest()


@dataclass
class Split:
    """Some samples of a source (``indices``; None = all) and their int-coded labels."""

    source: Source
    y: torch.Tensor
    indices: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.y)

    def subset(self, positions: Any) -> Split:
        """The samples at ``positions`` (0-based within this split)."""
        pos = torch.as_tensor(np.asarray(positions), dtype=torch.long)
        base = pos if self.indices is None else self.indices[pos]
        return Split(self.source, self.y[pos], base)

    def read(self, batches: Sequence[torch.Tensor], **kw: Any) -> Iterator[Inputs]:
        """Inputs of each batch of positions (within this split)."""
        if self.indices is not None:
            batches = [self.indices[b] for b in batches]
        return self.source.read(batches, **kw)

    def fingerprint(self) -> str:
        h = hashlib.sha256(self.source.fingerprint().encode())
        h.update(self.y.cpu().numpy().tobytes())
        if self.indices is not None:
            h.update(self.indices.cpu().numpy().tobytes())
        return h.hexdigest()


def as_source(data: Any, *, preprocess: Any = None, batch_size: int = 64
              ) -> tuple[Source, Dataset | None]:
    """Wrap user data (array, tensor, Dataset, DataLoader, image-folder path) as a source.

    Returns the source and the map-style dataset behind it (None for arrays), from which
    :func:`dataset_labels` reads labels. An ``IterableDataset`` (or a ``DataLoader`` over
    one) cannot be indexed, so it is read once into memory.
    """
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolder(data, preprocess)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        if data.ndim < 2:
            raise ValueError(
                f"inputs have shape {tuple(data.shape)}; expected (N, ...) with N samples"
            )
        return TensorSource([data]), None
    collate = None
    if isinstance(data, DataLoader) and not isinstance(data.dataset, IterableDataset):
        collate, data = data.collate_fn, data.dataset
    if isinstance(data, Dataset) and not isinstance(data, IterableDataset):
        return DatasetSource(data, collate), data
    # streams with no length and no index: read once (inputs and labels) into memory
    xs: list[torch.Tensor] = []
    ys: list[np.ndarray] = []
    for xb, yb in as_batches(data, batch_size):
        xs.append(xb)
        if yb is not None:
            ys.append(yb)
    if not xs:
        raise ValueError("the data is empty; give at least one sample per class")
    labels = np.concatenate(ys) if len(ys) == len(xs) else None
    dataset = TensorDataset(torch.cat(xs)) if labels is None else TensorDataset(
        torch.cat(xs), torch.as_tensor(labels))
    return TensorSource([dataset.tensors[0]]), dataset


def dataset_labels(dataset: Dataset, *, num_workers: int = 0, batch_size: int = 64,
                   collate_fn: Any = None) -> np.ndarray | None:
    """The labels of a dataset of ``(input, label)`` pairs (None if it yields inputs only).

    Read without loading the inputs when the dataset says what they are (an image folder's
    file list, a ``TensorDataset``, a ``Subset`` of those, a ``targets`` attribute);
    otherwise one pass over the data (inputs are dropped batch by batch).
    """
    if isinstance(dataset, ImageFolder):
        return np.asarray([label for _, label in dataset.samples])
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].numpy() if len(dataset.tensors) == 2 else None
    if isinstance(dataset, Subset):
        inner = dataset_labels(dataset.dataset, num_workers=num_workers,
                               batch_size=batch_size, collate_fn=collate_fn)
        return None if inner is None else inner[np.asarray(dataset.indices)]
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):  # type: ignore[arg-type]
        return np.asarray(targets)
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=collate_fn, generator=torch.Generator().manual_seed(0))
    found: list[np.ndarray] = []
    for batch in loader:
        if not (isinstance(batch, (list, tuple)) and len(batch) == 2):
            return None
        y = batch[1]
        found.append(y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y))
    return np.concatenate(found) if found else None


def _file_list(dataset: Dataset) -> list[Any] | None:
    if isinstance(dataset, ImageFolder):
        return [path for path, _ in dataset.samples]
    if isinstance(dataset, Subset):
        files = _file_list(dataset.dataset)
        return None if files is None else [files[i] for i in dataset.indices]
    return None


def _inputs_of(batch: Any) -> torch.Tensor:
    if isinstance(batch, dict):
        raise ValueError("dict samples are not supported; yield inputs or (input, label) pairs")
    if isinstance(batch, (list, tuple)):
        if len(batch) not in (1, 2):
            raise ValueError(
                f"each sample must be an input or an (input, label) pair; got {len(batch)} items"
            )
        batch = batch[0]
    return _as_float(torch.as_tensor(batch))


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in _FLOATS else x.to(torch.float32)

