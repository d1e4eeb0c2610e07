"""rp.plot.leaderboard draws the ranking and the recipes of a fitted AutoRepurposer."""

from __future__ import annotations

import matplotlib
import pytest

import repurpose as rp
from repurpose.testing import tiny_problem

matplotlib.use("Agg")


def test_leaderboard_draws_one_bar_per_layer_and_per_cross_validated_recipe():
    p = tiny_problem(n_per_class=10)
    auto = rp.AutoRepurposer(p.handler, recipes=["lr", "svm"], cv=2, progress=False)
    fig = rp.plot.leaderboard(auto.fit(p.X_train, p.y_train))
    left, right = fig.axes
    assert len(left.patches) == len(auto.candidate_layers_)
    assert len(right.patches) == len(auto.leaderboard_)
    labels = [t.get_text() for t in right.get_yticklabels()]
    win = auto.leaderboard_[0]
    assert labels[0] == f"{win.recipe} @ {'+'.join(win.layers)}"


def test_leaderboard_refuses_an_unfitted_repurposer():
    with pytest.raises(ValueError, match="needs a fitted AutoRepurposer"):
        rp.plot.leaderboard(rp.AutoRepurposer())
