"""Layer and source ranking: probe selection, one forward pass, table output."""

from __future__ import annotations

import numpy as np
import pytest
from torch import nn

import repurpose as rp
from repurpose import transferability as tr
from repurpose.testing import tiny_problem


@pytest.fixture(scope="module")
def problem():
    return tiny_problem(n_classes=3, n_per_class=12)


def test_rank_layers_scores_each_probe_from_one_forward_pass(problem, monkeypatch):
    calls = []
    original = rp.ModelHandler.extract

    def counting(self, *args, **kwargs):
        calls.append(args[1])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(rp.ModelHandler, "extract", counting)
    ranking = problem.handler.rank_layers(problem.X_train, problem.y_train, progress=False)
    assert len(calls) == 1
    assert sorted(r.layer for r in ranking) == ["conv1", "conv2", "fc6", "fc7", "fc8"]
    scores = [r.score for r in ranking]
    assert scores == sorted(scores, reverse=True)
    feats = problem.handler.extract(problem.X_train, [ranking.best], progress=False)
    assert ranking[0].score == pytest.approx(tr.logme(feats[ranking.best], problem.y_train))
    assert ranking[0].dims == feats[ranking.best].shape[1]
    text = str(ranking)
    assert "logme" in text and ranking.best in text


def test_probe_layers_of_a_branching_net_are_merges_pools_and_head():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(8, 8, 1)
            self.b = nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return self.a(x) + self.b(x)

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), Block(), nn.MaxPool2d(2), Block(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    handler = rp.ModelHandler(net)
    probes = tr.probe_layers(handler)
    assert probes == ["2.add", "3", "4.add", "5", "7"]
    widths = {"2.add": 8, "3": 8, "4.add": 8, "5": 8, "7": 5}
    # the pools repeat their input's channels: pruned
    assert tr.prune_probes(widths, handler.layer_types) == ["2.add", "4.add", "7"]
    assert tr.prune_probes(widths, handler.layer_types, max_dim=6) == ["7"]


def test_rank_layers_refuses_source_output_methods(problem):
    with pytest.raises(ValueError, match="scores the source network's class outputs"):
        problem.handler.rank_layers(problem.X_train, problem.y_train, method="leep",
                                    progress=False)


def test_rank_layers_needs_labels(problem):
    with pytest.raises(ValueError, match="no labels"):
        problem.handler.rank_layers(problem.X_train, progress=False)


def test_rank_sources_prefers_the_network_that_knows_the_task():
    p = tiny_problem(n_classes=3, n_per_class=12)
    # a "source" whose single layer is the label itself versus one that outputs noise
    rng = np.random.default_rng(0)
    X = np.eye(3, dtype=np.float32)[p.y_train] + rng.normal(0, 0.1, (36, 3)).astype(np.float32)
    informed = rp.ModelHandler(nn.Sequential(nn.Linear(3, 3)))
    nn.init.eye_(informed.module[0].weight)
    blind = rp.ModelHandler(nn.Sequential(nn.Linear(3, 3)))
    nn.init.zeros_(blind.module[0].weight)
    for method in ("logme", "hscore", "leep", "nce"):
        ranking = rp.rank_sources({"blind": blind, "informed": informed}, X, p.y_train,
                                  method=method, progress=False)
        assert ranking.best.startswith("informed:"), method
        assert ranking.method == method


def test_rank_sources_names_a_sequence_and_refuses_nothing():
    p = tiny_problem()
    ranking = rp.rank_sources([p.handler], p.X_train, p.y_train, progress=False)
    assert ranking.best.startswith("source0:")
    with pytest.raises(ValueError, match="handlers is empty"):
        rp.rank_sources([], p.X_train, p.y_train)


def test_rank_layers_reads_an_image_folder_with_its_labels(tmp_path):
    from PIL import Image

    from repurpose import Preprocess

    rng = np.random.default_rng(0)
    for c, colour in enumerate(([220, 20, 20], [20, 20, 220])):
        (tmp_path / f"c{c}").mkdir()
        for i in range(5):
            img = np.clip(rng.normal(colour, 30, (10, 10, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / f"c{c}" / f"{i}.png")
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    handler = rp.ModelHandler(net, preprocess=Preprocess(resize=8, crop=(8, 8)))
    ranking = handler.rank_layers(str(tmp_path), progress=False)
    assert sorted(r.layer for r in ranking) == ["0", "2"]
