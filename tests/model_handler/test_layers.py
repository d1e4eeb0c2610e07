import numpy as np
import pytest
import torch
from torch import nn

from repurpose import LayerNotFoundError, ModelHandler


def test_chain_names_and_types(chain):
    h = ModelHandler(chain)
    assert h.layer_names == [str(i) for i in range(8)]
    assert h.layer_types["0"] == "Conv2d"
    assert h.layer_types["7"] == "Linear"


def test_residual_names_follow_torchvision_convention(resnet):
    names = ModelHandler(resnet).layer_names
    assert names[:7] == [
        "stem", "layer1.0.conv1", "layer1.0.bn1", "layer1.0.relu", "layer1.0.conv2",
        "layer1.0.add", "layer1.0.relu_1",
    ]
    assert "layer1.1.add" in names
    assert names[-3:] == ["adaptive_avg_pool2d", "flatten", "fc"]
    types = ModelHandler(resnet).layer_types
    assert types["layer1.0.add"] == "operator.add"
    assert types["flatten"] == "torch.flatten"


def test_graphnet_uses_node_names(graph):
    h = ModelHandler(graph)
    assert h.layer_names == ["conv1", "relu1", "bn1", "sum", "fc"]
    assert h.input_shape == (3, 6, 6)
    assert h.layer_types["bn1"] == "AnyBatchNorm"


def test_untraceable_model_lists_leaf_modules():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 2)

        def forward(self, x):
            if x.sum() > 0:  # data-dependent control flow: fx cannot trace this
                x = -x
            return self.b(self.a(x))

    h = ModelHandler(Dynamic())
    assert h.layer_names == ["a", "b"]
    assert h.extract(torch.ones(4, 3), ["a"], progress=False)["a"].shape == (4, 3)


def test_summary_rows_and_table(resnet):
    s = ModelHandler(resnet, input_shape=(3, 6, 6)).summary()
    rows = {r.name: r for r in s}
    assert rows["stem"].output_shape == (1, 4, 6, 6)
    assert rows["stem"].params == 3 * 4 * 9 + 4
    assert rows["flatten"].output_shape == (1, 4)
    assert rows["layer1.0.add"].params == 0
    text = str(s)
    assert "layer1.0.add" in text and "operator.add" in text
    assert s.total_params == sum(p.numel() for p in resnet.parameters())


def test_summary_without_input_shape_has_unknown_shapes(chain):
    s = ModelHandler(chain).summary()
    assert all(r.output_shape is None for r in s)
    assert "?" in str(s)


def test_summary_bad_input_shape(chain):
    with pytest.raises(ValueError, match="forward pass on input_shape=\\(5, 6, 6\\) failed"):
        ModelHandler(chain, input_shape=(5, 6, 6)).summary()


def test_unknown_layer_lists_closest_matches(resnet, images):
    h = ModelHandler(resnet)
    with pytest.raises(LayerNotFoundError, match="'layer1.0.conv3' not found; closest: "
                       "layer1.0.conv2, layer1.0.conv1.*See ModelHandler.layer_names"):
        h.extract(images, ["layer1.0.conv3"], progress=False)
    with pytest.raises(LayerNotFoundError, match="pattern 'nope.*' matches no layer"):
        h.freeze("nope.*")


def test_names_are_exact_not_substrings(resnet):
    h = ModelHandler(resnet)
    with pytest.raises(LayerNotFoundError, match="'conv1' not found"):
        h.freeze("conv1")
    assert h.freeze("layer1.0.*").frozen_layers == [
        "layer1.0.conv1", "layer1.0.bn1", "layer1.0.conv2"]


def test_constructor_validation(chain):
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        ModelHandler("model.pt")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="preprocess must be a Preprocess"):
        ModelHandler(chain, preprocess={"mean": 1})  # type: ignore[arg-type]
    h = ModelHandler(chain, device="cpu")
    assert h.module is chain  # already on the device: no copy
    assert "Sequential" in repr(h)


def test_module_called_twice_gets_a_suffix(images):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 1)
            self.relu = nn.ReLU()

        def forward(self, x):
            return self.relu(self.conv(self.relu(x)) - 1.0)

    net = nn.Sequential(Block())
    h = ModelHandler(net)
    assert h.layer_names == ["0.relu", "0.conv", "0.sub", "0.relu_1"]
    f = h.extract(images, ["0.relu", "0.relu_1"], pooling=None, progress=False)
    with torch.no_grad():
        np.testing.assert_allclose(f["0.relu_1"], net(torch.from_numpy(images)).numpy())
    np.testing.assert_allclose(f["0.relu"], np.maximum(images, 0))
    assert h.truncate("0.relu_1").layer_names == h.layer_names
