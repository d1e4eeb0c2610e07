"""Compare an imported ONNX model with ``onnxruntime``, value by value."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repurpose._exceptions import RepurposeError
from repurpose.graph._report import NodeDiff, VerifyReport, compare_net
from repurpose.onnx._convert import load_net, read_model
from repurpose.onnx._nhwc import nhwc_entry

if TYPE_CHECKING:
    import onnx

__all__ = ["verify", "VerifyReport", "NodeDiff", "onnxruntime_outputs"]


def onnxruntime_outputs(model: onnx.ModelProto, feeds: dict[str, np.ndarray],
                        values: Sequence[str]) -> dict[str, np.ndarray]:
    """Run ``model`` in onnxruntime and return the named (intermediate) values."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise RepurposeError("verification needs onnxruntime: pip install onnxruntime") from err
    from onnx import TensorProto, helper, shape_inference

    probe = type(model)()
    probe.CopyFrom(model)
    inferred = shape_inference.infer_shapes(probe)
    types = {v.name: v.type.tensor_type.elem_type for v in inferred.graph.value_info}
    declared = {o.name for o in probe.graph.output}
    for name in values:
        if name not in declared:
            elem = types.get(name) or TensorProto.FLOAT
            probe.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(probe.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds)))


def verify(source: str | Path | bytes | onnx.ModelProto, inputs: np.ndarray | None = None,
           input_shape: Sequence[int] | None = None, nchw_input: bool = True,
           rtol: float = 1e-4, atol: float = 1e-5, seed: int = 0,
           batch_size: int = 2) -> VerifyReport:
    """Run the imported net and onnxruntime on the same input; compare every layer output.

    Parameters
    ----------
    source : str, Path, bytes or onnx.ModelProto
        The ONNX model.
    inputs : ndarray, optional
        The batch, in the imported net's layout (NCHW when an NHWC transpose was dropped).
        Default: a seeded normal batch of ``batch_size`` of the input shape.
    input_shape : sequence of int, optional
        One input's shape without batch axis, when the file leaves it open.
    nchw_input : bool
        As in :func:`load_net`.
    rtol, atol : float
        Tolerances (``|a - b| <= atol + rtol * |b|``).
    seed : int
        Seed of the random input.
    batch_size : int
        Size of the random batch (a file with a fixed batch size uses that instead).

    Returns
    -------
    VerifyReport
        ``.rows`` (one per layer output), ``.ok``, ``.format()``.
    """
    model = read_model(source)
    net = load_net(model, input_shape=input_shape, nchw_input=nchw_input)
    if len(net.input_names) != 1:
        raise ValueError(f"verify supports single-input models; this one has {net.input_names}")
    name = net.input_names[0]
    if inputs is None:
        declared = model.graph.input[[i.name for i in model.graph.input].index(name)]
        dims = declared.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            batch_size = int(dims[0].dim_value)
        shape = (batch_size, *net.input_shapes[name][1:])
        inputs = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    x = np.asarray(inputs, np.float32)
    entry = nhwc_entry(model) if nchw_input else None
    ort_x = x.transpose(0, 2, 3, 1) if entry else x
    top = {v for node in model.graph.node for v in node.output}  # not inside If branches
    produced = [v for node in net.nodes for v in node.outputs
                if node.op != "onnx.constant" and v in top]
    ref = onnxruntime_outputs(model, {name: ort_x}, produced)
    for value in entry.chain if entry else ():  # NHWC in the file, NCHW in the net
        if value in ref:
            ref[value] = ref[value].transpose(0, 3, 1, 2)
    import onnxruntime

    return compare_net(net, {name: x}, ref, f"onnxruntime {onnxruntime.__version__}", rtol, atol)
