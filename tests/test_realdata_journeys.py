"""The documented flow, walked on real material: SqueezeNet v1.0 (Caffe) and 12 flower species.

Preprocessing as ``squeezenet_v1.0/preprocess.json`` states it: BGR, 0-255, mean (104, 117,
123), resize 256x256, centre crop 227. Features: ``fire9/concat`` average-pooled. The flower
features are extracted once per session (train to disk, val in memory); the API and CLI
journeys use small subsets (symlinked class folders) so the whole file stays near a minute
or two on a quiet machine.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import repurpose as rp
from repurpose.repurposers import get_repurposer_class

pytestmark = pytest.mark.realdata

ROOT = Path(__file__).resolve().parents[1]
LAYER = "fire9/concat"
CLASSES = ["daisy", "dandelion", "sunflower"]


def _files(realdata: Path) -> tuple[Path, Path]:
    net = realdata / "squeezenet_v1.0"
    return net / "deploy.prototxt", net / "squeezenet_v1.0_dc.caffemodel"


def _stated_preprocessing(realdata: Path) -> dict:
    spec = json.loads((realdata / "squeezenet_v1.0" / "preprocess.json").read_text())
    return {"mean": tuple(spec["mean"]), "resize": tuple(spec["resize"]),
            "channel_order": spec["channel_order"], "raw_scale": spec["raw_scale"]}


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "repurpose", *args], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=900)


@pytest.fixture(scope="session")
def squeezenet(realdata: Path) -> rp.ModelHandler:
    prototxt, weights = _files(realdata)
    return rp.ModelHandler.from_caffe(prototxt, weights, **_stated_preprocessing(realdata))


@pytest.fixture(scope="session")
def flower_features(squeezenet, realdata, tmp_path_factory):
    """Pooled fire9/concat of every flower: train streamed to disk, val in memory."""
    out = tmp_path_factory.mktemp("flower-features")
    train, y_train = squeezenet.extract(str(realdata / "flowers12" / "train"), [LAYER],
                                        out=out, return_labels=True, progress=False)
    val, y_val = squeezenet.extract(str(realdata / "flowers12" / "val"), [LAYER],
                                    return_labels=True, progress=False)
    return out, (train, y_train), (val, y_val)


@pytest.fixture(scope="session")
def subset(realdata: Path, tmp_path_factory) -> Path:
    """3 classes, 8 train and 4 val images each, as symlinks (a folder name with a space)."""
    root = tmp_path_factory.mktemp("flowers subset")
    for split, n in (("train", 8), ("val", 4)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for image in sorted((realdata / "flowers12" / split / name).iterdir())[:n]:
                (root / split / name / image.name).symlink_to(image)
    return root


def test_import_applies_the_stated_preprocessing(squeezenet):
    pre = squeezenet.preprocess
    assert (pre.channel_order, pre.resize, pre.crop, pre.raw_scale, pre.mean) == (
        "BGR", (256, 256), (227, 227), 255.0, (104.0, 117.0, 123.0))
    assert LAYER in squeezenet.layer_names and squeezenet.input_shape == (3, 227, 227)


def test_extract_to_disk_keeps_folder_names_and_counts(flower_features, realdata):
    out, (train, y_train), (val, y_val) = flower_features
    index = json.loads((out / "index.json").read_text())
    assert index["n"] == 720 and train[LAYER].shape == (720, 512) and val[LAYER].shape == (240, 512)
    classes = sorted(p.name for p in (realdata / "flowers12" / "train").iterdir())
    assert sorted(set(y_train.tolist())) == classes and np.load(out / "labels.npy")[0] == "bluebell"
    assert np.isfinite(train[LAYER]).all()


def test_lr_on_every_train_image_reaches_the_stated_val_accuracy(flower_features):
    """realdata README: about 0.95 with default LR (reported in docs/real-data.md)."""
    _, (train, y_train), (val, y_val) = flower_features
    rep = rp.LogisticRegressionRepurposer(feature_layers=LAYER).fit_features(train, y_train)
    accuracy = float(np.mean(rep.predict_features(val) == y_val))
    print(f"flowers12 val accuracy, LR on pooled {LAYER}: {accuracy:.3f}")
    assert accuracy > 0.9


@pytest.mark.parametrize("name", ["lr", "gp"])
def test_three_line_api_on_str_paths_then_a_fresh_process_predicts_names(
        name, squeezenet, subset, tmp_path):
    cls = get_repurposer_class(name)
    rep = cls(squeezenet, feature_layers=[LAYER], progress=False)
    rep.fit(str(subset / "train"))
    pred = rep.predict(str(subset / "val"))
    truth = np.repeat(CLASSES, 4)
    assert rep.classes_.tolist() == CLASSES and len(pred) == 12
    assert np.mean(pred == truth) >= 0.75
    saved = rep.save(tmp_path / f"{name}-rep")
    script = ("import sys, repurpose as rp; rep = rp.load(sys.argv[1]); "
              "print(','.join(rep.predict(sys.argv[2]).tolist()))")
    proc = subprocess.run([sys.executable, "-c", script, str(saved), str(subset / "val")],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().split(",") == pred.tolist()


def test_cli_inspect_shows_the_layers_and_the_preprocessing(realdata):
    prototxt, weights = _files(realdata)
    proc = _cli("inspect", str(prototxt), "--weights", str(weights), "--mean", "104,117,123",
                "--resize", "256,256")
    assert proc.returncode == 0, proc.stderr
    assert "fire9/concat" in proc.stdout and "1x512x13x13" in proc.stdout
    assert "mean=(104.0, 117.0, 123.0)" in proc.stdout and "warning" not in proc.stderr


def test_cli_verify_caffe_passes_on_squeezenet(realdata):
    prototxt, weights = _files(realdata)
    image = sorted((realdata / "flowers12" / "val" / "daisy").iterdir())[0]
    proc = _cli("verify", "caffe", str(prototxt), str(weights), "--image", str(image),
                "--mean", "104,117,123")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "65 blobs compared, 0 mismatched" in proc.stdout
    worst = float(proc.stdout.split("relative to the blob's scale ")[1].split()[0])
    print(f"verify caffe SqueezeNet: largest relative error {worst:.2g}")
    assert worst < 1e-4


def test_cli_extract_fit_predict_keep_folder_names(realdata, subset, tmp_path):
    prototxt, weights = _files(realdata)
    model = ["--weights", str(weights), "--mean", "104,117,123", "--resize", "256,256"]
    feats, val_feats = tmp_path / "train.npz", tmp_path / "val.npz"
    for data, out in ((subset / "train", feats), (subset / "val", val_feats)):
        proc = _cli("extract", str(prototxt), str(data), "--layers", LAYER, "--out", str(out),
                    "--no-progress", *model)
        assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _cli("fit", "--features", str(feats), "-o", str(tmp_path / "from-features"))
    assert proc.returncode == 0 and "classes daisy, dandelion, sunflower" in proc.stdout
    proc = _cli("predict", str(tmp_path / "from-features"), "--features", str(val_feats))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert {row[1] for row in csv.reader(proc.stdout.splitlines()[1:])} <= set(CLASSES)
    proc = _cli("fit", "--model", str(prototxt), "--layers", LAYER, str(subset / "train"),
                "-o", str(tmp_path / "rep"), "--no-progress", *model)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "classes daisy, dandelion, sunflower" in proc.stdout
    proc = _cli("predict", str(tmp_path / "rep"), str(subset / "val"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = list(csv.reader(proc.stdout.splitlines()))
    assert rows[0] == ["id", "label", "p_daisy", "p_dandelion", "p_sunflower"]
    assert rows[1][0].startswith("daisy/") and len(rows) == 13
    accuracy = float(proc.stderr.split("accuracy ")[1].split()[0])
    assert accuracy >= 0.75


def test_cli_warns_when_the_weights_are_missing(realdata, subset, tmp_path):
    prototxt, _ = _files(realdata)
    proc = _cli("inspect", str(prototxt))
    assert proc.returncode == 0 and "warning:" in proc.stderr and "random" in proc.stderr


def test_cli_fits_the_experts_gate_on_two_layers_of_different_widths(realdata, subset, tmp_path):
    """fire9/concat (512) and pool_final (1000), typed as a user would; then the gates."""
    prototxt, weights = _files(realdata)
    model = ["--weights", str(weights), "--mean", "104,117,123", "--resize", "256,256"]
    proc = _cli("fit", "--model", str(prototxt), "-r", "gated_experts", "--layers",
                "fire9/concat,pool_final", "-p", "folds=4", "-p", "random_state=0",
                str(subset / "train"), "-o", str(tmp_path / "experts"), "--no-progress", *model)
    assert proc.returncode == 0, proc.stderr[-2000:]
    proc = _cli("predict", str(tmp_path / "experts"), str(subset / "val"))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert float(proc.stderr.split("accuracy ")[1].split()[0]) >= 0.75
    rep = rp.load(tmp_path / "experts")
    assert isinstance(rep, rp.GatedExpertsRepurposer) and rep.folds == 4
    shares = rep.gates_(str(subset / "val"))
    assert shares.shape == (12, 2)
    np.testing.assert_allclose(shares.sum(1), 1.0, atol=1e-9)
