"""Benchmark: choosing layer and method on real data (SqueezeNet v1.0 -> flowers12).

Prints (and with ``--out`` writes) one JSON document with:

``layers``
    For every candidate layer (SqueezeNet's ``fire2..fire9/concat``, ``pool1``,
    ``conv_final`` and ``pool_final``, globally average-pooled): its width, the linear-probe
    validation accuracy (standardised features, logistic regression, all 60 training images
    per class), and the LogME and H-score of its training features with the seconds each took.
``spearman``
    Per estimator, the Spearman correlation between its layer ranking and the linear-probe
    accuracies (target for LogME: >= 0.7); "depth" (deeper is better) as the naive baseline.
``source``
    LEEP and NCE of the source's own ImageNet outputs (softmax of ``pool_final``).
``auto_vs_grid``
    At K = 5, 20 and 60 (all) training images per class (``--seeds``: three K-samples
    below 60): AutoRepurposer (candidates "auto", 5-fold CV, the ``--recipes``, default its
    own LR, linear SVM and GP) against the grid it chooses from: each recipe on every single
    candidate layer, on every pair of consecutive layers and on Auto's short list (the gated
    network on the pairs when it is among the recipes). Every grid recipe is scored by
    Auto's own selection (the same folds, the GP's exact LOO, the one-standard-error rule):
    ``grid_cv_choice`` is the grid chosen that way and ``grid_cv_seconds`` what that costs
    (scoring every recipe plus refitting the choice), all measured in this run.
    ``grid_oracle`` is the recipe with the best *validation* accuracy, an oracle no real
    search has, and ``grid_fit_seconds`` fits every recipe once (a lower bound on any grid
    search). Target: Auto within 1 point of the grid's best, in at most a third of the
    grid's time. ``summary`` holds the means over the seeds of each K.
``logme_speed``
    LogME on 10,000 x 2,048 synthetic features with 100 classes (rounds alternating with the
    per-class alternative that decomposes F^T F again for every class).

Features are extracted once per split and reused by every estimator and recipe, Auto and
the grid alike (extraction time is reported separately and counted for neither). Both
sides run with one BLAS and torch thread (``--threads``).

Usage: ``python benchmarks/bench_choose.py [--realdata DIR] [--out FILE] [--quick]
[--ks 5,20,60] [--seeds 0,1,2] [--recipes lr,svm,gp] [--rounds 2] [--features-cache F]``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import repurpose as rp
from repurpose import transferability as tr
from repurpose.repurposers._auto import _one_se_winner

LAYERS = [f"fire{i}/concat" for i in range(2, 10)] + ["pool1", "conv_final", "pool_final"]
DEPTH = ["pool1"] + LAYERS[:8] + ["conv_final", "pool_final"]


class CachedHandler:
    """Serves features extracted once: the "inputs" are row indices into the cache."""

    device = "cpu"
    preprocess = None

    def __init__(self, handler: Any, features: dict[str, np.ndarray]) -> None:
        self.layer_names = handler.layer_names
        self.layer_types = handler.layer_types
        self.features = features

    def extract(self, data: Any, layers: Any, pooling: Any = "avg", batch_size: int = 64,
                progress: bool = True, return_labels: bool = False, **_: Any) -> Any:
        idx = np.asarray(data).reshape(-1).astype(int)
        names = [layers] if isinstance(layers, str) else list(layers)
        # layers not in the cache (e.g. pools pruned as duplicates anyway) are left out
        out = {k: self.features[k][idx] for k in names if k in self.features}
        return (out, None) if return_labels else out


def extract_all(realdata: Path, quick: bool) -> tuple[Any, dict[str, Any]]:
    sq = realdata / "squeezenet_v1.0"
    handler = rp.ModelHandler.from_caffe(sq / "deploy.prototxt",
                                         sq / "squeezenet_v1.0_dc.caffemodel",
                                         mean=[104, 117, 123], resize=(256, 256))
    layers = sorted(set(LAYERS) | set(tr.probe_layers(handler)), key=handler.layer_names.index)
    out: dict[str, Any] = {}
    for split in ("train", "val"):
        start = time.perf_counter()
        folder = handler.image_folder(realdata / "flowers12" / split)
        if quick:
            folder = _subset(folder, 4 if split == "train" else 2)
        feats, labels = handler.extract(folder, layers, return_labels=True, progress=False)
        out[split] = (feats, np.asarray(labels), time.perf_counter() - start)
    return handler, out


def _subset(folder: Any, per_class: int) -> Any:
    import torch

    labels = np.array([folder[i][1] for i in range(len(folder))]) if not hasattr(
        folder, "targets") else np.asarray(folder.targets)
    keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
    return torch.utils.data.Subset(folder, keep.tolist())


def layer_table(train: dict[str, np.ndarray], ytr: np.ndarray, val: dict[str, np.ndarray],
                yva: np.ndarray) -> list[dict[str, Any]]:
    rows = []
    for layer in LAYERS:
        scaler = StandardScaler().fit(train[layer])
        probe = LogisticRegression(max_iter=2000).fit(scaler.transform(train[layer]), ytr)
        row: dict[str, Any] = {"layer": layer, "dims": int(train[layer].shape[1]),
                               "probe_accuracy": float(probe.score(scaler.transform(val[layer]),
                                                                  yva))}
        for method in ("logme", "hscore"):
            start = time.perf_counter()
            row[method] = tr.score(train[layer], ytr, method)
            row[f"{method}_seconds"] = time.perf_counter() - start
        rows.append(row)
    return rows


def spearman(rows: list[dict[str, Any]]) -> dict[str, float]:
    acc = [r["probe_accuracy"] for r in rows]
    out = {m: float(spearmanr([r[m] for r in rows], acc).correlation)
           for m in ("logme", "hscore")}
    out["depth"] = float(spearmanr([DEPTH.index(r["layer"]) for r in rows], acc).correlation)
    return out


def source_scores(train: dict[str, np.ndarray], ytr: np.ndarray) -> dict[str, float]:
    scores = train["pool_final"].astype(np.float64)
    proba = np.exp(scores - scores.max(1, keepdims=True))
    proba /= proba.sum(1, keepdims=True)
    return {"leep": tr.leep(proba, ytr), "nce": tr.nce(proba, ytr)}


def grid_plan(layers: list[str], shortlist: list[str], recipes: list[str]) -> list[Any]:
    """Every recipe Auto can choose: each method on every single candidate layer, on every
    pair of consecutive layers and on Auto's own short list; the gated network on the pairs."""
    sets: list[tuple[str, ...]] = [(k,) for k in layers] + list(zip(layers, layers[1:]))
    if tuple(shortlist) not in sets:
        sets.append(tuple(shortlist))
    plan = [(m, ls) for ls in sets for m in ("lr", "svm", "gp") if m in recipes]
    return plan + [("gated", ls) for ls in sets if len(ls) > 1 and "gated" in recipes]


def auto_vs_grid(cached: CachedHandler, n_train: int, ytr: np.ndarray, yva: np.ndarray,
                 k: int, seed: int, recipes: list[str]) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    pick = np.concatenate([rng.permutation(np.flatnonzero(ytr == c))[:k]
                           for c in np.unique(ytr)])
    X_tr = pick.astype(np.float32)[:, None]
    X_va = (n_train + np.arange(len(yva))).astype(np.float32)[:, None]
    auto = rp.AutoRepurposer(cached, random_state=0, recipes=recipes, progress=False)
    start = time.perf_counter()
    auto.fit(X_tr, ytr[pick])
    auto_seconds = time.perf_counter() - start
    auto_acc = float(np.mean(auto.predict(X_va) == yva))
    shortlist = [r.layer for r in auto.ranking_[: auto.n_layers]]
    grid, cv_rows, refit = run_grid(auto, cached, pick, X_tr, ytr, X_va, yva, shortlist)
    grid_fit = sum(r["fit_seconds"] for r in grid)
    grid_cv = sum(r.fit_seconds for r in cv_rows) + refit
    oracle = max(grid, key=lambda r: r["val_accuracy"])
    chosen = grid[cv_rows.index(_one_se_winner(cv_rows))]
    win = auto.leaderboard_[0]
    return {
        "k": k, "seed": seed, "n_train": len(pick),
        "auto": {"val_accuracy": auto_acc, "seconds": auto_seconds, "recipe": win.recipe,
                 "layers": list(win.layers), "cv_score": win.cv_score,
                 "recipes_tried": sum(r.cv_score is not None for r in auto.leaderboard_),
                 "shortlist": shortlist, "explain": auto.explain()},
        "grid_oracle": oracle, "grid_cv_choice": chosen, "grid_size": len(grid),
        "grid_fit_seconds": grid_fit, "grid_cv_seconds": grid_cv,
        "gap_points_vs_oracle": 100 * (oracle["val_accuracy"] - auto_acc),
        "gap_points_vs_grid_cv": 100 * (chosen["val_accuracy"] - auto_acc),
        "time_ratio_vs_grid_cv": auto_seconds / grid_cv,
        "time_ratio_vs_fit_once": auto_seconds / grid_fit,
        "grid": grid,
    }


def run_grid(auto: rp.AutoRepurposer, cached: CachedHandler, pick: np.ndarray, X_tr: np.ndarray,
             ytr: np.ndarray, X_va: np.ndarray, yva: np.ndarray, shortlist: list[str],
             ) -> tuple[list[dict[str, Any]], list[Any], float]:
    """Each grid recipe scored by Auto's own selection (same folds, same LOO) and fitted once
    on the K-sample to read its validation accuracy (the exact GP's LOO fit is that fit)."""
    codes = np.searchsorted(auto.classes_, ytr[pick])
    feats = {k: cached.features[k][pick] for k in auto.candidate_layers_}
    folds = auto._folds(codes)
    grid, rows, refit = [], [], 0.0
    for recipe, layers in grid_plan(auto.candidate_layers_, shortlist, auto._check_params()):
        est = auto._make(recipe, layers)
        row, model = auto._score(recipe, layers, est, feats, X_tr, codes, folds,
                                 time.perf_counter())
        start = time.perf_counter()
        fitted = model if model is not None else clone(est).fit(X_tr, ytr[pick])
        seconds = row.fit_seconds if model is not None else time.perf_counter() - start
        acc = float(np.mean(fitted.predict(X_va) == yva))
        grid.append({"recipe": recipe, "layers": list(layers), "cv_score": row.cv_score,
                     "cv_se": row.cv_se, "val_accuracy": acc, "fit_seconds": seconds})
        rows.append(row)
    win = _one_se_winner(rows)
    refit = 0.0 if win.scored_by == "exact LOO" else grid[rows.index(win)]["fit_seconds"]
    return grid, rows, refit


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over the seeds of one K."""
    keys = ("gap_points_vs_oracle", "gap_points_vs_grid_cv", "time_ratio_vs_grid_cv",
            "time_ratio_vs_fit_once", "grid_cv_seconds", "grid_fit_seconds")
    out: dict[str, Any] = {"k": runs[0]["k"], "seeds": [r["seed"] for r in runs]}
    out.update({key: float(np.mean([r[key] for r in runs])) for key in keys})
    for name, get in (("auto_acc", lambda r: r["auto"]["val_accuracy"]),
                      ("auto_seconds", lambda r: r["auto"]["seconds"]),
                      ("oracle_acc", lambda r: r["grid_oracle"]["val_accuracy"]),
                      ("grid_cv_acc", lambda r: r["grid_cv_choice"]["val_accuracy"])):
        out[name] = float(np.mean([get(r) for r in runs]))
    return out


def logme_speed(rounds: int, n: int = 10_000, d: int = 2048, c: int = 100) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, c, n)
    f = rng.normal(size=(n, d)).astype(np.float32) + np.eye(c, d, dtype=np.float32)[y]
    ours, naive = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        tr.logme(f, y)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        _logme_per_class(f, y, n_classes=2)  # 2 classes, then scaled to c
        naive.append((time.perf_counter() - start) * c / 2)
    return {"shape": [n, d], "classes": c, "seconds": ours,
            "per_class_decomposition_seconds_est": naive,
            "speedup_per_round": [b / a for a, b in zip(ours, naive)]}


def _logme_per_class(f: np.ndarray, y: np.ndarray, n_classes: int) -> None:
    """The alternative without sharing: one decomposition per class."""
    for cls in range(n_classes):
        tr.logme_fit(f, (y == cls).astype(int))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--realdata", type=Path,
                        default=Path(__file__).resolve().parents[1].parent / "shared" / "realdata")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--ks", default="5,20,60")
    # AutoRepurposer's default recipes on flowers12 (fine-tuning joins from 100 per class);
    # the gated network can be added ("...,gated"): both sides always use the same set.
    parser.add_argument("--recipes", default="lr,svm,gp")
    parser.add_argument("--seeds", default="0,1,2", help="K-samples per K (one at all images)")
    parser.add_argument("--rounds", type=int, default=2, help="LogME speed rounds; 0 skips")
    parser.add_argument("--threads", type=int, default=1,
                        help="BLAS and torch threads for both sides (0: leave as is)")
    parser.add_argument("--features-cache", type=Path,
                        help="An .npz of the extracted features: read if it exists, else written")
    args = parser.parse_args()
    # --quick (the test suite's smoke run) keeps the two cheapest recipes
    recipes = args.recipes.split(",") if not args.quick else ["lr", "gp"]
    if args.threads > 0:
        # Small per-fold fits gain nothing from BLAS threads, and on a shared machine
        # spinning threads slow them 10-50 fold; both sides run under the same limit.
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)
    result: dict[str, Any] = {"recipes": recipes}
    handler, data = _features(args)
    (train, ytr, t_tr), (val, yva, t_va) = data["train"], data["val"]
    result["extract_seconds"] = {"train": t_tr, "val": t_va}
    rows = layer_table(train, ytr, val, yva)
    result["layers"] = rows
    result["spearman"] = spearman(rows)
    result["source"] = source_scores(train, ytr)
    _emit(result, args.out)
    both = {k: np.concatenate([train[k], val[k]]) for k in train}
    cached = CachedHandler(handler, both)
    ks = [int(k) for k in args.ks.split(",")] if not args.quick else [2]
    seeds = [int(v) for v in args.seeds.split(",")] if not args.quick else [0]
    result["auto_vs_grid"], result["summary"] = [], []
    for k in ks:  # written after each seed so that a partial run keeps its results
        runs = []
        for seed in seeds if k < int(np.bincount(np.unique(ytr, return_inverse=True)[1]).min()) \
                else seeds[:1]:
            runs.append(auto_vs_grid(cached, len(ytr), ytr, yva, k, seed, recipes))
            result["auto_vs_grid"].append(runs[-1])
            _emit(result, args.out)
        result["summary"].append(summarise(runs))
    if args.rounds > 0 or args.quick:
        result["logme_speed"] = logme_speed(1 if args.quick else args.rounds)
    _emit(result, args.out)
    print(json.dumps(result, indent=2))


def _features(args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    cache = args.features_cache
    if cache is None or not cache.is_file():
        handler, data = extract_all(args.realdata, args.quick)
        if cache is not None:
            arrays = {f"{split}|{k}": v for split, (f, _, _) in data.items() for k, v in f.items()}
            arrays.update({f"{split}|labels": y for split, (_, y, _) in data.items()})
            arrays.update({f"{split}|seconds": np.array(t) for split, (_, _, t) in data.items()})
            np.savez(cache, **arrays)
        return handler, data
    sq = args.realdata / "squeezenet_v1.0"
    handler = rp.ModelHandler.from_caffe(sq / "deploy.prototxt",
                                         sq / "squeezenet_v1.0_dc.caffemodel",
                                         mean=[104, 117, 123], resize=(256, 256))
    saved = np.load(cache)
    data = {}
    for split in ("train", "val"):
        feats = {k.split("|", 1)[1]: saved[k] for k in saved.files
                 if k.startswith(f"{split}|") and k.split("|", 1)[1] not in ("labels", "seconds")}
        data[split] = (feats, saved[f"{split}|labels"], float(saved[f"{split}|seconds"]))
    return handler, data


def _emit(result: dict[str, Any], out: Path | None) -> None:
    if out is not None:
        out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
