"""Do repurposed models know what they don't know? LR, SVM, GP and BNN on the digits task.

A small CNN pretrained on digits 0-4 (repurpose.datasets) gives features (layers fc6 and fc7)
for a new task: digits 5-9 with K labelled images per class. For K = 5, 10, 20, 50 and a few
seeds, each repurposer is scored on the remaining 5-9 images (accuracy, NLL, ECE) and on
telling them apart from digits 0-4, which it has never been asked about (OOD AUROC from the
predictive entropy). Prints a Markdown table (means over seeds) and saves two figures to
docs/img/: a reliability diagram and an uncertainty bar chart.

Run from the repository root:  python examples/uncertainty.py
With REPURPOSE_SMOKE=1 it runs one K and one seed in a few seconds, writing figures to a
temporary directory.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

import repurpose as rp
from repurpose import metrics
from repurpose.datasets import load_digits_split, pretrained_digits_cnn

SMOKE = os.environ.get("REPURPOSE_SMOKE") == "1"
KS = (10,) if SMOKE else (5, 10, 20, 50)
# The GP's and BNN's defaults were chosen on seeds 0 and 1; the table uses other seeds.
SEEDS = (2,) if SMOKE else (2, 3, 4)
LAYERS = ["fc6", "fc7"]
N_OOD = 300  # source-class digits shown to the 5-9 model


def make_models(seed: int) -> dict[str, rp.MetaModelRepurposer]:
    common = {"feature_layers": LAYERS, "progress": False}
    return {
        "LR": rp.LogisticRegressionRepurposer(**common),
        "SVM": rp.SVMRepurposer(random_state=seed, **common),
        "GP": rp.GPRepurposer(random_state=seed, **common),
        "BNN": rp.BNNRepurposer(random_state=seed, n_iter=300 if SMOKE else 1000, **common),
    }


def evaluate(handler: rp.ModelHandler, k: int, seed: int) -> tuple[dict, dict]:
    """Scores of every model for one (K, seed), plus the data needed for the figures."""
    split = load_digits_split(k, seed=seed)
    ood = split.X_source[np.random.default_rng(seed).permutation(len(split.X_source))[:N_OOD]]
    feats = {
        name: handler.extract(x, LAYERS, progress=False)
        for name, x in (("train", split.X_train), ("test", split.X_test), ("ood", ood))
    }
    scores, outputs = {}, {}
    for name, rep in make_models(seed).items():
        rep.fit_features(feats["train"], split.y_train)
        p_test = rep.predict_proba_features(feats["test"])
        p_ood = rep.predict_proba_features(feats["ood"])
        classes = rep.classes_
        scores[name] = {
            "accuracy": metrics.accuracy(split.y_test, p_test, classes=classes),
            "nll": metrics.nll(split.y_test, p_test, classes=classes),
            "ece": metrics.ece(split.y_test, p_test, classes=classes),
            "ood_auroc": metrics.ood_auroc(p_test, p_ood),
        }
        outputs[name] = (rep, p_test)
    return scores, {"split": split, "ood": ood, "feats": feats, "outputs": outputs}


def table(results: dict[int, list[dict]]) -> str:
    lines = [
        "| K | model | accuracy | NLL | ECE | OOD AUROC |",
        "|---|-------|----------|-----|-----|-----------|",
    ]
    for k, runs in results.items():
        for model in runs[0]:
            mean = {m: np.mean([r[model][m] for r in runs]) for m in runs[0][model]}
            lines.append(
                f"| {k} | {model} | {100 * mean['accuracy']:.1f} | {mean['nll']:.3f} | "
                f"{mean['ece']:.3f} | {mean['ood_auroc']:.3f} |"
            )
    return "\n".join(lines)


def check_targets(results: dict[int, list[dict]]) -> list[str]:
    """The issue's targets, per K: met or missed (reported, never hidden)."""
    out = []
    for k, runs in results.items():
        m = {
            model: {s: np.mean([r[model][s] for r in runs]) for s in runs[0][model]}
            for model in runs[0]
        }
        lr = m["LR"]
        for model in ("GP", "BNN"):
            diff = 100 * (m[model]["accuracy"] - lr["accuracy"])
            out.append(f"K={k} {model} accuracy within 1 point of LR: "
                       f"{'met' if diff >= -1 else 'MISSED'} ({diff:+.1f} points vs LR)")
            better = m[model]["ood_auroc"] > lr["ood_auroc"]
            out.append(f"K={k} {model} OOD AUROC above LR: {'met' if better else 'MISSED'} "
                       f"({m[model]['ood_auroc']:.3f} vs {lr['ood_auroc']:.3f})")
        ok = m["GP"]["ece"] <= lr["ece"]
        out.append(f"K={k} GP ECE at or below LR: {'met' if ok else 'MISSED'} "
                   f"({m['GP']['ece']:.3f} vs {lr['ece']:.3f})")
    return out


def figures(data: dict, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from repurpose.plot import reliability_diagram, uncertainty_bars

    split, outputs = data["split"], data["outputs"]
    ax = reliability_diagram(
        split.y_test,
        {name: p for name, (_, p) in outputs.items()},
        classes=outputs["LR"][0].classes_,
        title=f"digits 5-9, K = {split.k_per_class}",
    )
    ax.figure.savefig(out_dir / "reliability.png", dpi=80)
    plt.close(ax.figure)

    gp, lr = outputs["GP"][0], outputs["LR"][0]
    pick = {layer: np.r_[data["feats"]["test"][layer][:3], data["feats"]["ood"][layer][:3]]
            for layer in LAYERS}
    images = np.r_[split.X_test[:3], data["ood"][:3]]
    titles = [f"a {d} (in)" for d in split.y_test[:3]]
    titles += ["a source digit (OOD)"] * 3
    for name, rep, unc in (
        ("gp", gp, gp.predict_uncertainty_features(pick)),
        ("lr", lr, None),
    ):
        proba = unc.proba if unc is not None else rep.predict_proba_features(pick)
        std = unc.std if unc is not None else None
        fig = uncertainty_bars(proba, std, images=images, class_names=rep.classes_, titles=titles)
        fig.suptitle(f"{name.upper()}: predicted class probabilities", fontsize=10, y=1.06)
        fig.savefig(out_dir / f"uncertainty_bars_{name}.png", dpi=70, bbox_inches="tight")
        plt.close(fig)


def main() -> None:
    handler = rp.ModelHandler(pretrained_digits_cnn(progress=False))
    results: dict[int, list[dict]] = {}
    figure_data = None
    for k in KS:
        results[k] = []
        for seed in SEEDS:
            scores, data = evaluate(handler, k, seed)
            results[k].append(scores)
            if seed == SEEDS[0] and (k == 20 or SMOKE):
                figure_data = data
    print(f"Means over seeds {list(SEEDS)}; OOD = {N_OOD} digits 0-4 shown to the 5-9 model.\n")
    print(table(results))
    print()
    print("\n".join(check_targets(results)))
    if figure_data is not None:
        if SMOKE:
            with tempfile.TemporaryDirectory() as tmp:
                figures(figure_data, Path(tmp))
        else:
            out = Path("docs/img")
            out.mkdir(parents=True, exist_ok=True)
            figures(figure_data, out)
            print(f"\nFigures written to {out}/")


if __name__ == "__main__":
    main()
