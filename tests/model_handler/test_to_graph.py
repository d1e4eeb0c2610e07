"""Plain torch modules convert to graphs on save, so saved repurposers load without code."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

import repurpose as rp
from repurpose.model_handler._to_graph import to_graph
from tests.onnx.onnx_nets import TinyInception, TinyMobileNet, TinyResNet, init_bn


def _x(n: int = 4, hw: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, hw, hw, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make", [TinyResNet, TinyMobileNet])
def test_resnet_and_mobilenet_convert_with_the_handlers_layer_names(make) -> None:
    torch.manual_seed(0)
    module = init_bn(make())
    net = to_graph(module, (3, 16, 16))
    shape_reads = {"size"}  # x.size(0) only feeds the reshape; it is no graph layer
    names = rp.ModelHandler(module).layer_names
    assert net.layer_names == [n for n in names if n not in shape_reads]
    x = _x()
    with torch.no_grad():
        np.testing.assert_array_equal(net(x).numpy(), module(x).numpy())
    assert type(net.layer("layer1.0.conv1" if make is TinyResNet else "features.0.0")) \
        is nn.Conv2d


def test_vgg_style_sequential_with_functional_ops_converts() -> None:
    class Vgg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
                                          nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1))
            self.classifier = nn.Sequential(nn.Linear(4 * 8 * 8, 8), nn.Dropout(), nn.Linear(8, 2))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.relu(self.features(x))
            x = torch.cat([x, x * x], 1)[:, :4]
            return self.classifier(x.reshape(x.shape[0], -1))

    module = Vgg().eval()
    with pytest.raises(rp.UnsupportedLayerError, match="getitem"):
        to_graph(module)  # the slice [:, :4] has no graph op


def test_untraceable_or_custom_modules_say_what_blocked(tmp_path) -> None:
    class Custom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clamp(0, 1)

    module = nn.Sequential(nn.Linear(4, 4), Custom())
    handler = rp.ModelHandler(module, input_shape=(4,))
    handler.save(tmp_path / "h")
    doc = json.loads((tmp_path / "h" / "handler.json").read_text())
    assert doc["kind"] == "module"
    with pytest.raises(ValueError, match=r"not converted to a graph: layer '1': .*Custom is not a "
                                         "standard torch.nn layer"):
        rp.ModelHandler.load(tmp_path / "h")
    loaded = rp.ModelHandler.load(tmp_path / "h", module=nn.Sequential(nn.Linear(4, 4), Custom()))
    x = torch.rand(3, 4)
    np.testing.assert_array_equal(loaded.module(x).detach(), module(x).detach())


def test_rebuilt_layers_must_print_like_the_originals() -> None:
    class Odd(nn.Conv2d):
        pass

    with pytest.raises(rp.UnsupportedLayerError, match="not a standard torch.nn layer"):
        to_graph(nn.Sequential(Odd(3, 3, 1)))


def test_repurposer_on_plain_resnet_loads_without_the_module(tmp_path) -> None:
    torch.manual_seed(0)
    module = init_bn(TinyResNet())
    handler = rp.ModelHandler(module, input_shape=(3, 16, 16)).freeze_up_to("layer1.0.add")
    x = _x(30).numpy()
    y = np.arange(30) % 3
    rep = rp.LogisticRegressionRepurposer(handler, ["layer1.0.add", "layer2.0.relu_1"],
                                          progress=False).fit(x, y)
    rep.save(tmp_path / "rep")
    loaded = rp.load(tmp_path / "rep")
    assert isinstance(loaded.handler.module, rp.graph.GraphNet)
    assert loaded.handler.layer_names == [n for n in handler.layer_names if n != "size"]
    assert loaded.handler.frozen_layers == handler.frozen_layers
    np.testing.assert_array_equal(loaded.predict_proba(x), rep.predict_proba(x))


def test_inception_style_net_converts_or_falls_back(tmp_path) -> None:
    torch.manual_seed(0)
    module = TinyInception().eval()
    handler = rp.ModelHandler(module, input_shape=(3, 32, 32))
    handler.save(tmp_path / "h")
    doc = json.loads((tmp_path / "h" / "handler.json").read_text())
    assert doc["kind"] == "module" and "interpolate" in doc["not_converted"]


def test_finetuned_repurposer_on_plain_resnet_loads_without_the_module(tmp_path) -> None:
    torch.manual_seed(0)
    handler = rp.ModelHandler(init_bn(TinyResNet()), input_shape=(3, 16, 16))
    x = _x(12).numpy()
    rep = rp.FineTuneRepurposer(handler, transfer_layer="layer2.0.relu_1", freeze=None,
                                max_epochs=1, batch_size=4, random_state=0,
                                progress=False).fit(x, np.arange(12) % 2)
    rep.save(tmp_path / "ft")
    # the body's saved weights use the module's dotted names; the graph accepts them
    loaded = rp.load(tmp_path / "ft")
    np.testing.assert_array_equal(loaded.predict_proba(x), rep.predict_proba(x))
