"""Saving and loading repurposers: JSON + safetensors, never pickle."""

from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import repurpose as rp
from repurpose.repurposers import arrays_to_module_state, module_state_to_arrays
from repurpose.testing import tiny_problem


class _Payload:
    """Unpickling this would create a marker file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture(scope="module")
def problem():
    return tiny_problem()


@pytest.fixture(scope="module")
def fitted(problem):
    return rp.LogisticRegressionRepurposer(problem.handler, ["fc6", "fc7"], progress=False).fit(
        problem.X_train, np.array(["zero", "one", "two"])[problem.y_train]
    )


def test_round_trip_with_handler_predicts_from_images(fitted, problem, tmp_path):
    path = fitted.save(tmp_path / "rep")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.safetensors", "config.json",
                                                      "handler"]
    config = json.loads((path / "config.json").read_text())
    assert config["class"] == "lr" and config["params"]["feature_layers"] == ["fc6", "fc7"]
    assert config["classes"]["values"] == ["one", "two", "zero"]
    assert config["library_version"] == rp.__version__
    loaded = rp.load(path)
    assert loaded.handler is not fitted.handler
    np.testing.assert_array_equal(loaded.predict_proba(problem.X_test),
                                  fitted.predict_proba(problem.X_test))
    assert loaded.predict(problem.X_test).dtype.kind == "U"


def test_save_without_handler_then_pass_one(fitted, problem, tmp_path):
    path = fitted.save(tmp_path / "rep.zip", include_handler=False)
    assert zipfile.is_zipfile(path)
    assert rp.load(path).handler is None
    loaded = rp.load(path, handler=problem.handler)
    np.testing.assert_array_equal(loaded.predict(problem.X_test), fitted.predict(problem.X_test))


@pytest.mark.parametrize(
    "labels",
    [np.array([5, 6, 7]), np.array([0.5, 1.5, 2.5]), np.array([True, False, True]),
     np.array(["a", "b", "c"], dtype=object)],
)
def test_label_types_round_trip(labels, tmp_path):
    rng = np.random.default_rng(0)
    y = labels[np.arange(30) % len(labels)]
    feats = {"f": rng.normal(size=(30, 3))}
    rep = rp.LogisticRegressionRepurposer().fit_features(feats, y)
    loaded = rp.load(rep.save(tmp_path / "r"))
    assert loaded.classes_.dtype == rep.classes_.dtype
    np.testing.assert_array_equal(loaded.classes_, rep.classes_)
    np.testing.assert_array_equal(loaded.predict_features(feats), rep.predict_features(feats))


def test_params_with_int_keys_and_tuples_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    feats, y = {"f": rng.normal(size=(30, 3))}, np.arange(30) % 3
    rep = rp.MLPRepurposer(hidden_sizes=(8, 4), max_epochs=3, random_state=0)
    rep.fit_features(feats, y)
    loaded = rp.load(rep.save(tmp_path / "r"))
    assert loaded.hidden_sizes == (8, 4)
    lr = rp.LogisticRegressionRepurposer(class_weight={0: 2.0, 1: 1.0}).fit_features(feats, y)
    assert rp.load(lr.save(tmp_path / "l")).class_weight == {0: 2.0, 1: 1.0}


def test_a_pickle_file_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "model.pkl"
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(rp.UnsafeFileError, match="is a Python pickle"):
        rp.load(evil)
    assert not marker.exists()


def test_arrays_replaced_by_a_pickle_are_refused(fitted, tmp_path):
    marker = tmp_path / "pwned"
    path = fitted.save(tmp_path / "rep", include_handler=False)
    (path / "arrays.safetensors").write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(rp.UnsafeFileError, match="pickle"):
        rp.load(path)
    torch.save({"x": torch.zeros(2)}, path / "arrays.safetensors")  # a zip holding data.pkl
    with pytest.raises(rp.UnsafeFileError, match="not safetensors"):
        rp.load(path)
    assert not marker.exists()


def test_a_zip_carrying_a_pickle_is_refused(fitted, tmp_path):
    marker = tmp_path / "pwned"
    archive = fitted.save(tmp_path / "rep.zip", include_handler=False)
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("state.pkl", pickle.dumps(_Payload(marker)))
    with pytest.raises(rp.UnsafeFileError, match="state.pkl"):
        rp.load(archive)
    escape = tmp_path / "escape.zip"
    with zipfile.ZipFile(escape, "w") as zf:
        zf.writestr("../outside.json", "{}")
    with pytest.raises(rp.UnsafeFileError, match="outside"):
        rp.load(escape)
    assert not marker.exists() and not (tmp_path.parent / "outside.json").exists()


def test_damaged_or_foreign_files_give_format_errors(fitted, tmp_path):
    with pytest.raises(FileNotFoundError, match="no saved repurposer"):
        rp.load(tmp_path / "missing")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(rp.ModelFormatError, match="not a saved repurposer"):
        rp.load(text)
    path = fitted.save(tmp_path / "rep", include_handler=False)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "class": "nope"}))
    with pytest.raises(rp.RepurposeError, match="no repurposer is registered as 'nope'"):
        rp.load(path)
    (path / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(rp.ModelFormatError, match="format version 99"):
        rp.load(path)
    (path / "config.json").write_text("{not json")
    with pytest.raises(rp.ModelFormatError, match="not valid JSON"):
        rp.load(path)


def test_save_never_clobbers_unrelated_files(fitted, tmp_path):
    user_dir = tmp_path / "photos"
    user_dir.mkdir()
    (user_dir / "cat.jpg").write_bytes(b"precious")
    with pytest.raises(rp.RepurposeError, match="not empty and is not a saved repurposer"):
        fitted.save(user_dir)
    assert (user_dir / "cat.jpg").read_bytes() == b"precious"
    path = fitted.save(tmp_path / "rep")
    fitted.save(path)  # overwriting a previous save is fine
    assert rp.load(path).classes_.tolist() == fitted.classes_.tolist()


def test_unfitted_and_unregistered_cannot_be_saved(fitted, tmp_path):
    with pytest.raises(rp.NotFittedError):
        rp.LogisticRegressionRepurposer().save(tmp_path / "x")

    class Local(rp.LogisticRegressionRepurposer):
        pass

    rng = np.random.default_rng(0)
    rep = Local().fit_features({"f": rng.normal(size=(10, 2))}, np.arange(10) % 2)
    with pytest.raises(rp.RepurposeError, match="not registered"):
        rep.save(tmp_path / "y")
    assert not (tmp_path / "y").exists()


def test_module_state_helpers_round_trip():
    net = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    arrays = module_state_to_arrays(net.state_dict(), "net.")
    assert all(k.startswith("net.") for k in arrays)
    state = arrays_to_module_state({**arrays, "other.w": np.zeros(1)}, "net.")
    twin = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    twin.load_state_dict(state)
    for a, b in zip(net.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(a, b)


def test_plain_module_handler_loads_without_the_module(tmp_path):
    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU())

    X = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    rep = rp.LogisticRegressionRepurposer(rp.ModelHandler(build()), ["2"], progress=False)
    rep.fit(X, np.arange(12) % 2)
    path = rep.save(tmp_path / "rep")
    # standard layers: converted to a graph on save, so no code is needed to load
    np.testing.assert_array_equal(rp.load(path).predict_proba(X), rep.predict_proba(X))
    handler = rp.ModelHandler.load(path / "handler", module=build())
    np.testing.assert_array_equal(rp.load(path, handler=handler).predict_proba(X),
                                  rep.predict_proba(X))


class _Clamp(torch.nn.Module):
    def forward(self, x):
        return x.clamp(0, 1)


def test_custom_module_handler_needs_the_module_back(tmp_path):
    def build():
        return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), _Clamp())

    X = np.random.default_rng(0).random((12, 1, 8, 8), dtype=np.float32)
    rep = rp.LogisticRegressionRepurposer(rp.ModelHandler(build()), ["2"], progress=False)
    rep.fit(X, np.arange(12) % 2)
    path = rep.save(tmp_path / "rep")
    with pytest.raises(rp.ModelFormatError, match="pass handler=ModelHandler"):
        rp.load(path)
    handler = rp.ModelHandler.load(path / "handler", module=build())
    np.testing.assert_array_equal(rp.load(path, handler=handler).predict_proba(X),
                                  rep.predict_proba(X))
