"""Ray Data extraction throughput with 1 and 2 actors against local extraction.

Real material: ../shared/realdata (SqueezeNet v1.0, Caffe; flowers12 photos). Each actor runs
one intra-op thread, so 2 actors use the 2 cores the way 2 machines would use theirs; the
local run uses 1 thread too (the per-worker rate) and then 2 threads (one process using the
whole machine). Prints JSON.

    python benchmarks/bench_distributed.py [--images 128] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import repurpose as rp

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "realdata"
LAYER = "fire9/concat"


def _handler() -> rp.ModelHandler:
    meta = json.loads((REAL / "squeezenet_v1.0" / "preprocess.json").read_text())
    d = REAL / "squeezenet_v1.0"
    return rp.ModelHandler.from_caffe(d / meta["prototxt"], d / meta["caffemodel"],
                                      mean=meta["mean"], resize=tuple(meta["resize"]))


def _images(n: int, out: Path) -> Path:
    files = sorted((REAL / "flowers12" / "train").glob("*/*.jpg"))
    for i in range(n):
        src = files[i % len(files)]
        (out / src.parent.name).mkdir(parents=True, exist_ok=True)
        (out / src.parent.name / f"{i:05d}.jpg").write_bytes(src.read_bytes())
    return out


def _local(handler: rp.ModelHandler, folder: Path, threads: int) -> float:
    torch.set_num_threads(threads)
    start = time.perf_counter()
    feats = handler.extract(str(folder), LAYER, batch_size=16, progress=False)
    return len(feats[LAYER]) / (time.perf_counter() - start)


def _ray(saved: str, folder: Path, actors: int) -> float:

    from repurpose import distributed

    ds = distributed.read_image_folder(folder).materialize()
    start = time.perf_counter()
    n = distributed.extract(saved, ds, LAYER, batch_size=16, num_actors=actors).count()
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="a smoke run: 8 images, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.images, args.rounds = 8, 1
    if not REAL.is_dir():
        print(json.dumps({"skipped": f"real material not found at {REAL}"}))
        return
    import ray

    os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per Ray worker
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    handler = _handler()
    with tempfile.TemporaryDirectory() as tmp:
        folder = _images(args.images, Path(tmp) / "imgs")
        saved = str(handler.save(Path(tmp) / "handler"))
        _ray(saved, folder, 1)  # warm-up: actor start, imports
        rounds = []
        for _ in range(args.rounds):
            rounds.append({"local_1_thread": _local(handler, folder, 1),
                           "local_2_threads": _local(handler, folder, 2),
                           "ray_1_actor": _ray(saved, folder, 1),
                           "ray_2_actors": _ray(saved, folder, 2)})
    ray.shutdown()
    med = {k: float(np.median([r[k] for r in rounds])) for k in rounds[0]}
    print(json.dumps({
        "net": "SqueezeNet v1.0 (Caffe)", "layer": LAYER, "images": args.images,
        "images_per_s": {k: round(v, 1) for k, v in med.items()},
        "ray_2_over_1_actor": round(med["ray_2_actors"] / med["ray_1_actor"], 2),
        "ray_1_actor_over_local_1_thread": round(med["ray_1_actor"] / med["local_1_thread"], 2),
        "rounds": [{k: round(v, 1) for k, v in r.items()} for r in rounds],
    }, indent=1))


if __name__ == "__main__":
    main()
