"""The digits transfer task: a small CNN pretrained on digits 0-4, repurposed to 5-9."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from torch import nn
from tqdm.auto import tqdm

from repurpose._exceptions import ModelFormatError
from repurpose.graph import GraphNet, Node, load_graph, save_graph

__all__ = ["DigitsSplit", "load_digits_split", "digits_cnn", "pretrained_digits_cnn",
           "train_classifier", "cache_dir"]

SOURCE_CLASSES = (0, 1, 2, 3, 4)
TARGET_CLASSES = (5, 6, 7, 8, 9)
_CACHE_VERSION = 1


@dataclass(frozen=True)
class DigitsSplit:
    """scikit-learn's 8x8 digits, split for a few-shot transfer task.

    Attributes
    ----------
    X_train, y_train : ndarray
        ``k_per_class`` labelled images of each target class, (N, 1, 8, 8) float32 in [0, 1],
        and their labels (the digit values 5-9).
    X_test, y_test : ndarray
        Every other image of the target classes.
    X_source, y_source : ndarray
        All images of the source classes (0-4): pretraining data, or out-of-distribution
        data for the target task.
    k_per_class, seed : int
        How the split was drawn.
    """

    X_train: np.ndarray
    y_train: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray
    X_source: np.ndarray
    y_source: np.ndarray
    k_per_class: int
    seed: int


def load_digits_split(k_per_class: int, seed: int = 0) -> DigitsSplit:
    """Load the digits transfer split (no download: the data ships with scikit-learn).

    Parameters
    ----------
    k_per_class : int
        Labelled training images per target class (1 to 100).
    seed : int
        Seed of the choice of training images.

    Returns
    -------
    DigitsSplit

    Examples
    --------
    >>> split = load_digits_split(5)
    >>> split.X_train.shape, sorted(set(split.y_train.tolist()))
    ((25, 1, 8, 8), [5, 6, 7, 8, 9])
    """
    if isinstance(k_per_class, bool) or not isinstance(k_per_class, (int, np.integer)) or not (
        1 <= k_per_class <= 100
    ):
        raise ValueError(f"k_per_class={k_per_class!r}; use an int from 1 to 100")
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx = np.concatenate([
        rng.choice(np.flatnonzero(y == c), size=int(k_per_class), replace=False)
        for c in TARGET_CLASSES
    ])
    target = np.isin(y, TARGET_CLASSES)
    test_mask = target.copy()
    test_mask[train_idx] = False
    source = np.isin(y, SOURCE_CLASSES)
    return DigitsSplit(X[train_idx], y[train_idx], X[test_mask], y[test_mask],
                       X[source], y[source], int(k_per_class), int(seed))


def digits_cnn(
    n_classes: int = 5,
    channels: Sequence[int] = (16, 32),
    width: int = 64,
    seed: int = 0,
    in_channels: int = 1,
) -> GraphNet:
    """A freshly initialised small CNN for 1x8x8 images, as a saveable :class:`GraphNet`.

    Layers: ``conv1, relu1, conv2 (stride 2), relu2, fc6, relu6, fc7, relu7, fc8``; ``fc6``
    and ``fc7`` have the same width, so their features can be averaged.

    Parameters
    ----------
    n_classes : int
        Outputs of ``fc8``.
    channels : (int, int)
        Output channels of ``conv1`` and ``conv2``.
    width : int
        Width of ``fc6`` and ``fc7``.
    seed : int
        Seed of the initial weights.
    in_channels : int
        Input channels (3 for RGB images loaded from an image folder).

    Returns
    -------
    GraphNet
    """
    c1, c2 = (int(c) for c in channels)
    specs = [
        ("conv1", "conv2d", "data", dict(in_channels=int(in_channels), out_channels=c1,
                                         kernel_size=3, padding=1)),
        ("relu1", "relu", "conv1", {}),
        ("conv2", "conv2d", "relu1", dict(in_channels=c1, out_channels=c2, kernel_size=3,
                                          stride=2, padding=1)),
        ("relu2", "relu", "conv2", {}),
        ("fc6", "linear", "relu2", dict(in_features=c2 * 16, out_features=width, axis=1)),
        ("relu6", "relu", "fc6", {}),
        ("fc7", "linear", "relu6", dict(in_features=width, out_features=width)),
        ("relu7", "relu", "fc7", {}),
        ("fc8", "linear", "relu7", dict(in_features=width, out_features=int(n_classes))),
    ]
    nodes = [Node(name, op, (src,), (name,), attrs) for name, op, src, attrs in specs]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return GraphNet(nodes, ["data"], ["fc8"], {"data": [1, int(in_channels), 8, 8]})


def train_classifier(
    net: nn.Module,
    X: np.ndarray,
    y: np.ndarray,
    epochs: int = 40,
    lr: float = 3e-3,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = True,
    desc: str = "training",
) -> nn.Module:
    """Train ``net`` in place with Adam and cross-entropy; labels are ``0..n_classes-1``.

    Returns
    -------
    nn.Module
        ``net``, in eval mode.
    """
    device = next(net.parameters()).device
    xt = torch.as_tensor(X, dtype=torch.float32, device=device)
    yt = torch.as_tensor(y, dtype=torch.int64, device=device)
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in tqdm(range(epochs), desc=desc, disable=not progress, leave=False):
        for idx in torch.randperm(len(yt), generator=gen).split(batch_size):
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[idx]), yt[idx]).backward()
            opt.step()
    return net.eval()


def cache_dir() -> Path:
    """The cache directory: ``$REPURPOSE_CACHE_DIR``, else the user cache dir (platformdirs)."""
    env = os.environ.get("REPURPOSE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("repurpose"))


def pretrained_digits_cnn(seed: int = 0, epochs: int = 20, progress: bool = True) -> GraphNet:
    """The :func:`digits_cnn` trained on digits 0-4 (all source images), cached on disk.

    The first call trains it (a few seconds on a CPU) and stores it under
    :func:`cache_dir` as ``graph.json`` + ``weights.safetensors``; later calls load it.

    Parameters
    ----------
    seed : int
        Seed of initialisation and batch order.
    epochs : int
        Training epochs.
    progress : bool
        Show a progress bar while training.

    Returns
    -------
    GraphNet
        In eval mode; layers ``conv1, conv2, fc6, fc7, fc8`` (and their ReLUs).
    """
    path = cache_dir() / f"digits_cnn_v{_CACHE_VERSION}_seed{seed}_ep{epochs}"
    if (path / "graph.json").is_file():
        try:
            return load_graph(path).eval()
        except (ModelFormatError, OSError, ValueError, RuntimeError):
            pass  # a damaged cache entry is rebuilt below
    split = load_digits_split(1, seed=0)
    net = digits_cnn(n_classes=len(SOURCE_CLASSES), seed=seed)
    train_classifier(net, split.X_source, split.y_source, epochs=epochs, lr=5e-3,
                     batch_size=128, seed=seed, progress=progress,
                     desc="pretraining the digits CNN (cached)")
    _store(net, path)
    return net


def _store(net: GraphNet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=".tmp-"))
    save_graph(net, tmp / "net")
    try:
        os.replace(tmp / "net", path)
    except OSError:
        pass  # another process stored it first; theirs is as good
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
