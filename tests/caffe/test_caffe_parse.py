"""Parsing: input forms, phases, pooling spellings, registry, schema, and bad input."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_writer import NetWriter

import repurpose.caffe as rc
from repurpose._exceptions import ModelFormatError, UnsupportedLayerError
from repurpose.caffe import _schema

BODY = """
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"
        convolution_param { num_output: 2 kernel_size: 3 } }
layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"
        pooling_param { pool: MAX kernel_size: 2 stride: 2 %s } }
"""


def write(tmp_path: Path, text: str, name: str = "net.prototxt") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("header", [
    'input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8',
    'input: "data" input_shape { dim: 1 dim: 3 dim: 8 dim: 8 }',
    'layer { name: "in" type: "Input" top: "data" '
    'input_param { shape { dim: 1 dim: 3 dim: 8 dim: 8 } } }',
])
def test_input_forms(tmp_path: Path, header: str) -> None:
    net = rc.load_net(write(tmp_path, header + BODY % ""))
    assert net.input_names == ["data"]
    assert net.input_shapes == {"data": [1, 3, 8, 8]}
    assert net.layer_names == ["conv", "pool"]
    assert net(torch.zeros(1, 3, 8, 8)).shape == (1, 2, 3, 3)


def test_two_inputs_each_with_own_dims(tmp_path: Path) -> None:
    text = ('input: "a" input: "b" input_dim: 1 input_dim: 2 input_dim: 3 input_dim: 3 '
            'input_dim: 1 input_dim: 2 input_dim: 1 input_dim: 1\n'
            'layer { name: "s" type: "Scale" bottom: "a" bottom: "b" top: "s" '
            'scale_param { axis: 0 } }')
    with pytest.raises(ModelFormatError):  # (1,2,1,1) is not a prefix of (1,2,3,3) from axis 0
        rc.load_net(write(tmp_path, text))
    net = rc.load_net(write(tmp_path, text.replace("axis: 0", "axis: 0 num_axes: 4")),
                      input_shape={"b": [1, 2, 3, 3]})
    assert net.input_shapes == {"a": [1, 2, 3, 3], "b": [1, 2, 3, 3]}


@pytest.mark.parametrize("spelling,size", [
    ("", 5), ("ceil_mode: true", 5), ("ceil_mode: false", 4),
    ("round_mode: CEIL", 5), ("round_mode: FLOOR", 4),
])
def test_pooling_round_spellings(tmp_path: Path, spelling: str, size: int) -> None:
    header = 'input: "data" input_dim: 1 input_dim: 3 input_dim: 11 input_dim: 11'
    net = rc.load_net(write(tmp_path, header + BODY % spelling))
    assert net(torch.zeros(1, 3, 11, 11)).shape[-1] == size


def test_round_mode_prototxt_verifies_with_opencv(tmp_path: Path) -> None:
    pytest.importorskip("cv2")
    w = NetWriter((1, 2, 10, 10), ceil_schema=False)
    w.layer("pool", "Pooling", ["data"], ["pool"],
            pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2, "round_mode": "FLOOR"})
    proto, model = w.write(tmp_path)
    assert "round_mode: FLOOR" in proto.read_text()
    report = rc.verify(proto, model)
    assert report[0].shape == (1, 2, 4, 4) and report[0].ok


def test_phase_rules(tmp_path: Path) -> None:
    text = """
    name: "tv"
    layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TRAIN }
            data_param { source: "x" batch_size: 4 } }
    layer { name: "data" type: "Data" top: "data" top: "label" include { phase: TEST }
            transform_param { mean_value: 104 mean_value: 117 mean_value: 123 scale: 0.5 } }
    layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
            inner_product_param { num_output: 3 } }
    layer { name: "drop" type: "Dropout" bottom: "fc" top: "fc" exclude { phase: TEST } }
    layer { name: "only_stage" type: "ReLU" bottom: "fc" top: "fc"
            include { phase: TEST stage: "deploy" } }
    layer { name: "kept" type: "ReLU" bottom: "fc" top: "fc" exclude { phase: TRAIN } }
    layer { name: "acc" type: "Accuracy" bottom: "fc" bottom: "label" top: "acc"
            include { phase: TEST } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
    """
    path = write(tmp_path, text)
    with pytest.warns(UserWarning, match="data_param"):
        with pytest.raises(ModelFormatError, match="input_shape"):
            rc.load_net(path)
    with pytest.warns(UserWarning):
        net = rc.load_net(path, input_shape=(2, 3, 4, 4))
    assert net.layer_names == ["fc", "kept"]
    with pytest.warns(UserWarning):
        train = rc.load_net(path, input_shape=(2, 3, 4, 4), phase="TRAIN")
    assert train.layer_names == ["fc", "drop"]
    with pytest.warns(UserWarning):
        handler = rc.handler_from_caffe(path, input_shape=(2, 3, 4, 4))
    assert handler.preprocess.mean == (104.0, 117.0, 123.0)
    assert handler.preprocess.input_scale == 0.5
    assert handler.preprocess.channel_order == "BGR"


def test_register_layer_and_unknown_type(tmp_path: Path) -> None:
    text = ('input: "data" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4\n'
            'layer { name: "up" type: "MyDouble" bottom: "data" top: "up" }')
    path = write(tmp_path, text)
    with pytest.raises(UnsupportedLayerError,
                       match=r"'up' has type 'MyDouble'.*Convolution.*register_layer"):
        rc.load_net(path)

    def convert(ctx: rc.LayerContext) -> rc.Converted:
        return rc.Converted("caffe.power", {"scale": 2.0})

    rc.register_layer("MyDouble", convert)
    try:
        with pytest.raises(ValueError, match="already has a converter"):
            rc.register_layer("MyDouble", convert)
        net = rc.load_net(path)
        assert torch.equal(net(torch.ones(1, 2, 4, 4)), torch.full((1, 2, 4, 4), 2.0))
    finally:
        from repurpose.caffe import _layers

        del _layers._CONVERTERS["MyDouble"]


def test_schema_text_matches_committed_proto() -> None:
    committed = Path(rc.__file__).parent / "caffe_subset.proto"
    assert committed.read_text() == _schema.schema_text()


def test_weights_warnings(tmp_path: Path) -> None:
    w = NetWriter((1, 2, 4, 4))
    w.layer("a", "Convolution", ["data"], ["a"], [(2, 2, 1, 1), (2,)],
            convolution_param={"num_output": 2, "kernel_size": [1]})
    w.layer("b", "Convolution", ["a"], ["b"], convolution_param={"num_output": 2,
                                                                   "kernel_size": [1]})
    _, model = w.write(tmp_path)
    deploy = NetWriter((1, 2, 4, 4))
    deploy.layer("b", "Convolution", ["data"], ["b"], convolution_param={"num_output": 2,
                                                                          "kernel_size": [1]})
    deploy.layer("c", "Convolution", ["b"], ["c"], convolution_param={"num_output": 2,
                                                                       "kernel_size": [1]})
    proto, _ = deploy.write(tmp_path / "d")
    with pytest.raises(ModelFormatError, match="matches none of the net's layers"):
        rc.load_net(proto, model)
    w.layer("c", "Convolution", ["b"], ["c"], [(2, 2, 1, 1), (2,)],
            convolution_param={"num_output": 2, "kernel_size": [1]})
    _, model = w.write(tmp_path)
    with pytest.warns(UserWarning) as record:
        rc.load_net(proto, model)
    text = " ".join(str(r.message) for r in record)
    assert "['b']" in text and "['a']" in text


# ------------------------------------------------------------------ bad input


def test_syntax_error_reports_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, 'name: "x"\nlayer {\n  name: "a"\n  type: ]\n}\n')
    with pytest.raises(ModelFormatError, match=r"line 4, column \d+"):
        rc.load_net(path)


def test_not_a_net(tmp_path: Path) -> None:
    with pytest.warns(UserWarning):
        with pytest.raises(ModelFormatError, match="defines no layers"):
            rc.load_net(write(tmp_path, 'net: "train.prototxt"\nbase_lr: 0.01\n'))
    binary = tmp_path / "binary.prototxt"
    binary.write_bytes(b"\x08\xff\xfe\x00\x80")
    with pytest.raises(ModelFormatError, match="not a text prototxt"):
        rc.load_net(binary)


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(ModelFormatError, match="prototxt file not found"):
        rc.load_net(tmp_path / "nope.prototxt")
    proto, _ = NetWriter().write(tmp_path)
    with pytest.raises(ModelFormatError, match="caffemodel file not found"):
        rc.load_net(proto, tmp_path / "nope.caffemodel")
    with pytest.raises(ModelFormatError, match="not found"):
        rc.load_mean(tmp_path / "nope.binaryproto")


def _simple(tmp_path: Path) -> tuple[Path, Path]:
    w = NetWriter((1, 2, 5, 5))
    w.layer("conv", "Convolution", ["data"], ["conv"], [(3, 2, 3, 3), (3,)],
            convolution_param={"num_output": 3, "kernel_size": [3]})
    w.layer("fc", "InnerProduct", ["conv"], ["fc"], [(4, 27), (4,)],
            inner_product_param={"num_output": 4})
    return w.write(tmp_path)


def test_truncated_and_corrupt_caffemodel(tmp_path: Path) -> None:
    proto, model = _simple(tmp_path)
    data = model.read_bytes()
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match="truncated or corrupt"):
        rc.load_net(proto, bad)
    bad.write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFormatError):
        rc.load_net(proto, bad)
    bad.write_bytes(proto.read_bytes())  # a prototxt given as weights
    with pytest.raises(ModelFormatError):
        rc.load_net(proto, bad)


def test_forged_blob_shapes_refused_before_allocation(tmp_path: Path) -> None:
    net = _schema.net_class(True)()
    layer = net.layer.add(name="conv", type="Convolution")
    blob = layer.blobs.add()
    blob.shape.dim.extend([1 << 20, 1 << 20, 1 << 10])
    path = tmp_path / "forged.caffemodel"
    path.write_bytes(net.SerializeToString())
    proto, _ = _simple(tmp_path / "p")
    with pytest.raises(ModelFormatError, match="limit"):
        rc.load_net(proto, path)
    blob.ClearField("shape")
    blob.num, blob.channels, blob.height, blob.width = 3, 2, 3, 3
    blob.data.extend([0.0] * 5)
    path.write_bytes(net.SerializeToString())
    with pytest.raises(ModelFormatError, match="needs 54 values but the blob holds 5"):
        rc.load_net(proto, path)
    blob.num = -3
    path.write_bytes(net.SerializeToString())
    with pytest.raises(ModelFormatError, match="negative"):
        rc.load_net(proto, path)


@pytest.mark.parametrize("header,match", [
    ('input: "data" input_dim: 1 input_dim: -3 input_dim: 8 input_dim: 8', "negative"),
    ('input: "data" input_dim: 1000000 input_dim: 3000000 input_dim: 8 input_dim: 8',
     "absurdly large"),
    ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8', "input_dim"),
])
def test_bad_input_dims(tmp_path: Path, header: str, match: str) -> None:
    with pytest.raises(ModelFormatError, match=match):
        rc.load_net(write(tmp_path, header + BODY % ""))


def test_absurd_layer_size_refused(tmp_path: Path) -> None:
    text = ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
            'layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc" '
            'inner_product_param { num_output: 4000000000 } }')
    with pytest.raises(ModelFormatError, match="absurd"):
        rc.load_net(write(tmp_path, text))


def test_bottom_never_produced(tmp_path: Path) -> None:
    text = ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8 input_dim: 8\n'
            'layer { name: "r" type: "ReLU" bottom: "nope" top: "r" }')
    with pytest.raises(ModelFormatError, match=r"'r' reads blob\(s\) \['nope'\]"):
        rc.load_net(write(tmp_path, text))


def test_mean_binaryproto(tmp_path: Path) -> None:
    blob = _schema.blob_class()(num=1, channels=3, height=4, width=5)
    mean = np.arange(60, dtype=np.float32)
    blob.data.extend(mean.tolist())
    path = tmp_path / "mean.binaryproto"
    path.write_bytes(blob.SerializeToString())
    np.testing.assert_array_equal(rc.load_mean(path), mean.reshape(3, 4, 5))
    path.write_bytes(blob.SerializeToString()[:-7])
    with pytest.raises(ModelFormatError):
        rc.load_mean(path)


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def test_fork_layer_parameters_reach_a_registered_converter(tmp_path: Path) -> None:
    # A fork layer whose parameter message the schema lacks: text fields by name, binary
    # fields by number, handed to the user's converter (not dropped).
    w = NetWriter((1, 2, 3, 3))
    layer = w.layer("boost", "ForkBoost", ["data"], ["boost"])
    nested = bytes([0x0D]) + struct.pack("<f", 2.5)  # field 1, fixed32
    layer.MergeFromString(_varint(3001 << 3) + _varint(7)
                          + _varint(3002 << 3 | 2) + _varint(len(nested)) + nested)
    proto, model = w.write(tmp_path)
    text = proto.read_text().replace(
        'top: "boost"', 'top: "boost"\n  boost_param { factor: 3.0 mode: FAST offsets: [1, 2] }')
    proto.write_text(text)
    seen = {}

    def convert(ctx: rc.LayerContext) -> rc.Converted:
        seen.update(params=ctx.params, fields=ctx.binary_fields)
        return rc.Converted("caffe.power", {"scale": ctx.params["boost_param"]["factor"]})

    rc.register_layer("ForkBoost", convert)
    try:
        with pytest.warns(UserWarning, match="boost_param.*LayerContext.params"):
            net = rc.load_net(proto, model)
    finally:
        from repurpose.caffe import _layers

        del _layers._CONVERTERS["ForkBoost"]
    assert seen["params"] == {"boost_param": {"factor": 3.0, "mode": "FAST", "offsets": [1, 2]}}
    assert seen["fields"] == {3001: 7, 3002: {1: 2.5}}
    x = torch.randn(1, 2, 3, 3)
    torch.testing.assert_close(net(x), 3 * x)


def test_every_unsupported_type_listed_at_once(tmp_path: Path) -> None:
    text = ('input: "data" input_dim: 1 input_dim: 2 input_dim: 4 input_dim: 4\n'
            'layer { name: "a" type: "ForkA" bottom: "data" top: "a" }\n'
            'layer { name: "r" type: "ReLU" bottom: "a" top: "r" }\n'
            'layer { name: "b" type: "ForkB" bottom: "r" top: "b" }\n'
            'layer { name: "a2" type: "ForkA" bottom: "b" top: "a2" }')
    with pytest.raises(UnsupportedLayerError, match=r"2 layer type\(s\).*ForkA, ForkB\. "
                       r"layer 'a' has type 'ForkA'; layer 'b' has type 'ForkB'; "
                       r"layer 'a2' has type 'ForkA'"):
        rc.load_net(write(tmp_path, text))
