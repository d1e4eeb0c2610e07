"""Time and memory of the LR and linear SVM heads: in memory against streaming.

Features (float32, ``n`` x ``D``, 10 classes, a linear signal plus noise) are written once
to a ``.npy`` file and opened memory-mapped, as ``handler.extract(..., out=dir)`` returns
them. Each head is fitted on them; for each fit the script records the wall time and the
peak growth of anonymous resident memory (``RssAnon`` sampled every 5 ms: the solver's own
arrays, not the page cache of the mapped file, which the OS reclaims). The in-memory and
streaming fits of one head alternate, ``--rounds`` times; ratios are per round. libsvm
(quadratic in ``n``) only runs up to ``--max-n-libsvm``. Prints JSON.

    python benchmarks/bench_heads.py [--n 5000 50000] [--dims 512] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import repurpose as rp

HEADS = {
    "lr": (rp.LogisticRegressionRepurposer, "lbfgs"),
    "svm": (rp.SVMRepurposer, "libsvm"),
}


def _rss_anon() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


class _PeakMemory:
    """Peak RssAnon above its value at the start, sampled by a thread."""

    def __enter__(self) -> _PeakMemory:
        self.start = self.peak = _rss_anon()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_anon())

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_anon())

    @property
    def mb(self) -> float:
        return (self.peak - self.start) / 2**20


def _features(n: int, d: int, folder: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, n)
    path = folder / f"f-{n}-{d}.npy"
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, d))
    centres = rng.normal(size=(10, d)).astype(np.float32) * 0.2
    for start in range(0, n, 8192):
        stop = min(start + 8192, n)
        out[start:stop] = rng.normal(size=(stop - start, d)).astype(np.float32)
        out[start:stop] += centres[y[start:stop]]
    out.flush()
    del out
    return {"f": np.load(path, mmap_mode="r")}, y


def _fit(head: str, solver: str, feats: dict[str, np.ndarray], y: np.ndarray
         ) -> dict[str, float]:
    cls, _ = HEADS[head]
    rep = cls(solver=solver, progress=False)
    with _PeakMemory() as mem:
        start = time.perf_counter()
        rep.fit_features(feats, y)
        seconds = time.perf_counter() - start
    acc = float(np.mean(rep.predict_features({"f": feats["f"][:2000]}) == y[:2000]))
    return {"s": round(seconds, 2), "peak_mb": round(mem.mb, 1), "train_acc": round(acc, 3)}


def _case(head: str, n: int, d: int, rounds: int, max_n_libsvm: int, folder: Path
          ) -> dict[str, Any]:
    feats, y = _features(n, d, folder)
    memory_solver = HEADS[head][1]
    solvers = ["streaming"] + ([memory_solver] if head == "lr" or n <= max_n_libsvm else [])
    runs: list[dict[str, Any]] = []
    for _ in range(rounds):
        runs.append({s: _fit(head, s, feats, y) for s in solvers})
    case: dict[str, Any] = {"head": head, "n": n, "dims": d,
                            "feature_mb": round(n * d * 4 / 2**20, 1), "rounds": runs}
    if len(solvers) == 2:
        case["time_streaming_over_in_memory"] = [
            round(r["streaming"]["s"] / r[memory_solver]["s"], 2) for r in runs]
        case["peak_mb_streaming_over_in_memory"] = [
            round(r["streaming"]["peak_mb"] / max(r[memory_solver]["peak_mb"], 0.1), 3)
            for r in runs]
    return case


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, nargs="+", default=[5_000, 50_000])
    parser.add_argument("--dims", type=int, nargs="+", default=[512])
    parser.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-n-libsvm", type=int, default=5_000)
    parser.add_argument("--quick", action="store_true", help="a smoke run: n=600, D=32")
    args = parser.parse_args()
    if args.quick:
        args.n, args.dims, args.rounds = [600], [32], 1
    cases = []
    with tempfile.TemporaryDirectory() as tmp:
        warm, y = _features(200, 8, Path(tmp))  # first fits pay one-off start-up costs
        for head, (_, solver) in HEADS.items():
            for s in ("streaming", solver):
                _fit(head, s, warm, y)
        for head in args.heads:
            for n in args.n:
                for d in args.dims:
                    cases.append(_case(head, n, d, args.rounds, args.max_n_libsvm, Path(tmp)))
                    print(json.dumps(cases[-1]), file=sys.stderr, flush=True)  # as they come
    print(json.dumps({"memory": "peak RssAnon growth during fit (MB)", "cases": cases},
                     indent=1))


if __name__ == "__main__":
    main()
