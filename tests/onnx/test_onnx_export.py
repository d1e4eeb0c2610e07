"""ONNX export of handlers and fitted repurposers, checked with onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

import repurpose as rp  # noqa: E402
from tests.onnx.onnx_nets import TinyResNet, init_bn, keras_model  # noqa: E402

ATOL = 1e-5


def _run(path, x: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})


def _data(n: int = 24, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = (rng.normal(size=(n, 3, 16, 16)) + y[:, None, None, None] * 0.5).astype(np.float32)
    return x, np.array(["cat", "dog", "eel"])[y]


@pytest.fixture(scope="module")
def resnet_handler() -> rp.ModelHandler:
    torch.manual_seed(0)
    return rp.ModelHandler(init_bn(TinyResNet()), input_shape=(3, 16, 16))


def test_handler_exports_whole_net_and_cut_layers(resnet_handler, tmp_path) -> None:
    x, _ = _data(5)
    path = resnet_handler.export_onnx(tmp_path / "net.onnx")
    with torch.no_grad():
        expected = resnet_handler.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(path, x)[0], expected, atol=ATOL, rtol=1e-4)
    layers = ["layer1.0.add", "layer2.0.bn1"]
    cut = resnet_handler.export_onnx(tmp_path / "cut.onnx", layers=layers)
    got = _run(cut, x)
    feats = resnet_handler.extract(x, layers, pooling=None, progress=False)
    for out, name in zip(got, layers):
        np.testing.assert_allclose(out, feats[name], atol=ATOL, rtol=1e-4)


def test_graph_handler_round_trips_through_onnx(tmp_path) -> None:
    handler = rp.ModelHandler.from_onnx(keras_model(13))
    x = np.random.default_rng(1).normal(size=(4, 3, 12, 12)).astype(np.float32)
    path = handler.export_onnx(tmp_path / "keras.onnx")
    back = rp.ModelHandler.from_onnx(path)
    with torch.no_grad():
        expected = handler.module(torch.from_numpy(x)).numpy()
        again = back.module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(_run(path, x)[0], expected, atol=ATOL)
    np.testing.assert_allclose(again, expected, atol=ATOL)


def test_finetuned_net_exports_probabilities(resnet_handler, tmp_path) -> None:
    x, y = _data()
    rep = rp.FineTuneRepurposer(resnet_handler, transfer_layer="layer2.0.relu_1",
                                freeze=None, max_epochs=2,
                                batch_size=8, random_state=0, progress=False).fit(x, y)
    path = rep.export_onnx(tmp_path / "ft.onnx")
    np.testing.assert_allclose(_run(path, x)[0], rep.predict_proba(x), atol=ATOL)


@pytest.mark.parametrize("combine", ["concat", "average"])
def test_lr_on_two_layers_exports_probabilities(resnet_handler, tmp_path, combine) -> None:
    x, y = _data()
    layers = ["layer2.0.bn1", "layer2.0.relu_1"] if combine == "average" else \
        ["layer1.0.add", "fc"]
    rep = rp.LogisticRegressionRepurposer(resnet_handler, layers, combine=combine,
                                          progress=False).fit(x, y)
    path = rep.export_onnx(tmp_path / "lr.onnx")
    np.testing.assert_allclose(_run(path, x)[0], rep.predict_proba(x), atol=ATOL)


def test_binary_lr_mlp_and_linear_svm_export(resnet_handler, tmp_path) -> None:
    x, y = _data()
    binary = np.where(y == "cat", "cat", "other")
    reps = [
        rp.LogisticRegressionRepurposer(resnet_handler, ["layer1", "fc"], progress=False)
        .fit(x, binary),
        rp.MLPRepurposer(resnet_handler, "layer2", max_epochs=3, random_state=0,
                         progress=False).fit(x, y),
        rp.SVMRepurposer(resnet_handler, ["fc"], kernel="linear", progress=False).fit(x, y),
        rp.SVMRepurposer(resnet_handler, ["fc"], kernel="linear", progress=False)
        .fit(x, binary),
    ]
    for i, rep in enumerate(reps):
        before = rep.predict_proba(x)
        path = rep.export_onnx(tmp_path / f"{i}.onnx")
        after = rep.predict_proba(x)  # exporting leaves every module in its mode
        np.testing.assert_array_equal(after, before)
        np.testing.assert_allclose(_run(path, x)[0], after, atol=ATOL,
                                   err_msg=type(rep).__name__)


def test_rbf_svm_and_gp_say_they_do_not_export(resnet_handler, tmp_path) -> None:
    x, y = _data()
    svm = rp.SVMRepurposer(resnet_handler, ["fc"], kernel="rbf", progress=False).fit(x, y)
    with pytest.raises(rp.RepurposeError, match="only kernel='linear'"):
        svm.export_onnx(tmp_path / "svm.onnx")
    feats = resnet_handler.extract(x, ["fc"], progress=False)
    gp = rp.GPRepurposer(resnet_handler, ["fc"], progress=False, n_iter=2)
    gp.fit_features(feats, y)
    with pytest.raises(rp.RepurposeError, match="GPRepurposer does not export"):
        gp.export_onnx(tmp_path / "gp.onnx")
    assert not (tmp_path / "gp.onnx").exists()


def test_export_to_a_directory_is_refused(resnet_handler, tmp_path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        resnet_handler.export_onnx(tmp_path)


@pytest.mark.parametrize("end_to_end", [False, True])
def test_gated_repurposer_exports_probabilities(resnet_handler, tmp_path, end_to_end) -> None:
    x, y = _data()
    # two widths (8 and 16), so the export carries the learned projection too
    rep = rp.GatedRepurposer(resnet_handler, ["maxpool", "avgpool"], max_epochs=2,
                             end_to_end=end_to_end, random_state=0, progress=False).fit(x, y)
    path = rep.export_onnx(tmp_path / "gated.onnx")
    np.testing.assert_allclose(_run(path, x)[0], rep.predict_proba(x), atol=ATOL)


def test_gated_experts_export_probabilities(resnet_handler, tmp_path) -> None:
    x, y = _data()
    binary = np.where(y == "cat", "cat", "other")
    for labels in (y, binary):
        # layers of two widths (8 and 16 pooled features), one expert each
        rep = rp.GatedExpertsRepurposer(resnet_handler, ["maxpool", "avgpool"], folds=3,
                                        random_state=0, progress=False).fit(x, labels)
        path = rep.export_onnx(tmp_path / f"experts{len(rep.classes_)}.onnx")
        np.testing.assert_allclose(_run(path, x)[0], rep.predict_proba(x), atol=ATOL)


def test_converted_graph_exports_a_container_layer(resnet_handler, tmp_path) -> None:
    resnet_handler.save(tmp_path / "saved")
    converted = rp.ModelHandler.load(tmp_path / "saved")  # a GraphNet, no module code
    assert type(converted.module).__name__ == "GraphNet"
    assert "layer2" not in converted.layer_names  # a container, not a layer
    x, _ = _data(4)
    path = converted.export_onnx(tmp_path / "cut.onnx", layers=["layer1", "layer2"])
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["layer1", "layer2"]
    got = session.run(None, {"input": x})
    expected = resnet_handler.extract(x, ["layer1", "layer2"], pooling=None, progress=False)
    np.testing.assert_allclose(got[0], expected["layer1"], atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(got[1], expected["layer2"], atol=ATOL, rtol=1e-4)


def test_repurposer_on_containers_loads_without_module_and_exports(resnet_handler,
                                                                    tmp_path) -> None:
    x, y = _data()
    rep = rp.LogisticRegressionRepurposer(resnet_handler, ["layer1", "layer2"],
                                          progress=False).fit(x, y)
    rep.save(tmp_path / "rep")
    loaded = rp.load(tmp_path / "rep")  # the handler is now a converted graph
    assert type(loaded.handler.module).__name__ == "GraphNet"
    np.testing.assert_array_equal(loaded.predict_proba(x), rep.predict_proba(x))
    path = loaded.export_onnx(tmp_path / "lr.onnx")
    np.testing.assert_allclose(_run(path, x)[0], rep.predict_proba(x), atol=ATOL)
