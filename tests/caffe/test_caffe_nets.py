"""Small whole nets (LeNet, CaffeNet, ResNet block, Inception block, legacy V1) vs OpenCV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_writer import NetWriter

import repurpose.caffe as rc
from repurpose.graph import load_graph, save_graph

cv2 = pytest.importorskip("cv2")


def assert_matches_opencv(proto: Path, model: Path) -> None:
    report = rc.verify(proto, model, seed=2)
    bad = [r for r in report if r.max_abs_diff is None or not r.ok]
    assert not bad, bad


def conv(w: NetWriter, name: str, bottom: str, cin: int, cout: int, k: int, **p: object) -> None:
    group = int(p.get("group", 1))  # type: ignore[call-overload]
    blobs = [(cout, cin // group, k, k)] + ([] if p.get("bias_term") is False else [(cout,)])
    w.layer(name, "Convolution", [bottom], [name], blobs,
            convolution_param={"num_output": cout, "kernel_size": [k], **p})


def lenet() -> NetWriter:
    w = NetWriter((2, 1, 28, 28), input_form="Input")
    conv(w, "conv1", "data", 1, 4, 5)
    w.layer("pool1", "Pooling", ["conv1"], ["pool1"],
            pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2})
    conv(w, "conv2", "pool1", 4, 6, 5)
    w.layer("pool2", "Pooling", ["conv2"], ["pool2"],
            pooling_param={"pool": "MAX", "kernel_size": 2, "stride": 2})
    w.layer("ip1", "InnerProduct", ["pool2"], ["ip1"], [(20, 96), (20,)],
            inner_product_param={"num_output": 20})
    w.layer("relu1", "ReLU", ["ip1"], ["ip1"])
    w.layer("ip2", "InnerProduct", ["ip1"], ["ip2"], [(10, 20), (10,)],
            inner_product_param={"num_output": 10})
    w.layer("prob", "Softmax", ["ip2"], ["prob"])
    return w


def caffenet() -> NetWriter:
    w = NetWriter((2, 3, 35, 35))
    conv(w, "conv1", "data", 3, 8, 5, stride=[2])
    w.layer("relu1", "ReLU", ["conv1"], ["conv1"])
    w.layer("pool1", "Pooling", ["conv1"], ["pool1"],
            pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2})
    w.layer("norm1", "LRN", ["pool1"], ["norm1"],
            lrn_param={"local_size": 5, "alpha": 1e-2, "beta": 0.75})
    conv(w, "conv2", "norm1", 8, 12, 3, pad=[1], group=2)
    w.layer("relu2", "ReLU", ["conv2"], ["conv2"])
    w.layer("pool2", "Pooling", ["conv2"], ["pool2"],
            pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2})
    w.layer("fc6", "InnerProduct", ["pool2"], ["fc6"], [(16, 12 * 4 * 4), (16,)],
            inner_product_param={"num_output": 16})
    w.layer("relu6", "ReLU", ["fc6"], ["fc6"])
    w.layer("drop6", "Dropout", ["fc6"], ["fc6"])
    w.layer("fc8", "InnerProduct", ["fc6"], ["fc8"], [(5, 16), (5,)],
            inner_product_param={"num_output": 5})
    w.layer("prob", "Softmax", ["fc8"], ["prob"])
    return w


def resnet_block() -> NetWriter:
    w = NetWriter((2, 4, 8, 8), input_form="input_shape")
    rng = np.random.default_rng(1)

    def bn_scale(name: str, bottom: str, c: int) -> None:
        w.layer(f"bn_{name}", "BatchNorm", [bottom], [bottom],
                [rng.normal(size=c) * 2, rng.uniform(0.5, 2, size=c) * 2, [2.0]])
        w.layer(f"scale_{name}", "Scale", [bottom], [bottom], [(c,), (c,)],
                scale_param={"bias_term": True})

    conv(w, "res_a", "data", 4, 4, 3, pad=[1], bias_term=False)
    bn_scale("a", "res_a", 4)
    w.layer("res_a_relu", "ReLU", ["res_a"], ["res_a"])
    conv(w, "res_b", "res_a", 4, 4, 3, pad=[1], bias_term=False)
    bn_scale("b", "res_b", 4)
    w.layer("res", "Eltwise", ["data", "res_b"], ["res"])
    w.layer("res_relu", "ReLU", ["res"], ["res"])
    return w


def inception_block() -> NetWriter:
    w = NetWriter((1, 6, 9, 9))
    conv(w, "b1x1", "data", 6, 3, 1)
    conv(w, "b3x3", "data", 6, 4, 3, pad=[1])
    w.layer("bpool", "Pooling", ["data"], ["bpool"],
            pooling_param={"pool": "AVE", "kernel_size": 3, "stride": 1, "pad": 1})
    conv(w, "bpool_proj", "bpool", 6, 2, 1)
    w.layer("out", "Concat", ["b1x1", "b3x3", "bpool_proj"], ["out"])
    w.layer("pool", "Pooling", ["out"], ["pool"],
            pooling_param={"pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1})
    return w


@pytest.mark.parametrize("make", [lenet, caffenet, resnet_block, inception_block])
def test_net_matches_opencv_every_blob(tmp_path: Path, make) -> None:
    proto, model = make().write(tmp_path)
    assert_matches_opencv(proto, model)


def test_in_place_layer_on_the_input(tmp_path: Path) -> None:
    w = NetWriter((1, 2, 5, 5))
    w.layer("scale_in", "Power", ["data"], ["data"], power_param={"scale": 0.5, "shift": 1.0})
    w.layer("conv", "Convolution", ["data"], ["conv"], [(3, 2, 3, 3), (3,)],
            convolution_param={"num_output": 3, "kernel_size": [3]})
    proto, model = w.write(tmp_path)
    net = rc.load_net(proto, model)
    assert net.input_names == ["data@data"]
    assert net.node("scale_in").outputs == ("data",)
    assert_matches_opencv(proto, model)


def test_layer_names_and_ssa_values(tmp_path: Path) -> None:
    proto, model = caffenet().write(tmp_path)
    net = rc.load_net(proto, model)
    assert net.layer_names[:3] == ["conv1", "relu1", "pool1"]
    assert net.node("conv1").outputs == ("conv1@conv1",)
    assert net.node("relu1").inputs == ("conv1@conv1",)
    assert net.node("relu1").outputs == ("conv1",)
    assert net.node("drop6").outputs == ("fc6",)
    assert net.output_names == ["prob"]
    assert not net.training


def test_save_load_round_trip(tmp_path: Path) -> None:
    for make in (caffenet, resnet_block, inception_block):
        proto, model = make().write(tmp_path / make.__name__)
        net = rc.load_net(proto, model)
        save_graph(net, tmp_path / make.__name__ / "saved")
        back = load_graph(tmp_path / make.__name__ / "saved").eval()
        x = torch.randn(net.input_shapes[net.input_names[0]])
        with torch.no_grad():
            torch.testing.assert_close(back(x), net(x), rtol=0, atol=0)


def _v1_net(tmp_path: Path) -> tuple[Path, Path]:
    """A legacy V1 net (``layers``, enum types, 4-D legacy blobs) with a V1 caffemodel."""
    net = rc._schema.net_class(True)()
    net.input.append("data")
    net.input_dim.extend([1, 2, 6, 6])
    rng = np.random.default_rng(0)

    def add(name, type_, bottom, top, blobs=(), **params):
        layer = net.layers.add(name=name, type=type_)
        layer.bottom.extend(bottom)
        layer.top.extend(top)
        for key, value in params.items():
            getattr(layer, key).CopyFrom(value)
        for shape in blobs:
            blob = layer.blobs.add(num=shape[0], channels=shape[1], height=shape[2],
                                   width=shape[3])
            blob.data.extend(rng.standard_normal(int(np.prod(shape))).tolist())
        return layer

    cp = rc._schema.message_class("ConvolutionParameter", True)(num_output=3)
    cp.kernel_size.append(3)
    add("conv1", "CONVOLUTION", ["data"], ["conv1"], [(3, 2, 3, 3), (1, 1, 1, 3)],
        convolution_param=cp)
    add("relu1", "RELU", ["conv1"], ["conv1"])
    pp = rc._schema.message_class("PoolingParameter", True)(pool=1, kernel_size=3, stride=2)
    add("pool1", "POOLING", ["conv1"], ["pool1"], pooling_param=pp)
    ip = rc._schema.message_class("InnerProductParameter", True)(num_output=4)
    add("fc", "INNER_PRODUCT", ["pool1"], ["fc"], [(1, 1, 4, 12), (1, 1, 1, 4)],
        inner_product_param=ip)
    add("prob", "SOFTMAX", ["fc"], ["prob"])
    model = tmp_path / "v1.caffemodel"
    model.write_bytes(net.SerializeToString())
    for layer in net.layers:
        del layer.blobs[:]
    from google.protobuf import text_format

    proto = tmp_path / "v1.prototxt"
    proto.write_text(text_format.MessageToString(net))
    return proto, model


def test_legacy_v1_net_and_blobs(tmp_path: Path) -> None:
    proto, model = _v1_net(tmp_path)
    assert "type: CONVOLUTION" in proto.read_text()
    net = rc.load_net(proto, model)
    assert net.layer_names == ["conv1", "relu1", "pool1", "fc", "prob"]
    assert tuple(net.layer("fc").weight.shape) == (4, 12)
    assert_matches_opencv(proto, model)


def test_v2_prototxt_with_v1_caffemodel(tmp_path: Path) -> None:
    proto_v1, model_v1 = _v1_net(tmp_path)
    w = NetWriter((1, 2, 6, 6))
    w.layer("conv1", "Convolution", ["data"], ["conv1"],
            convolution_param={"num_output": 3, "kernel_size": [3]})
    w.layer("relu1", "ReLU", ["conv1"], ["conv1"])
    w.layer("pool1", "Pooling", ["conv1"], ["pool1"],
            pooling_param={"pool": "AVE", "kernel_size": 3, "stride": 2})
    w.layer("fc", "InnerProduct", ["pool1"], ["fc"], inner_product_param={"num_output": 4})
    w.layer("prob", "Softmax", ["fc"], ["prob"])
    proto, _ = w.write(tmp_path / "v2")
    a, b = rc.load_net(proto, model_v1), rc.load_net(proto_v1, model_v1)
    x = torch.randn(1, 2, 6, 6)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))
