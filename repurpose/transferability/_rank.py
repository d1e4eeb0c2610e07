"""Rank a network's layers, or several source networks, by transferability in one pass.

The functions take a handler (anything with ``layer_names``, ``layer_types`` and
``extract``, i.e. a :class:`repurpose.ModelHandler`) so that this module depends on no
other part of the library.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from repurpose.transferability._scores import METHODS, score

__all__ = [
    "LayerScore",
    "Ranking",
    "probe_layers",
    "prune_probes",
    "rank_features",
    "rank_layers",
    "rank_sources",
]

_FEATURE_METHODS = ("logme", "hscore")
# Layer types whose output is its input re-scaled, masked or normalised: never a new probe.
_ELEMENTWISE = ("relu", "sigmoid", "tanh", "gelu", "silu", "elu", "dropout", "batchnorm",
                "lrn", "localresponse", "softmax", "identity", "scale", "flatten", "view",
                "reshape", "hardswish", "mish", "prelu")


@dataclass(frozen=True)
class LayerScore:
    """One row of a ranking: the layer (or source), its feature width, the transferability
    score (higher is better) and the seconds the scoring took (extraction excluded)."""

    layer: str
    dims: int
    score: float
    seconds: float


class Ranking(list[LayerScore]):
    """Rows of :class:`LayerScore`, best first, that print as a table.

    Attributes
    ----------
    method : str
        The transferability estimate used.
    extract_seconds : float
        Time of the forward pass(es) that produced the features.
    """

    def __init__(self, rows: Sequence[LayerScore] = (), method: str = "logme",
                 extract_seconds: float = 0.0) -> None:
        super().__init__(sorted(rows, key=lambda r: -r.score))
        self.method = method
        self.extract_seconds = extract_seconds

    @property
    def best(self) -> str:
        """The name of the best-scoring layer (or source)."""
        if not self:
            raise ValueError("the ranking is empty")
        return self[0].layer

    def scores(self) -> dict[str, float]:
        """``{layer: score}``, best first."""
        return {r.layer: r.score for r in self}

    def __str__(self) -> str:
        header = ("layer", "dims", self.method, "seconds")
        body = [(r.layer, str(r.dims), f"{r.score:.4f}", f"{r.seconds:.3f}") for r in self]
        return (format_table(header, body)
                + f"\nfeatures extracted in {self.extract_seconds:.1f} s")


def format_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, the first left-aligned, the others right."""
    rows = [tuple(header), *map(tuple, body)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rows.insert(1, tuple("-" * w for w in widths))
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                               for i, (c, w) in enumerate(zip(row, widths))).rstrip()
                      for row in rows)


def probe_layers(handler: Any) -> list[str]:
    """The layers worth probing, by type: merges, pools and the layers after the last merge.

    In a multi-branch network (any concat or add layer) the probes are the merge outputs
    (the block outputs, e.g. SqueezeNet's ``fireN/concat``), the pooling layers, and the
    convolution/linear layers after the last merge (the head). In a plain chain they are
    every convolution, linear and pooling layer. Elementwise layers (activations, dropout,
    normalisation) are never probes: they repeat their input's information.
    :func:`prune_probes` then drops near-duplicates once the widths are known.

    Parameters
    ----------
    handler : ModelHandler

    Returns
    -------
    list of str
        Layer names in execution order.
    """
    types = {name: str(t).lower() for name, t in handler.layer_types.items()}
    names = [n for n in handler.layer_names if not _is_elementwise(types[n])]
    merges = [n for n in names if _is_merge(types[n])]
    if not merges:
        return [n for n in names if _is_weighted(types[n]) or "pool" in types[n]]
    last_merge = names.index(merges[-1])
    head = [n for n in names[last_merge + 1:] if _is_weighted(types[n])]
    return [n for n in names if _is_merge(types[n]) or "pool" in types[n] or n in head]


def prune_probes(widths: Mapping[str, int], types: Mapping[str, str],
                 max_dim: int | None = 4096) -> list[str]:
    """Drop probes that duplicate the previous one, or are wider than ``max_dim``.

    A pooling layer whose width equals the previous probe's is (after global pooling)
    nearly the same feature, so it is dropped.

    Parameters
    ----------
    widths : mapping of str to int
        Probe layers in execution order and their pooled widths.
    types : mapping of str to str
        Layer types (``ModelHandler.layer_types``).
    max_dim : int, optional
        The widest feature kept.

    Returns
    -------
    list of str
    """
    out: list[str] = []
    for name, width in widths.items():
        if max_dim is not None and width > max_dim:
            continue
        if out and "pool" in str(types.get(name, "")).lower() and widths[out[-1]] == width:
            continue
        out.append(name)
    return out


def _is_elementwise(t: str) -> bool:
    return not _is_weighted(t) and any(k in t for k in _ELEMENTWISE)


def _is_merge(t: str) -> bool:
    return "concat" in t or t.endswith((".add", ".cat", "eltwise")) or t in ("add", "cat")


def _is_weighted(t: str) -> bool:
    return any(k in t for k in ("conv", "linear", "innerproduct", "fullyconnected"))


def rank_features(features: Mapping[str, Any], y: Any, method: str = "logme",
                  extract_seconds: float = 0.0) -> Ranking:
    """Score every layer of a features dict.

    Parameters
    ----------
    features : mapping of str to ndarray (n, D)
        For example the output of ``ModelHandler.extract``.
    y : array-like (n,)
    method : {"logme", "hscore"}
    extract_seconds : float
        Recorded on the result.

    Returns
    -------
    Ranking

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 40)
    >>> feats = {"noise": rng.normal(size=(80, 5)), "signal": rng.normal(size=(80, 5)) + 2 * y[:, None]}
    >>> rank_features(feats, y).best
    'signal'
    """  # noqa: E501
    _check_feature_method(method)
    rows = []
    for layer, values in features.items():
        start = time.perf_counter()
        value = score(np.asarray(values), y, method)
        rows.append(LayerScore(layer, int(np.shape(values)[1]), value,
                               time.perf_counter() - start))
    return Ranking(rows, method, extract_seconds)


def _check_feature_method(method: str) -> None:
    if method in _FEATURE_METHODS:
        return
    if method in METHODS:
        raise ValueError(
            f"method={method!r} scores the source network's class outputs, not a layer's "
            "features; use it with rank_sources, or repurpose.transferability.score(proba, y, "
            f"{method!r}). For layers use one of {_FEATURE_METHODS}"
        )
    raise ValueError(f"method={method!r}; use one of {', '.join(METHODS)}")


def extract_probes(handler: Any, data: Any, layers: str | Sequence[str] | None = None,
                   pooling: str | None = "avg", max_dim: int | None = 4096,
                   batch_size: int = 64, progress: bool = True,
                   ) -> tuple[dict[str, np.ndarray], Any, float]:
    """One forward pass over ``data`` for the given (or probe) layers.

    Returns
    -------
    (dict of str to ndarray, labels or None, seconds)
    """
    chosen = probe_layers(handler) if layers is None else layers
    if isinstance(data, (str, os.PathLike)) and hasattr(handler, "image_folder"):
        data = handler.image_folder(data)  # labelled, preprocessed, with a known length
    start = time.perf_counter()
    features, labels = handler.extract(data, chosen, pooling=pooling, batch_size=batch_size,
                                       progress=progress, return_labels=True)
    seconds = time.perf_counter() - start
    if layers is None:
        keep = prune_probes({k: v.shape[1] for k, v in features.items()},
                            handler.layer_types, max_dim)
        features = {k: features[k] for k in keep}
    return features, labels, seconds


def rank_layers(handler: Any, data: Any, y: Any = None,
                layers: str | Sequence[str] | None = None, method: str = "logme",
                pooling: str | None = "avg", max_dim: int | None = 4096,
                batch_size: int = 64, progress: bool = True) -> Ranking:
    """Rank a network's layers by the transferability of their features to ``(data, y)``.

    All layers come from one forward pass over the data.

    Parameters
    ----------
    handler : ModelHandler
    data : ndarray, Tensor, Dataset, DataLoader or image folder
        What ``handler.extract`` accepts.
    y : array-like (n,), optional
        Target labels; default the labels of ``data`` (pairs or an image folder).
    layers : str or sequence of str, optional
        Layers to rank; default :func:`probe_layers` pruned by :func:`prune_probes`.
    method : {"logme", "hscore"}
    pooling : {"avg", "max", "flatten", None}
        How spatial outputs are pooled (as in ``extract``).
    max_dim : int, optional
        With ``layers=None``, skip layers wider than this.
    batch_size : int
    progress : bool

    Returns
    -------
    Ranking
        Rows (layer, dims, score, seconds), best first.

    Examples
    --------
    >>> import numpy as np
    >>> from repurpose.testing import tiny_problem
    >>> p = tiny_problem()
    >>> ranking = rank_layers(p.handler, p.X_train, p.y_train, progress=False)
    >>> sorted(r.layer for r in ranking)
    ['conv1', 'conv2', 'fc6', 'fc7', 'fc8']
    """
    _check_feature_method(method)
    features, labels, seconds = extract_probes(handler, data, layers, pooling, max_dim,
                                               batch_size, progress)
    return rank_features(features, _labels_or(y, labels), method, seconds)


def _labels_or(y: Any, found: Any) -> Any:
    if y is not None:
        return y
    if found is None:
        raise ValueError("no labels: pass y, or data that yields (input, label) pairs "
                         "(a Dataset, DataLoader or image folder)")
    return found


def rank_sources(handlers: Sequence[Any] | Mapping[str, Any], data: Any, y: Any = None,
                 method: str = "logme", layers: Mapping[str, str | Sequence[str]] | None = None,
                 pooling: str | None = "avg", batch_size: int = 64,
                 progress: bool = True) -> Ranking:
    """Rank candidate source networks for the target task ``(data, y)``.

    Each handler reads the data with its own preprocessing (give an image folder, a
    Dataset of images, or arrays already fitting every network).

    Parameters
    ----------
    handlers : sequence of ModelHandler, or mapping of name to ModelHandler
        The candidates; a sequence names them ``source0``, ``source1``, ...
    data, y
        As in :func:`rank_layers`.
    method : {"logme", "hscore", "leep", "nce"}
        With ``"logme"``/``"hscore"`` a source scores as its best layer (the row names it
        ``"<source>:<layer>"``). ``"leep"``/``"nce"`` read the source's last layer as its
        class output (a softmax is applied when its rows do not already sum to 1).
    layers : mapping of source name to layer(s), optional
        Restrict the layers probed per source (default :func:`probe_layers`).
    pooling, batch_size, progress
        As in :func:`rank_layers`.

    Returns
    -------
    Ranking
        One row per source, best first.

    Examples
    --------
    >>> from repurpose.testing import tiny_problem
    >>> a, b = tiny_problem(seed=0), tiny_problem(seed=1)
    >>> r = rank_sources({"a": a.handler, "b": b.handler}, a.X_train, a.y_train, progress=False)
    >>> sorted(row.layer.split(":")[0] for row in r)
    ['a', 'b']
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}; use one of {', '.join(METHODS)}")
    named = dict(handlers) if isinstance(handlers, Mapping) else {
        f"source{i}": h for i, h in enumerate(handlers)}
    if not named:
        raise ValueError("handlers is empty; give one or more ModelHandlers to compare")
    rows, total = [], 0.0
    for name, handler in named.items():
        chosen = None if layers is None else layers.get(name)
        if method in _FEATURE_METHODS:
            ranking = rank_layers(handler, data, y, chosen, method, pooling,
                                  batch_size=batch_size, progress=progress)
            top = ranking[0]
            rows.append(LayerScore(f"{name}:{top.layer}", top.dims, top.score, top.seconds))
            total += ranking.extract_seconds
        else:
            row, seconds = _score_output(name, handler, data, y, method, batch_size, progress)
            rows.append(row)
            total += seconds
    return Ranking(rows, method, total)


def _score_output(name: str, handler: Any, data: Any, y: Any, method: str, batch_size: int,
                  progress: bool) -> tuple[LayerScore, float]:
    last = handler.layer_names[-1]
    features, labels, seconds = extract_probes(handler, data, [last], "avg", None,
                                               batch_size, progress)
    out = np.asarray(features[last], dtype=np.float64)
    if not np.allclose(out.sum(axis=1), 1.0, atol=1e-3) or np.any(out < 0):
        out = np.exp(out - out.max(axis=1, keepdims=True))
        out /= out.sum(axis=1, keepdims=True)
    start = time.perf_counter()
    value = score(out, _labels_or(y, labels), method)
    return LayerScore(f"{name}:{last}", out.shape[1], value, time.perf_counter() - start), seconds
