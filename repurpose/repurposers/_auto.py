"""AutoRepurposer: rank layers by transferability, then cross-validate a short list of recipes."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from sklearn.base import clone
from sklearn.model_selection import RepeatedStratifiedKFold

from repurpose.repurposers._base import MetaModelRepurposer, Repurposer
from repurpose.repurposers._registry import register_repurposer
from repurpose.transferability._rank import (
    LayerScore,
    Ranking,
    extract_probes,
    format_table,
    rank_features,
)

__all__ = ["AutoRepurposer", "RECIPES"]

RECIPES = ("lr", "svm", "gp", "gated", "finetune")
Plan = tuple[str, tuple[str, ...]]
BEST_DIR = "best"
# cs231n's "small dataset": below this many examples per class, fine-tuning over-fits.
LARGE_PER_CLASS = 100
# Below this many examples per class one K-fold split is too noisy to rank recipes:
# cv_repeats="auto" repeats it with fresh shuffles.
SMALL_PER_CLASS = 20
SMALL_REPEATS = 3
# Ties (within one standard error of the best score) go to the first recipe in this order:
# the exact GP (hyperparameters by evidence, scored by exact leave-one-out, calibrated),
# then logistic regression, then the SVM (probabilities from an inner calibration split),
# then the networks.
SIMPLICITY = ("gp", "lr", "svm", "gated", "finetune")


@dataclass(frozen=True)
class LeaderboardRow:
    """One recipe tried: its name, layers, mean and spread (over folds) of the
    cross-validated accuracy (None when skipped), the seconds its evaluation took, a
    status, the standard error of the score (binomial, over the examples scored) and how
    it was scored ("5-fold x3", "exact LOO", "1 fold")."""

    recipe: str
    layers: tuple[str, ...]
    cv_score: float | None
    cv_std: float | None
    fit_seconds: float
    status: str = "ok"
    cv_se: float | None = None
    scored_by: str = ""


@register_repurposer("auto")
class AutoRepurposer(Repurposer):
    """Choose the layer(s) and the method for you, by transferability and cross-validation.

    ``fit`` extracts every candidate layer in one forward pass, ranks the layers by a
    transferability estimate (LogME by default), keeps the ``n_layers`` best, and
    cross-validates recipes on the cached features: logistic regression, linear SVM and GP
    on each short-listed layer and on their concatenation, the gated network on the short
    list, and fine-tuning from the best layer when there are at least ``LARGE_PER_CLASS``
    examples per class (scored on one held-out fold, since it cannot use cached features).

    The exact GP is scored by its closed-form leave-one-out predictions: one fit on all the
    data instead of one per fold, and that fit is kept if it wins. The other recipes are
    scored by stratified K-fold CV, repeated ``SMALL_REPEATS`` times with fresh shuffles
    below ``SMALL_PER_CLASS`` examples per class, where one split is too noisy. The winner
    is the simplest recipe (order ``SIMPLICITY``: GP, LR, SVM, gated, fine-tuning) whose
    score is within one standard error of the best score; it is refitted on all the data.

    Parameters
    ----------
    handler : ModelHandler
        The source network.
    candidates : "auto" or list of str
        Layers to rank; "auto" uses :func:`repurpose.transferability.probe_layers`.
    time_budget : float, optional
        Seconds for the recipe search (counted from the start of ``fit``): a recipe stops
        after the fold during which it runs out, and the recipes not started are skipped
        (both shown on the leaderboard). None tries them all.
    cv : int
        Folds of the cross-validation (fewer when a class has fewer examples).
    random_state : int, optional
        Seed of the folds and of the recipes.
    recipes : sequence of str, optional
        A subset of ``RECIPES`` to try; default all.
    method : {"logme", "hscore"}
        The transferability estimate that ranks the layers.
    n_layers : int
        Length of the layer short list.
    recipe_params : dict of str to dict, optional
        Extra constructor arguments per recipe, e.g. ``{"gated": {"max_epochs": 20}}``.
    pooling, batch_size, progress
        As for :class:`MetaModelRepurposer`.
    cv_repeats : "auto" or int
        Repeats of the K-fold split; "auto": ``SMALL_REPEATS`` below ``SMALL_PER_CLASS``
        examples per class, else 1.

    Attributes
    ----------
    best_ : Repurposer
        The chosen recipe, fitted on all the data.
    leaderboard_ : list of LeaderboardRow
        Every recipe considered: the chosen one first, then the others by score.
    ranking_ : Ranking
        The transferability of every candidate layer.

    Examples
    --------
    >>> import repurpose as rp
    >>> from repurpose.testing import tiny_problem
    >>> p = tiny_problem()
    >>> auto = rp.AutoRepurposer(p.handler, recipes=["lr"], cv=3, progress=False)
    >>> auto = auto.fit(p.X_train, p.y_train)
    >>> type(auto.best_).__name__
    'LogisticRegressionRepurposer'
    >>> auto.predict_proba(p.X_test).shape
    (10, 3)
    """

    best_: Repurposer
    leaderboard_: list[LeaderboardRow]
    ranking_: Ranking

    def __init__(
        self,
        handler: Any = None,
        candidates: str | Sequence[str] = "auto",
        time_budget: float | None = None,
        cv: int = 5,
        random_state: int | None = None,
        recipes: Sequence[str] | None = None,
        method: str = "logme",
        n_layers: int = 2,
        recipe_params: dict[str, dict[str, Any]] | None = None,
        pooling: str | None = "avg",
        batch_size: int = 64,
        progress: bool = True,
        cv_repeats: int | str = "auto",
    ) -> None:
        self.handler = handler
        self.candidates = candidates
        self.time_budget = time_budget
        self.cv = cv
        self.random_state = random_state
        self.recipes = recipes
        self.method = method
        self.n_layers = n_layers
        self.recipe_params = recipe_params
        self.pooling = pooling
        self.batch_size = batch_size
        self.progress = progress
        self.cv_repeats = cv_repeats

    @classmethod
    def _test_instance(cls, handler: Any) -> AutoRepurposer:
        # one cheap recipe keeps the contract checks fast; tests/repurposers/test_auto.py
        # covers the others
        return cls(handler, recipes=["lr"], cv=2, n_layers=1, progress=False)

    # ----- fitting -----------------------------------------------------------------------
    def _check_params(self) -> list[str]:
        if self.handler is None:
            raise ValueError("AutoRepurposer needs handler=ModelHandler(...) to read layers")
        recipes = list(RECIPES if self.recipes is None else self.recipes)
        unknown = [r for r in recipes if r not in RECIPES]
        if unknown or not recipes:
            raise ValueError(f"recipes={self.recipes!r}; choose from {', '.join(RECIPES)}")
        if isinstance(self.cv, bool) or not isinstance(self.cv, int) or self.cv < 2:
            raise ValueError(f"cv={self.cv!r}; expected an integer >= 2")
        if isinstance(self.n_layers, bool) or not isinstance(self.n_layers, int) \
                or self.n_layers < 1:
            raise ValueError(f"n_layers={self.n_layers!r}; expected a positive integer")
        extra = self.recipe_params or {}
        if not isinstance(extra, dict) or any(k not in RECIPES for k in extra):
            raise ValueError(f"recipe_params={self.recipe_params!r}; expected a dict keyed by "
                             f"recipe names ({', '.join(RECIPES)})")
        if self.time_budget is not None and not self.time_budget > 0:
            raise ValueError(f"time_budget={self.time_budget!r}; expected seconds > 0 or None")
        if self.cv_repeats != "auto" and (isinstance(self.cv_repeats, bool) or not isinstance(
                self.cv_repeats, int) or self.cv_repeats < 1):
            raise ValueError(f"cv_repeats={self.cv_repeats!r}; expected 'auto' or an integer >= 1")
        return recipes

    def _fit(self, X: Any, y: np.ndarray) -> None:
        recipes = self._check_params()
        start = time.perf_counter()
        layers = None if self.candidates == "auto" else _as_list(self.candidates)
        features, _, seconds = extract_probes(self.handler, X, layers, self.pooling,
                                              batch_size=self.batch_size, progress=self.progress)
        self.ranking_ = rank_features(features, y, self.method, seconds)
        self.candidate_layers_ = list(features)
        self.per_class_ = int(np.bincount(y).min())
        self.similarity_ = _similarity(self.ranking_, self.candidate_layers_)
        shortlist = [r.layer for r in self.ranking_[: self.n_layers]]
        rows, plans, full = self._search(recipes, shortlist, features, X, y, start)
        winner = _one_se_winner(rows)
        self.leaderboard_ = [winner] + sorted((r for r in rows if r is not winner),
                                              key=_row_order)
        key = (winner.recipe, winner.layers)
        self.best_ = full[key] if key in full else self._refit(plans[key], features, X, y)
        self.fit_seconds_ = time.perf_counter() - start

    def _search(self, recipes: list[str], shortlist: list[str], features: dict[str, np.ndarray],
                X: Any, y: np.ndarray, start: float) -> tuple[
            list[LeaderboardRow], dict[Plan, Repurposer], dict[Plan, Repurposer]]:
        """Score every planned recipe; also return the recipes' estimators and the models
        already fitted on all the data (the exact GP's, whose LOO needs no refit)."""
        folds = self._folds(y)
        rows: list[LeaderboardRow] = []
        plans: dict[Plan, Repurposer] = {}
        full: dict[Plan, Repurposer] = {}
        for recipe, layers in self._plan(recipes, shortlist):
            est = plans[(recipe, layers)] = self._make(recipe, layers)
            if self._over_budget(start) and rows:
                rows.append(LeaderboardRow(recipe, layers, None, None, 0.0, "skipped: time budget"))
                continue
            row, model = self._score(recipe, layers, est, features, X, y, folds, start)
            rows.append(row)
            if model is not None:
                full[(recipe, layers)] = model
        return rows, plans, full

    def _score(self, recipe: str, layers: tuple[str, ...], est: Repurposer,
               features: dict[str, np.ndarray], X: Any, y: np.ndarray,
               folds: list[tuple[np.ndarray, np.ndarray]], start: float,
               ) -> tuple[LeaderboardRow, Repurposer | None]:
        """One recipe's leaderboard row, and its model fitted on all the data when scoring
        produced one (the exact GP's leave-one-out)."""
        t0 = time.perf_counter()
        model: Repurposer | None = None
        if _has_exact_loo(est, len(y)):
            model, correct = _loo_correct(est, features, layers, y, self.classes_)
            fold_scores, how, status = [float(np.mean(correct))], "exact LOO", "ok"
        elif isinstance(est, MetaModelRepurposer):
            fold_scores, correct = self._cross_validate(est, features, layers, y, folds, start)
            how = self._scheme(folds)
            status = "ok" if len(fold_scores) == len(folds) else \
                f"partial: time budget ({len(fold_scores)} of {len(folds)} folds)"
        else:
            correct = _fold_correct_network(est, X, y, *folds[0])
            fold_scores, how, status = [float(np.mean(correct))], "1 fold", "ok"
        seconds = time.perf_counter() - t0
        return _row(recipe, layers, fold_scores, correct, seconds, status, how), model

    def _cross_validate(self, est: Repurposer, features: dict[str, np.ndarray],
                        layers: tuple[str, ...], y: np.ndarray,
                        folds: list[tuple[np.ndarray, np.ndarray]], start: float,
                        ) -> tuple[list[float], np.ndarray]:
        """Fold accuracies and the per-example correctness (pooled over repeats); stops
        between folds when the time budget runs out (at least one fold is scored)."""
        scores: list[float] = []
        hits, counts = np.zeros(len(y)), np.zeros(len(y))
        for train, val in folds:
            if scores and self._over_budget(start):
                break
            hit = _fold_correct(est, features, layers, y, train, val)
            scores.append(float(np.mean(hit)))
            hits[val] += hit
            counts[val] += 1
        seen = counts > 0
        return scores, hits[seen] / counts[seen]

    def _scheme(self, folds: list[tuple[np.ndarray, np.ndarray]]) -> str:
        repeats = self._repeats()
        if len(folds) == 1:
            return "training data"
        return f"{len(folds) // repeats}-fold" + (f" x{repeats}" if repeats > 1 else "")

    def _over_budget(self, start: float) -> bool:
        return self.time_budget is not None and time.perf_counter() - start > self.time_budget

    def _repeats(self) -> int:
        if self.cv_repeats == "auto":
            return SMALL_REPEATS if self.per_class_ < SMALL_PER_CLASS else 1
        return int(self.cv_repeats)

    def _folds(self, y: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        n_splits = max(2, min(self.cv, self.per_class_))
        if self.per_class_ < 2:
            # one example of some class: no stratified split exists; validate on the data
            idx = np.arange(len(y))
            return [(idx, idx)]
        split = RepeatedStratifiedKFold(n_splits=n_splits, n_repeats=self._repeats(),
                                        random_state=self._seed())
        return list(split.split(np.zeros(len(y)), y))

    def _seed(self) -> int:
        return 0 if self.random_state is None else int(self.random_state)

    def _plan(self, recipes: list[str], shortlist: list[str]) -> list[tuple[str, tuple[str, ...]]]:
        """The recipes in the order they are tried: most promising and cheapest first."""
        sets: list[tuple[str, ...]] = [(layer,) for layer in shortlist]
        if len(shortlist) > 1:
            sets.append(tuple(shortlist))
        plan: list[tuple[str, tuple[str, ...]]] = [
            (r, s) for s in sets for r in ("lr", "svm", "gp") if r in recipes]
        if "gated" in recipes and len(shortlist) > 1:
            plan.append(("gated", tuple(shortlist)))
        if "finetune" in recipes and self.per_class_ >= LARGE_PER_CLASS:
            plan.append(("finetune", (shortlist[0],)))
        return plan

    def _make(self, recipe: str, layers: tuple[str, ...]) -> Repurposer:
        est = self._default_recipe(recipe, layers)
        return est.set_params(**(self.recipe_params or {}).get(recipe, {}))

    def _default_recipe(self, recipe: str, layers: tuple[str, ...]) -> Repurposer:
        from repurpose.repurposers._finetune import FineTuneRepurposer
        from repurpose.repurposers._gated import GatedRepurposer
        from repurpose.repurposers._gp import GPRepurposer
        from repurpose.repurposers._lr import LogisticRegressionRepurposer
        from repurpose.repurposers._svm import SVMRepurposer

        common = {"handler": self.handler, "feature_layers": list(layers), "progress": False,
                  "random_state": self._seed(), "pooling": self.pooling}
        if recipe == "lr":
            return LogisticRegressionRepurposer(**common)
        if recipe == "svm":
            return SVMRepurposer(kernel="linear", **common)
        if recipe == "gp":
            return GPRepurposer(**common)
        if recipe == "gated":
            return GatedRepurposer(**common)
        return FineTuneRepurposer(self.handler, transfer_layer=layers[0],
                                  freeze=self._finetune_freeze(layers[0]), progress=False,
                                  random_state=self._seed())

    def _finetune_freeze(self, top: str) -> str | None:
        """Fine-tune the upper half: freeze up to the middle candidate layer below ``top``."""
        below = self.candidate_layers_[: self.candidate_layers_.index(top)]
        return f"up_to:{below[len(below) // 2]}" if below else None

    def _refit(self, est: Repurposer, features: dict[str, np.ndarray], X: Any,
               y: np.ndarray) -> Repurposer:
        best = clone(est)
        labels = self.classes_[y]
        if isinstance(best, MetaModelRepurposer):
            return best.fit_features({k: features[k] for k in best.feature_layers}, labels)
        return best.fit(X, labels)

    def _predict_proba(self, X: Any) -> np.ndarray:
        return self.best_.predict_proba(X)

    # ----- reporting ---------------------------------------------------------------------
    def explain(self) -> str:
        """Which of cs231n's four transfer scenarios the data looks like, and why the
        winner won.

        The size is the number of examples of the smallest class (large from
        ``LARGE_PER_CLASS``). The similarity to the source task is measured: the
        transferability of the deepest candidate layer minus that of the best layer in the
        first half of the network (positive: the source's most specific features help,
        so the tasks are similar).

        Returns
        -------
        str
        """
        self._check_fitted()
        large = self.per_class_ >= LARGE_PER_CLASS
        similar = self.similarity_ >= 0
        advice = {
            (False, True): "small and similar: a linear classifier on the top-layer features "
                           "(fine-tuning would over-fit)",
            (True, True): "large and similar: fine-tuning the top layers is safe and may add "
                          "a little",
            (False, False): "small and different: a linear classifier on features from "
                            "earlier in the network, where they are more generic",
            (True, False): "large and different: fine-tune much of the network",
        }[(large, similar)]
        win = self.leaderboard_[0]
        ok = [r for r in self.leaderboard_ if r.cv_score is not None]
        runner = ok[1] if len(ok) > 1 else None
        lines = [
            f"Scenario (cs231n): {advice}.",
            f"  data: {self.per_class_} examples in the smallest of {self.n_classes_} classes "
            f"({'large' if large else 'small'}; large from {LARGE_PER_CLASS}).",
            f"  similarity: {self.method} of the deepest layer minus the best early layer = "
            f"{self.similarity_:+.4f} ({'similar' if similar else 'different'} task).",
            f"Best layers by {self.method}: "
            + ", ".join(f"{r.layer} ({r.score:.3f})" for r in self.ranking_[: self.n_layers])
            + ".",
            f"Winner: {win.recipe} on {'+'.join(win.layers)}, CV accuracy {win.cv_score:.3f}"
            + (f" vs {runner.cv_score:.3f} for {runner.recipe} on {'+'.join(runner.layers)}"
               if runner is not None and runner.cv_score is not None else "")
            + f" ({len(ok)} recipes cross-validated, "
              f"{sum(r.cv_score is None for r in self.leaderboard_)} skipped).",
            f"  rule: the simplest recipe ({' < '.join(SIMPLICITY)}) within one standard "
            f"error of the best CV score ({_best_line(ok)}).",
        ]
        return "\n".join(lines)

    def leaderboard_table(self) -> str:
        """The leaderboard as a text table."""
        self._check_fitted()
        header = ("recipe", "layers", "cv score +/- s.e.", "scored by", "seconds", "status")
        body = [(r.recipe, "+".join(r.layers),
                 "-" if r.cv_score is None else f"{r.cv_score:.3f} +/- {r.cv_se or 0.0:.3f}",
                 r.scored_by, f"{r.fit_seconds:.2f}", r.status) for r in self.leaderboard_]
        return format_table(header, body)

    # ----- saving ------------------------------------------------------------------------
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta = {
            "leaderboard": [asdict(r) for r in self.leaderboard_],
            "ranking": [asdict(r) for r in self.ranking_],
            "extract_seconds": self.ranking_.extract_seconds,
            "candidate_layers": self.candidate_layers_,
            "per_class": self.per_class_,
            "similarity": self.similarity_,
            "fit_seconds": self.fit_seconds_,
        }
        return meta, {}

    def _set_state(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.leaderboard_ = [LeaderboardRow(**{**r, "layers": tuple(r["layers"])})
                             for r in meta["leaderboard"]]
        self.ranking_ = Ranking([LayerScore(**r) for r in meta["ranking"]], self.method,
                                float(meta["extract_seconds"]))
        self.candidate_layers_ = list(meta["candidate_layers"])
        self.per_class_ = int(meta["per_class"])
        self.similarity_ = float(meta["similarity"])
        self.fit_seconds_ = float(meta["fit_seconds"])

    def _save_extra(self, path: Path) -> None:
        self.best_.save(path / BEST_DIR, include_handler=False)

    def _load_extra(self, path: Path) -> None:
        from repurpose.repurposers._io import load

        self.best_ = load(path / BEST_DIR, handler=self.handler)


def _as_list(layers: str | Sequence[str]) -> list[str]:
    out = [layers] if isinstance(layers, str) else list(layers)
    if not out or not all(isinstance(v, str) for v in out):
        raise ValueError(f"candidates={layers!r}; use 'auto' or a list of layer names")
    return out


def _best_line(rows: list[LeaderboardRow]) -> str:
    top = max(rows, key=lambda r: cast(float, r.cv_score))
    return (f"{top.recipe} on {'+'.join(top.layers)}: {top.cv_score:.3f} +/- "
            f"{top.cv_se or 0.0:.3f}, {top.scored_by}")


def _row_order(row: LeaderboardRow) -> float:
    # best CV score first; the sort is stable, so ties keep the plan's order (better-ranked
    # layers and simpler recipes first), which does not depend on the machine's load
    return -(row.cv_score if row.cv_score is not None else -np.inf)


def _similarity(ranking: Ranking, layers: list[str]) -> float:
    """Score of the deepest candidate minus the best score in the first half."""
    scores = ranking.scores()
    early = layers[: max(1, len(layers) // 2)]
    return float(scores[layers[-1]] - max(scores[k] for k in early))


def _one_se_winner(rows: list[LeaderboardRow]) -> LeaderboardRow:
    """The simplest recipe scoring within one standard error of the best (Hastie et al.,
    The Elements of Statistical Learning, 7.10): with few examples per class the scores
    of most recipes differ by less than their noise, and the simpler one generalises more
    reliably. Among equally simple recipes the plan's order (better-ranked layers, single
    layers before their concatenation) decides."""
    scored = [r for r in rows if r.cv_score is not None]
    top = max(scored, key=lambda r: cast(float, r.cv_score))
    floor = cast(float, top.cv_score) - (top.cv_se or 0.0)
    close = [r for r in scored if cast(float, r.cv_score) >= floor - 1e-12]
    return min(close, key=lambda r: SIMPLICITY.index(r.recipe))


def _row(recipe: str, layers: tuple[str, ...], fold_scores: list[float], correct: np.ndarray,
         seconds: float, status: str, how: str) -> LeaderboardRow:
    """``correct``: each scored example's accuracy (averaged over its repeats)."""
    acc = float(np.mean(correct))
    se = float(np.sqrt(acc * (1 - acc) / len(correct)))  # binomial, over distinct examples
    return LeaderboardRow(recipe, layers, acc, float(np.std(fold_scores)), seconds, status,
                          se, how)


def _has_exact_loo(est: Repurposer, n: int) -> bool:
    from repurpose.repurposers._gp import GPRepurposer

    return isinstance(est, GPRepurposer) and n <= est.exact_threshold \
        and est.temperature == "loo"


def _loo_correct(est: Repurposer, features: dict[str, np.ndarray], layers: tuple[str, ...],
                 y: np.ndarray, classes: np.ndarray) -> tuple[Repurposer, np.ndarray]:
    """The GP fitted on all the data (on the user's labels ``classes[y]``, so that it can
    serve as ``best_``) and whether each example's exact leave-one-out prediction is right:
    one fit instead of one per fold."""
    from repurpose.repurposers._gp import GPRepurposer

    model = cast(GPRepurposer, clone(est))
    sub = {k: features[k] for k in layers}
    model.fit_features(sub, classes[y])
    # every class is present, so the model's label codes are y and its columns are codes
    proba = model._loo_proba_features(sub, y)
    return model, (np.argmax(proba, axis=1) == y).astype(float)


def _fold_correct(est: Repurposer, features: dict[str, np.ndarray], layers: tuple[str, ...],
                  y: np.ndarray, train: np.ndarray, val: np.ndarray) -> np.ndarray:
    model = cast(MetaModelRepurposer, clone(est))
    model.fit_features({k: features[k][train] for k in layers}, y[train])
    return (model.predict_features({k: features[k][val] for k in layers}) == y[val]).astype(float)


def _fold_correct_network(est: Repurposer, X: Any, y: np.ndarray, train: np.ndarray,
                          val: np.ndarray) -> np.ndarray:
    model = clone(est).fit(X[train], y[train])
    return np.asarray(model.predict(X[val]) == y[val], dtype=float)
