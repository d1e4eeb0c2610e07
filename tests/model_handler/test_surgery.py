import numpy as np
import pytest
import torch
from mh_models import same_state, state_copy
from torch import nn

from repurpose import LayerNotFoundError, ModelHandler, SurgeryError
from repurpose.graph import GraphNet


def _out(h, x):
    with torch.no_grad():
        return h.module.eval()(torch.as_tensor(x))


def test_chain_surgery(chain, images):
    before = state_copy(chain)
    h = ModelHandler(chain)
    t = h.truncate("4")
    assert type(t.module) is nn.Sequential and t.layer_names == ["0", "1", "2", "3", "4"]
    ref = h.extract(images, ["4"], pooling=None, progress=False)["4"]
    np.testing.assert_allclose(_out(t, images).numpy(), ref, atol=1e-6)
    assert h.drop_layers_top(3).layer_names == t.layer_names
    b = h.drop_layers_bottom(3)
    assert b.layer_names == ["3", "4", "5", "6", "7"] and b.input_shape is None
    mid = h.extract(images, ["2"], pooling=None, progress=False)["2"]
    np.testing.assert_allclose(_out(b, mid).numpy(), _out(h, images).numpy(), atol=1e-5)
    a = h.add_layers_top([nn.ReLU(), nn.Linear(3, 2)])
    assert a.layer_names[-3:] == ["7", "top0", "top1"] and _out(a, images).shape == (10, 2)
    c = h.add_layers_bottom({"pre": nn.Identity()})
    assert c.layer_names[:2] == ["pre", "0"]
    assert same_state(chain, before) and len(chain) == 8  # never mutated


def test_residual_truncate_and_drops(resnet, images):
    before = state_copy(resnet)
    h = ModelHandler(resnet)
    t = h.truncate("layer1.0.add")
    assert t.layer_names == h.layer_names[: h.layer_names.index("layer1.0.add") + 1]
    ref = h.extract(images, ["layer1.0.add"], pooling=None, progress=False)["layer1.0.add"]
    np.testing.assert_allclose(_out(t, images).numpy(), ref, atol=1e-5)
    # names survive surgery, so a second cut and extraction by name work
    assert t.truncate("layer1.0.conv2").layer_names[-1] == "layer1.0.conv2"
    assert t.extract(images, ["layer1.0.add"], progress=False)["layer1.0.add"].shape == (10, 4)
    top = h.drop_layers_top(1)
    assert top.layer_names[-1] == "flatten" and _out(top, images).shape == (10, 4)
    bottom = h.drop_layers_bottom(1)
    assert bottom.layer_names[0] == "layer1.0.conv1"
    stem = h.extract(images, ["stem"], pooling=None, progress=False)["stem"]
    np.testing.assert_allclose(_out(bottom, stem).numpy(), _out(h, images).numpy(), atol=1e-5)
    added = h.add_layers_top(nn.Softmax(dim=1))
    assert added.layer_names[-1] == "top0"
    np.testing.assert_allclose(_out(added, images).sum(1).numpy(), 1.0, atol=1e-5)
    assert same_state(resnet, before)


def test_dangling_branch_cut_is_refused(inception, images):
    h = ModelHandler(inception)
    assert h.layer_names == ["stem", "b1", "b2", "cat", "head"]
    with pytest.raises(SurgeryError, match="cannot cut at 'b2': layers b1 run before it but do "
                       "not feed it"):
        h.truncate("b2")
    assert h.truncate("b1").layer_names == ["stem", "b1"]
    assert h.truncate("cat").layer_names == ["stem", "b1", "b2", "cat"]
    with pytest.raises(SurgeryError, match="'b2' also reads 'stem', which would be dropped"):
        h.drop_layers_bottom(2)


def test_graphnet_surgery_stays_graphnet(graph, images):
    h = ModelHandler(graph)
    t = h.truncate("sum")
    assert isinstance(t.module, GraphNet) and t.layer_names == ["conv1", "relu1", "bn1", "sum"]
    ref = h.extract(images, ["sum"], pooling=None, progress=False)["sum"]
    np.testing.assert_allclose(_out(t, images).numpy(), ref, atol=1e-6)
    assert isinstance(h.drop_layers_top(2).module, GraphNet)
    b = h.drop_layers_bottom(1)
    assert isinstance(b.module, GraphNet) and b.layer_names == ["relu1", "bn1", "sum", "fc"]
    with pytest.raises(SurgeryError, match="layer 'sum' reads \\['c1'\\]"):
        h.drop_layers_bottom(2)


def test_graphnet_dangling_cut():
    from repurpose.graph import Node

    conv = {"in_channels": 3, "out_channels": 2, "kernel_size": 1}
    net = GraphNet([
        Node("b1", "conv2d", ("data",), ("x1",), conv),
        Node("b2", "conv2d", ("data",), ("x2",), conv),
        Node("cat", "concat", ("x1", "x2"), ("y",), {"dim": 1}),
    ], ["data"], ["y"])
    with pytest.raises(SurgeryError, match="layers b1 run before it"):
        ModelHandler(net).truncate("b2")


def test_surgery_argument_errors(chain):
    h = ModelHandler(chain)
    with pytest.raises(LayerNotFoundError, match="'fc7' not found"):
        h.truncate("fc7")
    with pytest.raises(SurgeryError, match="cannot drop 8 of the 8 layers"):
        h.drop_layers_top(8)
    with pytest.raises(ValueError, match="n=0; give a positive number"):
        h.drop_layers_bottom(0)
    with pytest.raises(SurgeryError, match="a layer named '0' already exists"):
        h.add_layers_top({"0": nn.ReLU()})
    with pytest.raises(SurgeryError, match="can only add torch.nn.Module"):
        h.add_layers_top(["relu"])  # type: ignore[list-item]


def test_untraceable_model_surgery_errors():
    class Dynamic(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 3)
            self.b = nn.Linear(3, 2)

        def forward(self, x):
            return self.b(self.a(-x if x.sum() > 0 else x))

    h = ModelHandler(Dynamic())
    with pytest.raises(SurgeryError, match="truncate needs a model torch.fx can trace"):
        h.truncate("a")
    added = h.add_layers_top(nn.ReLU())
    assert added.layer_names == ["base.a", "base.b", "top0"]


def test_graphnet_add_layers_stay_graphnet_and_keep_modes(tmp_path, graph, images):
    h = ModelHandler(graph)
    x = torch.from_numpy(images)
    a = h.add_layers_top([nn.ReLU(), nn.Linear(3, 2), nn.Softmax(dim=1)])
    assert isinstance(a.module, GraphNet) and a.layer_names[-3:] == ["top0", "top1", "top2"]
    assert not a.module.training and not a.module.bn1.training
    with torch.no_grad():
        ref = torch.softmax(a.module.top1(torch.relu(graph(x))), 1)
        torch.testing.assert_close(a.module(x), ref)
    a.save(tmp_path / "a")  # saveable without user code
    assert ModelHandler.load(tmp_path / "a").layer_names == a.layer_names
    b = h.add_layers_bottom({"pre": nn.Conv2d(3, 3, 1)})
    assert isinstance(b.module, GraphNet) and b.layer_names[0] == "pre"
    with torch.no_grad():
        torch.testing.assert_close(b.module(x), graph(b.module.pre(x)))
    other = h.add_layers_top(nn.GRU(3, 2))  # no graph op: falls back to a wrapper
    assert other.layer_names[-1] == "top0" and other.layer_names[0] == "base.conv1"
    assert not h.truncate("bn1").module.bn1.training


def test_graphnet_surgery_keeps_the_users_edits_to_modules(graph, images):
    """Surgery builds the new net from the layer specs; what the specs do not hold (an
    edited eps, a set attribute, requires_grad set by hand) comes from the user's modules."""
    graph.bn1.eps = 0.5
    graph.conv1.note = "mine"
    graph.conv1.weight.requires_grad_(False)
    h = ModelHandler(graph)
    x = torch.from_numpy(images)
    edited = [h.truncate("sum"), h.drop_layers_bottom(1), h.add_layers_top(nn.ReLU())]
    for new in edited:
        assert new.module.bn1.eps == 0.5 and new.module.bn1 is not graph.bn1
    for new in (edited[0], edited[2]):
        assert new.module.conv1.note == "mine" and not new.module.conv1.weight.requires_grad
    ref = h.extract(images, ["sum"], pooling=None, progress=False)["sum"]
    np.testing.assert_allclose(_out(edited[0], images).numpy(), ref, atol=1e-6)
    with torch.no_grad():
        torch.testing.assert_close(edited[2].module(x), torch.relu(graph(x)))
    edited[0].module.bn1.eps = 1.0  # the copies are the handler's own
    assert graph.bn1.eps == 0.5


def test_early_shape_queries_are_not_branches(images):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)
            self.fc = nn.Linear(2 * 36, 2)

        def forward(self, x):
            batch = x.shape[0]
            return self.fc(self.conv(x).reshape(batch, -1))

    h = ModelHandler(Net())
    assert h.layer_names[:2] == ["getattr", "getitem"]
    assert h.truncate("conv").layer_names == ["conv"]


@pytest.mark.parametrize("make", ["chain", "resnet", "graph"])
def test_no_operation_mutates_the_given_module(make, request, tmp_path, images):
    module = request.getfixturevalue(make)
    module.train()
    before = state_copy(module)
    h = ModelHandler(module, input_shape=(3, 6, 6))
    last = h.layer_names[-2]
    h.summary()
    h.extract(images, [h.layer_names[0], last], progress=False)
    h.freeze_up_to(last).truncate(last).drop_layers_bottom(1)
    h.drop_layers_top(1).add_layers_top(nn.ReLU()).add_layers_bottom(nn.Identity())
    h.save(tmp_path / "m")
    assert same_state(module, before)
    assert all(p.requires_grad for p in module.parameters())
    assert all(m.training for m in module.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in module.modules())
