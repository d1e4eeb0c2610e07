"""Layer types beyond BVLC's core (SSD, ShuffleNet, DeepLab, fork aliases): against OpenCV
blob by blob (rtol 1e-4, atol 1e-5), and against ports of the SSD fork's loops where OpenCV
deviates or lacks the layer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_writer import NetWriter
from ssd_reference import detection_output, prior_box
from test_caffe_layers import check, run_numpy

from repurpose.caffe._detection import (
    CaffeDetectionOutput,
    CaffePriorBox,
    caffe_rows,
    prior_aspect_ratios,
)

cv2 = pytest.importorskip("cv2")


@pytest.mark.parametrize("order", [[0, 2, 3, 1], [0, 3, 1, 2], [0, 1, 3, 2]])
def test_permute(tmp_path: Path, order: list) -> None:
    w = NetWriter((2, 3, 4, 5))
    w.layer("perm", "Permute", ["data"], ["perm"], permute_param={"order": order})
    w.layer("flat", "Flatten", ["perm"], ["flat"])
    check(w, tmp_path)


@pytest.mark.parametrize("across,shared", [(True, True), (False, True), (False, False)])
def test_normalize(tmp_path: Path, across: bool, shared: bool) -> None:
    w = NetWriter((2, 4, 3, 5))
    w.layer("norm", "Normalize", ["data"], ["norm"], [(1,) if shared else (4,)],
            norm_param={"across_spatial": across, "channel_shared": shared, "eps": 1e-3})
    w.layer("bbox", "NormalizeBBox", ["data"], ["bbox"], [(1,) if shared else (4,)],
            norm_param={"across_spatial": across, "channel_shared": shared})
    check(w, tmp_path)


# OpenCV deviates from the fork in two PriorBox points, so its cases avoid them: it clips
# unless `clip: false` is written (its schema default is true, the fork's false), and it
# ignores img_size/img_h/img_w. The fork's loop checks those.
PRIORS_OPENCV = [
    {"min_size": [4.0], "clip": False, "variance": [0.1]},
    {"min_size": [3.0], "max_size": [7.0], "aspect_ratio": [2.0, 3.0], "flip": True,
     "clip": True, "variance": [0.1, 0.1, 0.2, 0.2]},
    {"min_size": [2.0, 5.0], "max_size": [4.0, 9.0], "aspect_ratio": [2.0, 2.0, 0.5],
     "flip": False, "clip": False, "variance": [0.2]},
    {"min_size": [6.0], "step": 3.0, "offset": 0.25, "clip": True, "variance": [0.1]},
    {"min_size": [3.5], "max_size": [6.5], "aspect_ratio": [3.0], "step_h": 4.0,
     "step_w": 5.0, "clip": False, "variance": [0.1, 0.2, 0.3, 0.4]},
]
PRIORS_SSD = PRIORS_OPENCV + [
    {"min_size": [6.0], "step": 3.0, "offset": 0.25, "img_size": 20},
    {"min_size": [3.5], "max_size": [6.5], "aspect_ratio": [3.0], "img_h": 18, "img_w": 30},
]


@pytest.mark.parametrize("param", PRIORS_OPENCV)
def test_prior_box_against_opencv(tmp_path: Path, param: dict) -> None:
    w = NetWriter((1, 3, 16, 24))
    w.layer("pool", "Pooling", ["data"], ["pool"],
            pooling_param={"pool": "MAX", "kernel_size": 4, "stride": 4})
    w.layer("prior", "PriorBox", ["pool", "data"], ["prior"], prior_box_param=param)
    check(w, tmp_path)


@pytest.mark.parametrize("param", PRIORS_SSD)
def test_prior_box_against_ssd_loop(param: dict) -> None:
    # The fork truncates sizes to integers; integer_sizes=True reproduces it exactly.
    img = param.get("img_size")
    img_hw = (img, img) if img else (param.get("img_h", 16), param.get("img_w", 24))
    step = param.get("step")
    step_hw = (step, step) if step else (param.get("step_h"), param.get("step_w"))
    op = CaffePriorBox(param["min_size"], param.get("max_size", []),
                       prior_aspect_ratios(param.get("aspect_ratio", []),
                                           param.get("flip", True)),
                       clip=param.get("clip", False), variance=param.get("variance", [0.1]),
                       img_size=img_hw, step=step_hw if step_hw[0] else None,
                       offset=param.get("offset", 0.5), integer_sizes=True)
    out = op(torch.zeros(1, 3, 4, 6)).numpy()
    ref = prior_box((4, 6), img_hw, param["min_size"], param.get("max_size", []),
                    param.get("aspect_ratio", []), param.get("flip", True),
                    param.get("clip", False), param.get("variance", [0.1]),
                    step_hw if step_hw[0] else None, param.get("offset", 0.5))
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-7)


def test_prior_box_img_size_from_converter(tmp_path: Path) -> None:
    # img_size and the default variance reach the op (OpenCV ignores the one, needs the other)
    w = NetWriter((1, 3, 16, 24))
    w.layer("pool", "Pooling", ["data"], ["pool"],
            pooling_param={"pool": "MAX", "kernel_size": 4, "stride": 4})
    w.layer("prior", "PriorBox", ["pool", "data"], ["prior"],
            prior_box_param={"min_size": [3.0], "img_h": 18, "img_w": 30})
    x = np.zeros((1, 3, 16, 24), np.float32)
    ref = prior_box((4, 6), (18, 30), [3.0], [], [], True, False, [0.1])
    np.testing.assert_allclose(run_numpy(w, tmp_path, x, "prior"), ref, atol=1e-7)


def ssd_head(w: NetWriter, priors: int, classes: int, share: bool = True) -> None:
    """loc / conf / prior blobs of a tiny SSD head on a 1x3x8x8 input (2x2 cells)."""
    n_loc = 1 if share else classes
    w.layer("pool", "Pooling", ["data"], ["pool"],
            pooling_param={"pool": "AVE", "kernel_size": 4, "stride": 4})
    w.layer("loc", "Convolution", ["pool"], ["loc"], [(priors * n_loc * 4, 3, 1, 1),
                                                      (priors * n_loc * 4,)],
            convolution_param={"num_output": priors * n_loc * 4, "kernel_size": [1]})
    w.layer("conf", "Convolution", ["pool"], ["conf"], [(priors * classes, 3, 1, 1),
                                                        (priors * classes,)],
            convolution_param={"num_output": priors * classes, "kernel_size": [1]})
    w.layer("loc_perm", "Permute", ["loc"], ["loc_perm"], permute_param={"order": [0, 2, 3, 1]})
    w.layer("loc_flat", "Flatten", ["loc_perm"], ["loc_flat"])
    w.layer("conf_perm", "Permute", ["conf"], ["conf_perm"],
            permute_param={"order": [0, 2, 3, 1]})
    w.layer("conf_flat", "Flatten", ["conf_perm"], ["conf_flat"])
    w.layer("conf_rs", "Reshape", ["conf_flat"], ["conf_rs"],
            reshape_param={"shape": {"dim": [0, -1, classes]}})
    w.layer("conf_sm", "Softmax", ["conf_rs"], ["conf_sm"], softmax_param={"axis": 2})
    w.layer("conf_out", "Flatten", ["conf_sm"], ["conf_out"])
    ratios = [2.0] if priors == 4 else []
    w.layer("prior", "PriorBox", ["pool", "data"], ["prior"],
            prior_box_param={"min_size": [3.0], "max_size": [6.0], "aspect_ratio": ratios,
                             "flip": True, "clip": False, "variance": [0.1, 0.1, 0.2, 0.2]})


@pytest.mark.parametrize("param", [
    {"code_type": "CENTER_SIZE", "nms_param": {"nms_threshold": 0.45, "top_k": 10},
     "keep_top_k": 5, "confidence_threshold": 0.2},
    {"code_type": "CORNER", "nms_param": {"nms_threshold": 0.3}, "keep_top_k": 50},
    {"code_type": "CENTER_SIZE", "nms_param": {"nms_threshold": 0.5}, "keep_top_k": 3,
     "background_label_id": 1, "confidence_threshold": 0.1},
])
def test_detection_output_against_opencv(tmp_path: Path, param: dict) -> None:
    w = NetWriter((2, 3, 8, 8), seed=3)
    ssd_head(w, 4, 3)
    w.layer("det", "DetectionOutput", ["loc_flat", "conf_out", "prior"], ["det"],
            detection_output_param={"num_classes": 3, "share_location": True,
                                    "background_label_id": 0, **param})
    check(w, tmp_path)


DETECTION_CASES = [
    {"code": "center_size", "nms_thr": 0.45, "top_k": 6, "keep_top_k": 4, "conf_thr": 0.1},
    {"code": "corner", "nms_thr": 0.2},
    {"code": "corner_size", "nms_thr": 0.6, "eta": 0.7, "in_target": True},
    {"code": "center_size", "share_location": False, "nms_thr": 0.5, "keep_top_k": 7},
    {"code": "center_size", "conf_thr": 2.0},  # nothing found: one -1 row per image
    {"code": "center_size", "background": -1, "nms_thr": 0.9},
]


@pytest.mark.parametrize("case", DETECTION_CASES)
def test_detection_output_against_ssd_loop(case: dict) -> None:
    rng = np.random.default_rng(7)
    n, p, c = 2, 40, 3
    n_loc = 1 if case.get("share_location", True) else c
    loc = rng.normal(0, 0.5, (n, p * n_loc * 4)).astype(np.float32)
    conf = rng.uniform(0, 1, (n, p * c)).astype(np.float32)
    xy = rng.uniform(0, 0.7, (p, 2))
    wh = rng.uniform(0.05, 0.4, (p, 2))
    boxes = np.concatenate([xy, xy + wh], 1).ravel()
    prior = np.stack([boxes, np.tile([0.1, 0.1, 0.2, 0.2], p)])[None].astype(np.float32)
    ref = detection_output(loc, conf, prior, c, **case)
    op = CaffeDetectionOutput(
        c, case.get("share_location", True), case.get("background", 0), case["code"],
        case.get("in_target", False), case.get("nms_thr", 0.3), case.get("top_k", -1),
        case.get("eta", 1.0), case.get("keep_top_k", -1), case.get("conf_thr"))
    padded = op(*(torch.from_numpy(a) for a in (loc, conf, prior))).numpy()
    assert padded.shape == (n, 1, op.max_detections(p), 7)
    out = caffe_rows(padded)
    assert out.shape == ref.shape
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)


def test_interp_shuffle_depthwise_mvn(tmp_path: Path) -> None:
    # OpenCV's Interp reads only height/width and zoom_factor; the rest: test below.
    w = NetWriter((2, 4, 7, 9))
    w.layer("size", "Interp", ["data"], ["size"], interp_param={"height": 5, "width": 12})
    w.layer("zoom", "Interp", ["data"], ["zoom"], interp_param={"zoom_factor": 3})
    w.layer("shuffle", "ShuffleChannel", ["data"], ["shuffle"],
            shuffle_channel_param={"group": 2})
    w.layer("dw", "ConvolutionDepthwise", ["data"], ["dw"], [(4, 1, 3, 3), (4,)],
            convolution_param={"num_output": 4, "kernel_size": [3], "group": 4, "pad": [1]})
    w.layer("mvn", "MVN", ["data"], ["mvn"])
    w.layer("mvn_c", "MVN", ["data"], ["mvn_c"], mvn_param={"across_channels": True})
    w.layer("mvn_m", "MVN", ["data"], ["mvn_m"], mvn_param={"normalize_variance": False})
    check(w, tmp_path)


def test_activations_and_aliases(tmp_path: Path) -> None:
    w = NetWriter((2, 4, 3, 3))
    w.layer("scale", "Power", ["data"], ["scale"], power_param={"scale": 5.0})
    w.layer("relu6", "ReLU6", ["scale"], ["relu6"])
    w.layer("swish", "Swish", ["data"], ["swish"])
    w.layer("mish", "Mish", ["scale"], ["mish"])
    w.layer("id", "Identity", ["data"], ["id"])
    w.layer("cprelu", "ChannelsPReLU", ["data"], ["cprelu"], [(4,)])

    w.layer("flat", "Flatten", ["data"], ["flat"], flatten_param={"axis": 2})
    w.layer("flat0", "Flatten", ["data"], ["flat0"], flatten_param={"axis": 0, "end_axis": 1})
    w.layer("rs", "Reshape", ["data"], ["rs"],
            reshape_param={"shape": {"dim": [-1, 3]}, "axis": 2})
    w.layer("rs1", "Reshape", ["data"], ["rs1"],
            reshape_param={"shape": {"dim": [2, 2]}, "axis": 1, "num_axes": 1})
    check(w, tmp_path, allow_missing=("id",))


def test_depthwise_fork_type_without_group(tmp_path: Path) -> None:
    # DepthwiseConvolution (not in OpenCV) implies one group per channel: same as a
    # Convolution with group = channels, which OpenCV checks.
    w = NetWriter((1, 3, 6, 6))
    layer = w.layer("dw", "DepthwiseConvolution", ["data"], ["dw"], [(3, 1, 3, 3), (3,)],
                    convolution_param={"num_output": 3, "kernel_size": [3]})
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 6)).astype(np.float32)
    out = run_numpy(w, tmp_path, x, "dw")
    weight = torch.tensor(list(layer.blobs[0].data)).reshape(3, 1, 3, 3)
    bias = torch.tensor(list(layer.blobs[1].data))
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), weight, bias, groups=3)
    np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=1e-6)


def test_threshold_tile_reduction_against_caffe(tmp_path: Path) -> None:
    # OpenCV has no Caffe Threshold or Reduction and reads Tile differently: numpy ports.
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    cases = {
        "thr": ("Threshold", {"threshold_param": {"threshold": 0.3}},
                (x > 0.3).astype(np.float32)),
        "tile": ("Tile", {"tile_param": {"axis": 2, "tiles": 3}}, np.tile(x, (1, 1, 3, 1))),
        "tile_c": ("Tile", {"tile_param": {"tiles": 2}}, np.concatenate([x, x], 1)),
        "sum": ("Reduction", {"reduction_param": {"axis": 1}}, x.reshape(2, -1).sum(1)),
        "asum": ("Reduction", {"reduction_param": {"operation": "ASUM", "axis": 2,
                                                   "coeff": 0.5}},
                 0.5 * np.abs(x).reshape(2, 3, -1).sum(2)),
        "sumsq": ("Reduction", {"reduction_param": {"operation": "SUMSQ", "axis": -1}},
                  (x * x).sum(3)),
        "mean": ("Reduction", {"reduction_param": {"operation": "MEAN"}},
                 np.asarray(x.mean())),
    }
    for name, (type_, param, expected) in cases.items():
        w = NetWriter((2, 3, 4, 5))
        w.layer(name, type_, ["data"], [name], **param)
        out = run_numpy(w, tmp_path / name, x, name)
        assert out.shape == expected.shape, name
        np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5, err_msg=name)


def test_permute_short_order_and_normalize_shared_across(tmp_path: Path) -> None:
    # The fork appends unlisted axes to a short order; OpenCV refuses it. OpenCV also fails
    # on across_spatial with per-channel scales.
    w = NetWriter((2, 3, 4, 5))
    w.layer("perm", "Permute", ["data"], ["perm"], permute_param={"order": [0, 2]})
    scale = w.layer("norm", "Normalize", ["data"], ["norm"], [(3,)],
                    norm_param={"across_spatial": True, "channel_shared": False})
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    np.testing.assert_array_equal(run_numpy(w, tmp_path / "p", x, "perm"),
                                  x.transpose(0, 2, 1, 3))
    s = np.asarray(scale.blobs[0].data, np.float32).reshape(1, 3, 1, 1)
    norm = np.sqrt((x.astype(np.float64) ** 2).sum(axis=(1, 2, 3), keepdims=True) + 1e-10)
    np.testing.assert_allclose(run_numpy(w, tmp_path / "n", x, "norm"), x / norm * s,
                               rtol=1e-5, atol=1e-6)


def caffe_interp(x: np.ndarray, h2: int, w2: int) -> np.ndarray:
    """Port of DeepLab's caffe_cpu_interp2 (bilinear, corners aligned)."""
    h1, w1 = x.shape[-2:]
    rh = (h1 - 1) / (h2 - 1) if h2 > 1 else 0.0
    rw = (w1 - 1) / (w2 - 1) if w2 > 1 else 0.0
    out = np.zeros(x.shape[:-2] + (h2, w2))
    for i in range(h2):
        r = rh * i
        a = int(r)
        ap = 1 if a < h1 - 1 else 0
        la = r - a
        for j in range(w2):
            c = rw * j
            b = int(c)
            bp = 1 if b < w1 - 1 else 0
            lb = c - b
            out[..., i, j] = ((1 - la) * ((1 - lb) * x[..., a, b] + lb * x[..., a, b + bp])
                              + la * ((1 - lb) * x[..., a + ap, b]
                                      + lb * x[..., a + ap, b + bp]))
    return out


@pytest.mark.parametrize("param,crop,size", [
    ({"shrink_factor": 2}, (0, 7, 0, 9), (4, 5)),
    ({"shrink_factor": 2, "zoom_factor": 3}, (0, 7, 0, 9), (10, 13)),
    ({"zoom_factor": 2, "pad_beg": -1, "pad_end": -2}, (1, 5, 1, 7), (7, 11)),
    ({"height": 1, "width": 4}, (0, 7, 0, 9), (1, 4)),
])
def test_interp_against_deeplab_loop(tmp_path: Path, param: dict, crop: tuple,
                                     size: tuple) -> None:
    w = NetWriter((2, 4, 7, 9))
    w.layer("interp", "Interp", ["data"], ["interp"], interp_param=param)
    x = np.random.default_rng(0).standard_normal((2, 4, 7, 9)).astype(np.float32)
    out = run_numpy(w, tmp_path, x, "interp")
    r0, r1, c0, c1 = crop
    np.testing.assert_allclose(out, caffe_interp(x[..., r0:r1, c0:c1], *size), rtol=1e-5,
                               atol=1e-5)


def test_mvn_eps_after_square_root(tmp_path: Path) -> None:
    # Caffe adds eps to the standard deviation (OpenCV inside the root): mvn_layer.cpp
    w = NetWriter((2, 3, 4, 5))
    w.layer("mvn", "MVN", ["data"], ["mvn"], mvn_param={"across_channels": True, "eps": 0.1})
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    y = x - x.mean(axis=(1, 2, 3), keepdims=True)
    expected = y / (np.sqrt((y * y).mean(axis=(1, 2, 3), keepdims=True)) + 0.1)
    np.testing.assert_allclose(run_numpy(w, tmp_path, x, "mvn"), expected, rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("flat", [False, True])
def test_axpy(tmp_path: Path, flat: bool) -> None:
    # OpenCV 4.14 fails on these nets (shape error), so numpy: a * x + y per channel
    w = NetWriter((2, 4, 3, 3))
    w.layer("gap", "Pooling", ["data"], ["gap"], pooling_param={"pool": "AVE",
                                                                "global_pooling": True})
    if flat:
        w.layer("gapf", "Flatten", ["gap"], ["gapf"])
    w.layer("sig", "Sigmoid", ["data"], ["sig"])
    w.layer("axpy", "Axpy", ["gapf" if flat else "gap", "data", "sig"], ["axpy"])
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    expected = x.mean(axis=(2, 3), keepdims=True) * x + 1 / (1 + np.exp(-x))
    np.testing.assert_allclose(run_numpy(w, tmp_path, x, "axpy"), expected, rtol=1e-5,
                               atol=1e-6)


def test_reorg(tmp_path: Path) -> None:
    w = NetWriter((2, 8, 6, 4))
    w.layer("reorg", "Reorg", ["data"], ["reorg"], reorg_param={"stride": 2})
    check(w, tmp_path)


def test_detections_extract_like_any_blob(tmp_path: Path) -> None:
    import repurpose as rp

    w = NetWriter((1, 3, 8, 8), seed=3)
    ssd_head(w, 4, 3)
    w.layer("det", "DetectionOutput", ["loc_flat", "conf_out", "prior"], ["det"],
            detection_output_param={"num_classes": 3, "keep_top_k": 6,
                                    "nms_param": {"nms_threshold": 0.45}})
    proto, model = w.write(tmp_path)
    handler = rp.ModelHandler.from_caffe(proto, model)
    x = np.random.default_rng(0).standard_normal((5, 3, 8, 8)).astype(np.float32)
    feats = handler.extract(x, ["det", "pool"], pooling=None, batch_size=2, progress=False)
    assert feats["det"].shape == (5, 1, 6, 7) and feats["pool"].shape == (5, 3, 2, 2)
    with torch.no_grad():
        whole = handler.module.run({"data": torch.from_numpy(x)}, ["det"])["det"].numpy()
    # per-image blocks do not depend on the batching; image ids restart per batch
    np.testing.assert_allclose(feats["det"][..., 1:], whole[..., 1:], rtol=1e-5, atol=1e-6)
    rows = caffe_rows(whole)[0, 0]
    assert len(rows) > 5 and set(rows[:, 0]) == {0, 1, 2, 3, 4}
