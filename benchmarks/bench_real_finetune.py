"""Fine-tuning the real SqueezeNet from an image folder: epoch time and peak memory.

Training sets of about 200 and 2,000 images are made from ``flowers12/train`` (in
``../shared/realdata``) by random crops and flips, written to a temporary folder as JPEGs,
so that training really streams from disk. Each size is fine-tuned in its own subprocess
(``FineTuneRepurposer`` defaults: cut and frozen below SqueezeNet's classifier, a new
linear head; 10% validation split) and reports its epoch times and its peak resident
memory (``ru_maxrss``). The target: peak RSS with 2,000 images within 15% of that with 200
(memory must not grow with the number of training images).

The alternative that does not stream, reading the whole folder into one tensor and fitting
on it (what ``fit`` did before), is measured the same way for comparison.

Prints JSON. ``--quick`` makes tiny sets (24 and 48 images, one epoch) as a smoke test.
Without the real material it prints a JSON note saying so (``skipped``).
``run(quick)`` returns the same dict, for ``benchmarks/bench_real.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REALDATA = Path(os.environ.get("REPURPOSE_REALDATA")
                or Path(__file__).resolve().parents[1].parent / "shared" / "realdata")
SQUEEZENET = REALDATA / "squeezenet_v1.0"
FLOWERS = REALDATA / "flowers12" / "train"
SIZES = (200, 2000)
QUICK_SIZES = (24, 48)


def make_images(out: Path, n_total: int, seed: int = 0) -> Path:
    """Write ``n_total`` JPEGs (crops and flips of flowers12/train), one folder per class."""
    from PIL import Image, ImageOps

    rng = random.Random(seed)
    classes = sorted(p.name for p in FLOWERS.iterdir() if p.is_dir())
    per_class = max(1, n_total // len(classes))
    for name in classes:
        sources = sorted((FLOWERS / name).glob("*.jpg"))
        (out / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            with Image.open(sources[i % len(sources)]) as img:
                img = img.convert("RGB")
                w, h = img.size
                side = rng.randint(int(0.6 * min(w, h)), min(w, h))
                left, top = rng.randint(0, w - side), rng.randint(0, h - side)
                crop = img.crop((left, top, left + side, top + side)).resize((224, 224))
                if rng.random() < 0.5:
                    crop = ImageOps.mirror(crop)
                crop.save(out / name / f"{i:05d}.jpg", quality=90)
    return out


def _handler() -> Any:
    import repurpose as rp

    spec = json.loads((SQUEEZENET / "preprocess.json").read_text())
    return rp.ModelHandler.from_caffe(
        SQUEEZENET / spec["prototxt"], SQUEEZENET / spec["caffemodel"],
        mean=spec["mean"], channel_order=spec["channel_order"],
        raw_scale=float(spec["raw_scale"]), input_scale=float(spec["input_scale"]),
        resize=tuple(spec["resize"]),
    )


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(folder: str, epochs: int, mode: str, threads: int) -> dict[str, Any]:
    """One measurement (run in a fresh process): fit on the folder, report time and RSS."""
    import numpy as np
    import torch

    import repurpose as rp
    from repurpose.model_handler import as_batches

    torch.set_num_threads(threads)
    handler = _handler()
    rss_ready = _peak_rss_mb()
    stamps: list[float] = []
    rep = rp.FineTuneRepurposer(handler, max_epochs=epochs, batch_size=32, progress=False,
                                random_state=0, callbacks=[lambda e, logs: stamps.append(
                                    time.perf_counter())])
    start = time.perf_counter()
    if mode == "stream":
        rep.fit(folder)
    else:  # the alternative: read every image into one tensor, then fit on it
        parts = list(as_batches(folder, 64, preprocess=handler.preprocess))
        X = torch.cat([x for x, _ in parts])
        y = np.concatenate([v for _, v in parts])
        rep.fit(X, y)
    ends = [start, *stamps]
    return {
        "mode": mode,
        "n_images": sum(1 for _ in Path(folder).rglob("*.jpg")),
        "epochs": len(stamps),
        "fit_s": round(time.perf_counter() - start, 2),
        "epoch_s": [round(b - a, 2) for a, b in zip(ends, ends[1:], strict=False)],
        "rss_before_fit_mb": round(rss_ready, 1),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
        "val_acc": rep.history_["val_acc"][-1],
    }


def _measure(folder: Path, epochs: int, mode: str, threads: int) -> dict[str, Any]:
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{repo}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", str(folder), "--epochs", str(epochs),
         "--mode", mode, "--threads", str(threads)],
        capture_output=True, text=True, check=True, env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False, threads: int = 1, modes: tuple[str, ...] = ("stream",)
        ) -> dict[str, Any]:
    """Measure every size (and mode) in its own subprocess; return the figures as a dict."""
    sizes, epochs = (QUICK_SIZES, 1) if quick else (SIZES, 2)
    if not (SQUEEZENET.is_dir() and FLOWERS.is_dir()):
        return {"benchmark": "real_finetune", "skipped": f"real material not found at {REALDATA}"}
    results: dict[str, Any] = {
        "benchmark": "real_finetune", "network": "SqueezeNet v1.0 (Caffe)",
        "data": "flowers12/train crops and flips, JPEG folder", "quick": quick,
        "threads": threads, "machine": platform.machine(), "python": platform.python_version(),
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        folders = {n: make_images(Path(tmp) / f"n{n}", n) for n in sizes}
        for mode in modes:
            for n in sizes:
                results["runs"].append(_measure(folders[n], epochs, mode, threads))
                print(json.dumps(results["runs"][-1]), file=sys.stderr, flush=True)
    for mode in modes:
        small, big = (r for r in results["runs"] if r["mode"] == mode)
        results[f"{mode}_rss_ratio_big_over_small"] = round(
            big["peak_rss_mb"] / small["peak_rss_mb"], 3)
    results["target"] = "stream peak RSS ratio (largest / smallest set) <= 1.15"
    results["target_met"] = results["stream_rss_ratio_big_over_small"] <= 1.15
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sets, one epoch")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--compare", action="store_true",
                        help="also measure the non-streaming alternative (one big tensor)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=2, help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.epochs, args.mode, args.threads)))
        return
    modes = ("stream", "in_memory") if args.compare else ("stream",)
    print(json.dumps(run(args.quick, args.threads, modes), indent=2))


if __name__ == "__main__":
    main()
