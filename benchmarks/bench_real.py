"""Benchmark: feature extraction from real Caffe nets against OpenCV's DNN runtime.

Prints one JSON object. For each net and batch size it runs, in alternating order over
several rounds, one fresh child process per measurement:

* ``repurpose``: ``handler_from_caffe(...).extract(x, [layer], pooling="avg")``;
* ``opencv``: ``cv2.dnn.readNetFromCaffe``, ``net.setInput(batch)``, ``net.forward(layer)``
  and the same average pooling;

each with 2 intra-op threads (``torch.set_num_threads``, ``cv2.setNumThreads``), on the
same inputs (seeded random images, 128 by default). A child reports images/s of a timed
pass (after a one-batch warm-up) and the memory extraction adds once the model is
loaded: the peak RSS during warm-up and timed pass (``VmHWM``, reset through
``/proc/self/clear_refs`` when permitted) minus the RSS after loading (``VmRSS``). Ratios
are taken per round (repurpose / OpenCV), so load from other processes hits both sides.

Nets: the real ImageNet SqueezeNet v1.0 of ``../shared/realdata`` (``fire9/concat``,
227x227), and a ResNet-50-shaped Caffe net written here (bottleneck blocks with
BatchNorm + Scale + ReLU after every convolution, the real layer counts and widths,
random weights, 224x224, ``pool5``).

Usage: ``python benchmarks/bench_real.py [--quick] [--rounds R] [--images N]``.
The fine-tune section comes from ``benchmarks/bench_real_finetune.py`` when present
(see :func:`finetune_section`).
"""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
REALDATA = Path(os.environ.get("REPURPOSE_REALDATA", HERE.parent.parent / "shared" / "realdata"))
SQUEEZENET = REALDATA / "squeezenet_v1.0"
THREADS = 2
QUICK = False  # set by --quick; passed on to the fine-tune section


# ----------------------------------------------------------------- the child process
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _images(n: int, size: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.standard_normal((n, 3, size, size)) * 50).astype(np.float32)


def _opencv_extractor(proto: Path, model: Path, layer: str, batch: int) -> Any:
    import cv2

    cv2.setNumThreads(THREADS)
    net = cv2.dnn.readNetFromCaffe(str(proto), str(model))

    def extract(x: np.ndarray) -> np.ndarray:
        out = []
        for i in range(0, len(x), batch):
            net.setInput(x[i:i + batch])
            out.append(net.forward(layer).mean(axis=(2, 3)))
        return np.concatenate(out)

    return extract


def _repurpose_extractor(proto: Path, model: Path, layer: str, batch: int) -> Any:
    import torch

    from repurpose.caffe import handler_from_caffe

    torch.set_num_threads(THREADS)
    handler = handler_from_caffe(proto, model)

    def extract(x: np.ndarray) -> np.ndarray:
        return handler.extract(x, [layer], pooling="avg", batch_size=batch,
                               progress=False)[layer]

    return extract


def child(runtime: str, proto: Path, model: Path, layer: str, batch: int, images: int,
          size: int) -> dict[str, Any]:
    x = _images(images, size)
    make = _opencv_extractor if runtime == "opencv" else _repurpose_extractor
    extract = make(proto, model, layer, batch)
    loaded = _status_mb("VmRSS")
    reset = _reset_peak()
    before_peak = _status_mb("VmHWM")
    extract(x[:batch])  # warm-up: first-call setup (OpenCV allocates its blobs here)
    start = time.perf_counter()
    features = extract(x)
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM")
    return {"images_per_s": images / seconds, "rss_loaded_mb": loaded, "peak_mb": peak,
            "added_mb": peak - loaded, "peak_reset": reset,
            "peak_before_mb": before_peak, "feature_dim": int(features.shape[1])}


# ---------------------------------------------------------- the ResNet-50-shaped net
RESNET50 = [(3, 64, 256, 1), (4, 128, 512, 2), (6, 256, 1024, 2), (3, 512, 2048, 2)]


def _conv_bn(w: Any, name: str, bottom: str, cin: int, cout: int, k: int, stride: int,
             relu: bool) -> str:
    """Convolution (no bias) + BatchNorm + Scale (+ ReLU), in place as in ResNet's prototxt."""
    weight = w.rng.standard_normal((cout, cin, k, k)) * np.sqrt(1.0 / (cin * k * k))
    w.layer(name, "Convolution", [bottom], [name], [weight],
            convolution_param={"num_output": cout, "kernel_size": [k], "stride": [stride],
                               "pad": [k // 2], "bias_term": False})
    stats = [w.rng.standard_normal(cout) * 0.1, w.rng.uniform(0.5, 1.5, cout), np.ones(1)]
    w.layer(f"bn_{name}", "BatchNorm", [name], [name], stats,
            batch_norm_param={"use_global_stats": True})
    w.layer(f"scale_{name}", "Scale", [name], [name],
            [w.rng.uniform(0.5, 1.0, cout), w.rng.standard_normal(cout) * 0.1],
            scale_param={"bias_term": True})
    if relu:
        w.layer(f"{name}_relu", "ReLU", [name], [name])
    return name


def write_resnet50(directory: Path, size: int = 224, shrink: int = 1) -> tuple[Path, Path]:
    """ResNet-50 (He et al. 2016, Caffe layout: stride on branch2a) with BN + Scale.

    ``shrink`` divides every width (a smoke-test size); 1 gives the real widths.
    """
    sys.path.insert(0, str(HERE.parent / "tests" / "caffe"))
    from caffe_writer import NetWriter  # the test suite's prototxt/caffemodel writer

    w = NetWriter([1, 3, size, size])
    top = _conv_bn(w, "conv1", "data", 3, 64 // shrink, 7, 2, relu=True)
    w.layer("pool1", "Pooling", [top], ["pool1"],
            pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2})
    top, cin = "pool1", 64 // shrink
    for stage, (blocks, mid, cout, stride) in enumerate(RESNET50, start=2):
        mid, cout = mid // shrink, cout // shrink
        for b in range(blocks):
            name = f"res{stage}{chr(ord('a') + b)}"
            s = stride if b == 0 else 1
            shortcut = top
            if b == 0:
                shortcut = _conv_bn(w, f"{name}_branch1", top, cin, cout, 1, s, relu=False)
            x = _conv_bn(w, f"{name}_branch2a", top, cin, mid, 1, s, relu=True)
            x = _conv_bn(w, f"{name}_branch2b", x, mid, mid, 3, 1, relu=True)
            x = _conv_bn(w, f"{name}_branch2c", x, mid, cout, 1, 1, relu=False)
            w.layer(name, "Eltwise", [shortcut, x], [name])
            w.layer(f"{name}_relu", "ReLU", [name], [name])
            top, cin = name, cout
    w.layer("pool5", "Pooling", [top], ["pool5"],
            pooling_param={"pool": "AVE", "global_pooling": True})  # 7x7 at 224 px
    fc = w.rng.standard_normal((1000, cin)) * 0.01
    w.layer("fc1000", "InnerProduct", ["pool5"], ["fc1000"], [fc, np.zeros(1000)],
            inner_product_param={"num_output": 1000})
    return w.write(directory, "resnet50")


# ------------------------------------------------------------------------ the parent
def measure(runtime: str, proto: Path, model: Path, layer: str, batch: int, images: int,
            size: int) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", runtime, str(proto), str(model), layer,
           str(batch), str(images), str(size)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=HERE.parent)
    if out.returncode != 0:
        raise RuntimeError(f"{runtime} child failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def compare(proto: Path, model: Path, layer: str, batch: int, images: int, size: int,
            rounds: int) -> dict[str, Any]:
    per_round = []
    for r in range(rounds):
        order = ["opencv", "repurpose"] if r % 2 == 0 else ["repurpose", "opencv"]
        res = {rt: measure(rt, proto, model, layer, batch, images, size) for rt in order}
        ours, cv = res["repurpose"], res["opencv"]
        print(f"{Path(proto).stem} batch {batch} round {r}: {ours['images_per_s']:.1f} vs "
              f"{cv['images_per_s']:.1f} img/s, added {ours['added_mb']:.0f} vs "
              f"{cv['added_mb']:.0f} MB", file=sys.stderr, flush=True)
        per_round.append({
            "repurpose": _rounded(ours), "opencv": _rounded(cv),
            "throughput_ratio": round(ours["images_per_s"] / cv["images_per_s"], 3),
            "added_memory_ratio": round(ours["added_mb"] / max(cv["added_mb"], 1.0), 3),
        })
    thr = [r["throughput_ratio"] for r in per_round]
    mem = [r["added_memory_ratio"] for r in per_round]
    return {
        "batch": batch, "images": images, "size": size, "layer": layer, "threads": THREADS,
        "throughput_ratio_median": round(statistics.median(thr), 3),
        "throughput_ratios": thr,
        "added_memory_ratio_median": round(statistics.median(mem), 3),
        "added_memory_ratios": mem,
        "throughput_target_met": statistics.median(thr) >= 1.0,
        "memory_target_met": statistics.median(mem) <= 1.0,
        "rounds": per_round,
    }


def _rounded(d: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in d.items()}


def finetune_section() -> dict[str, Any] | None:
    """FINE-TUNE SECTION: merged from ``benchmarks/bench_real_finetune.py`` when present.

    That file (written separately) provides ``run() -> dict`` (preferred), or is a script
    whose last stdout line is one JSON object. Returns None when the file is absent.
    """
    path = HERE / "bench_real_finetune.py"
    if not path.exists():
        return None
    spec = importlib.util.spec_from_file_location("bench_real_finetune", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if callable(getattr(module, "run", None)):
        quick = "quick" in inspect.signature(module.run).parameters
        return dict(module.run(quick=QUICK) if quick else module.run())
    out = subprocess.run([sys.executable, str(path)], capture_output=True, text=True,
                         check=True, cwd=HERE.parent)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: 1 round, 4 images, batch 2, a slim 64 px ResNet")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--nets", nargs="+", default=["squeezenet", "resnet50"])
    parser.add_argument("--no-finetune", action="store_true")
    args = parser.parse_args()
    global QUICK
    QUICK = args.quick
    rounds, images = (1, 4) if args.quick else (args.rounds, args.images)
    batches = [2] if args.quick else args.batches
    size, shrink = (64, 16) if args.quick else (224, 1)
    report: dict[str, Any] = {"threads": THREADS, "rounds": rounds}
    with tempfile.TemporaryDirectory() as tmp:
        nets = {}
        if "squeezenet" in args.nets and SQUEEZENET.exists():
            nets["squeezenet_v1.0"] = (SQUEEZENET / "deploy.prototxt",
                                       SQUEEZENET / "squeezenet_v1.0_dc.caffemodel",
                                       "fire9/concat", 227)
        if "resnet50" in args.nets:
            proto, model = write_resnet50(Path(tmp), size, shrink)
            nets["resnet50_bn_scale"] = (proto, model, "pool5", size)
        for name, (proto, model, layer, size) in nets.items():
            report[name] = {f"batch_{b}": compare(proto, model, layer, b, images, size, rounds)
                            for b in batches}
    if not args.no_finetune:
        report["finetune"] = finetune_section()
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        rt, proto, model, layer, batch, images, size = sys.argv[2:9]
        print(json.dumps(child(rt, Path(proto), Path(model), layer, int(batch), int(images),
                               int(size))))
    else:
        main()
