"""Cases OpenCV cannot check, against numpy ports of Caffe's CPU loops."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_writer import NetWriter

import repurpose.caffe as rc
from repurpose._exceptions import ModelFormatError
from repurpose.caffe._ops import CaffeLRN, CaffePool


def caffe_pool(x, kernel, stride, pad, method, ceil=True):
    """Port of pooling_layer.cpp Reshape + Forward_cpu (MAX and AVE)."""
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw) = kernel, stride, pad
    rnd = math.ceil if ceil else math.floor
    oh = int(rnd((h + 2 * ph - kh) / sh)) + 1
    ow = int(rnd((w + 2 * pw - kw) / sw)) + 1
    if ph or pw:
        if (oh - 1) * sh >= h + ph:
            oh -= 1
        if (ow - 1) * sw >= w + pw:
            ow -= 1
    out = np.zeros((n, c, oh, ow), np.float64)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * sh - ph, j * sw - pw
            he, we = min(hs + kh, h + ph), min(ws + kw, w + pw)
            size = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            win = x[:, :, hs:he, ws:we]
            if method == "max":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                out[:, :, i, j] = win.sum(axis=(2, 3)) / size
    return out


def caffe_lrn(x, size, alpha, beta, k, region):
    """Port of lrn_layer.cpp (ACROSS: CrossChannelForward_cpu; WITHIN: its layer chain)."""
    n, c, h, w = x.shape
    pre = (size - 1) // 2
    if region == "across":
        padded = np.zeros((n, c + size - 1, h, w))
        padded[:, pre:pre + c] = x * x
        scale = np.stack([padded[:, i:i + size].sum(1) for i in range(c)], 1)
        return x * (k + alpha / size * scale) ** -beta
    sq = caffe_pool(x * x, (size, size), (1, 1), (pre, pre), "ave")
    return x * (1 + alpha * sq) ** -beta


@pytest.mark.parametrize("shape,k,s,p", [
    ((1, 2, 6, 6), 5, 3, 4),     # pad far above k/2
    ((2, 1, 7, 5), 4, 3, 3),
    ((1, 1, 9, 9), 3, 3, 2),     # clip rule removes a window
    ((1, 1, 5, 8), 2, 3, 1),     # k < s with padding
    ((1, 2, 10, 10), 3, 2, 1),
])
@pytest.mark.parametrize("method", ["max", "ave"])
@pytest.mark.parametrize("ceil", [True, False])
def test_pool_against_caffe_loops(shape, k, s, p, method, ceil) -> None:
    x = np.random.default_rng(0).standard_normal(shape)
    op = CaffePool(method, [k, k], [s, s], [p, p], ceil=ceil)
    out = op(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(out, caffe_pool(x, (k, k), (s, s), (p, p), method, ceil),
                               rtol=1e-10, atol=1e-12)


def test_pool_asymmetric_kernel_and_pad() -> None:
    x = np.random.default_rng(1).standard_normal((1, 2, 9, 7))
    for method in ("max", "ave"):
        op = CaffePool(method, [4, 2], [3, 1], [3, 0])
        np.testing.assert_allclose(op(torch.from_numpy(x)).numpy(),
                                   caffe_pool(x, (4, 2), (3, 1), (3, 0), method), atol=1e-12)


def test_pool_empty_last_window_refused() -> None:
    op = CaffePool("max", [1, 1], [2, 2], [0, 0])
    with pytest.raises(ValueError, match="empty last window"):
        op(torch.zeros(1, 1, 4, 4))


@pytest.mark.parametrize("region,k,size", [("across", 2.0, 5), ("across", 0.5, 3),
                                           ("within", 1.0, 3), ("within", 1.0, 5)])
def test_lrn_against_caffe_loops(region, k, size) -> None:
    x = np.random.default_rng(2).standard_normal((2, 6, 5, 5))
    op = CaffeLRN(size, 0.2, 0.75, k, region)
    np.testing.assert_allclose(op(torch.from_numpy(x)).numpy(),
                               caffe_lrn(x, size, 0.2, 0.75, k, region), rtol=1e-10)


def test_lrn_within_channel_layer(tmp_path: Path) -> None:
    w = NetWriter((1, 3, 6, 6))
    w.layer("lrn", "LRN", ["data"], ["lrn"], lrn_param={
        "local_size": 3, "alpha": 0.5, "beta": 0.75, "norm_region": "WITHIN_CHANNEL", "k": 7})
    proto, _ = w.write(tmp_path)
    x = np.random.default_rng(3).standard_normal((1, 3, 6, 6)).astype(np.float32)
    out = rc.load_net(proto)(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(out, caffe_lrn(x.astype(np.float64), 3, 0.5, 0.75, 1.0, "within"),
                               rtol=1e-4, atol=1e-5)


def test_batch_norm_scale_factor_and_zero_guard(tmp_path: Path) -> None:
    w = NetWriter((2, 3, 2, 2))
    mean, var = np.array([1.0, -2.0, 0.5]), np.array([4.0, 2.0, 1.0])
    w.layer("bn", "BatchNorm", ["data"], ["bn"], [mean * 5, var * 5, [5.0]],
            batch_norm_param={"eps": 1e-4})
    w.layer("bn0", "BatchNorm", ["data"], ["bn0"], [mean * 0, var * 0, [0.0]])
    proto, model = w.write(tmp_path)
    net = rc.load_net(proto, model)
    x = np.random.default_rng(4).standard_normal((2, 3, 2, 2)).astype(np.float32)
    with torch.no_grad():
        out = net.run({"data": torch.from_numpy(x)}, ["bn", "bn0"])
    expected = (x - mean.reshape(1, 3, 1, 1)) / np.sqrt(var.reshape(1, 3, 1, 1) + 1e-4)
    np.testing.assert_allclose(out["bn"].numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["bn0"].numpy(), x / np.sqrt(1e-5), rtol=1e-4)


def test_batch_norm_zero_factor_with_stats_warns(tmp_path: Path) -> None:
    w = NetWriter((1, 2, 2, 2))
    w.layer("bn", "BatchNorm", ["data"], ["bn"], [[1.0, 2.0], [1.0, 1.0], [0.0]])
    proto, model = w.write(tmp_path)
    with pytest.warns(UserWarning, match="scale factor 0"):
        rc.load_net(proto, model)


@pytest.mark.parametrize("param,value_shape", [
    ({"top_k": 2}, (2, 1, 2)),
    ({"top_k": 3, "out_max_val": True}, (2, 2, 3)),
    ({"axis": 1, "top_k": 2}, (2, 2, 3, 4)),
    ({"axis": 1, "out_max_val": True}, (2, 1, 3, 4)),
])
def test_argmax(tmp_path: Path, param: dict, value_shape: tuple) -> None:
    w = NetWriter((2, 5, 3, 4))
    w.layer("argmax", "ArgMax", ["data"], ["argmax"], argmax_param=param)
    proto, _ = w.write(tmp_path)
    x = np.random.default_rng(5).standard_normal((2, 5, 3, 4)).astype(np.float32)
    out = rc.load_net(proto)(torch.from_numpy(x)).detach().numpy()
    k = param.get("top_k", 1)
    if "axis" in param:
        order = np.argsort(-x, axis=1)[:, :k]
        ref = np.take_along_axis(x, order, 1) if param.get("out_max_val") else order
    else:
        flat = x.reshape(2, -1)
        order = np.argsort(-flat, axis=1)[:, :k]
        parts = [order] + ([np.take_along_axis(flat, order, 1)] if param.get("out_max_val")
                           else [])
        ref = np.stack(parts, 1)
        ref = ref.reshape(ref.shape + (1,)) if x.ndim > 3 else ref
    assert out.shape[:3] == value_shape[:3]
    np.testing.assert_allclose(out.reshape(ref.shape), ref, rtol=1e-6)


def test_scale_num_axes_zero_and_negative_axis(tmp_path: Path) -> None:
    w = NetWriter((2, 3, 4), input_form="input_shape")
    s0 = w.layer("s0", "Scale", ["data"], ["s0"], [np.array(2.5).reshape(())],
                 scale_param={"num_axes": 0})
    s1 = w.layer("s1", "Scale", ["data"], ["s1"], [(4,)], scale_param={"axis": -1})
    proto, model = w.write(tmp_path)
    net = rc.load_net(proto, model)
    x = np.random.default_rng(6).standard_normal((2, 3, 4)).astype(np.float32)
    with torch.no_grad():
        out = net.run({"data": torch.from_numpy(x)}, ["s0", "s1"])
    np.testing.assert_allclose(out["s0"].numpy(), x * 2.5, rtol=1e-6)
    scale = np.asarray(s1.blobs[0].data, np.float32)
    np.testing.assert_allclose(out["s1"].numpy(), x * scale, rtol=1e-6)
    del s0


def test_shape_mismatch_names_layer_and_shapes(tmp_path: Path) -> None:
    w = NetWriter((1, 3, 5, 5))
    w.layer("conv", "Convolution", ["data"], ["conv"], [(4, 2, 3, 3), (4,)],
            convolution_param={"num_output": 4, "kernel_size": [3]})
    proto, model = w.write(tmp_path)
    with pytest.raises(ModelFormatError, match=r"'conv'.*\(4, 2, 3, 3\).*\(4, 3, 3, 3\)"):
        rc.load_net(proto, model)


def test_five_blob_batch_norm_refused(tmp_path: Path) -> None:
    from repurpose._exceptions import UnsupportedLayerError

    w = NetWriter((1, 2, 2, 2))
    w.layer("bn", "BatchNorm", ["data"], ["bn"], [(2,), (2,), (1,), (2,), (2,)])
    proto, model = w.write(tmp_path)
    with pytest.raises(UnsupportedLayerError, match="'bn' has 5 blobs"):
        rc.load_net(proto, model)
