"""Benchmark GPRepurposer: fit time, peak memory and predict time per 1,000 points.

Synthetic features (512-d, 10 classes: class centres plus a shared low-rank structure plus
noise), at n = 250, 2,000 and 20,000 training points. Each size runs in its own process so
its peak resident memory is measured alone. Prints one JSON document.

Targets (issue 6): n = 250 fits in under 3 s; n = 20,000 in under 3 minutes on 2 cores, with
memory growing linearly in n.

Usage: python benchmarks/bench_gp.py [--quick] [--sizes 250 2000 20000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import threading
import time

import numpy as np


def synthetic(n: int, dim: int, n_classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    basis = rng.normal(size=(32, dim)) / np.sqrt(32)
    y = rng.permutation(np.arange(n) % n_classes)
    x = centres[y] + rng.normal(size=(n, 32)) @ basis + rng.normal(size=(n, dim))
    return x.astype(np.float32), y


def peak_rss_mb() -> float:
    # ru_maxrss is in kilobytes on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float | None:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except OSError:  # not Linux
        return None
    return pages * resource.getpagesize() / 2**20


class RssSampler:
    """Highest resident memory seen while the block runs (sampled every 20 ms, Linux)."""

    def __enter__(self) -> RssSampler:
        self.start = current_rss_mb()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            now = current_rss_mb()
            if now is not None and self.peak is not None:
                self.peak = max(self.peak, now)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth(self) -> float | None:
        if self.start is None or self.peak is None:
            return None
        return round(self.peak - self.start, 1)


def run_one(n: int, dim: int, n_classes: int, n_test: int) -> dict:
    import torch

    from repurpose.repurposers._gp import GPRepurposer

    torch.set_num_threads(2)
    x, y = synthetic(n + n_test, dim, n_classes, seed=0)
    train = {"features": x[:n]}
    test = {"features": x[n:]}
    # Warm up torch (optimizer imports, thread pools) so the fit time measures the fit.
    GPRepurposer(progress=False, n_iter=2, random_state=0).fit_features(
        {"features": x[:20]}, y[:20]
    )
    gp = GPRepurposer(progress=False, random_state=0)
    with RssSampler() as rss:
        start = time.perf_counter()
        gp.fit_features(train, y[:n])
        fit_s = time.perf_counter() - start
    start = time.perf_counter()
    proba = gp.predict_proba_features(test)
    predict_s = time.perf_counter() - start
    return {
        "n": n,
        "dim": dim,
        "n_classes": n_classes,
        "inference": "exact" if gp.exact_ else "svgp",
        "n_inducing": gp.n_inducing_,
        "fit_s": round(fit_s, 3),
        "predict_s_per_1000": round(predict_s * 1000.0 / n_test, 4),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "fit_rss_growth_mb": rss.growth,  # peak during fit minus resident memory before it
        "test_accuracy": round(float(np.mean(proba.argmax(1) == y[n:])), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--sizes", type=int, nargs="*", default=None)
    parser.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--classes", type=int, default=10)
    args = parser.parse_args()
    dim = 16 if args.quick else args.dim
    n_test = 200 if args.quick else 1000
    if args.one is not None:
        print(json.dumps(run_one(args.one, dim, args.classes, n_test)))
        return
    sizes = args.sizes or ([60] if args.quick else [250, 2000, 20000])
    results = []
    for n in sizes:
        cmd = [sys.executable, __file__, "--one", str(n), "--dim", str(dim)]
        cmd += ["--classes", str(args.classes)] + (["--quick"] if args.quick else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    report = {
        "benchmark": "gp",
        "targets": {"fit_s_n250": 3.0, "fit_s_n20000": 180.0},
        "results": results,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
