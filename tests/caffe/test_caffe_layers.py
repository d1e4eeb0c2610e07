"""Every supported layer against OpenCV's Caffe runtime, blob by blob (rtol 1e-4, atol 1e-5)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from caffe_writer import NetWriter

import repurpose.caffe as rc

cv2 = pytest.importorskip("cv2")


def check(w: NetWriter, tmp_path: Path, allow_missing: tuple[str, ...] = ()) -> None:
    proto, model = w.write(tmp_path)
    report = rc.verify(proto, model, seed=1)
    assert report
    for r in report:
        if r.layer in allow_missing:
            continue
        assert r.max_abs_diff is not None, f"OpenCV has no blob for {r}"
        assert r.ok, f"{r} differs from OpenCV"


def conv(w: NetWriter, name: str, bottom: str, cin: int, cout: int, k: int = 3,
         **extra: Any) -> None:
    group = extra.get("group", 1)
    kh, kw = extra.get("kernel_h", k), extra.get("kernel_w", k)
    param = {"num_output": cout, **extra}
    if "kernel_h" not in extra:
        param["kernel_size"] = [k]
    blobs = [(cout, cin // group, kh, kw)]
    if extra.get("bias_term", True):
        blobs.append((cout,))
    w.layer(name, "Convolution", [bottom], [name], blobs, convolution_param=param)


@pytest.mark.parametrize("extra", [
    {"pad": [1]},
    {"group": 3, "stride": [2]},
    {"dilation": [2], "pad": [2]},
    {"kernel_h": 3, "kernel_w": 1, "pad_h": 1, "pad_w": 0, "stride_h": 2, "stride_w": 1},
    {"bias_term": False},
])
def test_convolution(tmp_path: Path, extra: dict) -> None:
    w = NetWriter((2, 3, 9, 8))
    conv(w, "conv", "data", 3, 6, **extra)
    check(w, tmp_path)


def test_convolution_shared_over_two_bottoms(tmp_path: Path) -> None:
    # OpenCV splits such layers under other names: checked against torch.nn.functional.
    w = NetWriter((2, 3, 6, 6))
    w.layer("twin", "Power", ["data"], ["twin"], power_param={"scale": -2.0})
    conv_l = w.layer("conv", "Convolution", ["data", "twin"], ["c1", "c2"],
                     [(4, 3, 3, 3), (4,)], convolution_param={"num_output": 4,
                                                              "kernel_size": [3]})
    de_l = w.layer("deconv", "Deconvolution", ["c1", "c2"], ["d1", "d2"], [(4, 2, 2, 2), (2,)],
                   convolution_param={"num_output": 2, "kernel_size": [2], "stride": [2]})
    proto, model = w.write(tmp_path)

    def blobs(layer: Any, *shapes: tuple) -> list[torch.Tensor]:
        return [torch.tensor(list(b.data)).reshape(s) for b, s in zip(layer.blobs, shapes)]

    cw, cb = blobs(conv_l, (4, 3, 3, 3), (4,))
    dw, db = blobs(de_l, (4, 2, 2, 2), (2,))
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad():
        out = rc.load_net(proto, model).run({"data": x}, ["c1", "c2", "d1", "d2"])
    for src, c, d in ((x, "c1", "d1"), (-2 * x, "c2", "d2")):
        ref = torch.nn.functional.conv2d(src, cw, cb)
        torch.testing.assert_close(out[c], ref, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(out[d], torch.nn.functional.conv_transpose2d(ref, dw, db,
                                                                                stride=2),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("extra", [{"stride": [2]}, {"stride": [2], "pad": [1], "group": 3}])
def test_deconvolution(tmp_path: Path, extra: dict) -> None:
    w = NetWriter((1, 3, 5, 6))
    group = extra.get("group", 1)
    w.layer("deconv", "Deconvolution", ["data"], ["deconv"], [(3, 6 // group, 3, 3), (6,)],
            convolution_param={"num_output": 6, "kernel_size": [3], **extra})
    check(w, tmp_path)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
@pytest.mark.parametrize("shape,k,s,p", [
    ((1, 2, 13, 13), 3, 2, 0),   # ceil overhang (CaffeNet)
    ((1, 2, 7, 9), 3, 2, 1),     # padded, clip rule
    ((2, 3, 6, 6), 5, 3, 2),     # pad > k/2: PyTorch refuses, general path
    ((1, 1, 8, 8), 2, 2, 0),
])
def test_pooling(tmp_path: Path, pool: str, shape: tuple, k: int, s: int, p: int) -> None:
    w = NetWriter(shape)
    w.layer("pool", "Pooling", ["data"], ["pool"],
            pooling_param={"pool": pool, "kernel_size": k, "stride": s, "pad": p})
    check(w, tmp_path)


@pytest.mark.parametrize("pool", ["MAX", "AVE"])
def test_pooling_floor_and_global(tmp_path: Path, pool: str) -> None:
    w = NetWriter((1, 2, 10, 11))
    w.layer("floor", "Pooling", ["data"], ["floor"],
            pooling_param={"pool": pool, "kernel_size": 3, "stride": 2, "ceil_mode": False})
    w.layer("rect", "Pooling", ["data"], ["rect"],
            pooling_param={"pool": pool, "kernel_h": 3, "kernel_w": 2, "stride_h": 2,
                           "stride_w": 3, "pad_h": 1, "pad_w": 0})
    w.layer("global", "Pooling", ["data"], ["global"],
            pooling_param={"pool": pool, "global_pooling": True})
    check(w, tmp_path)


@pytest.mark.parametrize("param", [{}, {"axis": 2}, {"bias_term": False}])
def test_inner_product(tmp_path: Path, param: dict) -> None:
    w = NetWriter((2, 3, 4, 5))
    axis = param.get("axis", 1)
    k = int(np.prod((2, 3, 4, 5)[axis:]))
    wshape = (k, 7) if param.get("transpose") else (7, k)
    blobs = [wshape] + ([] if param.get("bias_term") is False else [(7,)])
    w.layer("fc", "InnerProduct", ["data"], ["fc"], blobs,
            inner_product_param={"num_output": 7, **param})
    check(w, tmp_path)


def test_inner_product_transpose(tmp_path: Path) -> None:
    # OpenCV 4.14 ignores `transpose`, so this one is checked against numpy.
    w = NetWriter((2, 3, 4, 5))
    layer = w.layer("fc", "InnerProduct", ["data"], ["fc"], [(60, 7), (7,)],
                    inner_product_param={"num_output": 7, "transpose": True})
    proto, model = w.write(tmp_path)
    weight = np.asarray(layer.blobs[0].data, np.float32).reshape(60, 7)
    bias = np.asarray(layer.blobs[1].data, np.float32)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32)
    out = rc.load_net(proto, model)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, x.reshape(2, -1) @ weight + bias, rtol=1e-4, atol=1e-5)


def test_activations(tmp_path: Path) -> None:
    w = NetWriter((2, 4, 5, 5))
    w.layer("relu", "ReLU", ["data"], ["relu"])
    w.layer("leaky", "ReLU", ["data"], ["leaky"], relu_param={"negative_slope": 0.1})
    w.layer("prelu", "PReLU", ["data"], ["prelu"], [(4,)])
    w.layer("prelu_shared", "PReLU", ["data"], ["prelu_shared"], [(1,)],
            prelu_param={"channel_shared": True})
    w.layer("sigmoid", "Sigmoid", ["data"], ["sigmoid"])
    w.layer("tanh", "TanH", ["data"], ["tanh"])
    w.layer("elu", "ELU", ["data"], ["elu"], elu_param={"alpha": 0.7})
    w.layer("absval", "AbsVal", ["data"], ["absval"])
    w.layer("bnll", "BNLL", ["data"], ["bnll"])
    w.layer("power", "Power", ["absval"], ["power"],
            power_param={"power": 1.5, "scale": 0.5, "shift": 0.25})
    w.layer("exp", "Exp", ["data"], ["exp"], exp_param={"base": 2.0, "scale": 0.5, "shift": 0.1})
    w.layer("exp_e", "Exp", ["data"], ["exp_e"])
    w.layer("log", "Log", ["power"], ["log"])
    w.layer("drop", "Dropout", ["data"], ["drop"], dropout_param={"dropout_ratio": 0.3})
    w.layer("softmax", "Softmax", ["data"], ["softmax"])
    w.layer("softmax3", "Softmax", ["data"], ["softmax3"], softmax_param={"axis": 3})
    check(w, tmp_path, allow_missing=("drop",))


def test_lrn_across(tmp_path: Path) -> None:
    w = NetWriter((1, 7, 4, 4))
    w.layer("lrn", "LRN", ["data"], ["lrn"],
            lrn_param={"local_size": 5, "alpha": 0.3, "beta": 0.75})
    w.layer("lrn3", "LRN", ["data"], ["lrn3"],
            lrn_param={"local_size": 3, "alpha": 1e-2, "beta": 0.5})
    check(w, tmp_path)


def test_batch_norm_scale_bias(tmp_path: Path) -> None:
    w = NetWriter((2, 4, 5, 5))
    rng = np.random.default_rng(3)
    w.layer("bn", "BatchNorm", ["data"], ["bn"],
            [rng.normal(size=4) * 3, rng.uniform(1, 2, size=4) * 3, [3.0]],
            batch_norm_param={"eps": 1e-3})
    w.layer("scale", "Scale", ["bn"], ["scale"], [(4,), (4,)], scale_param={"bias_term": True})
    w.layer("scale_nb", "Scale", ["data"], ["scale_nb"], [(4,)])
    w.layer("scale_hw", "Scale", ["data"], ["scale_hw"], [(5, 5)],
            scale_param={"axis": 2, "num_axes": 2})
    check(w, tmp_path)


def run_numpy(w: NetWriter, tmp_path: Path, x: np.ndarray, value: str) -> np.ndarray:
    proto, model = w.write(tmp_path)
    net = rc.load_net(proto, model)
    with torch.no_grad():
        return net.run({"data": torch.from_numpy(x)}, [value])[value].numpy()


def test_log_with_base_and_bias_layer(tmp_path: Path) -> None:
    # OpenCV ignores Log's base/scale/shift and has no Bias layer: numpy reference.
    w = NetWriter((2, 4, 3, 3))
    w.layer("abs", "AbsVal", ["data"], ["abs"])
    w.layer("log", "Log", ["abs"], ["log"], log_param={"base": 10.0, "scale": 2.0, "shift": 1})
    b = w.layer("bias", "Bias", ["log"], ["bias"], [(4, 3)], bias_param={"num_axes": 2})
    x = np.random.default_rng(0).standard_normal((2, 4, 3, 3)).astype(np.float32)
    bias = np.asarray(b.blobs[0].data, np.float32).reshape(1, 4, 3, 1)
    expected = np.log10(1 + 2 * np.abs(x)) + bias
    np.testing.assert_allclose(run_numpy(w, tmp_path, x, "bias"), expected, rtol=1e-4,
                               atol=1e-5)


def test_scale_second_bottom(tmp_path: Path) -> None:
    w = NetWriter((2, 4, 3, 3))
    w.layer("gap", "Pooling", ["data"], ["gap"], pooling_param={"pool": "AVE",
                                                                "global_pooling": True})
    w.layer("flat", "Flatten", ["gap"], ["flat"])
    w.layer("scale2", "Scale", ["data", "flat"], ["scale2"], scale_param={"axis": 0})
    check(w, tmp_path)


def test_eltwise_concat_slice_split(tmp_path: Path) -> None:
    w = NetWriter((2, 6, 4, 4))
    w.layer("split", "Split", ["data"], ["s1", "s2"])
    w.layer("sum", "Eltwise", ["s1", "s2"], ["sum"])
    w.layer("sub", "Eltwise", ["s1", "s2"], ["sub"],
            eltwise_param={"operation": "SUM", "coeff": [1.0, -0.5]})
    w.layer("prod", "Eltwise", ["sum", "sub"], ["prod"], eltwise_param={"operation": "PROD"})
    w.layer("max", "Eltwise", ["sum", "sub"], ["max"], eltwise_param={"operation": "MAX"})
    w.layer("slice", "Slice", ["prod"], ["a", "b", "c"],
            slice_param={"axis": 1, "slice_point": [1, 4]})
    w.layer("halves", "Slice", ["max"], ["h1", "h2"], slice_param={"axis": 2})
    w.layer("cat", "Concat", ["c", "a", "b"], ["cat"])
    w.layer("cat2", "Concat", ["h1", "h2"], ["cat2"], concat_param={"axis": 3})
    check(w, tmp_path)


def test_flatten_reshape_crop(tmp_path: Path) -> None:
    w = NetWriter((2, 3, 4, 6))
    w.layer("flat", "Flatten", ["data"], ["flat"])
    w.layer("flat2", "Flatten", ["data"], ["flat2"], flatten_param={"axis": 1, "end_axis": 2})
    w.layer("reshape", "Reshape", ["data"], ["reshape"],
            reshape_param={"shape": {"dim": [0, -1, 8]}})
    w.layer("pool", "Pooling", ["data"], ["pool"],
            pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2})
    w.layer("crop", "Crop", ["data", "pool"], ["crop"],
            crop_param={"axis": 2, "offset": [1, 2]})
    check(w, tmp_path)
