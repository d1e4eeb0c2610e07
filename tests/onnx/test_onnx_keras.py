"""Real Keras models exported to ONNX (tests/onnx/fixtures, written by
tools/make_keras_onnx_fixtures.py): the import matches onnxruntime on every node and
Keras's own ``model.predict``, extracts a middle layer, and a repurposer fits on it."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import repurpose as rp  # noqa: E402
from repurpose.onnx import load_net, verify  # noqa: E402
from tests.onnx.onnx_nets import GraphWriter  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
NETS = json.loads((FIXTURES / "keras_fixtures.json").read_text())["nets"]
NAMES = sorted(NETS)
TOL = {"rtol": 1e-4, "atol": 1e-5}
SHAPE_OPS = {"Shape", "Gather", "Cast", "ReduceProd", "Unsqueeze", "Concat", "Slice", "Max"}


def _nchw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@cache
def _handler(name: str) -> rp.ModelHandler:
    return rp.ModelHandler.from_onnx(FIXTURES / f"{name}.onnx")


def _reference(name: str) -> dict[str, np.ndarray]:
    with np.load(FIXTURES / f"{name}.npz") as ref:
        return {k: ref[k] for k in ref.files}


def test_fixtures_are_real_keras_exports() -> None:
    exporters = {info["exporter"] for info in NETS.values()}
    opsets = {info["opset"] for info in NETS.values()}
    assert exporters == {"tf2onnx", "keras"} and len(opsets) >= 2
    for name in NAMES:
        model = onnx.load(str(FIXTURES / f"{name}.onnx"), load_external_data=False)
        assert model.producer_name == "tf2onnx", name
        assert model.opset_import[0].version == NETS[name]["opset"], name
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims[-1] == 3, f"{name}: input {dims} is not NHWC"


@pytest.mark.parametrize("name", NAMES)
def test_keras_export_matches_onnxruntime_on_every_node(name: str) -> None:
    path = FIXTURES / f"{name}.onnx"
    x = _nchw(_reference(name)["input"])
    report = verify(path, x, **TOL)
    assert report.ok, report.format()
    # every layer is compared; nodes that are no layer are the input transpose, which the
    # import drops, and the shape arithmetic of reshapes, which it folds to constants
    net = _handler(name).module
    assert {r.value for r in report.rows} == {v for n in net.nodes for v in n.outputs
                                              if n.op != "onnx.constant"}
    skipped = [n for n in onnx.load(str(path)).graph.node if n.output[0] not in net.layer_names]
    assert [n.op_type for n in skipped].count("Transpose") == 1
    assert {n.op_type for n in skipped} <= {"Transpose", *SHAPE_OPS}, \
        [(n.op_type, n.output[0]) for n in skipped]
    assert net.input_shapes["input"] == [1, *x.shape[1:]]  # NCHW


@pytest.mark.parametrize("name", NAMES)
def test_import_matches_keras_predict(name: str) -> None:
    ref, info = _reference(name), NETS[name]
    handler = _handler(name)
    x = _nchw(ref["input"])
    with torch.no_grad():
        out = handler.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, ref["output"], **TOL)
    layer = info["onnx_value"]
    feats = handler.extract(x, [layer], pooling=None, progress=False)[layer]
    expected = ref["features"]  # Keras computes NHWC; the ONNX value may be either
    expected = _nchw(expected) if info["onnx_layout"] == "NCHW" else expected
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(feats, expected, rtol=1e-4, atol=1e-5 * scale,
                               err_msg=f"{name}: {layer} vs Keras layer {info['keras_layer']}")


def test_rescaling_before_the_transpose_keeps_nhwc_when_asked() -> None:
    name = "keras_mobilenet_v3_small_export_opset18"
    ref = _reference(name)
    path = FIXTURES / f"{name}.onnx"
    net = load_net(path, nchw_input=False)
    assert net.input_shapes["input"] == [1, 64, 64, 3]
    with torch.no_grad():
        out = net(torch.from_numpy(ref["input"])).numpy()
    np.testing.assert_allclose(out, ref["output"], **TOL)
    assert verify(path, ref["input"], nchw_input=False, **TOL).ok


def _images(shape: tuple[int, ...], low: float, high: float, n: int = 30,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three classes of seeded images that differ in which channel is bright; brightness
    and smooth patterns vary from image to image, so that no pooled feature is nearly
    constant (standardising one would blow float32 rounding up past 1e-5)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    c, h, w = shape
    waves = np.sin(rng.uniform(0.05, 0.5, (n, c, 1, 1)) * np.arange(h)[:, None]
                   + rng.uniform(0.05, 0.5, (n, c, 1, 1)) * np.arange(w))
    x = rng.uniform(0.0, 0.3, (n, 1, 1, 1)) * (1 + waves) / 2 + rng.uniform(0, 0.2, (n, *shape))
    x[np.arange(n), y] += 0.5
    return (low + (high - low) * x).astype(np.float32), np.array(["r", "g", "b"])[y]


# Not the MobileNets: with random weights their middle features differ between images by
# ~1e-4 of their size, so standardising them scales float32 rounding (onnxruntime vs torch)
# up to ~1e-4 in the probabilities. The import itself matches (tests above).
@pytest.mark.parametrize("name", ["keras_nasnet_tiny_tf2onnx_opset13",
                                  "keras_resnet_tiny_tf2onnx_opset18"])
def test_lr_fits_on_a_middle_layer_and_exports(name: str, tmp_path) -> None:
    handler = _handler(name)
    low, high = (0.0, 255.0) if "v3" in name else (-1.0, 1.0)
    x, y = _images(handler.input_shape, low, high)
    layer = NETS[name]["onnx_value"]
    rep = rp.LogisticRegressionRepurposer(handler, [layer], progress=False).fit(x, y)
    assert rep.score(x, y) > 0.9
    path = rep.export_onnx(tmp_path / "lr.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": x})[0], rep.predict_proba(x),
                               atol=1e-5)


def _rescaled_model(scale_shape: tuple[int, ...]) -> onnx.ModelProto:
    """NHWC input -> Mul (by a constant of ``scale_shape``) -> Add 1 -> NCHW -> Relu."""
    w = GraphWriter(13)
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 5, 4, 3])
    t = w.node("Mul", ["image", w.weight("scale", *scale_shape)], "rescale/mul:0")
    t = w.node("Add", [t, w.const("one", np.array(1.0, np.float32))], "rescale/add:0")
    t = w.node("Transpose", [t], "to_nchw:0", perm=[0, 3, 1, 2])
    return w.model([inp], [w.node("Relu", [t], "relu:0")], rank=4)


def test_only_scalar_rescaling_lets_the_input_become_nchw() -> None:
    model = _rescaled_model(())
    net = load_net(model)
    assert net.input_shapes["image"] == [1, 3, 5, 4]
    report = verify(model, batch_size=2, **TOL)
    assert report.ok and {r.value for r in report.rows} == {
        "rescale/mul:0", "rescale/add:0", "relu:0"}, report.format()
    per_channel = _rescaled_model((3,))  # differs between layouts: keep NHWC
    assert load_net(per_channel).input_shapes["image"] == [1, 5, 4, 3]
    assert verify(per_channel, batch_size=2, **TOL).ok


def test_ops_an_exporter_left_unconverted_are_named_as_such() -> None:
    """tf2onnx writes Keras's exact GELU as a TensorFlow ``Erfc`` node it cannot convert;
    a reshape behind it computes its shape from it, and that ``Shape`` is no fault."""
    w = GraphWriter(13)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    t = w.node("Erfc", ["x"], "gelu/Erfc:0")
    shape = w.node("Shape", [t], "flatten/Shape:0")
    w.node("Reshape", [t, shape], "flatten/Reshape:0")
    w.node("Relu", ["flatten/Reshape:0"], "relu:0")
    out = helper.make_tensor_value_info("relu:0", TensorProto.FLOAT, None)
    model = helper.make_model(helper.make_graph(w.nodes, "g", [x], [out]),  # no checker
                              opset_imports=[helper.make_opsetid("", 13)])
    with pytest.raises(rp.UnsupportedLayerError,
                       match=r"1 unsupported op\(s\): Erfc \(1 node\(s\), e.g. 'gelu/Erfc:0'; "
                             r"not an ONNX op: the exporter could not convert it") as err:
        load_net(model)
    assert "Shape (" not in str(err.value)


@pytest.mark.parametrize("name", ["keras_mobilenet_v3_small_export_opset18",
                                  "keras_layer_zoo_tf2onnx_opset17"])
def test_imported_keras_model_exports_back_to_onnx(name: str, tmp_path) -> None:
    """Keras -> ONNX (NHWC) -> repurpose (NCHW) -> ONNX again, still Keras's numbers."""
    ref = _reference(name)
    path = _handler(name).export_onnx(tmp_path / "again.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": _nchw(ref["input"])})[0],
                               ref["output"], **TOL)
