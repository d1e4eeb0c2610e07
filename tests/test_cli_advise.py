"""``repurpose advise``: tables, JSON and plot from a model and an image folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from torch import nn

from repurpose import ModelHandler, Preprocess
from repurpose.cli import cli


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    for c, colour in enumerate(([200, 30, 30], [30, 200, 30], [30, 30, 200])):
        (tmp_path / "photos" / f"class{c}").mkdir(parents=True)
        for i in range(6):
            img = np.clip(rng.normal(colour, 40, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(tmp_path / "photos" / f"class{c}" / f"{i}.png")
    return tmp_path / "photos"


@pytest.fixture
def model(tmp_path):
    """A small saved network: the CLI loads it like any model (it saves without code)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.Conv2d(6, 6, 3), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4))
    h = ModelHandler(net, input_shape=(3, 8, 8), preprocess=Preprocess(resize=10, crop=(8, 8)))
    return str(h.save(tmp_path / "model"))


def test_advise_prints_ranking_leaderboard_and_explanation(folder, model, tmp_path):
    plot = tmp_path / "board.png"
    result = CliRunner().invoke(cli, ["advise", model, str(folder), "-r", "lr,svm",
                                      "--cv", "2", "--no-progress", "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "logme" in result.output and "recipe" in result.output
    assert "Scenario (cs231n): small and" in result.output
    assert "Winner: " in result.output
    assert plot.stat().st_size > 1000


def test_advise_json_lists_every_recipe(folder, model):
    result = CliRunner().invoke(cli, ["advise", model, str(folder), "-r", "lr", "--cv", "2",
                                      "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert {r["recipe"] for r in doc["leaderboard"]} == {"lr"}
    assert len(doc["ranking"]) >= 2 and "Winner" in doc["explanation"]


def test_advise_reports_bad_options_in_one_line(folder, model):
    result = CliRunner().invoke(cli, ["advise", model, str(folder), "-r", "knn"])
    assert result.exit_code == 2
    assert "error: recipes=['knn']; choose from lr" in result.output


def test_advise_takes_the_shared_preprocessing_options(folder, model):
    # the images are 12x12: without a crop to 8x8 the saved net's input shape is not met
    result = CliRunner().invoke(cli, ["advise", model, str(folder), "-r", "lr", "--cv", "2",
                                      "--resize", "12,12", "--crop", "8,8", "--json",
                                      "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["leaderboard"]
