"""The handler commands: inspect and extract, and the MODEL dispatch."""

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from repurpose import ModelHandler
from repurpose.cli import cli
from repurpose.cli._handler_cmds import load_model_spec
from repurpose.graph import GraphNet, Node

ENTRY = '''
import torch
from torch import nn

def build():
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))
'''


@pytest.fixture
def saved_plain(tmp_path, monkeypatch):
    (tmp_path / "mh_cli_entry.py").write_text(ENTRY)
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    ModelHandler(net, input_shape=(3, 8, 8)).save(tmp_path / "plain")
    return tmp_path / "plain", net


@pytest.fixture
def saved_graph(tmp_path):
    nodes = [
        Node("conv1", "conv2d", ("data",), ("c1",),
             {"in_channels": 3, "out_channels": 4, "kernel_size": 3}),
        Node("relu1", "relu", ("c1",), ("r1",)),
        Node("fc", "linear", ("r1",), ("out",), {"in_features": 4 * 6 * 6, "out_features": 2}),
    ]
    net = GraphNet(nodes, ["data"], ["out"], {"data": [1, 3, 8, 8]})
    ModelHandler(net).save(tmp_path / "graph")
    return tmp_path / "graph"


def test_inspect_graph_and_plain(saved_graph, saved_plain):
    r = CliRunner().invoke(cli, ["inspect", str(saved_graph)])
    assert r.exit_code == 0, r.output
    assert "relu1" in r.output and "1x4x6x6" in r.output and "layers" in r.output
    path, _ = saved_plain
    r = CliRunner().invoke(cli, ["inspect", str(path), "--entry-point", "mh_cli_entry:build"])
    assert r.exit_code == 0, r.output
    assert "Conv2d" in r.output and "1x4x6x6" in r.output


def test_extract_npz_and_directory(tmp_path, saved_plain):
    path, net = saved_plain
    x = np.random.default_rng(0).random((5, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "data.npz", x=x, y=np.arange(5))
    args = ["extract", str(path), str(tmp_path / "data.npz"), "--layers", "0,4",
            "--entry-point", "mh_cli_entry:build", "--no-progress", "--batch-size", "2"]
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "f.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "f.npz") as z:
        assert sorted(z.files) == ["0", "4", "labels"]
        with torch.no_grad():
            np.testing.assert_allclose(z["4"], net(torch.from_numpy(x)).numpy(), atol=1e-5)
        np.testing.assert_array_equal(z["labels"], np.arange(5))
    r = CliRunner().invoke(cli, [*args, "--out", str(tmp_path / "fdir"), "--pooling", "max"])
    assert r.exit_code == 0, r.output
    assert np.load(tmp_path / "fdir" / "0.npy").shape == (5, 4)


def test_extract_image_folder(tmp_path, saved_graph):
    for cls in ("a", "b"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        Image.new("RGB", (8, 8), (10, 20, 30)).save(tmp_path / "img" / cls / "0.png")
    r = CliRunner().invoke(cli, ["extract", str(saved_graph), str(tmp_path / "img"),
                                 "--layers", "relu1", "--out", str(tmp_path / "o.npz")])
    assert r.exit_code == 0, r.output
    with np.load(tmp_path / "o.npz") as z:
        assert z["relu1"].shape == (2, 4) and z["labels"].tolist() == ["a", "b"]


def test_errors_are_one_line_with_exit_code_2(tmp_path, saved_graph, saved_plain):
    runner = CliRunner()
    x = tmp_path / "x.npy"
    np.save(x, np.zeros((2, 3, 8, 8), np.float32))
    r = runner.invoke(cli, ["extract", str(saved_graph), str(x), "--layers", "relu2",
                            "--out", str(tmp_path / "o.npz")])
    assert r.exit_code == 2
    assert "layer 'relu2' not found; closest: relu1" in r.output
    assert "Traceback" not in r.output
    r = runner.invoke(cli, ["inspect", str(saved_plain[0])])
    assert r.exit_code == 0, r.output  # standard layers: converted to a graph on save
    r = runner.invoke(cli, ["inspect", str(saved_plain[0]), "--entry-point", "nope"])
    assert r.exit_code == 2 and "must look like 'package.module:function'" in r.output
    r = runner.invoke(cli, ["inspect", str(x)])
    assert r.exit_code == 2 and "cannot tell the format" in r.output
    assert not (tmp_path / "o.npz").exists()


def test_load_model_spec_dispatch(monkeypatch, tmp_path, saved_graph):
    calls = []
    monkeypatch.setattr(ModelHandler, "from_caffe",
                        classmethod(lambda cls, *a, **k: calls.append(("caffe", a))))
    monkeypatch.setattr(ModelHandler, "from_mxnet",
                        classmethod(lambda cls, *a, **k: calls.append(("mxnet", a))))
    load_model_spec("net.prototxt", "net.caffemodel")
    load_model_spec("dir/resnet-symbol.json", "dir/resnet-0000.params")
    assert [c[0] for c in calls] == ["caffe", "mxnet"]
    assert str(calls[0][1][1]) == "net.caffemodel"
    assert load_model_spec(saved_graph).layer_names == ["conv1", "relu1", "fc"]
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model_spec(tmp_path / "missing")


def test_weights_with_a_directory_is_refused(saved_graph):
    with pytest.raises(ValueError, match="--weights is for Caffe and MXNet files"):
        load_model_spec(saved_graph, weights="w.caffemodel")
