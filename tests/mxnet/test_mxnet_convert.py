"""Converter registry, handlers, attribute defaults, bad symbols, and per-op numpy oracles."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from mx_helpers import FIXTURES, load_io

import repurpose as rp
from repurpose.mxnet._ops import Pool, reshape_shape
from repurpose.mxnet._symbol import Attrs, load_symbol


def _sym(*nodes: dict, heads: list | None = None) -> dict:
    return {"nodes": list(nodes), "heads": heads or [[len(nodes) - 1, 0, 0]]}


def _var(name: str, **attrs: str) -> dict:
    return {"op": "null", "name": name, "inputs": [], "attrs": attrs}


# ------------------------------------------------------------------ symbol JSON
def test_attribute_parsing_and_defaults() -> None:
    a = Attrs({"k": "(3, 3)", "l": "[1,2]", "s": "3", "b": "True", "z": "0", "f": "1e-05",
               "n": "None", "t": "(2, None)"}, "node", "Op")
    assert a.as_tuple("k") == (3, 3) and a.as_tuple("l") == (1, 2) and a.as_tuple("s") == (3,)
    assert a.as_bool("b") is True and a.as_bool("z") is False and a.as_float("f") == 1e-5
    assert a.as_int("n", 7) == 7 and a.as_int("missing", 4) == 4 and a.as_tuple("t") == (2, None)
    with pytest.raises(rp.ModelFormatError, match="node 'node' \\(Op\\): attribute f=.*integer"):
        a.as_int("f")
    with pytest.raises(rp.ModelFormatError, match="boolean"):
        a.as_bool("k")


@pytest.mark.parametrize("doc, match", [
    ("{not json", "not valid JSON"),
    ("[]", "no 'nodes' list"),
    ('{"nodes": []}', "0 nodes"),
    ('{"nodes": [{"op": "null"}], "heads": [[0, 0]]}', "lacks a string 'op' and 'name'"),
    ('{"nodes": [{"op": "null", "name": "x", "inputs": []}]}', "no 'heads'"),
    ('{"nodes": [{"op": "null", "name": "x", "inputs": []}], "heads": [[5, 0]]}',
     "refers to a missing node"),
    ('{"nodes": [{"op": "relu", "name": "r", "inputs": [[0, 0]]}], "heads": [[0, 0]]}',
     "topological order"),
    ('{"nodes": [{"op": "null", "name": "x", "inputs": [["a", 0]]}], "heads": [[0, 0]]}',
     "bad entry"),
    ('{"nodes": [{"op": "null", "name": "x", "attrs": [1]}], "heads": [[0, 0]]}',
     "must be an object"),
])
def test_malformed_symbols(doc: str, match: str) -> None:
    with pytest.raises(rp.ModelFormatError, match=match):
        rp.mxnet.load_net(doc)


def test_symbol_file_that_is_not_text(tmp_path) -> None:
    path = tmp_path / "x-symbol.json"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(rp.ModelFormatError, match="not a UTF-8"):
        load_symbol(path)


# ------------------------------------------------------------------ converters
def test_unknown_op_names_node_op_and_registry() -> None:
    doc = _sym(_var("data"), {"op": "MyFancyOp", "name": "fancy1", "inputs": [[0, 0, 0]]})
    with pytest.raises(rp.UnsupportedLayerError,
                       match="node 'fancy1' uses MXNet op 'MyFancyOp'.*Convolution.*"
                             "repurpose.mxnet.register_op"):
        rp.mxnet.load_net(doc)


def test_register_custom_converter_and_refuse_duplicates() -> None:
    def convert(ctx: rp.mxnet.ConvertContext) -> None:
        ctx.emit("mxnet.scalar", {"fn": "mul", "scalar": ctx.attrs.as_float("factor", 2.0)})

    rp.mxnet.register_op("TestTriple", convert)
    with pytest.raises(ValueError, match="already has a converter"):
        rp.mxnet.register_op("TestTriple", convert)
    with pytest.raises(ValueError, match="already has a converter"):
        rp.mxnet.register_op("Convolution", convert)
    doc = _sym(_var("data"), {"op": "TestTriple", "name": "t", "attrs": {"factor": "3"},
                              "inputs": [[0, 0, 0]]})
    net = rp.mxnet.load_net(json.dumps(doc))
    assert torch.equal(net(torch.ones(2)), torch.full((2,), 3.0))
    assert "TestTriple" in rp.mxnet.list_supported_ops()


def test_mxnet_defaults_for_absent_attributes() -> None:
    doc = _sym(_var("data"), _var("g"), _var("b"), _var("m"), _var("v"),
               {"op": "BatchNorm", "name": "bn", "inputs": [[i, 0, 0] for i in range(5)]})
    params = {"g": np.full(2, 5.0, np.float32), "b": np.zeros(2, np.float32),
              "m": np.zeros(2, np.float32), "v": np.ones(2, np.float32)}
    net = rp.mxnet.load_net(doc, params)
    bn = net.layer("bn")
    assert bn.eps == pytest.approx(1e-3)  # MXNet default, not torch's 1e-5
    assert torch.equal(bn.weight.data, torch.ones(2))  # fix_gamma defaults to True
    doc = _sym(_var("data"), {"op": "LRN", "name": "lrn", "attrs": {"nsize": "3"},
                              "inputs": [[0, 0, 0]]})
    assert rp.mxnet.load_net(doc).layer("lrn").knorm == 2.0
    doc = _sym(_var("data"), {"op": "Pooling", "name": "p", "attrs": {"kernel": "(2, 2)"},
                              "inputs": [[0, 0, 0]]})
    pool = rp.mxnet.load_net(doc).layer("p")
    assert (pool.pool_type, pool.convention, pool.count_include_pad) == ("max", "valid", True)


def test_params_are_found_through_inputs_not_name_suffixes() -> None:
    doc = _sym(_var("data"), _var("odd_name_w"), _var("another_b"),
               {"op": "FullyConnected", "name": "fc", "attrs": {"num_hidden": "2"},
                "inputs": [[0, 0, 0], [1, 0, 0], [2, 0, 0]]})
    params = {"arg:odd_name_w": np.eye(2, 3, dtype=np.float32),
              "arg:another_b": np.array([1.0, 2.0], np.float32)}
    net = rp.mxnet.load_net(doc, params)
    out = net(torch.tensor([[1.0, 2.0, 3.0]]))
    assert torch.allclose(out, torch.tensor([[2.0, 4.0]]))


def test_pre_09_graph_without_weight_variables() -> None:
    # MXNet's upgrader names the missing variables <node>_<arg>
    doc = {"nodes": [{"op": "null", "name": "data", "param": {}, "inputs": [],
                      "backward_source_id": -1},
                     {"op": "FullyConnected", "name": "fc", "param": {"num_hidden": "2"},
                      "inputs": [[0, 0]], "backward_source_id": -1}], "heads": [[1, 0]]}
    params = {"arg:fc_weight": np.ones((2, 3), np.float32), "arg:fc_bias": np.zeros(2, np.float32)}
    net = rp.mxnet.load_net(doc, params)
    assert torch.allclose(net(torch.ones(1, 3)), torch.full((1, 2), 3.0))


def test_params_for_another_symbol() -> None:
    with pytest.raises(rp.ModelFormatError,
                       match="node 'bn_data'.*needs parameter 'bn_data_gamma'.*Is the params"):
        rp.mxnet.load_net(FIXTURES / "resnet-symbol.json", FIXTURES / "inception-0000.params")
    wrong = rp.mxnet.load_params(FIXTURES / "resnet-0000.params")
    wrong["arg:conv0_weight"] = np.zeros((8, 3, 5, 5), np.float32)
    with pytest.raises(rp.ModelFormatError, match="conv0.*shape \\(8, 3, 5, 5\\)"):
        rp.mxnet.load_net(FIXTURES / "resnet-symbol.json", wrong)


def test_unused_params_warn() -> None:
    params = rp.mxnet.load_params(FIXTURES / "resnet-0000.params")
    params["arg:extra"] = np.zeros(1, np.float32)
    with pytest.warns(UserWarning, match="1 params are not used"):
        rp.mxnet.load_net(FIXTURES / "resnet-symbol.json", params)


def test_variable_in_params_used_as_data_becomes_a_constant() -> None:
    doc = _sym(_var("data"), _var("scale"),
               {"op": "broadcast_mul", "name": "m", "inputs": [[0, 0, 0], [1, 0, 0]]})
    net = rp.mxnet.load_net(doc, {"arg:scale": np.array([2.0], np.float32)})
    assert net.input_names == ["data"]
    assert torch.equal(net(torch.ones(3)), torch.full((3,), 2.0))


def test_unsupported_attribute_combinations() -> None:
    doc = _sym(_var("data"), {"op": "Pooling", "name": "p",
                              "attrs": {"kernel": "(2, 2)", "pool_type": "lp"},
                              "inputs": [[0, 0, 0]]})
    with pytest.raises(rp.UnsupportedLayerError, match="node 'p' \\(Pooling\\): pool_type='lp'"):
        rp.mxnet.load_net(doc)


# ------------------------------------------------------------------ handlers
def test_handlers_and_extract_non_layer_outputs(tmp_path) -> None:
    for ext in ("symbol.json", "0000.params"):
        shutil.copy(FIXTURES / f"resnet-{ext}", tmp_path / f"model-{ext}")
    h = rp.ModelHandler.from_mxnet_checkpoint(str(tmp_path / "model"), epoch=0)
    assert "_plus2" in h.layer_names and h.input_shape is None
    x, ref = load_io("resnet")
    feats = h.extract(x, ["_plus2", "fc1"], pooling=None, progress=False)
    np.testing.assert_allclose(feats["fc1"], ref["fc1"], rtol=1e-4, atol=1e-5)
    h2 = rp.mxnet.handler_from_mxnet(FIXTURES / "resnet-symbol.json", None,
                                     input_shape=(3, 16, 16))
    assert h2.input_shape == (3, 16, 16)
    with pytest.raises(rp.ModelFormatError, match="model-0007.params"):
        rp.mxnet.handler_from_mxnet_checkpoint(tmp_path / "model", epoch=7)


def test_saved_handler_needs_no_mxnet_files(tmp_path) -> None:
    h = rp.ModelHandler.from_mxnet(FIXTURES / "inception-symbol.json",
                                   FIXTURES / "inception-0000.params")
    h.save(tmp_path / "saved")
    loaded = rp.ModelHandler.load(tmp_path / "saved")
    x, ref = load_io("inception")
    out = loaded.extract(x, ["mixed"], pooling=None, progress=False)["mixed"]
    np.testing.assert_allclose(out.reshape(ref["mixed"].shape), ref["mixed"], rtol=1e-4,
                               atol=1e-5)


# ------------------------------------------------------------------ op oracles
def _pool_oracle(x: np.ndarray, k: int, s: int, p: int, kind: str, convention: str,
                 include_pad: bool) -> np.ndarray:
    """A loop-for-loop port of MXNet's pool.h (1-D along the last axis)."""
    n = x.shape[-1]
    if convention == "valid":
        out = (n + 2 * p - k) // s + 1
    elif convention == "full":
        out = 1 + int(np.ceil((n + 2 * p - k) / s))
    else:
        out = int(np.ceil((n + 2 * p) / s))
    y = np.zeros(x.shape[:-1] + (out,))
    for o in range(out):
        start = o * s - p
        end = min(start + k, n + p)
        size = end - start
        a, b = max(start, 0), min(end, n)
        window = x[..., a:b]
        if kind == "max":
            y[..., o] = window.max(-1)
        else:
            total = window.sum(-1)
            if kind == "sum":
                y[..., o] = total
            else:
                y[..., o] = total / (size if include_pad else b - a)
    return y


@pytest.mark.parametrize("n, k, s, p", [(7, 3, 2, 1), (6, 5, 3, 2), (8, 2, 2, 0), (5, 3, 1, 1),
                                        (9, 4, 3, 0)])
@pytest.mark.parametrize("kind", ["max", "avg", "sum"])
@pytest.mark.parametrize("convention", ["valid", "full", "same"])
@pytest.mark.parametrize("include_pad", [True, False])
def test_pooling_against_pool_h_oracle(n, k, s, p, kind, convention, include_pad) -> None:
    if convention == "same":
        p = 0  # MXNet's 'same' refuses padding
    x = np.random.default_rng(n * k).normal(size=(2, 3, n)).astype(np.float32)
    pool = Pool([k], kind, [s], [p], convention, include_pad)
    got = pool(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, _pool_oracle(x, k, s, p, kind, convention, include_pad),
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("src, spec, reverse, expected", [
    ((2, 3, 4), (0, -1), False, [2, 12]),
    ((2, 3, 4), (-2,), False, [2, 3, 4]),
    ((2, 3, 4, 5), (-3, -2), False, [6, 4, 5]),
    ((2, 6, 4), (0, -4, 2, -1, -2), False, [2, 2, 3, 4]),
    ((2, 3, 4), (4, 0, -1), False, [4, 3, 2]),
    ((10, 5, 4), (-1, 0), True, [50, 4]),
])
def test_reshape_special_codes(src, spec, reverse, expected) -> None:
    assert reshape_shape(src, spec, reverse) == expected


def test_deconvolution_target_shape_on_other_sizes() -> None:
    x, _ = load_io("conv_ops")
    net = rp.mxnet.load_net(FIXTURES / "conv_ops-symbol.json", FIXTURES / "conv_ops-0000.params")
    assert net.run({"data": torch.from_numpy(x)}, ["deconv2"])["deconv2"].shape[-2:] == (9, 9)


def test_shape_hints_size_layers_without_params(tmp_path) -> None:
    doc = _sym(_var("data", __shape__="(1, 3, 6, 6)"),
               {"op": "Convolution", "name": "c", "attrs": {"kernel": "(3, 3)", "num_filter": "4"},
                "inputs": [[0, 0, 0]]},
               {"op": "FullyConnected", "name": "fc", "attrs": {"num_hidden": "2"},
                "inputs": [[1, 0, 0]]})
    net = rp.mxnet.load_net(doc)
    assert net.input_shapes == {"data": [1, 3, 6, 6]}
    assert net.layer("fc").in_features == 4 * 4 * 4
    assert net(torch.zeros(5, 3, 6, 6)).shape == (5, 2)


def test_dropout_modes_identity_cast_and_constant_round_trip(tmp_path) -> None:
    doc = _sym(_var("data"), _var("bias"),
               {"op": "Dropout", "name": "d1", "attrs": {"p": "0.5"}, "inputs": [[0, 0, 0]]},
               {"op": "Dropout", "name": "d2", "attrs": {"p": "0.5", "mode": "always"},
                "inputs": [[2, 0, 0]]},
               {"op": "identity", "name": "i", "inputs": [[3, 0, 0]]},
               {"op": "broadcast_add", "name": "a", "inputs": [[4, 0, 0], [1, 0, 0]]},
               {"op": "Cast", "name": "c", "attrs": {"dtype": "float16"}, "inputs": [[5, 0, 0]]})
    net = rp.mxnet.load_net(doc, {"arg:bias": np.array([1.0], np.float32)})
    out = net(torch.ones(1000))
    assert out.dtype == torch.float16
    assert 0.3 < float((out == 1).float().mean()) < 0.7  # 'always' drops at inference
    rp.graph.save_graph(net, tmp_path / "g")
    loaded = rp.graph.load_graph(tmp_path / "g")
    assert torch.equal(loaded.layer("bias").value, torch.tensor([1.0]))
