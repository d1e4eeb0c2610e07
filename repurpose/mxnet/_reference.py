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

__all__ = ["run_internals", "main"]


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
    result: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for i, out in enumerate(outs):
        node = internals[i].name
        if node in feed or node in aux:
            continue
        k = counts.get(node, 0)
        counts[node] = k + 1
        result[node if k == 0 else f"{node}:{k}"] = out.asnumpy()
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
