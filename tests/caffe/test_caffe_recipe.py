"""read_recipe: solver.prototxt + train_val.prototxt -> a fine-tuning repurposer's settings,
and the recipe driving a fine-tuning of the real SqueezeNet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_pre_hook

import repurpose as rp
import repurpose.caffe as rc
from repurpose._exceptions import ModelFormatError

SOLVER = ('net: "train_val.prototxt"\nbase_lr: 0.001\nlr_policy: "step"\ngamma: 0.1\n'
          'stepsize: 2\nmax_iter: 5\nmomentum: 0.9\nweight_decay: 0.0002\n'
          'clip_gradients: 10\nsnapshot_prefix: "flowers"\n')


def _layer(name: str, kind: str, bottom: str, mults: str = "", extra: str = "") -> str:
    return (f'layer {{ name: "{name}" type: "{kind}" bottom: "{bottom}" top: "{name}" '
            f"{mults} {extra} }}\n")


def _train_val(head: str = "conv_final_flowers", batch: int = 4) -> str:
    """A SqueezeNet fine-tuning train_val: conv1 and fire2 frozen, a new conv_final at 10x."""
    frozen = "param { lr_mult: 0 decay_mult: 0 } param { lr_mult: 0 decay_mult: 0 }"
    return (
        'layer { name: "data" type: "ImageData" top: "data" top: "label" '
        f'include {{ phase: TRAIN }} image_data_param {{ source: "train.txt" '
        f"batch_size: {batch} }} }}\n"
        'layer { name: "data" type: "ImageData" top: "data" top: "label" '
        'include { phase: TEST } image_data_param { source: "val.txt" batch_size: 50 } }\n'
        + _layer("conv1", "Convolution", "data", frozen, "convolution_param { num_output: 96 }")
        + _layer("fire2/conv1x1_1", "Convolution", "conv1", frozen,
                 "convolution_param { num_output: 16 }")
        + _layer("fire9/conv3x3_2", "Convolution", "conv1",
                 "param { lr_mult: 1 decay_mult: 1 } param { lr_mult: 2 decay_mult: 0 }",
                 "convolution_param { num_output: 256 }")
        + _layer(head, "Convolution", "fire9/conv3x3_2",
                 "param { lr_mult: 10 decay_mult: 1 } param { lr_mult: 20 decay_mult: 0 }",
                 "convolution_param { num_output: 3 kernel_size: 1 }")
    )


@pytest.fixture
def recipe_files(tmp_path: Path) -> tuple[Path, Path]:
    (tmp_path / "solver.prototxt").write_text(SOLVER)
    (tmp_path / "train_val.prototxt").write_text(_train_val())
    return tmp_path / "solver.prototxt", tmp_path / "train_val.prototxt"


def test_recipe_from_the_files(recipe_files) -> None:
    recipe = rc.read_recipe(*recipe_files, head="conv_final_flowers")
    assert recipe == {
        "optimizer": "caffe_sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 0.0002,
        "schedule": {"lr_policy": "step", "gamma": 0.1, "stepsize": 2}, "max_steps": 5,
        "body_lr_mult": 1.0, "layer_decay": None, "patience": None,
        "validation_fraction": 0.0, "clip_grad_norm": 10.0, "batch_size": 4,
        "lr_mults": {"conv1": [[0.0, 0.0], [0.0, 0.0]],
                     "fire2/conv1x1_1": [[0.0, 0.0], [0.0, 0.0]],
                     "fire9/conv3x3_2": [[1.0, 1.0], [2.0, 0.0]],
                     "head": [[10.0, 1.0], [20.0, 0.0]]},
    }


def test_iter_size_multiplies_the_batch(tmp_path: Path, recipe_files) -> None:
    solver = tmp_path / "accumulating.prototxt"
    solver.write_text(SOLVER + "iter_size: 3\ntype: \"Nesterov\"\n")
    recipe = rc.read_recipe(solver, recipe_files[1])
    assert (recipe["batch_size"], recipe["optimizer"]) == (12, "caffe_nesterov")
    with pytest.raises(ModelFormatError, match=r"iter_size=3 .* batch_size=<batch \* iter_size>"):
        rc.read_recipe(solver)


@pytest.mark.parametrize(("extra", "match"), [
    ("max_iter: 0\n", r"max_iter=0; it must be positive"),
    ('type: "Adam"\n', r"solver type 'Adam' is not supported .* SGD, Nesterov"),
    ('regularization_type: "L1"\n', r"regularization_type 'L1' is not supported"),
])
def test_recipe_refuses_what_it_cannot_follow(tmp_path: Path, extra, match) -> None:
    solver = tmp_path / "solver.prototxt"
    solver.write_text(SOLVER.replace("max_iter: 5\n", "") + extra
                      + ("max_iter: 5\n" if "max_iter" not in extra else ""))
    with pytest.raises(ModelFormatError, match=match):
        rc.read_recipe(solver)


def test_head_must_be_a_train_val_layer(recipe_files) -> None:
    with pytest.raises(ModelFormatError, match=r"head='fc8' is not a layer .* conv_final_flowers"):
        rc.read_recipe(*recipe_files, head="fc8")


@pytest.mark.realdata
def test_recipe_fine_tunes_squeezenet(realdata: Path, recipe_files, tmp_path: Path) -> None:
    net = realdata / "squeezenet_v1.0"
    handler = rp.ModelHandler.from_caffe(net / "deploy.prototxt",
                                         net / "squeezenet_v1.0_dc.caffemodel",
                                         mean=(104.0, 117.0, 123.0))
    images = tmp_path / "flowers"
    for name in ("daisy", "iris", "pansy"):
        (images / name).mkdir(parents=True)
        for image in sorted((realdata / "flowers12" / "train" / name).iterdir())[:4]:
            (images / name / image.name).symlink_to(image)
    steps: list[dict[str, float]] = []
    hook = register_optimizer_step_pre_hook(
        lambda opt, *_: steps.append({g["name"]: g["lr"] for g in opt.param_groups}))
    try:
        rep = rp.FineTuneRepurposer(handler, **rc.read_recipe(*recipe_files,
                                                              head="conv_final_flowers"),
                                    progress=False, random_state=0).fit(str(images))
    finally:
        hook.remove()
    solver = rc.read_solver(recipe_files[0])
    assert len(steps) == 5
    for t, rates in enumerate(steps):
        assert rates["fire9/conv3x3_2/bias"] == pytest.approx(solver.learning_rate(t) * 2)
        assert rates["head/layers.0.weight"] == pytest.approx(solver.learning_rate(t) * 10)
        assert rates["fire8/conv1x1_2"] == pytest.approx(solver.learning_rate(t))  # unlisted
        assert not any(name.startswith(("conv1", "fire2/conv1x1_1")) for name in rates)
    body, source = rep.model_.body, handler.module
    for name in ("conv1", "fire2/conv1x1_1"):
        assert torch.equal(body.layer(name).weight, source.layer(name).weight), name
    assert not torch.equal(body.layer("fire9/conv3x3_2").weight,
                           source.layer("fire9/conv3x3_2").weight)
    assert np.isfinite(rep.history_["loss"]).all()
