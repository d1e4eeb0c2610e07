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

    python benchmarks/bench_transfer.py --quick                 # smoke run, about a minute
    python benchmarks/bench_transfer.py --out docs/data/transfer.json --figure docs/img/transfer.png
    python benchmarks/bench_transfer.py --only features         # no fine-tuning
    python benchmarks/bench_transfer.py --only finetune
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

REALDATA = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
SINGLE = ["fire7/concat", "fire8/concat", "fire9/concat", "pool_final"]
PROBE = [f"fire{i}/concat" for i in range(2, 10)] + ["pool_final"]
PAIR = ["fire8/concat", "fire9/concat"]  # the two equal-width top layers (as fc6/fc7)
SHORT = {"fire7/concat": "fire7", "fire8/concat": "fire8", "fire9/concat": "fire9",
         "pool_final": "pool_final"}


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


def scores(y_true: np.ndarray, proba: np.ndarray, classes: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(metrics.accuracy(y_true, proba, classes=classes), 4),
        "nll": round(metrics.nll(y_true, proba, classes=classes), 4),
        "ece": round(metrics.ece(y_true, proba, classes=classes), 4),
    }


# ----- fine-tuning -------------------------------------------------------------------------
FINETUNE = {
    # name: (freeze, max_epochs)
    "finetune head": ("up_to:fire9/concat", 2),
    "finetune fire8-9": ("up_to:fire7/concat", 2),
    "finetune all": (None, 2),
}


def finetune_rows(handler: Any, train: tuple[torch.Tensor, np.ndarray],
                  test: tuple[torch.Tensor, np.ndarray], quick: bool) -> list[dict[str, Any]]:
    rows = []
    for name, (freeze, epochs) in FINETUNE.items():
        rep = rp.FineTuneRepurposer(
            handler, transfer_layer="fire9/concat", freeze=freeze, lr=1e-3,
            body_lr_mult=0.1, max_epochs=1 if quick else epochs, batch_size=32,
            validation_fraction=0.0, patience=None, random_state=0, progress=False,
        )
        start = time.perf_counter()
        rep.fit(train[0], train[1])
        fit_s = time.perf_counter() - start
        proba = rep.predict_proba(test[0])
        rows.append({"recipe": name, "family": "finetune", "K": "all", "seed": 0,
                     **scores(test[1], proba, rep.classes_), "fit_s": round(fit_s, 2),
                     "settings": {"freeze": freeze, "max_epochs": rep.max_epochs,
                                  "lr": rep.lr, "body_lr_mult": rep.body_lr_mult,
                                  "batch_size": rep.batch_size}})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)  # progress
    return rows


# ----- feature recipes ---------------------------------------------------------------------
@dataclass(frozen=True)
class Recipe:
    name: str
    family: str
    layers: Sequence[str]
    make: Callable[[int], Any]  # seed -> unfitted repurposer


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
    return out


def feature_rows(recipes: Sequence[Recipe], train: dict[str, np.ndarray], y: np.ndarray,
                 test: dict[str, np.ndarray], y_test: np.ndarray, ks: Sequence[int | None],
                 n_seeds: int) -> list[dict[str, Any]]:
    rows = []
    for k in ks:
        for seed in range(1 if k is None else n_seeds):
            idx = subsample(y, k, seed)
            for r in recipes:
                rep = r.make(seed)
                start = time.perf_counter()
                rep.fit_features({name: train[name][idx] for name in r.layers}, y[idx])
                fit_s = time.perf_counter() - start
                proba = rep.predict_proba_features({name: test[name] for name in r.layers})
                rows.append({"recipe": r.name, "family": r.family,
                             "K": "all" if k is None else k, "seed": seed,
                             **scores(y_test, proba, rep.classes_), "fit_s": round(fit_s, 2)})
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
          "head2toe", "gated paper fire8+9", "gated lowrank fire8+9", "gated paper 4 layers"]


def figure(summary: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = ["5", "10", "20", "all"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name in FIGURE:
        cells = summary.get(name, {})
        xs = [i for i, k in enumerate(ks) if k in cells]
        if len(xs) < 2:
            continue
        for ax, metric in zip(axes, ("accuracy", "ece"), strict=True):
            ax.plot(xs, [cells[ks[i]][f"{metric}_mean"] for i in xs], marker="o",
                    label=name, lw=1.2)
    for ax, metric in zip(axes, ("accuracy", "ECE"), strict=True):
        ax.set_xticks(range(len(ks)), [f"K={k}" for k in ks])
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper right")
    fig.suptitle("flowers12 with ImageNet SqueezeNet features (mean over the seeds run)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small data, one seed: a smoke run")
    parser.add_argument("--only", choices=("features", "finetune"), default=None)
    parser.add_argument("--data", type=Path, default=REALDATA)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--ks", default="5,10,20,all",
                        help="training images per class, comma-separated ('all': every one)")
    parser.add_argument("--cache", type=Path, default=None,
                        help="keep the features here (default: a temporary directory), so "
                        "that several processes of one run share one extraction")
    parser.add_argument("--merge", type=Path, nargs="+", default=None,
                        help="summarise the rows of earlier --out files instead of running")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--figure", type=Path, default=None, help="accuracy/ECE plot (PNG)")
    args = parser.parse_args()
    if args.merge:
        rows = [r for f in args.merge for r in json.loads(f.read_text())["rows"]]
        report = {**json.loads(args.merge[0].read_text()), "merged_from": len(args.merge),
                  "summary": summarise(rows), "rows": rows}
        return finish(report, args.out, args.figure)
    torch.set_num_threads(args.threads)
    handler = load_handler(args.data)
    flowers = args.data / "flowers12"
    reuse = cached(args.cache, "train"), cached(args.cache, "val")
    if args.only == "features" and reuse[0] is not None and reuse[1] is not None:
        (f_train, y_train), (f_test, y_test) = reuse
    else:
        train = load_split(handler, flowers / "train", 6 if args.quick else None)
        test = load_split(handler, flowers / "val", 3 if args.quick else None)
        y_train, y_test = train[1], test[1]
    ks: list[int | None] = [None if k == "all" else int(k) for k in args.ks.split(",")]
    if args.quick:
        ks = [2, None]
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    if args.only != "finetune":
        if reuse[0] is None or reuse[1] is None or args.only != "features":
            with tempfile.TemporaryDirectory(prefix="bench_transfer_") as tmp:
                cache = args.cache or Path(tmp)
                cache.mkdir(parents=True, exist_ok=True)
                f_train = extract(handler, train, cache, "train")
                f_test = extract(handler, test, cache, "val")
        rows += feature_rows(feature_recipes(args.quick), f_train, y_train, f_test, y_test,
                             ks, 1 if args.quick else args.seeds)
    if args.only != "features":
        rows += finetune_rows(handler, train, test, args.quick)
    summary = summarise(rows)
    report = {
        "benchmark": "transfer",
        "source": "ImageNet SqueezeNet v1.0 (Caffe), pooled fireN/concat and pool_final",
        "target": "flowers12: 12 classes, train K per class, test on val (20 per class)",
        "quick": args.quick,
        "n_train": len(y_train), "n_test": len(y_test),
        "seeds": 1 if args.quick else args.seeds,
        "torch_threads": args.threads, "machine": platform.machine(),
        "date": time.strftime("%Y-%m-%d"), "wall_s": round(time.perf_counter() - start, 1),
        "summary": summary, "rows": rows,
    }
    finish(report, args.out, args.figure)


def finish(report: dict[str, Any], out: Path | None, fig: Path | None) -> None:
    text = json.dumps(report, indent=1)
    print(text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    if fig is not None:
        figure(report["summary"], fig)


if __name__ == "__main__":
    main()
