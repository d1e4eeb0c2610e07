import json

import numpy as np
import pytest
import torch
from mh_models import make_chain, make_resnet
from torch import nn

from repurpose import ModelFormatError, ModelHandler, Preprocess


def test_plain_module_roundtrip(tmp_path, resnet, images):
    pre = Preprocess(channel_order="BGR", crop=(6, 6), raw_scale=255.0, mean=(1.0, 2.0, 3.0))
    h = ModelHandler(resnet, input_shape=(3, 6, 6), preprocess=pre)
    h.save(tmp_path / "h")
    doc = json.loads((tmp_path / "h" / "handler.json").read_text())
    # converted to a graph on save; loading into a module of the architecture still works
    assert doc["kind"] == "graph" and doc["layer_names"] == h.layer_names
    torch.manual_seed(1)
    fresh = type(resnet)()
    back = ModelHandler.load(tmp_path / "h", module=fresh)
    assert back.input_shape == (3, 6, 6) and back.preprocess == pre
    np.testing.assert_allclose(back.extract(images, ["fc"], progress=False)["fc"],
                               h.extract(images, ["fc"], progress=False)["fc"], atol=1e-6)


def test_graph_roundtrip_needs_no_module(tmp_path, graph, images):
    mean = np.arange(3 * 8 * 8, dtype=np.float32).reshape(3, 8, 8)
    h = ModelHandler(graph, preprocess=Preprocess(crop=(6, 6), mean=mean))
    h.save(tmp_path / "g")
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == [
        "graph.json", "handler.json", "preprocess_mean.npz", "weights.safetensors"]
    back = ModelHandler.load(tmp_path / "g")
    np.testing.assert_array_equal(back.preprocess.mean, mean)
    assert back.layer_names == h.layer_names and back.input_shape == (3, 6, 6)
    np.testing.assert_array_equal(back.extract(images, "fc", progress=False)["fc"],
                                  h.extract(images, "fc", progress=False)["fc"])


def test_load_errors(tmp_path, chain):
    ModelHandler(chain).save(tmp_path / "c")
    # a chain of standard layers is converted to a graph on save: it loads without code
    assert ModelHandler.load(tmp_path / "c").layer_names == ModelHandler(chain).layer_names
    with pytest.raises(ModelFormatError, match="into Sequential: .*size mismatch for 0.weight"):
        ModelHandler.load(tmp_path / "c", module=nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ModelFormatError, match="do not fit Sequential: missing"):
        ModelHandler.load(tmp_path / "c", module=nn.Sequential(*make_chain()[:2]))
    with pytest.raises(ModelFormatError, match="has no handler.json"):
        ModelHandler.load(tmp_path)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "handler.json").write_text('{"format": "other"}')
    with pytest.raises(ModelFormatError, match="is not a repurpose.handler document"):
        ModelHandler.load(tmp_path / "bad")


def test_save_refuses_a_file_and_overwrites_a_handler(tmp_path):
    (tmp_path / "f").write_text("keep")
    with pytest.raises(ValueError, match="exists and is not a directory"):
        ModelHandler(make_chain()).save(tmp_path / "f")
    assert (tmp_path / "f").read_text() == "keep"
    ModelHandler(make_resnet()).save(tmp_path / "d")
    ModelHandler(make_chain()).save(tmp_path / "d")
    assert ModelHandler.load(tmp_path / "d", module=make_chain()).layer_names[0] == "0"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_shared_weights_save(tmp_path):
    lin = nn.Linear(3, 3)
    tied = nn.Sequential(lin, nn.ReLU(), lin)
    ModelHandler(tied).save(tmp_path / "t")
    fresh = nn.Sequential(l2 := nn.Linear(3, 3), nn.ReLU(), l2)
    back = ModelHandler.load(tmp_path / "t", module=fresh)
    assert torch.equal(back.module[0].weight, lin.weight)


def test_surgery_result_roundtrip(tmp_path, resnet, images):
    h = ModelHandler(resnet).truncate("layer1.1.add").freeze("stem")
    h.save(tmp_path / "t")
    rebuilt = ModelHandler(make_resnet()).truncate("layer1.1.add").module
    back = ModelHandler.load(tmp_path / "t", module=rebuilt)
    assert back.layer_names == h.layer_names and back.frozen_layers == ["stem"]
    np.testing.assert_array_equal(back.extract(images, "layer1.1.add", progress=False)[
        "layer1.1.add"], h.extract(images, "layer1.1.add", progress=False)["layer1.1.add"])
