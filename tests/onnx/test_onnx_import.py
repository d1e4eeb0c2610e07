"""ONNX import checked against onnxruntime on every layer output."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

import onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

import repurpose as rp  # noqa: E402
from repurpose.onnx import load_net, verify  # noqa: E402
from tests.onnx.onnx_nets import (  # noqa: E402
    GraphWriter,
    TinyInception,
    TinyMobileNet,
    TinyResNet,
    export,
    init_bn,
    keras_model,
)

TOL = {"rtol": 1e-4, "atol": 1e-5}


def _check(report: rp.onnx.VerifyReport, min_rows: int) -> None:
    assert report.ok, report.format()
    assert len(report.rows) >= min_rows, report.format()


@pytest.mark.parametrize("opset", [9, 11, 13, 18, 21])
@pytest.mark.parametrize("pooling", ["global", "reduce"])
def test_keras_tf2onnx_pattern_matches_onnxruntime(opset: int, pooling: str) -> None:
    model = keras_model(opset, pooling)
    report = verify(model, batch_size=3, **TOL)
    _check(report, 14)
    net = load_net(model)
    assert net.input_shapes["input_1"] == [1, 3, 12, 12]  # NHWC transpose dropped
    assert "model/conv1/Conv2D:0" in net.layer_names
    assert "model/flatten/Reshape/shape:0" not in net.layer_names  # folded


def test_keras_model_keeps_nhwc_input_when_asked() -> None:
    model = keras_model(13)
    net = load_net(model, nchw_input=False)
    assert net.input_shapes["input_1"] == [1, 12, 12, 3]
    assert verify(model, nchw_input=False, **TOL).ok


@pytest.mark.parametrize("opset", [9, 13, 17])
@pytest.mark.parametrize("make", [TinyResNet, TinyMobileNet, TinyInception])
def test_torch_exports_match_onnxruntime(opset: int, make: type) -> None:
    if make is TinyMobileNet and opset < 14:
        pytest.skip("HardSwish needs opset 14")
    torch.manual_seed(0)
    model = export(init_bn(make()), (1, 3, 32, 32), opset)
    report = verify(model, batch_size=2, **TOL)
    _check(report, 6)


def test_fixed_batch_export_runs_on_any_batch() -> None:
    torch.manual_seed(0)
    module = init_bn(TinyResNet())
    net = load_net(export(module, (1, 3, 32, 32), 13, dynamic=False))
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), module(x).numpy(), rtol=1e-4, atol=1e-5)


def test_imported_model_is_a_handler_that_saves_extracts_and_cuts(tmp_path) -> None:
    model = keras_model(13)
    handler = rp.ModelHandler.from_onnx(model, preprocess=rp.Preprocess(crop=(12, 12)))
    assert handler.input_shape == (3, 12, 12)
    x = np.random.default_rng(0).normal(size=(3, 3, 12, 12)).astype(np.float32)
    feats = handler.extract(x, ["model/dw/depthwise:0", "model/dense/BiasAdd:0"],
                            progress=False)
    assert feats["model/dw/depthwise:0"].shape == (3, 8)
    handler.save(tmp_path / "h")
    loaded = rp.ModelHandler.load(tmp_path / "h")
    assert loaded.preprocess == handler.preprocess
    again = loaded.extract(x, ["model/dense/BiasAdd:0"], progress=False)
    np.testing.assert_allclose(again["model/dense/BiasAdd:0"], feats["model/dense/BiasAdd:0"],
                               rtol=1e-6)
    cut = handler.truncate("model/se/mul:0").freeze_up_to("model/pw/BiasAdd:0")
    assert cut.layer_names[-1] == "model/se/mul:0"
    assert "model/conv1/Conv2D:0" in cut.frozen_layers
    assert type(handler.module.layer("model/conv1/Conv2D:0")).__name__ == "Conv2d"


def test_unsupported_ops_are_listed_together() -> None:
    w = GraphWriter(13)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    t = w.node("Relu", ["x"], "a")
    t = w.node("Einsum", [t, t], "b", equation="ij,ij->ij")
    t = w.node("Hardmax", [t], "c")
    t = w.node("Einsum", [t, t], "d", equation="ij,ij->ij")
    model = w.model([x], [t])
    with pytest.raises(rp.UnsupportedLayerError, match=r"2 unsupported op\(s\): Einsum \(2 "
                                                       r"node\(s\), e.g. 'b'\); Hardmax"):
        load_net(model)


def test_missing_input_shape_is_a_clear_error() -> None:
    w = GraphWriter(13)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "C"])
    model = w.model([x], [w.node("Relu", ["x"], "y")])
    with pytest.raises(rp.ModelFormatError, match="pass input_shape"):
        load_net(model)
    assert load_net(model, input_shape=(4,)).input_shapes["x"] == [1, 4]


def test_bad_file_is_a_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model at all")
    with pytest.raises(rp.ModelFormatError, match="not a valid ONNX model"):
        load_net(bad)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_net(tmp_path / "none.onnx")


def test_layers_list_node_outputs_in_order() -> None:
    model = keras_model(13)
    net = load_net(model)
    outputs = [n.output[0] for n in model.graph.node]
    assert net.layer_names == [o for o in outputs if o in net.layer_names]
    assert onnx.__version__  # the parser is the onnx package
