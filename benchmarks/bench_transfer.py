"""Benchmark: transfer quality on real photos (flowers12 with an ImageNet SqueezeNet).

Source: the ImageNet-trained SqueezeNet v1.0 (Caffe) of ``../shared/realdata`` with its own
preprocessing (BGR, 0-255, mean 104/117/123, resize 256x256, centre crop 227). Target:
``flowers12`` (12 classes, 60 training and 20 validation photos per class). Every recipe
trains on K photos per class (K in 5, 10, 20 and all 60; 3 seeds for the sampled K) and is
tested on the whole validation split: accuracy, NLL, ECE (``repurpose.metrics``) and fit
seconds.

Features (average-pooled ``fireN/concat`` blobs and the pooled ImageNet scores
``pool_final``) are extracted once per run into a temporary directory and shared by every
feature recipe. Fine-tuning (``rp.FineTuneRepurposer``) runs at K = all only, on the
preprocessed images.

Prints one JSON document (``--out`` also writes it to a file) and, with ``--figure``, draws
accuracy and ECE against K.

Usage::

    python benchmarks/bench_transfer.py --quick                 # smoke: one recipe per code path
    python benchmarks/bench_transfer.py --out docs/data/transfer.json --figure docs/img/transfer.png
    python benchmarks/bench_transfer.py --only features         # no fine-tuning
    python benchmarks/bench_transfer.py --only finetune

A full run is long on a shared machine; it splits into runs that share the extracted
features (``--cache``) and fine-tuning checkpoints (``--checkpoints``, with
``--epoch-budget`` epochs per run), then ``--merge`` summarises their ``--out`` files::

    python benchmarks/bench_transfer.py --only features --ks 5 --cache /tmp/f --out k5.json
    python benchmarks/bench_transfer.py --only finetune --finetune "lp-ft all" \
        --checkpoints /tmp/ck --epoch-budget 1 --out ft.json     # again to resume
    python benchmarks/bench_transfer.py --merge k5.json ft.json --out all.json

Choosing settings without the test photos: ``--holdout 20`` tests on 20 of the training
photos per class (a seeded draw), trains on the other 40 and never reads the val split::

    python benchmarks/bench_transfer.py --only finetune --holdout 20 \
        --finetune "lp-ft fire8-9 crops,lp-ft fire8-9 crops C0.05" --out ho.json

``--wise-alphas 0,0.5,1`` scores each WiSE-FT mix of a fine-tuning run (one run per
recipe); ``--drop9-off`` fine-tunes with SqueezeNet's own dropout off.

Larger tests, for margins of a photo or two: ``--test-rest`` tests each split at K < all
on the val photos and every training photo not drawn for it; ``--pool-folds 4`` tests
K = all on every photo by 4-fold cross-fitting over train + val. ``--target digits``
runs the feature recipes on a target far from ImageNet (scikit-learn's digits)::

    python benchmarks/bench_transfer.py --only features --ks all --pool-folds 4
    python benchmarks/bench_transfer.py --target digits --only features --recipes lr,head2toe
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import repurpose as rp
from repurpose import metrics
from repurpose.repurposers._lpft import interpolate_weights
from repurpose.repurposers._training import snapshot

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
SINGLE = ["fire7/concat", "fire8/concat", "fire9/concat", "pool_final"]
PROBE = [f"fire{i}/concat" for i in range(2, 10)] + ["pool_final"]
PAIR = ["fire8/concat", "fire9/concat"]  # the two equal-width top layers (as fc6/fc7)
TOP = ["fire9/concat", "pool_final"]
SHORT = {**{f"fire{i}/concat": f"fire{i}" for i in range(2, 10)}, "pool_final": "pool_final"}
# a smoke run fits one recipe of each code path, not the whole grid
QUICK_RECIPES = ("lr fire9", "svm fire9", "gp fire9", "bnn fire9", "lr concat",
                 "lr average fire8+9", "ensemble lr", "head2toe", "gated paper fire8+9",
                 "gated lowrank 4 layers", "gated experts 4 layers", "head2toe cv",
                 "gated paper fire8+9 cv")


TARGETS = {"flowers12": "flowers12: 12 classes, train K per class, test on val (20 per class)",
           "digits": "scikit-learn digits upscaled to 227 x 227: 10 classes, train K of 60 "
           "per class, test on 30 per class"}


# ----- data --------------------------------------------------------------------------------
def load_handler(root: Path) -> Any:
    net = root / "squeezenet_v1.0"
    pre = json.loads((net / "preprocess.json").read_text())
    return rp.ModelHandler.from_caffe(
        net / pre["prototxt"], net / pre["caffemodel"], mean=tuple(pre["mean"]),
        resize=tuple(pre["resize"]),
    )


def load_split(handler: Any, folder: Path, per_class: int | None) -> tuple[torch.Tensor,
                                                                         np.ndarray]:
    """Preprocessed images ``(N, 3, 227, 227)`` and their class names, in a fixed order."""
    from PIL import Image

    xs: list[torch.Tensor] = []
    ys: list[str] = []
    for cls in sorted(p.name for p in folder.iterdir() if p.is_dir()):
        for path in sorted((folder / cls).glob("*.jpg"))[:per_class]:
            with Image.open(path) as img:
                xs.append(handler.preprocess(img.convert("RGB")))
            ys.append(cls)
    return torch.stack(xs), np.array(ys)


def load_digits(handler: Any, per_class: tuple[int, int]
                ) -> tuple[tuple[torch.Tensor, np.ndarray], tuple[torch.Tensor, np.ndarray]]:
    """A target far from ImageNet: scikit-learn's 8x8 digits, ``per_class`` = (train, test)
    images of each digit (a seeded draw), as white-on-black photos through the handler's
    preprocessing (upscaled to 256 x 256, centre crop 227)."""
    from PIL import Image
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    labels = np.array([f"digit{d}" for d in digits.target])
    rng = np.random.default_rng(0)
    order = [rng.permutation(np.flatnonzero(digits.target == d)) for d in range(10)]
    n_train, n_test = per_class
    parts = [np.sort(np.concatenate([o[a:b] for o in order]))
             for a, b in ((0, n_train), (n_train, n_train + n_test))]

    def images(idx: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        pixels = (digits.images[idx] * (255 / 16)).round().astype(np.uint8)
        return (torch.stack([handler.preprocess(Image.fromarray(p).convert("RGB"))
                             for p in pixels]), labels[idx])

    return images(parts[0]), images(parts[1])


def extract(handler: Any, data: tuple[torch.Tensor, np.ndarray], cache: Path,
            split: str) -> dict[str, np.ndarray]:
    """Pooled features of every layer used (and the labels), computed once, kept in ``cache``."""
    feats = handler.extract(data[0], PROBE, pooling="avg", batch_size=32, progress=False)
    np.savez(cache / f"{split}.npz", labels=data[1], **feats)
    return feats


def cached(cache: Path | None, split: str) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    """Features and labels written by an earlier process of the same run (``--cache``)."""
    path = None if cache is None else cache / f"{split}.npz"
    if path is None or not path.exists():
        return None
    with np.load(path) as f:
        return {k: f[k] for k in PROBE}, f["labels"]


def subsample(y: np.ndarray, k: int | None, seed: int) -> np.ndarray:
    """Indices of ``k`` training examples per class (all when ``k`` is None)."""
    if k is None:
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:k]
                                   for c in np.unique(y)]))


def holdout(data: tuple[torch.Tensor, np.ndarray], per_class: int, seed: int = 0
            ) -> tuple[tuple[torch.Tensor, np.ndarray], tuple[torch.Tensor, np.ndarray]]:
    """``(train, test)``: ``per_class`` photos of each class of ``data`` (seeded) are the test."""
    test = subsample(data[1], per_class, seed)
    train = np.setdiff1d(np.arange(len(data[1])), test)
    return (data[0][train], data[1][train]), (data[0][test], data[1][test])


def scores(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(metrics.accuracy(y_true, proba, classes=classes), 4),
        "nll": round(metrics.nll(y_true, proba, classes=classes), 4),
        "ece": round(metrics.ece(y_true, proba, classes=classes), 4),
    }


# ----- fine-tuning -------------------------------------------------------------------------
def hflip(x: torch.Tensor) -> torch.Tensor:
    """Random horizontal flip of each image of a batch (the training augmentation)."""
    flip = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def augment_name(augment: Any) -> str | None:
    """How a row names its augmentation (JSON)."""
    return None if augment is None else "hflip" if augment is hflip else repr(augment)


CROPS = rp.RandomResizedCropFlip(scale=(0.35, 1.0), flip=0.5)
CROP_FT = {"head_init": "probe", "probe_C": 0.05, "lr": 1e-3, "body_lr_mult": 0.1,
           "max_epochs": 8, "augment": CROPS}
FIRE8_9 = {"freeze": "up_to:fire7/concat"}  # fire8, fire9 and the head train

# name: FineTuneRepurposer settings (transfer layer fire9/concat unless given; K = all; no
# validation split, the fixed number of epochs is reported). "lp-ft": head_init="probe".
FINETUNE: dict[str, dict[str, Any]] = {
    "finetune head": {"freeze": "up_to:fire9/concat", "lr": 1e-3, "max_epochs": 200},
    "lp-ft head": {"freeze": "up_to:fire9/concat", "head_init": "probe", "lr": 1e-4,
                   "max_epochs": 20},
    "lp-ft fire8-9": {"freeze": "up_to:fire7/concat", "head_init": "probe", "lr": 1e-4,
                      "body_lr_mult": 0.1, "max_epochs": 3, "augment": hflip},
    "lp-ft all": {"freeze": None, "head_init": "probe", "lr": 1e-4, "body_lr_mult": 0.1,
                  "max_epochs": 2, "augment": hflip},
    # LP-FT with random resized crops + flips (CROP_FT) from a weak probe (probe_C 0.05, so
    # the head does not start saturated), or the default probe (C = 1); the head on fire9
    # or on the pooled ImageNet scores (keeping conv_final)
    "lp-ft fire8-9 crops": {**CROP_FT, **FIRE8_9, "probe_C": 1.0},
    "lp-ft fire8-9 crops C0.05": {**CROP_FT, **FIRE8_9},
    "lp-ft fire8-9 crops C0.05 12ep": {**CROP_FT, **FIRE8_9, "max_epochs": 12},
    # WiSE-FT: the weights end 1/4 of the way back to the LP-FT start (a chosen on --holdout)
    "lp-ft fire8-9 crops C0.05 wise0.75": {**CROP_FT, **FIRE8_9, "wise_alpha": 0.75},
    "lp-ft fire9 crops C0.05": {**CROP_FT, "freeze": "up_to:pool8"},
    "lp-ft all crops C0.05": {**CROP_FT, "freeze": None},
    "lp-ft fire8-final crops": {**CROP_FT, **FIRE8_9, "transfer_layer": "pool_final",
                                "probe_C": 1.0},
    "lp-ft fire8-final crops C0.05": {**CROP_FT, **FIRE8_9, "transfer_layer": "pool_final"},
    # the same with conv_final (the ImageNet classifier) frozen: fire8-9 learn under it
    "lp-ft fire8-9 under final crops C0.05": {**CROP_FT, "transfer_layer": "pool_final",
                                              "freeze": ["conv1", "fire[2-7]/*",
                                                         "conv_final"]},
}


class Paused(Exception):
    """This process has used its epoch budget; a later run resumes from the checkpoint."""


def epoch_budget(n: int | None, epochs: int) -> list[Callable[[int, dict[str, float]], None]]:
    """A callback that stops training (by raising :class:`Paused`) after ``n`` epochs,
    unless the run has just finished its ``epochs`` (then the row is written now)."""
    if n is None:
        return []
    done = []

    def count(epoch: int, logs: dict[str, float]) -> None:
        done.append(epoch)
        if len(done) >= n and epoch + 1 < epochs:
            raise Paused(f"paused after epoch {epoch + 1}")

    return [count]


QUICK_FINETUNE = ("lp-ft head", "lp-ft all crops C0.05")  # cached; whole network, crops


def finetune_rows(handler: Any, train: tuple[torch.Tensor, np.ndarray],
                  test: tuple[torch.Tensor, np.ndarray], quick: bool,
                  names: Sequence[str], checkpoints: Path | None = None,
                  budget: int | None = None, seed: int = 0, wise_alphas: Sequence[float] = (),
                  tag: str = "") -> list[dict[str, Any]]:
    """Fine-tune each named recipe. With ``checkpoints``, every epoch is saved there and a
    recipe stopped by ``budget`` (epochs per process) resumes in a later run; its row is
    written by the run that finishes it (``fit_s`` is then that run's share only). With
    ``wise_alphas``, the recipe is trained without WiSE-FT and each ``a`` gets a row of
    its own (``wise_rows``). ``tag`` is appended to every recipe name."""
    rows = []
    for name in names:
        settings = {"batch_size": 32, **FINETUNE[name]}
        if quick and name not in QUICK_FINETUNE:
            continue
        if quick:
            settings["max_epochs"] = 1
        settings.setdefault("transfer_layer", "fire9/concat")
        if wise_alphas:
            settings["wise_alpha"] = 1.0
        rep = rp.FineTuneRepurposer(
            handler, validation_fraction=0.0, patience=None,
            random_state=seed, progress=False,
            callbacks=epoch_budget(budget, settings["max_epochs"]),
            checkpoint_dir=None if checkpoints is None
            else checkpoints / f"{name.replace(' ', '_')}_seed{seed}",
            **settings)
        start = time.perf_counter()
        try:
            rep.fit(train[0], train[1])
        except Paused as stop:
            print(f"{name}: {stop} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)
            continue
        fit_s = time.perf_counter() - start
        proba = rep.predict_proba(test[0])
        shown = {k: v for k, v in rep.get_params().items()
                 if k in ("transfer_layer", "freeze", "head_init", "probe_C", "lr",
                          "body_lr_mult", "max_epochs", "batch_size", "optimizer",
                          "schedule", "weight_decay", "wise_alpha")}
        rows.append({"recipe": name + tag, "family": "finetune", "K": "all", "seed": seed,
                     **scores(test[1], proba, rep.classes_), "fit_s": round(fit_s, 2),
                     "settings": {**shown, "augment": augment_name(rep.augment)},
                     "train_loss": [round(v, 4) for v in rep.history_["loss"]]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
        if wise_alphas:
            rows += wise_rows(rep, train, test, wise_alphas, rows[-1])
    return rows


def wise_rows(rep: Any, train: tuple[torch.Tensor, np.ndarray],
              test: tuple[torch.Tensor, np.ndarray], alphas: Sequence[float],
              row: dict[str, Any]) -> list[dict[str, Any]]:
    """WiSE-FT at each ``a`` of ``alphas`` from one fine-tuned ``rep`` (its ``row``): the
    LP-FT start is refitted (``wise_alpha=0``, one epoch: exactly the start), then every
    mix ``(1 - a) * start + a * fine-tuned`` is scored. The same as ``wise_alpha=a``."""
    start = type(rep)(**{**rep.get_params(), "wise_alpha": 0.0, "max_epochs": 1,
                         "checkpoint_dir": None, "callbacks": None}).fit(train[0], train[1])
    begin, end = snapshot(start.model_), snapshot(rep.model_)
    out = []
    for alpha in alphas:
        rep.model_.load_state_dict(end)
        interpolate_weights(rep.model_, begin, float(alpha))
        proba = rep.predict_proba(test[0])
        out.append({**row, "recipe": f"{row['recipe']} wise{alpha:g}",
                    **scores(test[1], proba, rep.classes_),
                    "settings": {**row["settings"], "wise_alpha": float(alpha)}})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)  # progress
    rep.model_.load_state_dict(end)
    return out


# ----- feature recipes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    layers: Sequence[str]
    make: Callable[[int], Any]  # seed -> unfitted repurposer


class CVSearch:
    """Pick settings by stratified k-fold CV on the training features alone, then refit.

    The score is the mean fold accuracy (ties: the lower mean NLL); the test split is never
    seen. ``best_`` holds the chosen settings.
    """

    def __init__(self, make: Callable[..., Any], grid: Sequence[dict[str, Any]], folds: int,
                 seed: int) -> None:
        self.make, self.grid, self.folds, self.seed = make, list(grid), folds, seed

    def fit_features(self, feats: dict[str, np.ndarray], y: np.ndarray) -> CVSearch:
        from sklearn.model_selection import StratifiedKFold

        n_splits = min(self.folds, int(np.unique(y, return_counts=True)[1].min()))
        splits = list(StratifiedKFold(n_splits, shuffle=True, random_state=self.seed)
                      .split(np.zeros(len(y)), y))
        ranked = []
        for params in self.grid:
            fold = []
            for tr, va in splits:
                rep = self.make(**params).fit_features({k: v[tr] for k, v in feats.items()},
                                                       y[tr])
                proba = rep.predict_proba_features({k: v[va] for k, v in feats.items()})
                cell = scores(y[va], proba, rep.classes_)
                fold.append((cell["accuracy"], -cell["nll"]))
            ranked.append(tuple(np.mean(fold, axis=0)))
        self.best_ = self.grid[max(range(len(self.grid)), key=ranked.__getitem__)]
        self.model_ = self.make(**self.best_).fit_features(feats, y)
        self.classes_ = self.model_.classes_
        return self

    def predict_proba_features(self, feats: dict[str, np.ndarray]) -> np.ndarray:
        return self.model_.predict_proba_features(feats)


def grid(**axes: Sequence[Any]) -> list[dict[str, Any]]:
    """Every combination of the axes' values, as keyword dicts."""
    import itertools

    return [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]


H2T_GRID = grid(keep=[0.01, 0.02, 0.05, 0.1, 0.2], alpha=[0.03, 0.1, 0.3])
# decoupled weight decay (times lr per step) from the default 1e-3 to strong, with the
# default early stopping on a 10% split (patience 10)
GATED_GRID = grid(weight_decay=[1e-3, 1e-1, 1.0], stop=[(0.1, 10)])


def cv_recipes(quick: bool) -> list[Recipe]:
    """Head2Toe and the paper's gate with their settings chosen by CV on the training data."""
    q = {"progress": False}
    gated_epochs = 5 if quick else 100
    folds = 2 if quick else 3
    h2t_grid = H2T_GRID[:2] if quick else H2T_GRID
    gated_grid = GATED_GRID[:2] if quick else GATED_GRID

    def gated(seed: int, weight_decay: float, stop: tuple[float, int | None]) -> Any:
        return rp.GatedRepurposer(weight_decay=weight_decay, validation_fraction=stop[0],
                                  patience=stop[1], max_epochs=gated_epochs, **q,
                                  random_state=seed)

    return [
        Recipe("head2toe cv", "multi", PROBE, lambda s: CVSearch(
            lambda **p: rp.Head2ToeRepurposer(**p, **q, random_state=s), h2t_grid, folds, s)),
        Recipe("gated paper fire8+9 cv", "gated", PAIR, lambda s: CVSearch(
            lambda **p: gated(s, **p), gated_grid, folds, s)),
    ]


def feature_recipes(quick: bool) -> list[Recipe]:
    q = {"progress": False}
    bnn_iter = 100 if quick else 1000
    gated_epochs = 5 if quick else 100
    out: list[Recipe] = []
    for layer in SINGLE:
        short = SHORT[layer]
        out += [
            Recipe(f"lr {short}", "lr", [layer],
                   lambda s: rp.LogisticRegressionRepurposer(**q, random_state=s)),
            Recipe(f"svm {short}", "svm", [layer],
                   lambda s: rp.SVMRepurposer(kernel="linear", **q, random_state=s)),
            Recipe(f"gp {short}", "gp", [layer],
                   lambda s: rp.GPRepurposer(**q, random_state=s)),
            Recipe(f"bnn {short}", "bnn", [layer],
                   lambda s: rp.BNNRepurposer(n_iter=bnn_iter, **q, random_state=s)),
        ]
    out += [  # the lower layers, linear probe only (the best single layer far from ImageNet)
        Recipe(f"lr {SHORT[layer]}", "lr", [layer],
               lambda s: rp.LogisticRegressionRepurposer(**q, random_state=s))
        for layer in PROBE if layer not in SINGLE
    ]
    out += [
        Recipe("lr concat", "multi", SINGLE,
               lambda s: rp.LogisticRegressionRepurposer(**q, random_state=s)),
        Recipe("lr average fire8+9", "multi", PAIR,
               lambda s: rp.LogisticRegressionRepurposer(combine="average", **q,
                                                         random_state=s)),
        Recipe("gp concat", "multi", SINGLE, lambda s: rp.GPRepurposer(**q, random_state=s)),
        Recipe("ensemble lr", "multi", SINGLE,
               lambda s: rp.EnsembleRepurposer(progress=False)),
        Recipe("head2toe", "multi", PROBE,
               lambda s: rp.Head2ToeRepurposer(**q, random_state=s)),
    ]
    # every gate on the equal-width pair; the paper's and two extensions on all four layers
    variants = [(g, PAIR, "fire8+9") for g in rp.GatedRepurposer.GATES]
    variants += [(g, SINGLE, "4 layers") for g in ("paper", "temperature", "lowrank")]
    for gate, layers, tag in variants:
        out.append(Recipe(
            f"gated {gate} {tag}", "gated", layers,
            lambda s, g=gate: rp.GatedRepurposer(gate=g, max_epochs=gated_epochs, **q,
                                                 random_state=s)))
    # per-layer probes mixed by a gate fitted on out-of-fold logits (any widths)
    for layers, tag in ((SINGLE, "4 layers"), (TOP, "fire9+final"), (PROBE, "9 layers")):
        out.append(Recipe(f"gated experts {tag}", "gated", layers,
                          lambda s: rp.GatedExpertsRepurposer(**q, random_state=s)))
    return out


def fit_predict(r: Recipe, seed: int, train: dict[str, np.ndarray], y: np.ndarray,
                idx: np.ndarray, test: dict[str, np.ndarray]) -> tuple[Any, np.ndarray, float]:
    """``(fitted repurposer, test probabilities, fit seconds)`` of recipe ``r`` on ``idx``."""
    rep = r.make(seed)
    start = time.perf_counter()
    rep.fit_features({name: train[name][idx] for name in r.layers}, y[idx])
    fit_s = time.perf_counter() - start
    return rep, rep.predict_proba_features({name: test[name] for name in r.layers}), fit_s


def test_set(train: dict[str, np.ndarray], y: np.ndarray, idx: np.ndarray,
             test: dict[str, np.ndarray], y_test: np.ndarray, rest: bool
             ) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """A split's test features and labels: the test split, and with ``rest`` also every
    training photo not drawn for this split (``--test-rest``: a larger test at small K)."""
    unused = np.setdiff1d(np.arange(len(y)), idx)
    if not rest or len(unused) == 0:
        return test, y_test
    return ({name: np.concatenate([test[name], train[name][unused]]) for name in test},
            np.concatenate([y_test, y[unused]]))


@dataclass(frozen=True)
class Protocol:
    """How every split is trained and tested: the features and labels of the training and
    test photos, ``rest`` (``--test-rest``) and ``folds`` (``--pool-folds``: at K = all,
    out-of-fold predictions over the training and test photos pooled, so every photo is
    tested once, by a model that never saw it)."""

    train: dict[str, np.ndarray]
    y: np.ndarray
    test: dict[str, np.ndarray]
    y_test: np.ndarray
    rest: bool = False
    folds: int = 0

    def run(self, r: Recipe, k: int | None, seed: int
            ) -> tuple[Any, np.ndarray, float, np.ndarray]:
        """``(fitted repurposer, probabilities, fit seconds, their true labels)``."""
        if k is None and self.folds:
            return self._pooled(r, seed)
        idx = subsample(self.y, k, seed)
        x, y_eval = test_set(self.train, self.y, idx, self.test, self.y_test, self.rest)
        return (*fit_predict(r, seed, self.train, self.y, idx, x), y_eval)

    def _pooled(self, r: Recipe, seed: int) -> tuple[Any, np.ndarray, float, np.ndarray]:
        from sklearn.model_selection import StratifiedKFold

        feats = {n: np.concatenate([self.train[n], self.test[n]]) for n in r.layers}
        labels = np.concatenate([self.y, self.y_test])
        proba: np.ndarray | None = None
        total = 0.0
        folds = StratifiedKFold(self.folds, shuffle=True, random_state=seed)
        for fit_idx, test_idx in folds.split(labels, labels):
            rep, p, fit_s = fit_predict(r, seed, feats, labels, fit_idx,
                                        {n: f[test_idx] for n, f in feats.items()})
            proba = np.zeros((len(labels), p.shape[1])) if proba is None else proba
            proba[test_idx] = p
            total += fit_s
        assert proba is not None
        return rep, proba, total / self.folds, labels

    @property
    def tag(self) -> dict[str, Any]:
        """What a row records of the protocol (nothing for the default one)."""
        return {"pool_folds": self.folds} if self.folds else {}


def compare_rows(recipes: Sequence[Recipe], pairs: Sequence[tuple[str, str]],
                 protocol: Protocol, ks: Sequence[int | None], n_seeds: int
                 ) -> list[dict[str, Any]]:
    """For each pair ``(a, b)``, split and seed: accuracy and ECE of a minus b, with a 95%
    paired-bootstrap interval over the test photos (``repurpose.metrics.paired_bootstrap``)."""
    by_name = {r.name: r for r in recipes}
    names = list(dict.fromkeys(n for pair in pairs for n in pair))  # each fitted once a split
    rows = []
    for k in ks:
        for seed in range(1 if k is None else n_seeds):
            fitted = {n: protocol.run(by_name[n], k, seed) for n in names}
            for a, b in pairs:
                y_split = fitted[a][3]  # the same photos for every recipe of the split
                row: dict[str, Any] = {"a": a, "b": b, "K": "all" if k is None else k,
                                       "seed": seed, "n_test": len(y_split), **protocol.tag}
                for m in ("accuracy", "ece"):
                    diff = metrics.paired_bootstrap(y_split, fitted[a][1], fitted[b][1],
                                                    metric=m, classes=fitted[a][0].classes_)
                    row[m] = {key: round(v, 4) for key, v in diff.items()}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)  # progress
    return rows


def compare_pairs(spec: str | None, quick: bool, parser: argparse.ArgumentParser
                  ) -> list[tuple[str, str]]:
    """``--compare "a/b,c/d"`` as pairs of known feature recipe names."""
    pairs = [p.split("/", 1) for p in (spec or "").split(",") if p]
    known = {r.name for r in feature_recipes(quick)}
    if any(len(p) != 2 or not set(p) <= known for p in pairs):
        parser.error(f"--compare: expected a/b pairs of {sorted(known)}; got {spec!r}")
    return [(a, b) for a, b in pairs] or ([("gp fire9", "lr fire9")] if quick else [])


def feature_rows(recipes: Sequence[Recipe], protocol: Protocol, ks: Sequence[int | None],
                 n_seeds: int) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        for seed in range(1 if k is None else n_seeds):
            for r in recipes:
                rep, proba, fit_s, y_split = protocol.run(r, k, seed)
                rows.append({"recipe": r.name, "family": r.family,
                             "K": "all" if k is None else k, "seed": seed,
                             **scores(y_split, proba, rep.classes_), "fit_s": round(fit_s, 2),
                             **({"n_test": len(y_split)}
                                if protocol.rest or protocol.folds else {}),
                             **protocol.tag})
                if hasattr(rep, "best_"):
                    rows[-1]["chosen"] = dict(rep.best_)
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
    return rows


# ----- summary -----------------------------------------------------------------------------
def summarise(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """``{recipe: {K: {metric_mean, metric_std, n}}}`` over the seeds."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    keys: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        keys.setdefault((row["recipe"], str(row["K"])), []).append(row)
    for (name, k), group in keys.items():
        cell: dict[str, float] = {"n": len(group)}
        for m in ("accuracy", "nll", "ece", "fit_s"):
            vals = np.array([g[m] for g in group], dtype=float)
            cell[f"{m}_mean"] = round(float(vals.mean()), 4)
            cell[f"{m}_std"] = round(float(vals.std()), 4)
        table.setdefault(name, {})[k] = cell
    return table


FIGURE = ["lr fire9", "lr pool_final", "lr concat", "ensemble lr", "gp fire9", "gp pool_final",
          "head2toe", "gated paper fire8+9", "gated lowrank fire8+9", "gated paper 4 layers",
          "gated experts 4 layers", "gated experts fire9+final"]


def figure(summary: dict[str, dict[str, dict[str, float]]], path: Path,
           target: str = "flowers12") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = ["5", "10", "20", "all"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colours = [*plt.get_cmap("tab10").colors, "black", "darkred"]
    for n, name in enumerate(FIGURE):
        cells = summary.get(name, {})
        xs = [i for i, k in enumerate(ks) if k in cells]
        if len(xs) < 2:
            continue
        for ax, metric in zip(axes, ("accuracy", "ece"), strict=True):
            ax.plot(xs, [cells[ks[i]][f"{metric}_mean"] for i in xs], marker="o",
                    label=name, lw=1.2, color=colours[n % len(colours)],
                    ls="-" if n < 10 else "--")
    for ax, metric in zip(axes, ("accuracy", "ECE"), strict=True):
        ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{target} with ImageNet SqueezeNet features (mean over the seeds run)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, one seed: a smoke run")
    parser.add_argument("--only", choices=("features", "finetune"), default=None)
    parser.add_argument("--data", type=Path, default=REALDATA)
    parser.add_argument("--target", choices=tuple(TARGETS), default="flowers12",
                        help="flowers12 (near ImageNet) or digits (scikit-learn's 8x8 "
                        "digits, far from it; 60 train and 30 test images per digit)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ks", default="5,10,20,all",
                        help="training images per class, comma-separated ('all': every one)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the features here (default: a temporary directory), so "
                        "that several processes of one run share one extraction")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="summarise the rows of earlier --out files instead of running")
    parser.add_argument("--finetune", default=",".join(FINETUNE),
                        help="comma-separated fine-tuning recipes to run, of: "
                        + ", ".join(FINETUNE))
    parser.add_argument("--recipes", default=None,
                        help="comma-separated feature recipe names or families to run "
                        "(default: all)")
    parser.add_argument("--compare", default=None,
                        help='pairs of feature recipes "a/b,c/d": refit both on every split '
                        "and report a minus b (accuracy, ECE) with a 95%% paired-bootstrap "
                        'interval (--quick: "gp fire9/lr fire9")')
    parser.add_argument("--finetune-seed", type=int, default=0,
                        help="random_state of the fine-tuning runs (shuffling, crops, head)")
    parser.add_argument("--wise-alphas", default=None,
                        help='WiSE-FT: "0,0.5,1" also scores each mix of the LP-FT start '
                        "and the fine-tuned weights (one fine-tuning run per recipe)")
    parser.add_argument("--drop9-off", action="store_true",
                        help="fine-tune with SqueezeNet's own dropout (drop9, p = 0.5) off")
    parser.add_argument("--checkpoints", type=Path, default=None,
                        help="save fine-tuning checkpoints here (a later run resumes)")
    parser.add_argument("--epoch-budget", type=int, default=None,
                        help="with --checkpoints: epochs per run before pausing")
    parser.add_argument("--holdout", type=int, default=None,
                        help="test on this many training photos per class (a seeded draw) "
                        "and train on the rest; the val photos are not used. For choosing "
                        "settings without looking at the test split")
    parser.add_argument("--test-rest", action="store_true",
                        help="at K < all, test on the val photos and every training photo "
                        "not drawn for the split (about 900 photos at K = 5 instead of 240)")
    parser.add_argument("--pool-folds", type=int, default=0,
                        help="at K = all, pool the training and test photos and test each "
                        "by N-fold cross-fitting (960 test photos on the flowers, not 240)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--figure", type=Path, default=None, help="accuracy/ECE plot (PNG)")
    args = parser.parse_args()
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(f.read_text())["rows"]]
        report = {**json.loads(args.merge[0].read_text()), "merged_from": len(args.merge),
                  "summary": summarise(rows), "rows": rows}
        return finish(report, args.out, args.figure)
    pairs = compare_pairs(args.compare, args.quick, parser)
    if args.pool_folds < 0 or args.pool_folds == 1:
        parser.error(f"--pool-folds {args.pool_folds}: use 0 (off) or 2 or more folds")
    torch.set_num_threads(args.threads)
    handler = load_handler(args.data)
    if args.drop9_off:
        handler.module.drop9.p = 0.0  # surgery and fine-tuning keep the edit
    flowers = args.data / "flowers12"
    # --cache holds the features of flowers12's own train and val splits, nothing else
    shares_cache = args.holdout is None and args.target == "flowers12"
    reuse = cached(args.cache, "train"), cached(args.cache, "val")
    if not shares_cache:
        reuse = None, None
    if args.only == "features" and reuse[0] is not None and reuse[1] is not None:
        (f_train, y_train), (f_test, y_test) = reuse
    else:
        if args.target == "digits":
            train, test = load_digits(handler, (6, 3) if args.quick else (60, 30))
        else:
            train = load_split(handler, flowers / "train", 6 if args.quick else None)
            test = load_split(handler, flowers / "val", 3 if args.quick else None)
        if args.holdout is not None:
            train, test = holdout(train, args.holdout)
        y_train, y_test = train[1], test[1]
    ks: list[int | None] = [None if k == "all" else int(k) for k in args.ks.split(",")]
    if args.quick:
        ks = [2, None]
    rows: list[dict[str, Any]] = []
    comparisons: list[dict[str, Any]] = []
    start = time.perf_counter()
    if args.only != "finetune":
        if reuse[0] is None or reuse[1] is None or args.only != "features":
            with tempfile.TemporaryDirectory(prefix="bench_transfer_") as tmp:
                cache = args.cache if args.cache is not None and shares_cache else Path(tmp)
                cache.mkdir(parents=True, exist_ok=True)
                f_train = extract(handler, train, cache, "train")
                f_test = extract(handler, test, cache, "val")
        recipes = feature_recipes(args.quick) + cv_recipes(args.quick)
        if args.quick:
            assert set(QUICK_RECIPES) <= {r.name for r in recipes}, "QUICK_RECIPES is stale"
            recipes = [r for r in recipes if r.name in QUICK_RECIPES]
        if args.recipes is not None:
            wanted = set(args.recipes.split(","))
            recipes = [r for r in recipes if r.name in wanted or r.family in wanted]
        protocol = Protocol(f_train, y_train, f_test, y_test, args.test_rest, args.pool_folds)
        n_seeds = 1 if args.quick else args.seeds
        rows += feature_rows(recipes, protocol, ks, n_seeds)
        comparisons = compare_rows(feature_recipes(args.quick), pairs, protocol, ks, n_seeds)
    if args.only != "features":
        names = args.finetune.split(",")
        unknown = sorted(set(names) - set(FINETUNE))
        if unknown:
            parser.error(f"--finetune: unknown {unknown}; choose from {list(FINETUNE)}")
        alphas = [float(a) for a in args.wise_alphas.split(",")] if args.wise_alphas else []
        rows += finetune_rows(handler, train, test, args.quick, names, args.checkpoints,
                              args.epoch_budget, args.finetune_seed, alphas,
                              ", drop9 off" if args.drop9_off else "")
    summary = summarise(rows)
    report = {
        "benchmark": "transfer",
        "source": "ImageNet SqueezeNet v1.0 (Caffe), pooled fireN/concat and pool_final",
        "target": TARGETS[args.target] if args.holdout is None else
        f"{args.target}: training images only: {args.holdout} per class held out as the "
        "test, trained on the rest",
        "quick": args.quick, "holdout": args.holdout, "test_rest": args.test_rest,
        "pool_folds": args.pool_folds,
        "n_train": len(y_train), "n_test": len(y_test),
        "seeds": 1 if args.quick else args.seeds,
        "torch_threads": args.threads, "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - start, 1),
        "summary": summary, "rows": rows,
    }
    if comparisons:
        report["comparisons"] = comparisons
    finish(report, args.out, args.figure)


def markdown(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    """The summary as a Markdown table: accuracy / ECE per K (mean ± std over the seeds)."""
    ks = ["5", "10", "20", "all"]
    lines = ["| recipe | " + " | ".join(f"K={k} acc / ECE" for k in ks) + " | fit s, K=all |",
             "|---" * (len(ks) + 2) + "|"]
    for name, cells in summary.items():
        out = []
        for k in ks:
            c = cells.get(k)
            if c is None:
                out.append("–")
            elif c["n"] > 1:
                out.append(f"{c['accuracy_mean']:.3f} ± {c['accuracy_std']:.3f} / "
                           f"{c['ece_mean']:.3f}")
            else:
                out.append(f"{c['accuracy_mean']:.3f} / {c['ece_mean']:.3f}")
        fit = cells.get("all", {}).get("fit_s_mean")
        lines.append(f"| {name} | " + " | ".join(out) + f" | {'' if fit is None else fit:} |")
    return "\n".join(lines)


def finish(report: dict[str, Any], out: Path | None, fig: Path | None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if fig is not None:
        figure(report["summary"], fig, report["target"].split(":")[0])
    print(markdown(report["summary"]), file=sys.stderr)


if __name__ == "__main__":
    main()
