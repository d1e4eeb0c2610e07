"""Turn every accepted kind of input data into batches of (inputs, labels)."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from repurpose._preprocess import Preprocess

__all__ = ["ImageFolder", "as_batches", "num_batches", "num_samples", "IMAGE_SUFFIXES"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

Batch = tuple[torch.Tensor, "np.ndarray | None"]


class ImageFolder(Dataset):
    """Images in one subfolder per class, yielding ``(tensor (C, H, W), class index)``.

    Class names are the sorted subfolder names (``classes``); images within a class are
    sorted by file name. Images load with Pillow as RGB and go through ``preprocess``.

    Parameters
    ----------
    root : str or Path
        The folder whose subfolders are the classes.
    preprocess : Preprocess, optional
        Applied to each image; the default only converts to a float tensor in [0, 1].
    """

    def __init__(self, root: str | os.PathLike[str], preprocess: Preprocess | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
        self.preprocess = preprocess or Preprocess()
        self.classes = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        if not self.classes:
            raise ValueError(
                f"{str(self.root)!r} has no subfolders; put the images of each class in its "
                "own subfolder (root/cat/1.png, root/dog/2.png)"
            )
        self.samples: list[tuple[Path, int]] = []
        for index, name in enumerate(self.classes):
            files = sorted(
                p for p in (self.root / name).iterdir()
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            )
            self.samples.extend((p, index) for p in files)
        if not self.samples:
            raise ValueError(
                f"no images found under {str(self.root)!r} (looked for {', '.join(IMAGE_SUFFIXES)})"
            )

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image, UnidentifiedImageError

        path, label = self.samples[index]
        try:
            with Image.open(path) as image:
                x = self.preprocess(image)
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {str(path)!r}: {err}") from err
        return x, label


def num_samples(data: Any) -> int | None:
    """The number of samples in ``data``, or None when it cannot be known in advance."""
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return int(data.shape[0])
    if isinstance(data, DataLoader):
        if data.batch_size is None or isinstance(data.dataset, IterableDataset):
            return None  # custom batch sampler or stream: count as we go
        try:
            n = len(data.sampler)  # type: ignore[arg-type]
        except TypeError:
            return None
        return n - n % data.batch_size if data.drop_last else n
    if isinstance(data, IterableDataset):
        return None
    try:
        return len(data)
    except TypeError:
        return None


def num_batches(data: Any, batch_size: int) -> int | None:
    """The number of batches :func:`as_batches` yields, or None when unknown."""
    if isinstance(data, DataLoader):
        try:
            return len(data)
        except TypeError:
            return None
    n = num_samples(data)
    return None if n is None else math.ceil(n / batch_size)


def as_batches(
    data: Any,
    batch_size: int,
    preprocess: Preprocess | None = None,
    shuffle: bool = False,
    seed: int | None = None,
) -> Iterator[Batch]:
    """Iterate over any accepted kind of data in batches.

    Parameters
    ----------
    data : ndarray, Tensor, Dataset, DataLoader, str or Path
        An array or tensor (N, ...) of inputs; a torch ``Dataset`` or ``DataLoader``
        yielding inputs or ``(input, label)`` pairs; or the path of an image folder with
        one subfolder per class.
    batch_size : int
        Samples per batch (a ``DataLoader`` keeps its own batching).
    preprocess : Preprocess, optional
        Applied to the images of an image folder.
    shuffle : bool
        Visit the samples in a random order (not for ``DataLoader``, which has its own).
    seed : int, optional
        Seed of the shuffling order.

    Returns
    -------
    iterator of (Tensor, ndarray or None)
        Float inputs (B, ...) and labels (B,), or None when the data has no labels.

    Examples
    --------
    >>> import numpy as np
    >>> [x.shape[0] for x, _ in as_batches(np.zeros((5, 3)), batch_size=2)]
    [2, 2, 1]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; use a positive int")
    if isinstance(data, (str, os.PathLike)):
        data = ImageFolder(data, preprocess)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return _array_batches(data, batch_size, shuffle, seed)
    if isinstance(data, DataLoader):
        return (_split(b) for b in data)
    if isinstance(data, (Dataset, IterableDataset)):
        return _dataset_batches(data, batch_size, shuffle, seed)
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (np.ndarray, torch.Tensor)):
        raise ValueError(
            "got a list/tuple of arrays; pass one array (N, ...) of inputs, or a Dataset "
            "yielding (input, label) pairs"
        )
    raise ValueError(
        f"cannot read data of type {type(data).__name__}; give an array or tensor (N, ...), "
        "a torch Dataset or DataLoader, or the path of an image folder"
    )


def _array_batches(
    data: np.ndarray | torch.Tensor, batch_size: int, shuffle: bool, seed: int | None
) -> Iterator[Batch]:
    if data.ndim < 2:
        raise ValueError(f"inputs have shape {tuple(data.shape)}; expected (N, ...) with N samples")
    n = int(data.shape[0])
    order = np.random.default_rng(seed).permutation(n) if shuffle else None
    for start in range(0, n, batch_size):
        if order is None:
            chunk = data[start : start + batch_size]
        else:
            chunk = data[order[start : start + batch_size]]
        yield _as_float(torch.as_tensor(chunk)), None


def _dataset_batches(
    data: Dataset, batch_size: int, shuffle: bool, seed: int | None
) -> Iterator[Batch]:
    generator = None
    if shuffle:
        generator = torch.Generator().manual_seed(
            int(np.random.default_rng(seed).integers(2**62))
        )
    iterable = isinstance(data, IterableDataset)
    loader = DataLoader(
        data, batch_size=batch_size, shuffle=shuffle and not iterable, generator=generator
    )
    return (_split(b) for b in loader)


def _split(batch: Any) -> Batch:
    if isinstance(batch, dict):
        raise ValueError("dict samples are not supported; yield inputs or (input, label) pairs")
    if isinstance(batch, (list, tuple)):
        if len(batch) == 1:  # TensorDataset(x) yields 1-tuples
            return _as_float(torch.as_tensor(batch[0])), None
        if len(batch) != 2:
            raise ValueError(
                f"each sample must be an input or an (input, label) pair; got {len(batch)} items"
            )
        x, y = batch
        labels = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
        return _as_float(torch.as_tensor(x)), labels
    return _as_float(torch.as_tensor(batch)), None


def _as_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.float32 or x.dtype in (torch.float16, torch.bfloat16):
        return x
    return x.to(torch.float32)
