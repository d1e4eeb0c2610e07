"""Benchmark the Caffe importer: import time and forward speed against OpenCV's Caffe runtime.

Builds a CaffeNet-shaped and a ResNet-18-shaped Caffe net with random weights (prototxt +
caffemodel written to a temporary directory), imports each with ``repurpose.caffe``, and
times the forward pass at batch 32 for our net and for OpenCV (``cv2.dnn``) on the same
input, in the same process. Prints JSON. Target: ``ratio`` (ours / OpenCV images per
second) >= 1.0.

    python benchmarks/bench_caffe.py            # full sizes (227 / 224 px)
    python benchmarks/bench_caffe.py --quick    # tiny nets, a few seconds
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from google.protobuf import text_format

import repurpose.caffe as rc
from repurpose.caffe import _schema


class Builder:
    """A tiny net writer with random weights (packed bytes, so big blobs are fast)."""

    def __init__(self, shape: tuple[int, ...], seed: int = 0) -> None:
        self.net = _schema.net_class(True)()
        self.net.input.append("data")
        self.net.input_dim.extend(shape)
        self.rng = np.random.default_rng(seed)
        self.channels = {"data": shape[1]}

    def layer(self, name: str, type_: str, bottom: list[str], top: list[str],
              blobs: tuple[np.ndarray, ...] = (), **params: Any) -> None:
        layer = self.net.layer.add(name=name, type=type_)
        layer.bottom.extend(bottom)
        layer.top.extend(top)
        for key, value in params.items():
            msg = getattr(layer, key)
            for k, v in value.items():
                if isinstance(v, list):
                    getattr(msg, k).extend(v)
                else:
                    setattr(msg, k, v)
        for arr in blobs:
            blob = layer.blobs.add()
            blob.shape.dim.extend(arr.shape)
            data = np.ascontiguousarray(arr, dtype="<f4").tobytes()
            blob.MergeFromString(b"\x2a" + _varint(len(data)) + data)

    def conv(self, name: str, bottom: str, cout: int, k: int, stride: int = 1, pad: int = 0,
             group: int = 1, bias: bool = True) -> str:
        cin = self.channels[bottom]
        std = (2.0 / (cin // group * k * k)) ** 0.5
        blobs = [self.rng.normal(0, std, (cout, cin // group, k, k))]
        if bias:
            blobs.append(self.rng.normal(0, 0.01, cout))
        self.layer(name, "Convolution", [bottom], [name], tuple(blobs), convolution_param={
            "num_output": cout, "kernel_size": [k], "stride": [stride], "pad": [pad],
            "group": group, "bias_term": bias})
        self.channels[name] = cout
        return name

    def fc(self, name: str, bottom: str, n: int, k: int) -> str:
        std = (1.0 / k) ** 0.5
        self.layer(name, "InnerProduct", [bottom], [name],
                   (self.rng.normal(0, std, (n, k)), self.rng.normal(0, 0.01, n)),
                   inner_product_param={"num_output": n})
        return name

    def bn_scale(self, name: str, blob: str) -> None:
        c = self.channels[blob]
        self.layer(f"{name}_bn", "BatchNorm", [blob], [blob],
                   (self.rng.normal(0, 0.1, c) * 10, self.rng.uniform(0.5, 1.5, c) * 10,
                    np.array([10.0])))
        self.layer(f"{name}_scale", "Scale", [blob], [blob],
                   (self.rng.uniform(0.5, 1.5, c), self.rng.normal(0, 0.1, c)),
                   scale_param={"bias_term": True})

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        model = directory / f"{stem}.caffemodel"
        model.write_bytes(self.net.SerializeToString())
        for layer in self.net.layer:
            del layer.blobs[:]
        proto = directory / f"{stem}.prototxt"
        proto.write_text(text_format.MessageToString(self.net))
        return proto, model


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def caffenet(batch: int, quick: bool) -> Builder:
    d = 8 if quick else 1
    b = Builder((batch, 3, 67 if quick else 227, 67 if quick else 227))
    x = b.conv("conv1", "data", 96 // d, 11, stride=4)
    b.layer("relu1", "ReLU", [x], [x])
    b.layer("pool1", "Pooling", [x], ["pool1"], pooling_param={"pool": 0, "kernel_size": 3,
                                                               "stride": 2})
    b.layer("norm1", "LRN", ["pool1"], ["norm1"], lrn_param={"local_size": 5, "alpha": 1e-4,
                                                             "beta": 0.75})
    b.channels["norm1"] = 96 // d
    x = b.conv("conv2", "norm1", 256 // d, 5, pad=2, group=2)
    b.layer("relu2", "ReLU", [x], [x])
    b.layer("pool2", "Pooling", [x], ["pool2"], pooling_param={"pool": 0, "kernel_size": 3,
                                                               "stride": 2})
    b.layer("norm2", "LRN", ["pool2"], ["norm2"], lrn_param={"local_size": 5, "alpha": 1e-4,
                                                             "beta": 0.75})
    b.channels["norm2"] = 256 // d
    x = b.conv("conv3", "norm2", 384 // d, 3, pad=1)
    b.layer("relu3", "ReLU", [x], [x])
    x = b.conv("conv4", x, 384 // d, 3, pad=1, group=2)
    b.layer("relu4", "ReLU", [x], [x])
    x = b.conv("conv5", x, 256 // d, 3, pad=1, group=2)
    b.layer("relu5", "ReLU", [x], [x])
    b.layer("pool5", "Pooling", [x], ["pool5"], pooling_param={"pool": 0, "kernel_size": 3,
                                                               "stride": 2})
    spatial = 1 if quick else 6
    width = 64 if quick else 4096
    b.fc("fc6", "pool5", width, 256 // d * spatial * spatial)
    b.layer("relu6", "ReLU", ["fc6"], ["fc6"])
    b.layer("drop6", "Dropout", ["fc6"], ["fc6"])
    b.fc("fc7", "fc6", width, width)
    b.layer("relu7", "ReLU", ["fc7"], ["fc7"])
    b.layer("drop7", "Dropout", ["fc7"], ["fc7"])
    b.fc("fc8", "fc7", 1000, width)
    b.layer("prob", "Softmax", ["fc8"], ["prob"])
    return b


def resnet(batch: int, quick: bool) -> Builder:
    d = 8 if quick else 1
    size = 64 if quick else 224
    b = Builder((batch, 3, size, size))
    x = b.conv("conv1", "data", 64 // d, 7, stride=2, pad=3, bias=False)
    b.bn_scale("conv1", x)
    b.layer("conv1_relu", "ReLU", [x], [x])
    b.layer("pool1", "Pooling", [x], ["pool1"], pooling_param={"pool": 0, "kernel_size": 3,
                                                               "stride": 2})
    b.channels["pool1"] = 64 // d
    x = "pool1"
    blocks = 1 if quick else 2
    for stage, width in enumerate([64, 128, 256, 512]):
        for i in range(blocks):
            name = f"res{stage + 2}{'abcd'[i]}"
            stride = 2 if stage > 0 and i == 0 else 1
            shortcut = x
            if stride != 1 or b.channels[x] != width // d:
                shortcut = b.conv(f"{name}_branch1", x, width // d, 1, stride=stride, bias=False)
                b.bn_scale(f"{name}_branch1", shortcut)
            y = b.conv(f"{name}_branch2a", x, width // d, 3, stride=stride, pad=1, bias=False)
            b.bn_scale(f"{name}_branch2a", y)
            b.layer(f"{name}_branch2a_relu", "ReLU", [y], [y])
            y = b.conv(f"{name}_branch2b", y, width // d, 3, pad=1, bias=False)
            b.bn_scale(f"{name}_branch2b", y)
            b.layer(name, "Eltwise", [shortcut, y], [name])
            b.layer(f"{name}_relu", "ReLU", [name], [name])
            b.channels[name] = width // d
            x = name
    b.layer("pool5", "Pooling", [x], ["pool5"], pooling_param={"pool": 1,
                                                               "global_pooling": True})
    b.fc("fc1000", "pool5", 1000, 512 // d)
    b.layer("prob", "Softmax", ["fc1000"], ["prob"])
    return b


def _rates(fns: dict[str, Any], batch: int, reps: int, warmup: int) -> dict[str, float]:
    """Images per second of each function: median of ``reps`` calls after warm-ups.

    The functions are timed in turn within each repetition, so that load from other
    processes on a shared machine hits all of them alike.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: batch / float(np.median(t)) for name, t in times.items()}


def bench(name: str, builder: Builder, directory: Path, batch: int, reps: int,
          warmup: int) -> dict:
    import cv2

    proto, model = builder.write(directory, name)
    import_s = []
    for _ in range(2):  # the first import in a process also pays torch's one-off set-up
        start = time.perf_counter()
        net = rc.load_net(proto, model)
        import_s.append(time.perf_counter() - start)
    x = np.random.default_rng(0).standard_normal(net.input_shapes["data"]).astype(np.float32)
    xt = torch.from_numpy(x)

    cv_net = cv2.dnn.readNetFromCaffe(str(proto), str(model))
    cv_net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    cv_net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)

    def run_cv() -> np.ndarray:
        cv_net.setInput(x)
        return cv_net.forward()

    fns: dict[str, Any] = {"opencv": run_cv}
    outputs: dict[str, np.ndarray] = {}
    # "as_imported": the net as load_net returns it (GraphNet layout channels_last: inputs
    # and activations in that layout); "channels_last_weights": weights converted as well.
    for fmt in ("as_imported", "channels_last_weights"):
        mem = torch.channels_last if fmt == "channels_last_weights" else torch.contiguous_format
        net_f = copy.deepcopy(net).to(memory_format=mem)
        xf = xt.contiguous(memory_format=mem)

        def run_ours(net_f: Any = net_f, xf: torch.Tensor = xf) -> torch.Tensor:
            with torch.inference_mode():
                return net_f(xf)

        outputs[fmt] = run_ours().numpy()
        fns[fmt] = run_ours
    rates = _rates(fns, batch, reps, warmup)
    cv_rate = rates.pop("opencv")
    variants = rates
    reference = run_cv().reshape(outputs["as_imported"].shape)
    best = max(variants, key=lambda k: variants[k])
    diff = max(float(np.max(np.abs(o - reference))) for o in outputs.values())
    return {
        "net": name, "batch": batch, "input": list(x.shape[1:]),
        "parameters": sum(p.numel() for p in net.parameters()),
        "import_seconds": round(import_s[1], 3),
        "import_seconds_first_in_process": round(import_s[0], 3),
        "ours_images_per_s": round(variants[best], 2), "ours_best_variant": best,
        "ours_variants_images_per_s": {k: round(v, 2) for k, v in variants.items()},
        "opencv_images_per_s": round(cv_rate, 2),
        "ratio": round(variants[best] / cv_rate, 3),
        "max_abs_diff": diff,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny nets, a few seconds")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--reps", type=int, default=None)
    args = parser.parse_args()
    import cv2

    reps = args.reps or (2 if args.quick else 5)
    warmup = 3  # oneDNN compiles kernels during the first calls of each shape
    batch = 4 if args.quick and args.batch == 32 else args.batch
    with tempfile.TemporaryDirectory() as tmp:
        results = [bench(name, make(batch, args.quick), Path(tmp), batch, reps, warmup)
                   for name, make in (("caffenet", caffenet), ("resnet", resnet))]
    print(json.dumps({
        "benchmark": "caffe_import", "quick": args.quick, "target_ratio": 1.0,
        "torch_threads": torch.get_num_threads(), "opencv_threads": cv2.getNumThreads(),
        "opencv": cv2.__version__, "torch": torch.__version__, "cpus": os.cpu_count(),
        "results": results,
    }, indent=1))


if __name__ == "__main__":
    main()
