"""Run an MXNet symbol with mxnet itself and record every node's outputs.

This file imports neither torch nor repurpose: ``repurpose verify mxnet --mxnet-python``
and ``tools/make_mxnet_fixtures.py`` run it with the Python of an environment that has
mxnet 1.x (``python _reference.py SYMBOL PARAMS INPUTS.npz OUT.npz``). Values are named
like the importer's: output 0 of node ``n`` is ``"n"``, output ``k`` is ``"n:k"``.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np

__all__ = ["run_internals", "synthetic_params", "synthetic_input", "main"]


def _split(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    args, auxs = {}, {}
    for key, value in params.items():
        if key.startswith("aux:"):
            auxs[key[4:]] = value
        else:
            args[key[4:] if key.startswith("arg:") else key] = value
    return args, auxs


def run_internals(sym: Any, params: dict[str, Any], inputs: dict[str, np.ndarray],
                  repeat: int = 0) -> tuple[dict[str, np.ndarray], float]:
    """Forward ``inputs`` through every internal output of ``sym`` (inference mode).

    Returns the ``{value name: array}`` outputs and, when ``repeat > 0``, the mean time of
    ``repeat`` further forward passes of the symbol's heads (seconds).
    """
    import mxnet as mx

    args, auxs = _split(params)
    internals = sym.get_internals()
    shapes = {k: v.shape for k, v in inputs.items()}
    arg_shapes, _, aux_shapes = internals.infer_shape_partial(**shapes)
    arg_names, aux_names = internals.list_arguments(), internals.list_auxiliary_states()
    feed = {}
    for name, shape in zip(arg_names, arg_shapes):
        if name in inputs:
            feed[name] = mx.nd.array(inputs[name])
        elif name in args:
            feed[name] = args[name]
        else:  # labels and other unfed variables
            feed[name] = mx.nd.zeros(shape)
    aux = {n: auxs[n] if n in auxs else mx.nd.zeros(s) for n, s in zip(aux_names, aux_shapes)}
    ex = internals.bind(mx.cpu(), args=feed, aux_states=aux, grad_req="null")
    outs = ex.forward(is_train=False)
    result = dict(zip(_output_names(internals), (o.asnumpy() for o in outs)))
    for name in list(result):
        if name in feed or name in aux:
            del result[name]
    elapsed = 0.0
    if repeat > 0:
        head = sym.bind(mx.cpu(), args={n: feed[n] for n in sym.list_arguments()},
                        aux_states={n: aux[n] for n in sym.list_auxiliary_states()},
                        grad_req="null")
        head.forward(is_train=False)[0].wait_to_read()
        start = time.perf_counter()
        for _ in range(repeat):
            head.forward(is_train=False)[0].wait_to_read()
        elapsed = (time.perf_counter() - start) / repeat
    return result, elapsed


def _output_names(internals: Any) -> list[str]:
    """Value names of ``internals``' outputs: ``n`` / ``n:k`` by node, where the k-th later
    op node sharing a name is ``name#k`` (as the importer names it)."""
    import json

    doc = json.loads(internals.tojson())
    seen: dict[str, int] = {}
    names = []
    for node in doc["nodes"]:
        k = seen.get(node["name"], 0) if node["op"] != "null" else 0
        if node["op"] != "null":
            seen[node["name"]] = k + 1
        names.append(node["name"] if k == 0 else f"{node['name']}#{k}")
    return [names[nid] if idx == 0 else f"{names[nid]}:{idx}" for nid, idx, *_ in doc["heads"]]


def synthetic_params(shapes: dict[str, list[int]], seed: int = 0) -> dict[str, np.ndarray]:
    """Deterministic weights for ``{"arg:name"/"aux:name": shape}``, the same in every numpy.

    Used to check whole model-zoo architectures without committing their weights: the
    fixture stores the shapes, and both mxnet (when recording) and the tests rebuild the
    values. Variances and gammas are positive; weights are scaled by 1/sqrt(fan-in) so that
    activations stay of order 1 through deep nets.
    """
    out: dict[str, np.ndarray] = {}
    for i, (key, shape) in enumerate(sorted(shapes.items())):
        rng = np.random.default_rng([seed, i])
        name = key.split(":", 1)[-1]
        if name.endswith(("var", "gamma")):
            value = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(max(1, int(np.prod(shape[1:]))))
        else:
            value = rng.uniform(-0.2, 0.2, shape)
        out[key] = value.astype(np.float32)
    return out


def synthetic_input(shape: tuple[int, ...], seed: int = 7) -> np.ndarray:
    """The deterministic input of the model-zoo fixtures (standard normal, float32)."""
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def main(argv: list[str]) -> int:
    """``_reference.py SYMBOL PARAMS INPUTS.npz OUT.npz [REPEAT]``."""
    import os

    # Fused subgraphs would hide the internal outputs we compare; MXNet's own CPU kernels
    # (not oneDNN) are the reference semantics. Set the variables to override.
    os.environ.setdefault("MXNET_SUBGRAPH_BACKEND", "NONE")
    os.environ.setdefault("MXNET_MKLDNN_ENABLED", "0")
    os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")
    import mxnet as mx

    symbol, params_path, inputs_path, out_path = argv[:4]
    repeat = int(argv[4]) if len(argv) > 4 else 0
    sym = mx.sym.load(symbol)
    params = mx.nd.load(params_path) if params_path != "-" else {}
    if not isinstance(params, dict):  # an empty or unnamed list
        params = {}
    with np.load(inputs_path, allow_pickle=False) as data:
        inputs = {k: data[k] for k in data.files}
    outputs, elapsed = run_internals(sym, params, inputs, repeat)
    outputs["__seconds_per_batch__"] = np.array(elapsed)
    outputs["__mxnet_version__"] = np.array(mx.__version__)
    np.savez(out_path, **outputs)  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
