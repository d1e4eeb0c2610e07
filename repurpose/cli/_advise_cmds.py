"""``repurpose advise``: rank a model's layers for a dataset and cross-validate recipes."""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import click

from repurpose.cli._app import CliError, cli

__all__ = ["advise"]


@cli.command()
@click.argument("model")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--weights", help="Weights file of a Caffe/MXNet model.")
@click.option("--entry-point", help="module:function that builds the saved plain module.")
@click.option("--mean", help="Caffe: per-channel means in the model's order, e.g. 104,117,123.")
@click.option("--resize", help="Caffe: resize before the centre crop, e.g. 256 or 256,256.")
@click.option("-r", "--recipes", help="Comma-separated subset of lr,svm,gp,gated,finetune.")
@click.option("--cv", default=5, show_default=True, help="Cross-validation folds.")
@click.option("--time-budget", type=float, help="Seconds for the recipe search.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also save the leaderboard plot (PNG; needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def advise(model: str, data: str, weights: str | None, entry_point: str | None,
           mean: str | None, resize: str | None, recipes: str | None, cv: int,
           time_budget: float | None, seed: int, plot_path: str | None, as_json: bool,
           no_progress: bool) -> None:
    """Which layer and method to use for DATA (an image folder, one subfolder per class).

    Ranks MODEL's layers by transferability (LogME), cross-validates the recipes on the
    best layers, and explains the choice.

    \b
    Example:
      repurpose advise deploy.prototxt flowers/train --weights net.caffemodel \\
          --mean 104,117,123 --resize 256
    """
    import repurpose as rp

    handler = _load_handler(model, weights, entry_point, mean, resize)
    auto = rp.AutoRepurposer(handler, time_budget=time_budget, cv=cv, random_state=seed,
                             recipes=_split(recipes), progress=not no_progress)
    auto.fit(handler.image_folder(data))
    if plot_path:
        rp.plot.leaderboard(auto).savefig(plot_path, dpi=120)
    if as_json:
        click.echo(json.dumps({
            "ranking": [asdict(r) for r in auto.ranking_],
            "leaderboard": [asdict(r) for r in auto.leaderboard_],
            "explanation": auto.explain(),
        }, indent=2))
        return
    click.echo(str(auto.ranking_))
    click.echo("")
    click.echo(auto.leaderboard_table())
    click.echo("")
    click.echo(auto.explain())


def _load_handler(model: str, weights: str | None, entry_point: str | None,
                  mean: str | None, resize: str | None) -> Any:
    from repurpose.cli._handler_cmds import load_model_spec
    from repurpose.model_handler import ModelHandler

    if mean is None and resize is None:
        return load_model_spec(model, weights, entry_point)
    if not model.endswith(".prototxt"):
        raise CliError("--mean and --resize apply to Caffe models (.prototxt)")
    sizes = _numbers(resize, "--resize", int)
    return ModelHandler.from_caffe(
        model, weights, mean=_numbers(mean, "--mean", float),
        resize=None if sizes is None else (sizes[0] if len(sizes) == 1 else tuple(sizes[:2])))


def _numbers(text: str | None, option: str, kind: type) -> list[Any] | None:
    if text is None:
        return None
    try:
        return [kind(v) for v in text.split(",") if v.strip()]
    except ValueError as err:
        raise CliError(f"{option} {text!r}: give comma-separated numbers") from err


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]
