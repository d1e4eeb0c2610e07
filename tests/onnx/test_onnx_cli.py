"""``repurpose convert onnx``, ``verify onnx``, ``inspect model.onnx`` and ``export``."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

ort = pytest.importorskip("onnxruntime")

import repurpose as rp  # noqa: E402
from repurpose.cli import cli  # noqa: E402
from tests.onnx.onnx_nets import keras_model  # noqa: E402


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "keras.onnx"
    onnx.save(keras_model(13), str(path))
    return path


def test_convert_verify_inspect(model_file, tmp_path) -> None:
    runner = CliRunner()
    r = runner.invoke(cli, ["convert", "onnx", str(model_file), "-o", str(tmp_path / "out")])
    assert r.exit_code == 0, r.output
    assert rp.ModelHandler.load(tmp_path / "out").input_shape == (3, 12, 12)
    r = runner.invoke(cli, ["verify", "onnx", str(model_file)])
    assert r.exit_code == 0, r.output
    assert "model/conv1/Conv2D:0" in r.output and "OK" in r.output
    r = runner.invoke(cli, ["inspect", str(model_file)])
    assert r.exit_code == 0, r.output
    assert "model/dense/MatMul:0" in r.output


def test_export_model_layers_and_repurposer(model_file, tmp_path) -> None:
    runner = CliRunner()
    out = tmp_path / "cut.onnx"
    r = runner.invoke(cli, ["export", str(model_file), "-o", str(out), "--layers",
                            "model/se/mul:0"])
    assert r.exit_code == 0, r.output
    x = np.random.default_rng(0).normal(size=(2, 3, 12, 12)).astype(np.float32)
    handler = rp.ModelHandler.from_onnx(model_file)
    got = ort.InferenceSession(str(out)).run(None, {"input": x})[0]
    want = handler.extract(x, "model/se/mul:0", pooling=None, progress=False)["model/se/mul:0"]
    np.testing.assert_allclose(got, want, atol=1e-5)
    X = np.random.default_rng(1).normal(size=(20, 3, 12, 12)).astype(np.float32)
    rep = rp.LogisticRegressionRepurposer(handler, ["model/pw/BiasAdd:0"], progress=False)
    rep.fit(X, np.arange(20) % 2).save(tmp_path / "rep")
    r = runner.invoke(cli, ["export", str(tmp_path / "rep"), "-o", str(tmp_path / "rep.onnx")])
    assert r.exit_code == 0, r.output
    got = ort.InferenceSession(str(tmp_path / "rep.onnx")).run(None, {"input": X})[0]
    np.testing.assert_allclose(got, rep.predict_proba(X), atol=1e-5)


def test_unsupported_model_is_one_line_error(tmp_path) -> None:
    from onnx import TensorProto, helper

    node = helper.make_node("Einsum", ["x", "x"], ["y"], equation="ij,ij->ij")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 4])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "e.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    r = CliRunner().invoke(cli, ["convert", "onnx", str(path), "-o", str(tmp_path / "o")])
    assert r.exit_code == 2 and "unsupported op(s): Einsum" in r.output
