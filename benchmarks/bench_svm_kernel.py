"""Benchmark: which SVM kernel wins on CNN features? Linear against RBF, same everything else.

Prints one JSON object with test accuracies of ``SVMRepurposer(kernel="linear")`` and
``SVMRepurposer(kernel="rbf")`` (all other parameters at their defaults):

* ``digits``: the demo task (the cached pretrained digits CNN, digits 5-9 from K labelled
  images per class; layers conv2 flattened, fc6, fc7 and fc6+fc7, the demo's settings),
  averaged over K in 5, 10, 20, 50 and ``--seeds`` draws of the K-shot set.
* ``flowers``: the real photos of ``../shared/realdata`` (12 classes, 60 train / 20 val per
  class), SqueezeNet v1.0 ``fire9/concat`` average-pooled, with its stated preprocessing.
  Skipped when the folder is absent.

Usage: ``python benchmarks/bench_svm_kernel.py [--quick] [--seeds N] [--flowers-cache F]``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from repurpose import ModelHandler, SVMRepurposer
from repurpose.datasets import load_digits_split, pretrained_digits_cnn

KERNELS = ("linear", "rbf")
REALDATA = Path(__file__).resolve().parents[2] / "shared" / "realdata"


def _accuracy(kernel: str, train: dict, y_train: Any, test: dict, y_test: Any,
              layers: list[str]) -> float:
    rep = SVMRepurposer(feature_layers=layers, kernel=kernel, progress=False)
    rep.fit_features(train, y_train)
    return float(np.mean(rep.predict_features(test) == y_test))


def digits(ks: list[int], seeds: int) -> dict[str, Any]:
    handler = ModelHandler(pretrained_digits_cnn(progress=False))
    specs = ["conv2", "fc6", "fc7", "fc6+fc7"]
    scores: dict[str, dict[str, list[float]]] = {k: {s: [] for s in specs} for k in KERNELS}
    for k in ks:
        for seed in range(seeds):
            split = load_digits_split(k, seed=seed)
            layers = ["conv2", "fc6", "fc7"]
            train = handler.extract(split.X_train, layers, pooling="flatten", progress=False)
            test = handler.extract(split.X_test, layers, pooling="flatten", progress=False)
            for kernel in KERNELS:
                for spec in specs:
                    scores[kernel][spec].append(_accuracy(
                        kernel, train, split.y_train, test, split.y_test, spec.split("+")))
    return {kernel: {"mean": float(np.mean([a for v in per.values() for a in v])),
                     **{spec: float(np.mean(v)) for spec, v in per.items()}}
            for kernel, per in scores.items()} | {"ks": ks, "seeds": seeds}


def flowers(cache: Path | None) -> dict[str, Any] | None:
    if not REALDATA.is_dir():
        return None
    feats = _flower_features(cache)
    (xt, yt), (xv, yv) = feats["train"], feats["val"]
    out: dict[str, Any] = {"layer": "fire9/concat (avg)", "n_train": len(yt), "n_val": len(yv)}
    for kernel in KERNELS:
        out[kernel] = _accuracy(kernel, {"f": xt}, yt, {"f": xv}, yv, ["f"])
    return out


def _flower_features(cache: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    if cache is not None and cache.is_file():
        with np.load(cache) as z:
            return {s: (z[f"{s}_x"], z[f"{s}_y"]) for s in ("train", "val")}
    net = REALDATA / "squeezenet_v1.0"
    handler = ModelHandler.from_caffe(net / "deploy.prototxt",
                                      net / "squeezenet_v1.0_dc.caffemodel",
                                      mean=(104, 117, 123), resize=(256, 256))
    out = {}
    for split in ("train", "val"):
        f, y = handler.extract(REALDATA / "flowers12" / split, ["fire9/concat"],
                               return_labels=True, progress=False)
        out[split] = (f["fire9/concat"], y)
    if cache is not None:
        np.savez(cache, **{f"{s}_{k}": v for s, (x, y) in out.items()
                           for k, v in (("x", x), ("y", y))})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="K=10 only, 1 seed, no flowers")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--flowers-cache", type=Path, default=None,
                        help="An .npz to read the flower features from (written if absent).")
    args = parser.parse_args()
    ks = [10] if args.quick else [5, 10, 20, 50]
    result = {"digits": digits(ks, 1 if args.quick else args.seeds),
              "flowers": None if args.quick else flowers(args.flowers_cache)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
