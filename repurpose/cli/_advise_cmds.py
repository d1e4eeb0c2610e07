"""``repurpose advise``: rank a model's layers for a dataset and cross-validate recipes."""

from __future__ import annotations

import json
from dataclasses import asdict

import click

from repurpose.cli._app import cli
from repurpose.cli._options import PreprocessOptions, preprocess_options

__all__ = ["advise"]


@cli.command()
@click.argument("model")
@click.argument("data", type=click.Path(exists=True, file_okay=False))
@click.option("--weights", help="Weights file of a Caffe/MXNet model.")
@click.option("--entry-point", help="module:function that builds the saved plain module.")
@click.option("-r", "--recipes", help="Comma-separated subset of lr,svm,gp,gated,finetune.")
@click.option("--cv", default=5, show_default=True, help="Cross-validation folds.")
@click.option("--time-budget", type=float, help="Seconds for the recipe search.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Also save the leaderboard plot (PNG; needs matplotlib).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@preprocess_options
def advise(model: str, data: str, weights: str | None, entry_point: str | None,
           recipes: str | None, cv: int, time_budget: float | None, seed: int,
           plot_path: str | None, as_json: bool, no_progress: bool,
           prep: PreprocessOptions) -> None:
    """Which layer and method to use for DATA (an image folder, one subfolder per class).

    Ranks MODEL's layers by transferability (LogME), cross-validates the recipes on the
    best layers, and explains the choice.

    \b
    Example:
      repurpose advise deploy.prototxt flowers/train --weights net.caffemodel \\
          --mean 104,117,123 --resize 256,256
    """
    from repurpose.cli._handler_cmds import load_model_spec
    from repurpose.repurposers import AutoRepurposer

    handler = load_model_spec(model, weights, entry_point, prep)
    auto = AutoRepurposer(handler, time_budget=time_budget, cv=cv, random_state=seed,
                          recipes=_split(recipes), progress=not no_progress)
    auto.fit(handler.image_folder(data, on_error=prep.on_error))
    if plot_path:
        from repurpose.plot import leaderboard

        leaderboard(auto).savefig(plot_path, dpi=120)
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


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [v.strip() for v in text.split(",") if v.strip()]
