"""Heatmaps of the Gated Transfer Network's gates: which layer each sample relies on."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from repurpose.plot._pyplot import pyplot

__all__ = ["gates"]


def gates(
    values: Any,
    X: Any = None,
    *,
    layers: Sequence[str] | None = None,
    n_samples: int = 20,
    n_dims: int | None = 64,
    cmap: str = "viridis",
    figsize: tuple[float, float] | None = None,
) -> Any:
    """Draw the normalised gates as one heatmap per feature layer.

    Rows are samples, columns are feature dimensions, colour is the gate value ``r_i``
    (the share of layer ``i`` in the combined feature; the layers' shares sum to 1).
    Different rows lighting up in different panels is the paper's point: different images
    rely on different layers.

    Parameters
    ----------
    values : ndarray (N, n_layers, d) or fitted GatedRepurposer
        Gate values from ``GatedRepurposer.gates_(X)``, or the repurposer itself (then
        ``X`` is required).
    X : data, optional
        Inputs passed to ``values.gates_`` when ``values`` is a repurposer.
    layers : sequence of str, optional
        Panel titles. Default: the repurposer's ``feature_layers`` or ``layer 0``, ...
    n_samples : int
        The first ``n_samples`` samples are drawn.
    n_dims : int or None
        Number of dimensions drawn (those whose gates vary most across samples), or None
        for all of them.
    cmap : str
        A matplotlib colour map name.
    figsize : (float, float), optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import numpy as np
    >>> r = np.random.default_rng(0).dirichlet([1, 1], size=(5, 8)).transpose(0, 2, 1)
    >>> fig = gates(r, layers=["fc6", "fc7"])
    >>> len(fig.axes)
    3
    """
    plt = pyplot()
    if hasattr(values, "gates_"):
        if X is None:
            raise ValueError("pass the inputs X to draw the gates of a fitted repurposer")
        layers = layers or list(values.feature_layers)
        values = values.gates_(X)
    r = np.asarray(values, dtype=float)
    if r.ndim != 3:
        raise ValueError(f"gate values must have shape (N, n_layers, d), got {r.shape}")
    n_layers = r.shape[1]
    layers = list(layers) if layers is not None else [f"layer {i}" for i in range(n_layers)]
    if len(layers) != n_layers:
        raise ValueError(f"{len(layers)} layer names given for {n_layers} layers of gates")
    r = r[:n_samples]
    if n_dims is not None and n_dims < r.shape[2]:
        spread = r[:, 0, :].std(0)
        r = r[:, :, np.sort(np.argsort(-spread, kind="stable")[:n_dims])]
    fig, axes = plt.subplots(
        1, n_layers, figsize=figsize or (3.2 * n_layers + 0.8, 0.18 * len(r) + 1.6),
        squeeze=False, constrained_layout=True,
    )
    image = None
    low, high = float(r.min()), float(r.max())  # shared by the panels, so they compare
    for i, ax in enumerate(axes[0]):
        image = ax.imshow(r[:, i, :], aspect="auto", cmap=cmap, vmin=low, vmax=high,
                          interpolation="nearest")
        ax.set_title(f"{layers[i]} (mean {r[:, i, :].mean():.2f})")
        ax.set_xlabel("feature dimension")
        ax.set_ylabel("sample" if i == 0 else "")
    if image is not None:
        fig.colorbar(image, ax=axes[0].tolist(), label="gate value r")
    return fig
