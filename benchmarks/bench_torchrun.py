"""Fine-tuning throughput under torchrun: 1 against 2 processes (gloo, one thread each).

Real material: ../shared/realdata (SqueezeNet v1.0, Caffe; flowers12 photos). Every layer
trains (``freeze=None``), the same global batch of 16 images (16 per process with one
process, 8 with two), read and decoded by each process from the image folder. Images/s is
measured over the second epoch (the first pays start-up: process group, first batches),
from the epoch-end callbacks of rank 0. The launcher alternates 1 and 2 processes,
``--rounds`` times, and reports the ratio per round. Without the real material a small
convolutional network on random images stands in. Prints JSON.

    python benchmarks/bench_torchrun.py [--images 96] [--rounds 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "realdata"
GLOBAL_BATCH = 16


def _worker(folder: str, out: str, quick: bool) -> None:
    import numpy as np
    import torch
    from torch import nn

    import repurpose as rp

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if quick or not REAL.is_dir():
        torch.manual_seed(0)
        handler = rp.ModelHandler(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(),
                                                nn.Conv2d(8, 8, 3), nn.ReLU()))
        rng = np.random.default_rng(0)
        data: object = rng.normal(size=(32, 3, 24, 24)).astype(np.float32)
        y: np.ndarray | None = np.arange(32) % 4
    else:
        meta = json.loads((REAL / "squeezenet_v1.0" / "preprocess.json").read_text())
        d = REAL / "squeezenet_v1.0"
        handler = rp.ModelHandler.from_caffe(d / meta["prototxt"], d / meta["caffemodel"],
                                             mean=meta["mean"], resize=tuple(meta["resize"]))
        data, y = folder, None
    ends: list[float] = []
    rep = rp.FineTuneRepurposer(
        handler, freeze=None, max_epochs=2, batch_size=GLOBAL_BATCH // world, lr=1e-3,
        validation_fraction=0.0, random_state=0, progress=False,
        callbacks=[lambda epoch, logs: ends.append(time.perf_counter())])
    start = time.perf_counter()
    rep.fit(data, y)
    n = len(list(Path(folder).glob("*/*.jpg"))) if y is None else len(y)
    if int(os.environ.get("RANK", "0")) == 0:
        Path(out).write_text(json.dumps({
            "processes": world, "images": n, "first_epoch_s": ends[0] - start,
            "images_per_s": n / (ends[1] - ends[0])}))


def _launch(processes: int, folder: Path, quick: bool) -> dict:
    out = folder.parent / f"result-{processes}.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={processes}", __file__, "--worker", str(folder), str(out)]
    cmd += ["--quick"] if quick else []
    subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.read_text())


def _images(n: int, out: Path) -> Path:
    files = sorted((REAL / "flowers12" / "train").glob("*/*.jpg")) if REAL.is_dir() else []
    for i in range(n if files else 0):
        src = files[i % len(files)]
        (out / src.parent.name).mkdir(parents=True, exist_ok=True)
        (out / src.parent.name / f"{i:05d}.jpg").write_bytes(src.read_bytes())
    out.mkdir(parents=True, exist_ok=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: a small network on 32 random images, 1 round")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker, quick=args.quick)
        return
    if args.quick:
        args.rounds = 1
    with tempfile.TemporaryDirectory() as tmp:
        folder = _images(args.images, Path(tmp) / "imgs")
        rounds = [{k: _launch(k, folder, args.quick) for k in (1, 2)}
                  for _ in range(args.rounds)]
    print(json.dumps({
        "net": "small CNN (smoke)" if args.quick or not REAL.is_dir()
        else "SqueezeNet v1.0 (Caffe), every layer trained",
        "global_batch": GLOBAL_BATCH,
        "images_per_s": [{str(k): round(r[k]["images_per_s"], 2) for k in r} for r in rounds],
        "two_over_one_process": [round(r[2]["images_per_s"] / r[1]["images_per_s"], 2)
                                 for r in rounds],
        "rounds": rounds,
    }, indent=1))


if __name__ == "__main__":
    main()
