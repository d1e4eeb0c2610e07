import pytest
import torch

from repurpose import ModelFormatError
from repurpose.graph import GraphNet, Node, load_graph, register_op, save_graph


def _net() -> GraphNet:
    nodes = [
        Node("conv1", "conv2d", ("data",), ("c1",), {"in_channels": 3, "out_channels": 4,
                                                     "kernel_size": 3, "padding": 1}),
        Node("relu1", "relu", ("c1",), ("r1",)),
        Node("bn1", "batch_norm", ("r1",), ("b1",), {"num_features": 4}),
        Node("sum", "add", ("b1", "c1"), ("s",), {"coeffs": [1.0, -0.5]}),
        Node("fc", "linear", ("s",), ("out",), {"in_features": 4 * 5 * 5, "out_features": 2}),
    ]
    torch.manual_seed(0)
    net = GraphNet(nodes, ["data"], ["out"], {"data": [1, 3, 5, 5]})
    net.bn1.running_mean.uniform_()
    return net.eval()


def test_forward_run_and_subgraph():
    net = _net()
    x = torch.randn(2, 3, 5, 5)
    out = net(x)
    assert out.shape == (2, 2)
    vals = net.run({"data": x}, ["r1", "out"])
    assert torch.equal(vals["out"], out)
    sub = net.subgraph(["s"]).eval()
    assert sub.layer_names == ["conv1", "relu1", "bn1", "sum"]
    torch.testing.assert_close(sub(x), net.run({"data": x}, ["s"])["s"])


def test_save_load_roundtrip(tmp_path):
    net = _net()
    save_graph(net, tmp_path / "m")
    back = load_graph(tmp_path / "m").eval()
    x = torch.randn(2, 3, 5, 5)
    assert torch.equal(back(x), net(x))
    assert back.input_shapes == {"data": [1, 3, 5, 5]}


def test_validation_errors():
    with pytest.raises(ModelFormatError, match="reads \\['nope'\\]"):
        GraphNet([Node("a", "relu", ("nope",), ("x",))], ["data"], ["x"])
    with pytest.raises(ModelFormatError, match="written twice"):
        GraphNet([Node("a", "relu", ("data",), ("x",)), Node("b", "relu", ("x",), ("x",))],
                 ["data"], ["x"])
    with pytest.raises(ValueError, match="already registered"):
        register_op("relu")(torch.nn.ReLU)


def test_load_rejects_other_documents(tmp_path):
    (tmp_path / "graph.json").write_text('{"format": "other"}')
    with pytest.raises(ModelFormatError, match="not a repurpose.graph document"):
        load_graph(tmp_path)


def test_channels_last_layout_gives_the_same_results_and_is_saved(tmp_path):
    net = _net()
    fast = GraphNet(net.nodes, net.input_names, net.output_names, net.input_shapes,
                    layout="channels_last").eval()
    fast.load_state_dict(net.state_dict())
    x = torch.randn(2, 3, 5, 5)
    torch.testing.assert_close(fast(x), net(x), rtol=1e-5, atol=1e-6)
    assert fast.run({"data": x}, ["c1"])["c1"].is_contiguous(memory_format=torch.channels_last)
    save_graph(fast, tmp_path / "m")
    back = load_graph(tmp_path / "m").eval()
    assert back.layout == "channels_last" and fast.subgraph(["s"]).layout == "channels_last"
    assert torch.equal(back(x), fast(x))


def test_unknown_layout_is_refused():
    net = _net()
    with pytest.raises(ValueError, match=r"layout='nhwc'; expected one of"):
        GraphNet(net.nodes, net.input_names, net.output_names, layout="nhwc")


def test_dotted_layer_names_accept_dotted_state_keys():
    node = Node("block.fc", "linear", ("x",), ("y",), {"in_features": 2, "out_features": 2})
    net = GraphNet([node], ["x"], ["y"])
    weight = torch.arange(4.0).reshape(2, 2)
    net.load_state_dict({"block.fc.weight": weight, "block.fc.bias": torch.ones(2)})
    assert torch.equal(net.layer("block.fc").weight, weight)
    wrapped = torch.nn.Sequential(net)
    wrapped.load_state_dict({"0.block.fc.weight": weight * 2, "0.block_fc.bias": torch.zeros(2)})
    assert torch.equal(net.layer("block.fc").weight, weight * 2)
