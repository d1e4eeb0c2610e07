"""Reliability diagrams and per-input uncertainty bar charts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from repurpose.metrics import calibration_bins, ece, predictive_entropy
from repurpose.plot._pyplot import pyplot

__all__ = ["reliability_diagram", "uncertainty_bars"]


def reliability_diagram(
    y_true: Any,
    proba: Any | Mapping[str, Any],
    *,
    n_bins: int = 10,
    classes: Sequence[Any] | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Any:
    """Plot accuracy against confidence (equal-mass bins) for one or several models.

    A perfectly calibrated model lies on the diagonal; points below it are over-confident.
    The legend shows each model's ECE.

    Parameters
    ----------
    y_true : array-like (n,)
        True labels (column indices, or values of ``classes``).
    proba : ndarray (n, n_classes) or dict of name to ndarray
        Predicted probabilities; a dict draws one curve per model.
    n_bins : int
        Number of equal-mass bins.
    classes : sequence, optional
        Labels of the columns of ``proba`` (e.g. ``rep.classes_``).
    ax : matplotlib Axes, optional
        Where to draw; a new figure is made if None.
    title : str, optional
        Axes title.

    Returns
    -------
    matplotlib.axes.Axes

    Examples
    --------
    >>> import numpy as np
    >>> from repurpose.plot import reliability_diagram
    >>> p = np.array([[0.9, 0.1], [0.3, 0.7], [0.6, 0.4]])
    >>> ax = reliability_diagram([0, 1, 1], {"model": p}, n_bins=2)
    """
    plt = pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.2, 4.0))
    curves = proba if isinstance(proba, Mapping) else {"model": proba}
    ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=1, label="calibrated")
    for name, p in curves.items():
        conf, acc, _ = calibration_bins(y_true, p, n_bins=n_bins, classes=classes)
        score = ece(y_true, p, n_bins=n_bins, classes=classes)
        ax.plot(conf, acc, marker="o", markersize=4, label=f"{name} (ECE {score:.3f})")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    if title:
        ax.set_title(title)
    return ax


def uncertainty_bars(
    proba: Any,
    std: Any = None,
    *,
    images: Any = None,
    class_names: Sequence[Any] | None = None,
    titles: Sequence[str] | None = None,
    max_inputs: int = 6,
    figsize: tuple[float, float] | None = None,
) -> Any:
    """Bar chart of predicted class probabilities (with error bars) for a few inputs.

    One column per input: its image on top (if given), then its class probabilities with
    ``std`` as error bars, titled with its predictive entropy. The picture shows whether a
    model "knows what it doesn't know": flat, wide bars on unfamiliar inputs.

    Parameters
    ----------
    proba : ndarray (n, n_classes)
        Predicted probabilities (e.g. ``rep.predict_uncertainty(X).proba``).
    std : ndarray (n, n_classes), optional
        Per-class predictive standard deviation, drawn as error bars.
    images : ndarray (n, H, W) or (n, 1, H, W), optional
        Inputs to show above the bars.
    class_names : sequence, optional
        Bar labels (default ``0..n_classes-1``).
    titles : sequence of str, optional
        One title per input (e.g. "in-distribution", "OOD").
    max_inputs : int
        At most this many inputs (the first ones) are drawn.
    figsize : (float, float), optional
        Figure size in inches.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> from repurpose.plot import uncertainty_bars
    >>> fig = uncertainty_bars(np.array([[0.8, 0.2], [0.5, 0.5]]), titles=["sure", "unsure"])
    """
    plt = pyplot()
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"proba must have shape (n, n_classes); got {p.shape}")
    n = min(len(p), int(max_inputs))
    if n < 1:
        raise ValueError("proba is empty; give at least one input")
    names = [str(c) for c in (class_names if class_names is not None else range(p.shape[1]))]
    entropy = predictive_entropy(p[:n])
    rows = 2 if images is not None else 1
    size = figsize or (1.9 * n + 0.4, 2.0 * rows + 0.4)
    fig, axes = plt.subplots(rows, n, figsize=size, squeeze=False)
    for i in range(n):
        if images is not None:
            img = np.asarray(images[i]).squeeze()
            axes[0, i].imshow(img, cmap="gray_r")
            axes[0, i].axis("off")
            if titles is not None:
                axes[0, i].set_title(titles[i], fontsize=9)
        ax = axes[-1, i]
        err = None if std is None else np.asarray(std)[i]
        ax.bar(names, p[i], yerr=err, color="tab:blue", ecolor="0.3", capsize=2)
        ax.set_ylim(0, 1.05)
        ax.tick_params(labelsize=7)
        label = f"H = {entropy[i]:.2f}"
        if images is None and titles is not None:
            label = f"{titles[i]}\n{label}"
        ax.set_title(label, fontsize=8)
        if i:
            ax.set_yticklabels([])
    fig.tight_layout()
    return fig
