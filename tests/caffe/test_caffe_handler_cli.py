"""handler_from_caffe, preprocessing, saving, the CLI commands, and the benchmark smoke run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_writer import NetWriter
from click.testing import CliRunner
from PIL import Image

import repurpose as rp
import repurpose.caffe as rc
from repurpose.caffe import _schema
from repurpose.cli import cli

ROOT = Path(__file__).resolve().parents[2]


def small_net(tmp_path: Path) -> tuple[Path, Path]:
    w = NetWriter((1, 3, 6, 6))
    w.layer("conv1", "Convolution", ["data"], ["conv1"], [(4, 3, 3, 3), (4,)],
            convolution_param={"num_output": 4, "kernel_size": [3]})
    w.layer("relu1", "ReLU", ["conv1"], ["conv1"])
    w.layer("pool1", "Pooling", ["conv1"], ["pool1"],
            pooling_param={"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1})
    w.layer("fc7", "InnerProduct", ["pool1"], ["fc7"], [(5, 36), (5,)],
            inner_product_param={"num_output": 5})
    return w.write(tmp_path)


def mean_file(tmp_path: Path, h: int = 8, w: int = 8) -> tuple[Path, np.ndarray]:
    mean = np.random.default_rng(0).uniform(90, 130, (3, h, w)).astype(np.float32)
    blob = _schema.blob_class()(num=1, channels=3, height=h, width=w)
    blob.data.extend(mean.ravel().tolist())
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    return path, mean


def test_handler_preprocess_from_mean_file(tmp_path: Path) -> None:
    proto, model = small_net(tmp_path)
    mpath, mean = mean_file(tmp_path)
    handler = rp.ModelHandler.from_caffe(proto, model, mean=str(mpath))
    pre = handler.preprocess
    assert pre.channel_order == "BGR" and pre.raw_scale == 255.0
    assert pre.resize == (8, 8) and pre.crop == (6, 6)
    np.testing.assert_array_equal(pre.mean, mean)
    assert handler.layer_names == ["conv1", "relu1", "pool1", "fc7"]
    assert tuple(handler.input_shape) == (3, 6, 6)
    # The image pipeline is Caffe's: RGB [0,1] -> BGR -> x255 -> minus the cropped mean.
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3)).astype(np.float32) / 255
    x = pre(image).numpy()
    expected = image[1:7, 1:7, ::-1].transpose(2, 0, 1) * 255 - mean[:, 1:7, 1:7]
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-3)
    handler.save(tmp_path / "saved")
    assert rp.ModelHandler.load(tmp_path / "saved").preprocess == pre


def test_mean_checks(tmp_path: Path) -> None:
    proto, model = small_net(tmp_path)
    small, _ = mean_file(tmp_path, 4, 8)
    with pytest.raises(rp.ModelFormatError, match=r"mean image is \(4, 8\)"):
        rc.handler_from_caffe(proto, model, mean=small)
    with pytest.raises(rp.ModelFormatError, match="2 values"):
        rc.handler_from_caffe(proto, model, mean=(1.0, 2.0))
    same = rc.handler_from_caffe(proto, model, mean=np.zeros((3, 6, 6), np.float32))
    assert same.preprocess.resize == (6, 6) and same.preprocess.crop == (6, 6)


def test_handler_save_load_and_extract(tmp_path: Path) -> None:
    proto, model = small_net(tmp_path)
    handler = rc.handler_from_caffe(proto, model, mean=(104.0, 117.0, 123.0))
    handler.save(tmp_path / "saved")
    back = rp.ModelHandler.load(tmp_path / "saved")
    x = np.random.default_rng(2).standard_normal((3, 3, 6, 6)).astype(np.float32)
    a = handler.extract(x, ["fc7", "pool1"], progress=False)
    b = back.extract(x, ["fc7", "pool1"], progress=False)
    for key in ("fc7", "pool1"):
        np.testing.assert_array_equal(a[key], b[key])
    assert back.preprocess == handler.preprocess
    with torch.no_grad():
        direct = rc.load_net(proto, model)(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(a["fc7"], direct, rtol=1e-5, atol=1e-6)


def test_cli_convert_and_verify(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    proto, model = small_net(tmp_path)
    runner = CliRunner()
    out = tmp_path / "converted"
    result = runner.invoke(cli, ["convert", "caffe", str(proto), str(model), "-o", str(out),
                                 "--mean", "104,117,123"])
    assert result.exit_code == 0, result.output
    assert (out / "graph.json").is_file()
    assert rp.ModelHandler.load(out).layer_names == ["conv1", "relu1", "pool1", "fc7"]
    image = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 255, (9, 7, 3), np.uint8)).save(image)
    result = runner.invoke(cli, ["verify", "caffe", str(proto), str(model), "--image",
                                 str(image), "--mean", "104,117,123"])
    assert result.exit_code == 0, result.output
    assert "4 blobs compared, 0 mismatched" in result.output
    assert "conv1@conv1" in result.output


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.prototxt"
    bad.write_text("layer { name: ")
    result = CliRunner().invoke(cli, ["convert", "caffe", str(bad), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "line 1, column" in result.output
    assert not (tmp_path / "o").exists()


def test_benchmark_quick_smoke() -> None:
    pytest.importorskip("cv2")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_caffe.py"),
                           "--quick"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert {r["net"] for r in result["results"]} == {"caffenet", "resnet"}
    assert all(r["max_abs_diff"] < 1e-3 for r in result["results"])


def test_cli_verify_reports_a_mismatch(tmp_path: Path) -> None:
    # OpenCV 4.14 ignores InnerProduct's `transpose`, so the two runtimes disagree.
    pytest.importorskip("cv2")
    w = NetWriter((1, 2, 3, 3))
    w.layer("fc", "InnerProduct", ["data"], ["fc"], [(18, 4), (4,)],
            inner_product_param={"num_output": 4, "transpose": True})
    proto, model = w.write(tmp_path)
    result = CliRunner().invoke(cli, ["verify", "caffe", str(proto), str(model)])
    assert result.exit_code == 1
    assert "MISMATCH" in result.output and "1 mismatched" in result.output


def test_extract_from_image_folder_uses_caffe_preprocessing(tmp_path: Path) -> None:
    proto, model = small_net(tmp_path)
    rng = np.random.default_rng(4)
    for cls in ("cat", "dog"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 255, (10, 12, 3), np.uint8)).save(
                tmp_path / "imgs" / cls / f"{i}.png")
    handler = rc.handler_from_caffe(proto, model, mean=(104.0, 117.0, 123.0))
    feats, labels = handler.extract(tmp_path / "imgs", ["fc7"], progress=False,
                                    return_labels=True)
    assert feats["fc7"].shape == (4, 5)
    assert list(labels) == ["cat", "cat", "dog", "dog"]
    image = Image.open(tmp_path / "imgs" / "cat" / "0.png").convert("RGB").resize((6, 6),
                                                                                Image.BILINEAR)
    x = np.asarray(image, np.float32)[:, :, ::-1].transpose(2, 0, 1) - np.array(
        [104.0, 117.0, 123.0], np.float32).reshape(3, 1, 1)
    with torch.no_grad():
        ref = rc.load_net(proto, model)(torch.from_numpy(x.copy())[None]).numpy()
    np.testing.assert_allclose(feats["fc7"][0], ref[0], rtol=1e-4, atol=1e-3)
