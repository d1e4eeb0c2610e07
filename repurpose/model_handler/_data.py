"""Turn every accepted kind of input data into batches of (inputs, labels)."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, default_collate

from repurpose._preprocess import Preprocess

__all__ = [
    "ImageFolder", "as_batches", "num_batches", "num_samples", "open_data", "IMAGE_SUFFIXES",
    "ON_ERROR",
]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")

ON_ERROR = ("raise", "skip")

Batch = tuple[torch.Tensor, "np.ndarray | None"]


class ImageFolder(Dataset):
    """Images in one subfolder per class, yielding ``(tensor (C, H, W), class index)``.

    Class names are the sorted names of the subfolders that hold images (``classes``);
    a subfolder without images is no class (a warning names it). Images within a class
    are sorted by file name. Images load with Pillow as RGB and go through ``preprocess``.
    Wherever the library reads an ImageFolder (``extract``, ``fit``, ``predict``,
    ``score``) the labels are the class *names*, so they are the user's own labels.

    Parameters
    ----------
    root : str or Path
        The folder whose subfolders are the classes.
    preprocess : Preprocess, optional
        Applied to each image; the default only converts to a float tensor in [0, 1].
    on_error : {"raise", "skip"}
        What an unreadable image does when the folder is read in batches: stop with an
        error naming the file, or be left out (one warning per pass gives the count and
        :attr:`skipped` lists the files).

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for name in ("cat", "dog"):
    ...     (root / name).mkdir()
    ...     Image.new("RGB", (4, 4)).save(root / name / "1.png")
    >>> folder = ImageFolder(root)
    >>> folder.classes, len(folder)
    (['cat', 'dog'], 2)
    >>> [y.tolist() for _, y in folder.batches(batch_size=2)]
    [['cat', 'dog']]
    """

    def __init__(self, root: str | os.PathLike[str], preprocess: Preprocess | None = None,
                 on_error: str = "raise"):
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r}; use 'raise' or 'skip'")
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {str(self.root)!r} does not exist")
        self.preprocess = preprocess or Preprocess()
        self.on_error = on_error
        subfolders = sorted(p for p in self.root.iterdir() if p.is_dir())
        if not subfolders:
            raise ValueError(
                f"{str(self.root)!r} has no subfolders; put the images of each class in its "
                "own subfolder (root/cat/1.png, root/dog/2.png)"
            )
        files = {p.name: _images_in(p) for p in subfolders}
        empty = [name for name, found in files.items() if not found]
        self.classes = [name for name, found in files.items() if found]
        if not self.classes:
            raise ValueError(
                f"no images found under {str(self.root)!r} (looked for {', '.join(IMAGE_SUFFIXES)})"
            )
        if empty:
            warnings.warn(
                f"image folder {str(self.root)!r}: subfolder(s) {', '.join(map(repr, empty))} "
                "hold no images and are not classes", UserWarning, stacklevel=2,
            )
        self.samples: list[tuple[Path, int]] = [
            (p, index) for index, name in enumerate(self.classes) for p in files[name]
        ]
        self.skipped: list[Path] = []
        self.loaded: list[Path] = []

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        x, _ = self._load(path)
        return x, label

    def _load(self, path: Path) -> tuple[torch.Tensor, tuple[int, int]]:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return self.preprocess(image), image.size
        except (UnidentifiedImageError, OSError) as err:
            raise ValueError(
                f"cannot read image {str(path)!r}: {err}; remove it, or pass "
                "on_error='skip' (ModelHandler.image_folder(path, on_error='skip'), "
                "CLI --on-error skip) to leave unreadable images out"
            ) from err

    def batches(self, batch_size: int, shuffle: bool = False,
                seed: int | None = None) -> Iterator[Batch]:
        """Read the folder in batches of ``(inputs, class names)``.

        Every image must give an input of the same shape; otherwise the error names the
        file, its size and the fix (a resize in the preprocessing). After a pass,
        :attr:`loaded` lists the files read (in order) and :attr:`skipped` those left out.
        """
        order = np.arange(len(self.samples))
        if shuffle:
            order = np.random.default_rng(seed).permutation(len(self.samples))
        self.skipped, self.loaded = [], []
        names = np.asarray(self.classes)
        first: tuple[Path, tuple[int, ...]] | None = None
        xs: list[torch.Tensor] = []
        ys: list[int] = []
        for i in order:
            path, label = self.samples[int(i)]
            try:
                x, size = self._load(path)
            except ValueError:
                if self.on_error == "raise":
                    raise
                self.skipped.append(path)
                continue
            if first is None:
                first = (path, tuple(x.shape))
            elif tuple(x.shape) != first[1]:
                raise ValueError(_size_message(path, size, x.shape, first))
            xs.append(x)
            ys.append(label)
            self.loaded.append(path)
            if len(xs) == batch_size:
                yield torch.stack(xs), names[ys]
                xs, ys = [], []
        if xs:
            yield torch.stack(xs), names[ys]
        if self.skipped:
            warnings.warn(
                f"skipped {len(self.skipped)} unreadable image(s) under {str(self.root)!r} "
                f"(first: {str(self.skipped[0])!r}); see ImageFolder.skipped",
                UserWarning, stacklevel=2,
            )


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )


def _size_message(path: Path, size: tuple[int, int], shape: Any,
                  first: tuple[Path, tuple[int, ...]]) -> str:
    return (
        f"image {str(path)!r} ({size[0]}x{size[1]} pixels) gives an input of shape "
        f"{tuple(shape)}, but {str(first[0])!r} gave {first[1]}; images of different sizes "
        "need a resize in the preprocessing: Preprocess(resize=(H, W)) on the handler "
        "(CLI: --resize H,W)"
    )


def open_data(data: Any, preprocess: Preprocess | None = None, on_error: str = "raise") -> Any:
    """``data``, with the path of an image folder turned into an :class:`ImageFolder`."""
    if isinstance(data, (str, os.PathLike)):
        return ImageFolder(data, preprocess, on_error)
    return data


def num_samples(data: Any) -> int | None:
    """The number of samples in ``data``, or None when it cannot be known in advance.

    For an image folder (path or :class:`ImageFolder`) this is the number of image files;
    unreadable ones left out by ``on_error="skip"`` make the data yield fewer.
    """
    if isinstance(data, (str, os.PathLike)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return len(ImageFolder(data))
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
    on_error: str = "raise",
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
    on_error : {"raise", "skip"}
        What an unreadable image of an image folder given as a path does (see
        :class:`ImageFolder`).

    Returns
    -------
    iterator of (Tensor, ndarray or None)
        Float inputs (B, ...) and labels (B,), or None when the data has no labels. The
        labels of an image folder are its class names.

    Examples
    --------
    >>> import numpy as np
    >>> [x.shape[0] for x, _ in as_batches(np.zeros((5, 3)), batch_size=2)]
    [2, 2, 1]
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}; use a positive int")
    data = open_data(data, preprocess, on_error)
    if isinstance(data, ImageFolder):
        return data.batches(batch_size, shuffle, seed)
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return _array_batches(data, batch_size, shuffle, seed)
    if isinstance(data, DataLoader):
        folder = data.dataset if isinstance(data.dataset, ImageFolder) else None
        return (_named(_split(b), folder) for b in data)
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
        data, batch_size=batch_size, shuffle=shuffle and not iterable, generator=generator,
        collate_fn=_collate,
    )
    return (_split(b) for b in loader)


def _collate(samples: list[Any]) -> Any:
    try:
        return default_collate(samples)
    except RuntimeError as err:
        if "equal size" not in str(err) and "same size" not in str(err):
            raise
        shapes = sorted({tuple(_first(s).shape) for s in samples if hasattr(_first(s), "shape")})
        raise ValueError(
            f"samples of one batch have different shapes {shapes}; give every sample the same "
            "shape (for images: add a resize to the preprocessing)"
        ) from err


def _first(sample: Any) -> Any:
    return sample[0] if isinstance(sample, (list, tuple)) and sample else sample


def _named(batch: Batch, folder: ImageFolder | None) -> Batch:
    """Class indices of an ImageFolder (read through a user's DataLoader) become names."""
    x, y = batch
    if folder is None or y is None:
        return batch
    return x, np.asarray(folder.classes)[y.astype(np.int64)]


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
