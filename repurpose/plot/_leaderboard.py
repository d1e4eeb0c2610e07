"""The AutoRepurposer's leaderboard and layer ranking, side by side."""

from __future__ import annotations

from typing import Any

from repurpose.plot._pyplot import pyplot

__all__ = ["leaderboard"]


def leaderboard(auto: Any, figsize: tuple[float, float] | None = None) -> Any:
    """Draw a fitted AutoRepurposer's layer transferability and recipe leaderboard.

    Left: the transferability score of every candidate layer (short-listed layers
    highlighted). Right: the cross-validated accuracy of every recipe tried (mean and
    standard deviation over the folds, the winner highlighted, skipped recipes left out),
    with the seconds each evaluation took.

    Parameters
    ----------
    auto : AutoRepurposer
        A fitted instance.
    figsize : (float, float), optional

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> import repurpose as rp
    >>> from repurpose.testing import tiny_problem
    >>> p = tiny_problem()
    >>> auto = rp.AutoRepurposer(p.handler, recipes=["lr"], cv=2, progress=False)
    >>> fig = leaderboard(auto.fit(p.X_train, p.y_train))
    >>> len(fig.axes)
    2
    """
    plt = pyplot()
    if not hasattr(auto, "leaderboard_"):
        raise ValueError("leaderboard() needs a fitted AutoRepurposer; call fit first")
    rows = [r for r in auto.leaderboard_ if r.cv_score is not None]
    ranking = list(auto.ranking_)
    height = max(len(rows), len(ranking))
    fig, (left, right) = plt.subplots(
        1, 2, figsize=figsize or (11, 0.32 * height + 1.6), constrained_layout=True,
        gridspec_kw={"width_ratios": [1, 1.4]})
    order = auto.candidate_layers_
    scores = auto.ranking_.scores()
    short = {r.layer for r in ranking[: auto.n_layers]}
    left.barh(range(len(order)), [scores[k] for k in order],
              color=["tab:orange" if k in short else "tab:gray" for k in order])
    left.set_yticks(range(len(order)), order)
    left.invert_yaxis()
    left.set_xlabel(f"{auto.ranking_.method} (higher transfers better)")
    left.set_title("layers, input to output")
    labels = [f"{r.recipe} @ {'+'.join(r.layers)}" for r in rows]
    right.barh(range(len(rows)), [r.cv_score for r in rows], xerr=[r.cv_std for r in rows],
               color=["tab:green" if i == 0 else "tab:blue" for i in range(len(rows))])
    right.set_yticks(range(len(rows)), labels)
    right.invert_yaxis()
    low = min(r.cv_score - r.cv_std for r in rows)
    right.set_xlim(max(0.0, low - 0.05), 1.0)
    for i, r in enumerate(rows):
        right.text(right.get_xlim()[0], i, f" {r.fit_seconds:.1f} s", va="center",
                   fontsize=8, color="white")
    right.set_xlabel(f"{auto.cv}-fold CV accuracy")
    right.set_title("recipes, best first")
    return fig
