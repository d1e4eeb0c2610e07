"""The `repurpose demo`, `repurpose fit` and `repurpose predict` commands."""

from __future__ import annotations

import csv
import re

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from repurpose import ModelHandler
from repurpose.cli import cli
from repurpose.datasets import digits_cnn, load_digits_split


@pytest.fixture(scope="module")
def image_task(tmp_path_factory):
    """An RGB image folder (digits 5-7) and a saved 3-channel handler."""
    root = tmp_path_factory.mktemp("task")
    split = load_digits_split(6)
    for split_name, X, y in (("train", split.X_train, split.y_train),
                             ("test", split.X_test[:30], split.y_test[:30])):
        for i, (img, label) in enumerate(zip(X, y)):
            if label > 7:
                continue
            folder = root / split_name / f"d{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (img[0] * 255).astype(np.uint8)
            Image.fromarray(np.stack([pixels] * 3, axis=-1)).save(folder / f"{i}.png")
    net = digits_cnn(n_classes=3, channels=(4, 8), width=16, in_channels=3)
    ModelHandler(net).save(root / "model")
    return root


def test_fit_and_predict_from_an_image_folder(image_task, tmp_path):
    runner = CliRunner()
    rep_dir = tmp_path / "rep"
    result = runner.invoke(cli, ["fit", "--model", str(image_task / "model"), "--layers",
                                 "fc6,fc7", str(image_task / "train"), "-o", str(rep_dir),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "classes d5, d6, d7" in result.output
    preds = tmp_path / "preds.csv"
    result = runner.invoke(cli, ["predict", str(rep_dir), str(image_task / "test"),
                                 "--out", str(preds)])
    assert result.exit_code == 0, result.output
    rows = list(csv.reader(preds.open()))
    assert rows[0] == ["id", "label", "p_d5", "p_d6", "p_d7"]
    assert rows[1][0].startswith("d5/") and rows[1][1] in {"d5", "d6", "d7"}
    assert abs(sum(float(v) for v in rows[1][2:]) - 1) < 1e-4
    assert "accuracy" in result.output


def test_fit_and_predict_from_features(tmp_path):
    rng = np.random.default_rng(0)
    y = np.repeat(["cat", "dog"], 10)
    feats = {"fc6": rng.normal(size=(20, 4)) + (y == "dog")[:, None],
             "fc7": rng.normal(size=(20, 3))}
    np.savez(tmp_path / "feats.npz", labels=y, **feats)
    runner = CliRunner()
    result = runner.invoke(cli, ["fit", "--features", str(tmp_path / "feats.npz"), "-r", "svm",
                                 "-p", "C=0.5", "-p", "kernel=linear", "--layers", "fc6",
                                 "-o", str(tmp_path / "rep")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["predict", str(tmp_path / "rep"), "--features",
                                 str(tmp_path / "feats.npz")])
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "id,label,p_cat,p_dog" and len(lines) >= 21


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "-o", "x"], "either DATA"),
        (["fit", "--features", "{feats}", "-r", "nope", "-o", "x"], "no repurposer is registered"),
        (["fit", "--features", "{feats}", "-p", "bogus=1", "-o", "x"], r"no parameter\(s\)"),
        (["fit", "--features", "{feats}", "-p", "C", "-o", "x"], "NAME=VALUE"),
        (["fit", "{tmp}", "-o", "x"], "needs --model"),
        (["predict", "{tmp}", "--features", "{feats}"], "not a saved repurposer"),
    ],
)
def test_errors_are_one_line_messages(tmp_path, args, message):
    np.savez(tmp_path / "f.npz", labels=np.array([0, 1]), a=np.zeros((2, 2)))
    args = [a.format(feats=tmp_path / "f.npz", tmp=tmp_path) for a in args]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert re.search(message, result.output), result.output


def test_demo_smoke(tmp_path, monkeypatch):
    monkeypatch.setenv("REPURPOSE_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["demo", "--smoke", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "LR on raw pixels" in result.output and "CNN from scratch" in result.output
    assert list(tmp_path.glob("digits_cnn_*/weights.safetensors"))


def test_demo_options(tmp_path, monkeypatch):
    monkeypatch.setenv("REPURPOSE_CACHE_DIR", str(tmp_path))
    result = CliRunner().invoke(cli, ["demo", "--smoke", "--no-progress", "--k", "3",
                                      "--layers", "fc6+fc7", "-r", "svm"])
    assert result.exit_code == 0, result.output
    assert re.search(r"svm\s+fc6\+fc7\s+\d\.\d{3}", result.output)
    assert "K=3" in result.output
    result = CliRunner().invoke(cli, ["demo", "--k", "five"])
    assert result.exit_code == 2 and "comma-separated integers" in result.output


def test_demo_survives_a_failing_repurposer(tmp_path, monkeypatch):
    import repurpose as rp
    from repurpose.demo import format_table, run_demo
    from repurpose.repurposers._registry import _REGISTRY

    class Failing(rp.LogisticRegressionRepurposer):
        def _fit_features(self, features, y):
            raise ValueError("boom")

    monkeypatch.setenv("REPURPOSE_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(_REGISTRY, "failing", Failing)
    result = run_demo(smoke=True, repurposers=["failing"], progress=False)
    table = format_table(result)
    assert "Failing failed: ValueError: boom" in table
    assert result.rows[("LR on raw pixels", "-")][5] > 0.5
