"""Every node of every fixture net against mxnet 1.9.1's recorded outputs (rtol 1e-4, atol 1e-5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mx_helpers import FIXTURES, NETS, load_io

import repurpose as rp
from repurpose.graph import load_graph, save_graph

RTOL, ATOL = 1e-4, 1e-5


def _check_all_nodes(net: rp.graph.GraphNet, name: str) -> int:
    x, ref = load_io(name)
    with torch.no_grad():
        values = net.run({"data": torch.from_numpy(x)}, list(ref))
    for key, expected in ref.items():
        got = values[key].numpy()
        assert got.shape == expected.shape, key
        np.testing.assert_allclose(got.astype(np.float64), expected, rtol=RTOL, atol=ATOL,
                                   err_msg=f"{name}: {key}")
    return len(ref)


@pytest.mark.parametrize("name", NETS)
def test_every_node_matches_mxnet(name: str) -> None:
    net = rp.mxnet.load_net(FIXTURES / f"{name}-symbol.json", FIXTURES / f"{name}-0000.params")
    assert _check_all_nodes(net, name) >= 3


@pytest.mark.parametrize("form", ["attr", "param"])
@pytest.mark.parametrize("name", ["conv_ops", "resnet"])
def test_older_json_forms(name: str, form: str) -> None:
    net = rp.mxnet.load_net(FIXTURES / f"{name}_{form}-symbol.json",
                            FIXTURES / f"{name}-0000.params")
    _check_all_nodes(net, name)


def test_fixtures_cover_the_issue_ops() -> None:
    import json

    used = set()
    for name in NETS:
        doc = json.loads((FIXTURES / f"{name}-symbol.json").read_text())
        used |= {n["op"] for n in doc["nodes"]}
    required = {
        "Convolution", "Deconvolution", "BatchNorm", "Activation", "LeakyReLU", "Pooling",
        "FullyConnected", "Flatten", "Concat", "elemwise_add", "elemwise_sub", "elemwise_mul",
        "elemwise_div", "broadcast_add", "broadcast_sub", "broadcast_mul", "broadcast_div",
        "_plus_scalar", "_minus_scalar", "_mul_scalar", "_div_scalar", "_rminus_scalar",
        "_rdiv_scalar", "_power_scalar", "_maximum_scalar", "_minimum_scalar", "Dropout",
        "softmax", "log_softmax", "SoftmaxOutput", "SoftmaxActivation", "clip", "Reshape",
        "transpose", "SliceChannel", "slice_axis", "expand_dims", "squeeze", "mean", "sum",
        "L2Normalization", "LRN", "UpSampling", "_copy", "BlockGrad", "Cast",
        "add_n", "SwapAxis", "max",
    }
    assert required <= used, required - used


def test_layer_names_are_mxnet_node_names() -> None:
    net = rp.mxnet.load_net(FIXTURES / "resnet-symbol.json", FIXTURES / "resnet-0000.params")
    for name in ("conv0", "stage0_relu", "_plus1", "fc1", "softmax"):
        assert name in net.layer_names
    assert net.input_names == ["data"]  # the label variable is not an input
    assert net.output_names == ["softmax"]


def test_save_and_load_give_identical_outputs(tmp_path) -> None:
    for name in ("act_ops", "shape_ops", "conv_ops", "pool_ops", "gluon"):
        net = rp.mxnet.load_net(FIXTURES / f"{name}-symbol.json",
                                FIXTURES / f"{name}-0000.params")
        save_graph(net, tmp_path / name)
        loaded = load_graph(tmp_path / name).eval()
        x, ref = load_io(name)
        with torch.no_grad():
            a = net.run({"data": torch.from_numpy(x)}, list(ref))
            b = loaded.run({"data": torch.from_numpy(x)}, list(ref))
        for key in ref:
            assert torch.equal(a[key], b[key]), (name, key)


def test_gluon_export_names() -> None:
    net = rp.mxnet.load_net(FIXTURES / "gluon-symbol.json", FIXTURES / "gluon-0000.params")
    assert any(n.endswith("batchnorm0_fwd") for n in net.layer_names)


def test_params_as_a_dict_and_without_params() -> None:
    params = rp.mxnet.load_params(FIXTURES / "resnet-0000.params")
    net = rp.mxnet.load_net(FIXTURES / "resnet-symbol.json", params)
    _check_all_nodes(net, "resnet")
    bare = rp.mxnet.load_net(FIXTURES / "resnet-symbol.json", input_shape=(1, 3, 16, 16))
    x, ref = load_io("resnet")
    with torch.no_grad():
        out = bare(torch.from_numpy(x))
    assert out.shape == ref["softmax"].shape
    assert bare.input_shapes == {"data": [1, 3, 16, 16]}
    with pytest.raises(rp.ModelFormatError, match="pass input_shape"):
        rp.mxnet.load_net(FIXTURES / "resnet-symbol.json")
