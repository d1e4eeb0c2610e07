"""MXNet importer benchmark: .params load time and forward speed of a ResNet-18-shaped net.

Prints JSON. ``--quick`` uses a tiny net and input (a smoke test of a few seconds).

* ``params_load_s``: :func:`repurpose.mxnet.load_params` on a ResNet-18-sized file (11.7M
  float32 params, written with our own writer) against ``numpy.load`` of the same arrays
  saved as one ``.npy`` per array (``npy_files_s``) and as one concatenated ``.npy``
  (``npy_single_s``). Target: ``ratio_vs_npy_files <= 1.5``. Best of several warm runs.
* ``images_per_s``: forward throughput of the imported net (torch, CPU, eval, no grad).
* With ``.venv-mxnet`` present (``make mxnet-fixtures``), mxnet 1.9.1 runs the same symbol,
  weights and input in its own process; ``mxnet_images_per_s`` and ``ratio_vs_mxnet``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import repurpose as rp
from repurpose.mxnet._params import save_params
from repurpose.mxnet._verify import REFERENCE_SCRIPT

ROOT = Path(__file__).resolve().parents[1]
MXNET_PYTHON = ROOT / ".venv-mxnet" / "bin" / "python"


class _Sym:
    """A tiny builder of MXNet symbol JSON (what mxnet's symbol API would save)."""

    def __init__(self) -> None:
        self.nodes: list[dict] = []

    def var(self, name: str) -> int:
        self.nodes.append({"op": "null", "name": name, "inputs": []})
        return len(self.nodes) - 1

    def op(self, op: str, name: str, inputs: list[int], params: tuple[str, ...] = (),
           **attrs: object) -> int:
        ids = list(inputs) + [self.var(f"{name}_{p}") for p in params]
        self.nodes.append({"op": op, "name": name, "attrs": {k: str(v) for k, v in attrs.items()},
                           "inputs": [[i, 0, 0] for i in ids]})
        return len(self.nodes) - 1

    def json(self, head: int) -> dict:
        args = [i for i, n in enumerate(self.nodes) if n["op"] == "null"]
        return {"nodes": self.nodes, "arg_nodes": args, "heads": [[head, 0, 0]],
                "attrs": {"mxnet_version": ["int", 10901]}}


def resnet18_symbol(width: int = 64, classes: int = 1000) -> dict:
    s = _Sym()

    def conv(x: int, name: str, ch: int, k: int, stride: int) -> int:
        return s.op("Convolution", name, [x], ("weight",), kernel=(k, k), num_filter=ch,
                    stride=(stride, stride), pad=(k // 2, k // 2), no_bias=True)

    def bn(x: int, name: str, relu: bool = True) -> int:
        y = s.op("BatchNorm", name, [x], ("gamma", "beta", "moving_mean", "moving_var"),
                 fix_gamma=False, eps=2e-5)
        return s.op("Activation", f"{name}_relu", [y], act_type="relu") if relu else y

    x = bn(conv(s.var("data"), "conv0", width, 7, 2), "bn0")
    x = s.op("Pooling", "pool0", [x], kernel=(3, 3), stride=(2, 2), pad=(1, 1), pool_type="max")
    for stage, mult in enumerate((1, 2, 4, 8)):
        for unit in range(2):
            stride = 2 if stage > 0 and unit == 0 else 1
            name = f"stage{stage + 1}_unit{unit + 1}"
            y = bn(conv(x, f"{name}_conv1", width * mult, 3, stride), f"{name}_bn1")
            y = bn(conv(y, f"{name}_conv2", width * mult, 3, 1), f"{name}_bn2", relu=False)
            if stride != 1 or unit == 0 and stage > 0:
                x = bn(conv(x, f"{name}_sc", width * mult, 1, stride), f"{name}_sc_bn", False)
            x = s.op("Activation", f"{name}_relu", [s.op("elemwise_add", f"{name}_plus", [x, y])],
                     act_type="relu")
    x = s.op("Pooling", "pool1", [x], kernel=(7, 7), global_pool=True, pool_type="avg")
    x = s.op("FullyConnected", "fc1", [s.op("Flatten", "flatten0", [x])], ("weight", "bias"),
             num_hidden=classes)
    return s.json(s.op("SoftmaxOutput", "softmax", [x, s.var("softmax_label")]))


def random_params(sym: dict, size: int) -> dict[str, np.ndarray]:
    """Shapes from a param-less import; random values, with sane BatchNorm statistics."""
    net = rp.mxnet.load_net(sym, input_shape=(1, 3, size, size))
    rng = np.random.default_rng(0)
    out: dict[str, np.ndarray] = {}
    for node in net.nodes:
        layer = net.layer(node.name)
        names = {"weight": "weight", "bias": "bias"}
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
            names = {"weight": "gamma", "bias": "beta", "running_mean": "moving_mean",
                     "running_var": "moving_var"}
        for key, suffix in names.items():
            tensor = getattr(layer, key, None)
            if tensor is None:
                continue
            shape = tuple(tensor.shape)
            if suffix in ("gamma", "moving_var"):
                value = rng.uniform(0.5, 1.5, shape)
            elif suffix == "weight":
                value = rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape)
            else:
                value = rng.normal(0, 0.1, shape)
            prefix = "aux" if suffix.startswith("moving") else "arg"
            out[f"{prefix}:{node.name}_{suffix}"] = value.astype(np.float32)
    return out


def best_of(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def bench_load(tmp: Path, params: dict[str, np.ndarray], repeat: int) -> dict:
    path = tmp / "resnet18-0000.params"
    save_params(path, params)
    npy_dir = tmp / "npy"
    npy_dir.mkdir()
    files = []
    for i, value in enumerate(params.values()):
        files.append(npy_dir / f"{i}.npy")
        np.save(files[-1], value)
    np.save(tmp / "all.npy", np.concatenate([v.ravel() for v in params.values()]))
    ours = best_of(lambda: rp.mxnet.load_params(path), repeat)
    npy = best_of(lambda: [np.load(f, allow_pickle=False) for f in files], repeat)
    single = best_of(lambda: np.load(tmp / "all.npy", allow_pickle=False), repeat)
    return {"n_params": int(sum(v.size for v in params.values())),
            "file_mb": round(path.stat().st_size / 2**20, 1), "params_load_s": round(ours, 4),
            "npy_files_s": round(npy, 4), "npy_single_s": round(single, 4),
            "ratio_vs_npy_files": round(ours / npy, 2),
            "ratio_vs_npy_single": round(ours / single, 2)}


def bench_forward(sym: dict, params: dict, x: np.ndarray, iters: int) -> dict:
    start = time.perf_counter()
    net = rp.mxnet.load_net(sym, params)
    convert_s = time.perf_counter() - start
    inp = torch.from_numpy(x)
    with torch.no_grad():
        net(inp)
        seconds = best_of(lambda: net(inp), iters)
    return {"convert_s": round(convert_s, 3), "batch": x.shape[0],
            "images_per_s": round(x.shape[0] / seconds, 2)}


def bench_mxnet(tmp: Path, sym: dict, params: dict, x: np.ndarray, iters: int) -> dict:
    (tmp / "m-symbol.json").write_text(json.dumps(sym))
    save_params(tmp / "m-0000.params", params)
    np.savez(tmp / "in.npz", data=x)
    env = dict(os.environ, MXNET_MKLDNN_ENABLED="1")  # mxnet's normal (oneDNN) CPU speed
    cmd = [str(MXNET_PYTHON), str(REFERENCE_SCRIPT), str(tmp / "m-symbol.json"),
           str(tmp / "m-0000.params"), str(tmp / "in.npz"), str(tmp / "out.npz"), str(iters)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
    if proc.returncode != 0:
        return {"mxnet_error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    with np.load(tmp / "out.npz", allow_pickle=False) as out:
        seconds = float(out["__seconds_per_batch__"])
        ref = out["softmax"]
    net = rp.mxnet.load_net(sym, params)
    with torch.no_grad():
        ours = net(torch.from_numpy(x)).numpy()
    return {"mxnet_images_per_s": round(x.shape[0] / seconds, 2),
            "max_abs_diff_vs_mxnet": float(np.abs(ours - ref).max())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--no-mxnet", action="store_true", help="skip the mxnet comparison")
    parser.add_argument("--threads", type=int, default=0,
                        help="intra-op threads for torch and mxnet (0: library defaults)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    width, size, batch, iters, repeat = (8, 32, 2, 2, 2) if args.quick else (64, 224, 8, 5, 5)
    sym = resnet18_symbol(width, 10 if args.quick else 1000)
    params = random_params(sym, size)
    x = np.random.default_rng(1).normal(size=(batch, 3, size, size)).astype(np.float32)
    result: dict = {"benchmark": "mxnet", "quick": args.quick,
                    "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        result.update(bench_load(Path(tmp), params, repeat))
        result.update(bench_forward(sym, params, x, iters))
        if MXNET_PYTHON.exists() and not args.no_mxnet:
            result.update(bench_mxnet(Path(tmp), sym, params, x, iters))
            if "mxnet_images_per_s" in result:
                result["ratio_vs_mxnet"] = round(
                    result["images_per_s"] / result["mxnet_images_per_s"], 2)
        else:
            result["mxnet"] = "skipped (--no-mxnet, or no .venv-mxnet: make mxnet-fixtures)"
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
