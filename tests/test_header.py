"""One reader for the versioned JSON header of every saved format (graph, handler, repurposer).

The same fault in any of the three documents gives the same ModelFormatError wording.
"""

from __future__ import annotations

import json

import pytest

import repurpose as rp
from repurpose.graph import load_graph, save_graph
from repurpose.testing import tiny_problem


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """``{format name: (directory, json file, loader)}`` for the three saved formats."""
    root = tmp_path_factory.mktemp("formats")
    problem = tiny_problem()
    rep = rp.LogisticRegressionRepurposer(problem.handler, ["fc7"], progress=False)
    rep.fit(problem.X_train, problem.y_train)
    save_graph(problem.handler.module, root / "graph")
    problem.handler.save(root / "handler")
    rep.save(root / "rep", include_handler=False)
    return {
        "repurpose.graph": (root / "graph", "graph.json", load_graph),
        "repurpose.handler": (root / "handler", "handler.json", rp.ModelHandler.load),
        "repurpose.repurposer": (root / "rep", "config.json",
                                 lambda p: rp.load(p, handler=problem.handler)),
    }


FAULTS = [
    ({"format": "other"}, "{file} is not a {name} document \\(format='other'\\)"),
    ({"format_version": 99}, "{file} has format version 99, newer than this library .* "
                             "reads \\(1\\); upgrade repurpose"),
    ({"format_version": "1"}, "{file} has format_version='1'; expected a whole number"),
]


@pytest.mark.parametrize("name", ["repurpose.graph", "repurpose.handler", "repurpose.repurposer"])
@pytest.mark.parametrize(("change", "message"), FAULTS, ids=["format", "newer", "not-int"])
def test_same_fault_same_error_in_every_format(saved, tmp_path, name, change, message):
    directory, file_name, load = saved[name]
    doc = json.loads((directory / file_name).read_text())
    assert doc["format"] == name and doc["format_version"] == 1
    copy = tmp_path / "copy"
    copy.mkdir()
    for item in directory.iterdir():
        (copy / item.name).write_bytes(item.read_bytes())
    (copy / file_name).write_text(json.dumps({**doc, **change}))
    pattern = message.format(file=str(copy / file_name).replace(".", "\\."),
                             name=name.replace(".", "\\."))
    with pytest.raises(rp.ModelFormatError, match=pattern):
        load(copy)
    (copy / file_name).write_text("{not json")
    with pytest.raises(rp.ModelFormatError, match=f"{file_name} is not valid JSON"):
        load(copy)
    (copy / file_name).unlink()
    with pytest.raises(rp.ModelFormatError, match=f"has no {file_name}; "):
        load(copy)


def test_graph_node_attributes_that_do_not_fit_the_op_are_a_format_error(saved, tmp_path):
    directory, _, _ = saved["repurpose.graph"]
    doc = json.loads((directory / "graph.json").read_text())
    node = next(n for n in doc["nodes"] if n["op"] == "conv2d")
    node["attrs"]["no_such_argument"] = 3
    (tmp_path / "graph.json").write_text(json.dumps(doc))
    with pytest.raises(rp.ModelFormatError,
                       match=f"layer '{node['name']}': cannot build graph op 'conv2d' from "
                             "attrs .*no_such_argument"):
        load_graph(tmp_path)
    node["attrs"].pop("no_such_argument")
    node["attrs"]["out_channels"] = -4
    (tmp_path / "graph.json").write_text(json.dumps(doc))
    with pytest.raises(rp.ModelFormatError, match=f"layer '{node['name']}'"):
        load_graph(tmp_path)
