"""Benchmark: ModelHandler.extract overhead and memory, on a ResNet-18-shaped network.

Prints one JSON object. It times ``extract()`` of 2-3 layers on 224x224 inputs against a
bare ``torch.no_grad()`` forward of the same network cut at the deepest requested layer,
over the same batches in the same process (runs interleaved, best of ``--repeats``), and
reports images/s of both and their ratio (target >= 0.95). It then measures, each in a
fresh child process, the peak RSS of ``extract(..., out=dir)`` with ``pooling="flatten"``
for N = 2 x and N = 20 x the batch size: streaming to disk keeps the peak flat while the
features on disk grow tenfold.

Usage: ``python benchmarks/bench_extract.py [--quick]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from repurpose import ModelHandler


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """The ResNet-18 layout (BasicBlock, [2, 2, 2, 2]), written here so no download is needed."""

    def __init__(self, num_classes: int = 1000, width: int = 64) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(w, w, 1), BasicBlock(w, w, 1))
        self.layer2 = nn.Sequential(BasicBlock(w, 2 * w, 2), BasicBlock(2 * w, 2 * w, 1))
        self.layer3 = nn.Sequential(BasicBlock(2 * w, 4 * w, 2), BasicBlock(4 * w, 4 * w, 1))
        self.layer4 = nn.Sequential(BasicBlock(4 * w, 8 * w, 2), BasicBlock(8 * w, 8 * w, 1))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8 * w, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def truncated(net: ResNet18) -> nn.Module:
    """The same modules, up to layer4 (the deepest requested layer)."""
    return nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                         net.layer3, net.layer4)


class Images(Dataset):
    """Random images made on demand (seeded per index), so inputs take no memory."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> torch.Tensor:
        g = torch.Generator().manual_seed(i)
        return torch.rand(3, self.size, self.size, generator=g)


LAYERS = ["layer2", "layer3", "layer4"]


def time_both(net: ResNet18, x: np.ndarray, batch: int, repeats: int) -> dict[str, Any]:
    handler = ModelHandler(net)
    bare = truncated(net).eval()
    batches = [torch.from_numpy(x[i : i + batch]) for i in range(0, len(x), batch)]
    handler.extract(x[:batch], LAYERS, batch_size=batch, progress=False)  # warm-up
    with torch.no_grad():
        bare(batches[0])
    def run_bare() -> None:
        with torch.no_grad():
            for b in batches:
                bare(b)

    def run_extract() -> None:
        handler.extract(x, LAYERS, pooling="avg", batch_size=batch, progress=False)

    times: dict[str, list[float]] = {"bare": [], "extract": []}
    for r in range(repeats):  # interleaved, order alternating, so load changes hit both
        order = [("bare", run_bare), ("extract", run_extract)]
        for key, fn in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    t_bare, t_ext = times["bare"], times["extract"]
    n = len(x)
    bare_ips, ext_ips = n / min(t_bare), n / min(t_ext)
    return {"bare_images_per_s": round(bare_ips, 2), "extract_images_per_s": round(ext_ips, 2),
            "ratio": round(ext_ips / bare_ips, 4), "timed_images": n, "repeats": repeats}


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM of this process from /proc (Linux); ru_maxrss elsewhere.

    ru_maxrss is not used on Linux because it keeps the parent's peak across fork+exec.
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_child(n: int, batch: int, size: int, width: int) -> None:
    torch.manual_seed(0)
    net = ResNet18(width=width).eval()
    handler = ModelHandler(net)
    handler.extract(Images(batch, size), LAYERS, pooling="flatten", batch_size=batch,
                    progress=False)  # warm-up: one batch, the same work per batch
    base = _rss_mb("VmRSS")
    with tempfile.TemporaryDirectory() as out:
        feats = handler.extract(Images(n, size), LAYERS, pooling="flatten", batch_size=batch,
                                progress=False, out=out)
        nbytes = int(sum(a.nbytes for a in feats.values()))
        peak = _rss_mb("VmHWM")
        del feats
    print(json.dumps({"rss_before_mb": round(base, 1), "peak_rss_mb": round(peak, 1),
                      "features_on_disk_mb": round(nbytes / 2**20, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--images", type=int, help="images per timed pass")
    parser.add_argument("--repeats", type=int)
    parser.add_argument("--rss-child", nargs=4, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    quick = args.quick
    size, width = (32, 4) if quick else (224, 64)
    batch = args.batch_size or (4 if quick else 32)
    n = args.images or (8 if quick else 96)
    repeats = args.repeats or (1 if quick else 5)
    torch.manual_seed(0)
    net = ResNet18(width=width).eval()
    x = np.random.default_rng(0).random((n, 3, size, size), dtype=np.float32)
    result: dict[str, Any] = {
        "benchmark": "extract", "quick": quick, "network": "resnet18-shaped",
        "input": [3, size, size], "width": width, "layers": LAYERS, "pooling": "avg",
        "batch_size": batch, "torch_threads": torch.get_num_threads(),
        **time_both(net, x, batch, repeats), "target_ratio": 0.95,
    }
    disk: dict[str, Any] = {"pooling": "flatten"}
    runs = [("long", 20 * batch)] if quick else [("short", 2 * batch), ("long", 20 * batch)]
    for label, count in runs:  # a fresh process each
        child = [sys.executable, os.path.abspath(__file__), "--rss-child", str(count),
                 str(batch), str(size), str(width)]
        out = subprocess.run(child, check=True, capture_output=True, text=True).stdout
        disk[label] = {"n": count, **json.loads(out)}
    # Bounded memory: the peak for N = 20 x batch is about the peak for N = 2 x batch.
    if "short" in disk:
        growth = disk["long"]["peak_rss_mb"] - disk["short"]["peak_rss_mb"]
        disk["peak_growth_mb"] = round(growth, 1)
    result["disk_output"] = disk
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
