"""Values an imported Keras model keeps NHWC (issue 13): the importer marks them, the mark
survives save/load and surgery, and feature pooling reduces their H and W axes, giving the
numbers the NCHW value of the same tensor gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import repurpose as rp  # noqa: E402
from repurpose.graph import GraphNet, load_graph, save_graph  # noqa: E402
from repurpose.onnx import load_net  # noqa: E402
from tests.onnx.onnx_nets import GraphWriter  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures"
V3 = FIXTURES / "keras_mobilenet_v3_small_export_opset18.onnx"
ZOO = FIXTURES / "keras_layer_zoo_tf2onnx_opset17.onnx"
RESCALED = ["MobileNetV3Small_1/rescaling_1/mul:0", "MobileNetV3Small_1/rescaling_1/add:0"]
GELU = ["Transpose__3897:0", "layer_zoo_1/conv_gelu_1/Gelu/Pow:0",
        "layer_zoo_1/conv_gelu_1/Gelu/mul_1:0"]
POOL = {"avg": lambda v: v.mean(axis=(2, 3)), "max": lambda v: v.max(axis=(2, 3)),
        "flatten": lambda v: v.reshape(len(v), -1)}


def _onnxruntime(model: onnx.ModelProto | Path, x: np.ndarray, values: list[str]
                 ) -> dict[str, np.ndarray]:
    """The named values of ``model`` on ``x``, as onnxruntime computes them."""
    model = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    model = onnx.ModelProto.FromString(model.SerializeToString())
    model.graph.output.extend(helper.ValueInfoProto(name=v) for v in values)
    session = ort.InferenceSession(model.SerializeToString(),
                                   providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    return dict(zip(values, session.run(values, {feed: x})))


def _check_pooled(handler: rp.ModelHandler, model: onnx.ModelProto | Path, x: np.ndarray,
                  feed: np.ndarray, values: list[str]) -> None:
    """Pooled NHWC values equal onnxruntime's same values transposed to NCHW and pooled."""
    expected = _onnxruntime(model, feed, values)
    for mode, reduce in POOL.items():
        feats = handler.extract(x, values, pooling=mode, progress=False)
        for value in values:
            nchw = expected[value].transpose(0, 3, 1, 2)
            assert feats[value].shape == (len(x), nchw[0].size if mode == "flatten"
                                          else nchw.shape[1]), (mode, value)
            np.testing.assert_allclose(feats[value], reduce(nchw), rtol=1e-4, atol=1e-4,
                                       err_msg=f"{mode} {value}")


def _images(shape: tuple[int, ...], high: float) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, high, (3, *shape)).astype(np.float32)


def test_rescaled_nhwc_input_of_mobilenet_v3_pools_over_h_and_w() -> None:
    """With ``nchw_input=False`` MobileNetV3Small's Rescaling runs on the NHWC input."""
    handler = rp.ModelHandler.from_onnx(V3, nchw_input=False)
    assert handler.module.nhwc_values == {"input", *RESCALED}
    x = _images((64, 64, 3), 255.0)
    _check_pooled(handler, V3, x, x, RESCALED)
    # the NCHW import computes the same tensors NCHW, and pools them alike
    nchw = rp.ModelHandler.from_onnx(V3)
    assert nchw.module.nhwc_values == frozenset()
    for mode in POOL:
        ours = handler.extract(x, RESCALED, pooling=mode, progress=False)
        theirs = nchw.extract(x.transpose(0, 3, 1, 2), RESCALED, pooling=mode, progress=False)
        for value in RESCALED:
            np.testing.assert_allclose(ours[value], theirs[value], rtol=1e-5, atol=1e-4)


def test_gelu_between_transposes_in_a_keras_export_pools_over_h_and_w() -> None:
    """tf2onnx leaves the ``Pow`` of a tanh GELU between a transpose to NHWC and back."""
    handler = rp.ModelHandler.from_onnx(ZOO)
    assert handler.module.nhwc_values == set(GELU)
    x = _images((3, 16, 16), 1.0)
    _check_pooled(handler, ZOO, x, np.ascontiguousarray(x.transpose(0, 2, 3, 1)), GELU)


def _written_model() -> onnx.ModelProto:
    """Conv -> NHWC -> Relu, per-channel Mul, Add of two NHWC values -> Softmax on C and
    NCHW again; also a transpose of the input, whose layout the graph does not show."""
    w = GraphWriter(13)
    inp = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 6, 5])
    conv = w.node("Conv", ["x", w.weight("k", 4, 3, 3, 3)], "conv:0", pads=[1, 1, 1, 1])
    t = w.node("Transpose", [conv], "to_nhwc:0", perm=[0, 2, 3, 1])
    relu = w.node("Relu", [t], "relu:0")
    mul = w.node("Mul", [relu, w.weight("scale", 4)], "mul:0")
    add = w.node("Add", [mul, t], "add:0")
    soft = w.node("Softmax", [add], "softmax:0", axis=-1)
    back = w.node("Transpose", [soft], "to_nchw:0", perm=[0, 3, 1, 2])
    out = w.node("Relu", [back], "out:0")
    other = w.node("Transpose", ["x"], "x_nhwc:0", perm=[0, 2, 3, 1])
    return w.model([inp], [out, w.node("Neg", [other], "neg:0")], rank=4)


def test_written_graph_marks_only_what_elementwise_ops_keep_nhwc() -> None:
    model = _written_model()
    handler = rp.ModelHandler(load_net(model))
    nhwc = ["to_nhwc:0", "relu:0", "mul:0", "add:0"]
    assert handler.module.nhwc_values == set(nhwc)  # softmax ends it; x's layout unknown
    x = _images((3, 6, 5), 1.0)
    _check_pooled(handler, model, x, x, nhwc)
    plain = handler.extract(x, ["conv:0", "out:0"], pooling="avg", progress=False)
    expected = _onnxruntime(model, x, ["conv:0", "out:0"])
    for value in ["conv:0", "out:0"]:
        np.testing.assert_allclose(plain[value], expected[value].mean(axis=(2, 3)),
                                   rtol=1e-5, atol=1e-6)


def test_nhwc_mark_survives_save_load_and_surgery(tmp_path) -> None:
    net = load_net(_written_model())
    loaded = load_graph(save_graph(net, tmp_path / "g"))
    assert loaded.nhwc_values == net.nhwc_values != frozenset()
    assert net.subgraph(["mul:0"]).nhwc_values == {"to_nhwc:0", "relu:0", "mul:0"}
    handler = rp.ModelHandler(net)
    handler.save(tmp_path / "h")
    assert rp.ModelHandler.load(tmp_path / "h").module.nhwc_values == net.nhwc_values


def test_graph_files_without_the_mark_load_and_bad_marks_are_named() -> None:
    config = load_net(_written_model()).config()
    del config["nhwc_values"]
    assert GraphNet.from_config(config).nhwc_values == frozenset()
    config["nhwc_values"] = ["relu:0", "nowhere:0"]
    with pytest.raises(rp.ModelFormatError, match=r"nhwc_values names values no layer or "
                                                   r"input has: \['nowhere:0'\]"):
        GraphNet.from_config(config)


def test_input_rescaled_per_channel_stays_nhwc_and_is_marked() -> None:
    """A per-channel Rescaling keeps the input NHWC (see test_onnx_keras); the transpose
    that feeds the Conv shows the input and the values computed from it are NHWC."""
    w = GraphWriter(13)
    inp = helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 6, 5, 3])
    t = w.node("Mul", ["image", w.weight("scale", 3)], "rescale/mul:0")
    t = w.node("Add", [t, w.const("one", np.array(1.0, np.float32))], "rescale/add:0")
    t = w.node("Transpose", [t], "to_nchw:0", perm=[0, 3, 1, 2])
    model = w.model([inp], [w.node("Conv", [t, w.weight("k", 2, 3, 1, 1)], "conv:0")], rank=4)
    handler = rp.ModelHandler(load_net(model))
    values = ["rescale/mul:0", "rescale/add:0"]
    assert handler.module.nhwc_values == {"image", *values}
    x = _images((6, 5, 3), 1.0)
    _check_pooled(handler, model, x, x, values)


def test_repurposer_on_an_nhwc_layer_fits_and_exports_pooling_over_h_and_w(tmp_path) -> None:
    handler = rp.ModelHandler(load_net(_written_model()))
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 3, 6, 5)).astype(np.float32)
    y = np.arange(24) % 2
    x[y == 1] += 3.0
    rep = rp.LogisticRegressionRepurposer(handler, ["add:0"], progress=False).fit(x, y)
    assert rep.feature_dims_ == {"add:0": 4}  # one feature per channel, not per row
    assert rep.score(x, y) > 0.8
    session = ort.InferenceSession(str(rep.export_onnx(tmp_path / "lr.onnx")),
                                   providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0].name
    np.testing.assert_allclose(session.run(None, {feed: x})[0], rep.predict_proba(x),
                               atol=1e-5)


def test_network_repurposers_refuse_a_cut_at_an_nhwc_value() -> None:
    handler = rp.ModelHandler(load_net(_written_model()))
    x = np.random.default_rng(2).normal(size=(8, 3, 6, 5)).astype(np.float32)
    rep = rp.FineTuneRepurposer(handler, transfer_layer="add:0", max_epochs=1, progress=False)
    with pytest.raises(ValueError, match=r"cut at \['add:0'\].*NHWC.*NCHW value next to it"):
        rep.fit(x, np.arange(8) % 2)
