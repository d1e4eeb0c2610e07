"""Container names (``"layer1"``, timm-style block names) are accepted wherever a layer is.

One matcher serves the handler and the repurposers: a container stands for its whole block;
``freeze_up_to`` and ``truncate`` reach its last layer, ``extract`` returns its output.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import repurpose as rp
from repurpose import LayerNotFoundError, ModelHandler
from repurpose.graph import GraphNet, Node
from repurpose.repurposers._freezing import match_layers

BLOCK = [f"layer1.{b}.{n}" for b in (0, 1)
         for n in ("conv1", "bn1", "relu", "conv2", "add", "relu_1")]


def _dotted_graph() -> GraphNet:
    """A GraphNet whose layer names are qualified (as an ONNX or torch export gives them)."""
    conv = {"in_channels": 3, "out_channels": 3, "kernel_size": 1}
    nodes = [Node("stem", "conv2d", ("data",), ("s",), conv),
             Node("block.conv", "conv2d", ("s",), ("c",), conv),
             Node("block.relu", "relu", ("c",), ("r",)),
             Node("head", "conv2d", ("r",), ("out",), conv)]
    torch.manual_seed(0)
    return GraphNet(nodes, ["data"], ["out"], {"data": [1, 3, 4, 4]}).eval()


def test_freeze_up_to_a_container_freezes_through_its_last_layer(resnet):
    h = ModelHandler(resnet).freeze_up_to("layer1")
    assert h.frozen_layers == ["stem", *[n for n in BLOCK if "conv" in n or "bn" in n]]
    assert h.module.fc.weight.requires_grad
    h.module.train()
    h.module(torch.zeros(2, 3, 6, 6))
    assert not h.module.layer1[1].bn1.training  # frozen BN stays in eval mode


def test_freeze_a_container_freezes_the_whole_block(resnet):
    h = ModelHandler(resnet).freeze(["layer1.1"])
    frozen = {n for n, p in h.module.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in resnet.layer1[1].named_parameters(prefix="layer1.1")}
    assert ModelHandler(resnet).freeze("layer1").unfreeze("layer1").frozen_layers == []


def test_truncate_at_a_container_ends_with_its_output(resnet, images):
    cut = ModelHandler(resnet).truncate("layer1")
    assert cut.layer_names[-1] == "layer1.1.relu_1"
    x = torch.as_tensor(images)
    with torch.no_grad():
        torch.testing.assert_close(cut.module(x), resnet.layer1(resnet.stem(x)))


@pytest.mark.parametrize("others", [[], ["stem"], ["layer1.0.add"]],
                         ids=["hooks", "hooks-two", "fx"])
def test_extract_a_container_gives_its_output(resnet, images, others):
    h = ModelHandler(resnet)
    feats = h.extract(images, ["layer1", *others], pooling=None, progress=False)
    x = torch.as_tensor(images)
    expected = resnet.layer1(resnet.stem(x)).detach().numpy()
    np.testing.assert_allclose(feats["layer1"], expected, rtol=1e-5, atol=1e-6)


def test_containers_of_a_cut_network_are_read_from_their_last_layer(resnet, images):
    cut = ModelHandler(resnet).truncate("layer1")  # an fx GraphModule: blocks are not called
    feats = cut.extract(images, ["layer1.0"], pooling=None, progress=False)
    with torch.no_grad():
        expected = resnet.layer1[0](resnet.stem(torch.as_tensor(images))).numpy()
    np.testing.assert_allclose(feats["layer1.0"], expected, rtol=1e-5, atol=1e-6)
    frozen = [n for n in BLOCK[6:] if "conv" in n or "bn" in n]
    assert cut.freeze("layer1.1").frozen_layers == frozen


def test_graph_with_qualified_names_has_containers():
    net = _dotted_graph()
    h = ModelHandler(net)
    x = np.random.default_rng(0).random((2, 3, 4, 4), dtype=np.float32)
    feats = h.extract(x, ["block"], pooling=None, progress=False)
    expected = net.run({"data": torch.as_tensor(x)}, ["r"])["r"].detach().numpy()
    # extraction runs the fused plan (BatchNorm folded): equal to float32 rounding
    np.testing.assert_allclose(feats["block"], expected, rtol=1e-5, atol=1e-6)
    assert h.freeze("block").frozen_layers == ["block.conv"]
    assert h.freeze_up_to("block").frozen_layers == ["stem", "block.conv"]
    assert h.truncate("block").layer_names == ["stem", "block.conv", "block.relu"]


def test_unknown_container_suggests_the_closest_name(resnet):
    with pytest.raises(LayerNotFoundError, match="'layer2' not found; closest: layer1"):
        ModelHandler(resnet).freeze_up_to("layer2")


def test_match_layers_expands_containers_never_substrings():
    names = ["conv1", "conv10", "layer1.0.conv1", "layer1.0.bn", "layer10.conv", "fc"]
    assert match_layers("layer1", names) == ["layer1.0.conv1", "layer1.0.bn"]
    assert match_layers(["layer1.0", "fc"], names) == ["layer1.0.conv1", "layer1.0.bn", "fc"]
    with pytest.raises(LayerNotFoundError, match="'layer2' not found"):
        match_layers("layer2", names)


def test_finetune_takes_container_names(resnet):
    rng = np.random.default_rng(0)
    X = rng.random((24, 3, 6, 6), dtype=np.float32)
    y = np.arange(24) % 2
    rep = rp.FineTuneRepurposer(ModelHandler(resnet), transfer_layer="layer1",
                                freeze="up_to:layer1.0", max_epochs=1, batch_size=8,
                                validation_fraction=0.0, progress=False, random_state=0)
    rep.fit(X, y)
    body = rep.model_.body
    assert not any(p.requires_grad for p in body.get_submodule("layer1.0").parameters())
    assert all(p.requires_grad for p in body.get_submodule("layer1.1").parameters())
    assert rep.predict_proba(X).shape == (24, 2)


def test_meta_model_features_from_a_container(resnet):
    rng = np.random.default_rng(0)
    X = rng.random((20, 3, 6, 6), dtype=np.float32)
    y = np.arange(20) % 2
    rep = rp.LogisticRegressionRepurposer(ModelHandler(resnet), ["layer1"], progress=False)
    assert rep.fit(X, y).predict_proba(X).shape == (20, 2)
    assert rep.n_features_in_ == 4  # layer1's 4 channels, average-pooled


def test_random_freeze_takes_container_names(resnet):
    rng = np.random.default_rng(0)
    X = rng.random((16, 3, 6, 6), dtype=np.float32)
    y = np.arange(16) % 2
    rep = rp.RandomFreezeRepurposer(ModelHandler(resnet), num_layers_to_drop=1,
                                    random_layers="layer1.1", fixed_layers="layer1.0",
                                    max_epochs=1, batch_size=8, validation_fraction=0.0,
                                    progress=False, random_state=0).fit(X, y)
    body = rep.model_.body
    assert not any(p.requires_grad for p in body.get_submodule("layer1.0").parameters())
    new = body.get_submodule("layer1.1.conv1").weight.detach()
    assert not torch.allclose(new, resnet.layer1[1].conv1.weight)  # re-initialised
    with pytest.raises(LayerNotFoundError, match="fixed_layers entry 'layer2' not found"):
        rp.RandomFreezeRepurposer(ModelHandler(resnet), fixed_layers="layer2",
                                  progress=False).fit(X, y)
