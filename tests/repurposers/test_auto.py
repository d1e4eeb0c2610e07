"""AutoRepurposer: ranking, short list, cross-validated leaderboard, budget, explanation."""

from __future__ import annotations

import numpy as np
import pytest

import repurpose as rp
from repurpose.repurposers import _auto
from repurpose.testing import tiny_problem


@pytest.fixture(scope="module")
def problem():
    return tiny_problem(n_classes=3, n_per_class=12)


@pytest.fixture(scope="module")
def fitted(problem):
    auto = rp.AutoRepurposer(problem.handler, recipes=["lr", "svm", "gated"], cv=3,
                             recipe_params={"gated": {"max_epochs": 5}}, random_state=0,
                             progress=False)
    return auto.fit(problem.X_train, problem.y_train)


def test_leaderboard_covers_the_short_list_and_the_winner_is_refitted(fitted, problem):
    top = [r.layer for r in fitted.ranking_[:2]]
    tried = {(r.recipe, r.layers) for r in fitted.leaderboard_}
    expected = {(m, (layer,)) for m in ("lr", "svm") for layer in top}
    expected |= {("lr", tuple(top)), ("svm", tuple(top)), ("gated", tuple(top))}
    assert tried == expected
    scores = [r.cv_score for r in fitted.leaderboard_]
    assert scores[1:] == sorted(scores[1:], reverse=True)  # the winner first, then by score
    win = fitted.leaderboard_[0]
    assert win.cv_score >= max(scores) - win.cv_se - 1e-12 or win.cv_se == 0
    assert list(fitted.best_.feature_layers_) == list(win.layers)
    np.testing.assert_array_equal(fitted.best_.classes_, fitted.classes_)
    np.testing.assert_allclose(fitted.predict_proba(problem.X_test),
                               fitted.best_.predict_proba(problem.X_test))


def test_cv_scores_are_the_mean_of_repeated_stratified_folds(fitted, problem):
    """Recompute one row's CV score and standard error by hand from the same folds: 12
    examples per class is below SMALL_PER_CLASS, so the 3 folds are repeated 3 times."""
    row = next(r for r in fitted.leaderboard_ if r.recipe == "lr" and len(r.layers) == 1)
    feats = problem.handler.extract(problem.X_train, list(row.layers), progress=False)
    y = np.unique(problem.y_train, return_inverse=True)[1]
    from sklearn.model_selection import RepeatedStratifiedKFold

    accs = []
    folds = RepeatedStratifiedKFold(n_splits=3, n_repeats=_auto.SMALL_REPEATS, random_state=0)
    for tr_idx, va_idx in folds.split(feats[row.layers[0]], y):
        lr = rp.LogisticRegressionRepurposer(random_state=0)
        lr.fit_features({k: v[tr_idx] for k, v in feats.items()}, y[tr_idx])
        pred = lr.predict_features({k: v[va_idx] for k, v in feats.items()})
        accs.append(np.mean(pred == y[va_idx]))
    assert row.scored_by == f"3-fold x{_auto.SMALL_REPEATS}"
    assert row.cv_score == pytest.approx(np.mean(accs), abs=1e-9)
    assert row.cv_std == pytest.approx(np.std(accs), abs=1e-9)
    assert row.cv_se == pytest.approx(np.sqrt(row.cv_score * (1 - row.cv_score) / len(y)))


def test_explain_names_the_scenario_and_the_winner(fitted):
    text = fitted.explain()
    assert "small and" in text  # 12 examples per class
    assert "12 examples" in text
    win = fitted.leaderboard_[0]
    assert f"Winner: {win.recipe} on {'+'.join(win.layers)}" in text
    assert fitted.leaderboard_table().splitlines()[0].startswith("recipe")


def test_similarity_sign_decides_similar_or_different(fitted, monkeypatch):
    monkeypatch.setattr(fitted, "similarity_", -1.0)
    assert "different" in fitted.explain().splitlines()[0]
    monkeypatch.setattr(fitted, "similarity_", 1.0)
    monkeypatch.setattr(fitted, "per_class_", _auto.LARGE_PER_CLASS)
    assert "large and similar" in fitted.explain().splitlines()[0]


def test_time_budget_skips_the_remaining_recipes(problem):
    auto = rp.AutoRepurposer(problem.handler, recipes=["lr", "svm"], cv=3, time_budget=1e-9,
                             progress=False).fit(problem.X_train, problem.y_train)
    statuses = [r.status for r in auto.leaderboard_]
    # the first recipe always runs, but stops after its first fold
    assert statuses[0] == "partial: time budget (1 of 9 folds)"
    assert auto.leaderboard_[0].cv_score is not None
    assert statuses[1:] and all(s == "skipped: time budget" for s in statuses[1:])
    assert auto.leaderboard_[-1].cv_score is None
    assert "skipped" in auto.leaderboard_table()


def test_finetune_joins_only_with_enough_examples_per_class(problem, monkeypatch):
    auto = rp.AutoRepurposer(problem.handler, recipes=["lr", "finetune"], cv=3, progress=False)
    auto.fit(problem.X_train, problem.y_train)
    assert {r.recipe for r in auto.leaderboard_} == {"lr"}
    monkeypatch.setattr(_auto, "LARGE_PER_CLASS", 5)
    auto = rp.AutoRepurposer(problem.handler, recipes=["finetune"], candidates=["fc6", "fc7"],
                             recipe_params={"finetune": {"max_epochs": 2, "batch_size": 8}}, cv=3,
                             random_state=0, progress=False)
    auto.fit(problem.X_train, problem.y_train)
    assert [r.recipe for r in auto.leaderboard_] == ["finetune"]
    assert isinstance(auto.best_, rp.FineTuneRepurposer)


@pytest.mark.parametrize(("params", "match"), [
    ({"recipes": ["knn"]}, "recipes=\\['knn'\\]; choose from lr"),
    ({"cv": 1}, "cv=1; expected an integer >= 2"),
    ({"n_layers": 0}, "n_layers=0"),
    ({"time_budget": -1}, "time_budget=-1"),
    ({"cv_repeats": 0}, "cv_repeats=0; expected 'auto' or an integer >= 1"),
    ({"candidates": []}, "candidates=\\[\\]; use 'auto'"),
    ({"recipe_params": {"knn": {}}}, "recipe_params=.*keyed by recipe names"),
])
def test_bad_parameters_raise_clear_errors(problem, params, match):
    with pytest.raises(ValueError, match=match):
        rp.AutoRepurposer(problem.handler, progress=False, **params).fit(
            problem.X_train, problem.y_train)


def _row(recipe, score, se, layers=("fc7",)):
    return _auto.LeaderboardRow(recipe, layers, score, 0.0, 1.0, cv_se=se)


@pytest.mark.parametrize(("rows", "winner"), [
    # GP within one standard error of the best LR: the simpler GP wins
    ([_row("lr", 0.90, 0.04), _row("gp", 0.87, 0.04)], 1),
    # GP more than one standard error below: the best wins
    ([_row("lr", 0.90, 0.04), _row("gp", 0.85, 0.04)], 0),
    # an SVM best by a hair loses to LR; among two LRs the plan's order decides
    ([_row("svm", 0.91, 0.02), _row("lr", 0.90, 0.02, ("a",)), _row("lr", 0.90, 0.02, ("b",))], 1),
    # skipped rows are ignored
    ([_row("gp", None, None), _row("svm", 0.5, 0.1)], 1),
])
def test_the_simplest_recipe_within_one_standard_error_wins(rows, winner):
    assert _auto._one_se_winner(rows) is rows[winner]


def test_gp_is_scored_by_exact_leave_one_out_and_not_refitted(problem):
    names = np.array(["iris", "lily", "rose"])[problem.y_train]
    auto = rp.AutoRepurposer(problem.handler, recipes=["gp"], candidates=["fc7"], cv=3,
                             recipe_params={"gp": {"n_iter": 10}}, random_state=0,
                             progress=False).fit(problem.X_train, names)
    (row,) = auto.leaderboard_
    assert row.scored_by == "exact LOO"
    np.testing.assert_array_equal(auto.best_.classes_, ["iris", "lily", "rose"])
    assert set(auto.best_.predict(problem.X_test)) <= {"iris", "lily", "rose"}
    feats = problem.handler.extract(problem.X_train, ["fc7"], progress=False)
    y = np.unique(problem.y_train, return_inverse=True)[1]
    proba = auto.best_._loo_proba_features(feats, y)
    assert row.cv_score == pytest.approx(np.mean(proba.argmax(1) == y))
    assert row.cv_se == pytest.approx(np.sqrt(row.cv_score * (1 - row.cv_score) / len(y)))
