"""CLI journeys of issue 10: labels survive extract -> fit --features -> predict, one set of
preprocessing options for every command and format, warnings for silent misuse."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import repurpose as rp
from repurpose import ModelHandler
from repurpose.cli import cli
from repurpose.datasets import digits_cnn

ROOT = Path(__file__).resolve().parents[1]
MXNET = ROOT / "tests" / "mxnet" / "fixtures"
SYM, PARAMS = str(MXNET / "inception-symbol.json"), str(MXNET / "inception-0000.params")
SHARED = ["--resize", "--crop", "--channel-order", "--raw-scale", "--mean", "--std",
          "--input-scale", "--input-shape", "--on-error"]


def _images(root: Path, size=(20, 20), classes=("ant", "bee"), n=4) -> Path:
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(n):
            arr = rng.integers(0, 120, (size[1], size[0], 3)) + 100 * k
            Image.fromarray(arr.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "m"
    ModelHandler(digits_cnn(n_classes=3, channels=(4, 8), width=16, in_channels=3)).save(out)
    return out


@pytest.mark.parametrize("command", [["inspect"], ["extract"], ["fit"], ["predict"],
                                     ["convert", "caffe"], ["convert", "mxnet"]])
def test_every_command_that_builds_or_reads_takes_the_same_preprocessing_options(command):
    result = CliRunner().invoke(cli, [*command, "--help"])
    assert result.exit_code == 0
    assert [o for o in SHARED if o not in result.output] == []


def test_folder_names_survive_extract_then_fit_features_then_predict(model, tmp_path):
    data = _images(tmp_path / "imgs", size=(8, 8))
    runner = CliRunner()
    feats = tmp_path / "f.npz"
    r = runner.invoke(cli, ["extract", str(model), str(data), "--layers", "fc6,fc7",
                            "--out", str(feats), "--no-progress"])
    assert r.exit_code == 0, r.output
    with np.load(feats) as z:
        assert z["labels"].tolist() == ["ant"] * 4 + ["bee"] * 4
    r = runner.invoke(cli, ["fit", "--features", str(feats), "-o", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    assert "classes ant, bee" in r.output
    out = tmp_path / "p.csv"
    r = runner.invoke(cli, ["predict", str(tmp_path / "rep"), "--features", str(feats),
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    rows = list(csv.reader(out.open()))
    assert rows[0][2:] == ["p_ant", "p_bee"] and {row[1] for row in rows[1:]} <= {"ant", "bee"}
    # The API gives the same labels as the CLI
    rep = rp.LogisticRegressionRepurposer(ModelHandler.load(model), ["fc6", "fc7"],
                                          progress=False).fit(str(data))
    assert set(rep.predict(str(data)).tolist()) <= {"ant", "bee"}


def test_cli_fit_reads_the_training_images_once(model, tmp_path, monkeypatch):
    data = _images(tmp_path / "imgs", size=(8, 8))
    calls = []
    original = ModelHandler.extract

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(ModelHandler, "extract", counting)
    r = CliRunner().invoke(cli, ["fit", "--model", str(model), "--layers", "fc7", str(data),
                                 "-o", str(tmp_path / "rep"), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert len(calls) == 1 and "training accuracy" in r.output


def test_mxnet_model_reads_an_image_folder_with_the_shared_options(tmp_path):
    data = _images(tmp_path / "imgs", size=(20, 18))
    runner = CliRunner()
    r = runner.invoke(cli, ["extract", SYM, str(data), "--weights", PARAMS, "--layers",
                            "fc", "--out", str(tmp_path / "raw.npz"), "--no-progress"])
    assert r.exit_code == 2  # a one-line error, not a torch traceback
    assert "cannot take inputs of shape (3, 18, 20)" in r.output and "preprocessing" in r.output
    r = runner.invoke(cli, ["extract", SYM, str(data), "--weights", PARAMS, "--layers", "fc",
                            "--out", str(tmp_path / "f.npz"), "--no-progress", "--resize",
                            "10,10", "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25"])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "f.npz") as z:
        assert z["fc"].shape[0] == 8 and z["labels"].tolist()[0] == "ant"
    r = runner.invoke(cli, ["fit", "--model", SYM, "--weights", PARAMS, "--layers", "fc",
                            str(data), "--resize", "10,10", "-o", str(tmp_path / "rep"),
                            "--no-progress"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["predict", str(tmp_path / "rep"), str(data)])
    assert r.exit_code == 0, r.output
    assert "ant/0.png" in r.output  # the saved handler kept --resize


def test_inspect_takes_an_input_shape(tmp_path):
    args = ["inspect", str(MXNET / "resnet-symbol.json"), "--weights",
            str(MXNET / "resnet-0000.params")]
    plain = CliRunner().invoke(cli, args)
    r = CliRunner().invoke(cli, [*args, "--input-shape", "3,16,16"])
    assert plain.exit_code == 0 and r.exit_code == 0, r.output
    assert "1x10" not in plain.output and "FlattenLinear  1x10" in r.output
    assert "preprocessing:" in r.output


def test_a_prototxt_without_weights_warns(tmp_path):
    sys.path.insert(0, str(ROOT / "tests" / "caffe"))
    try:
        from caffe_writer import NetWriter
    finally:
        sys.path.remove(str(ROOT / "tests" / "caffe"))
    w = NetWriter((1, 3, 6, 6))
    w.layer("fc", "InnerProduct", ["data"], ["fc"], [(2, 108), (2,)],
            inner_product_param={"num_output": 2})
    proto, _ = w.write(tmp_path)
    with pytest.warns(rp.RandomWeightsWarning, match="without weights.*random"):
        ModelHandler.from_caffe(proto)
    with pytest.warns(rp.RandomWeightsWarning, match="the .params file"):
        ModelHandler.from_mxnet(SYM, input_shape=(3, 10, 10))
    r = CliRunner().invoke(cli, ["inspect", str(proto)])
    assert r.exit_code == 0, r.output
    assert "warning:" in r.output and "without weights" in r.output


def test_on_error_skip_from_the_cli(model, tmp_path):
    data = _images(tmp_path / "imgs", size=(8, 8))
    (data / "ant" / "broken.jpg").write_bytes(b"nope")
    runner = CliRunner()
    args = ["extract", str(model), str(data), "--layers", "fc7", "--out",
            str(tmp_path / "f.npz"), "--no-progress"]
    r = runner.invoke(cli, args)
    assert r.exit_code == 2 and "broken.jpg" in r.output and "--on-error skip" in r.output
    r = runner.invoke(cli, [*args, "--on-error", "skip"])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "f.npz") as z:
        assert len(z["labels"]) == 8
