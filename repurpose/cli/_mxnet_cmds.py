"""CLI commands of the mxnet part of the library: ``convert mxnet`` and ``verify mxnet``."""

from __future__ import annotations

from pathlib import Path

import click

from repurpose.cli._app import CliError, cli, convert, verify  # noqa: F401
from repurpose.cli._options import PreprocessOptions, parse_ints, preprocess_options

__all__ = ["convert_mxnet", "verify_mxnet"]


def _shape(text: str | None) -> tuple[int, ...] | None:
    return parse_ints(text, "--input-shape", "3,224,224")


@convert.command("mxnet")
@click.argument("symbol", type=click.Path(exists=True, dir_okay=False))
@click.argument("params", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory to write (graph.json + weights.safetensors + handler.json).")
@preprocess_options
def convert_mxnet(symbol: str, params: str, output: str, prep: PreprocessOptions) -> None:
    """Convert an MXNet SYMBOL (.json) and PARAMS (.params) into a saved model.

    The result loads with ModelHandler.load(OUTPUT) and needs neither mxnet nor the
    original files. The preprocessing options given are stored with it.
    """
    from repurpose.mxnet import handler_from_mxnet

    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise CliError(f"output directory {output!r} is not empty; choose a new one")
    handler = prep.apply(handler_from_mxnet(symbol, params, input_shape=prep.shape()))
    handler.save(out)
    click.echo(f"wrote {out} ({len(handler.layer_names)} layers; "
               f"input shape {handler.input_shape})")


@verify.command("mxnet")
@click.argument("symbol", type=click.Path(exists=True, dir_okay=False))
@click.argument("params", type=click.Path(exists=True, dir_okay=False))
@click.option("--mxnet-python", default=None, type=click.Path(dir_okay=False),
              help="Python of an environment with mxnet 1.x (e.g. .venv-mxnet/bin/python).")
@click.option("--reference", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Compare with recorded outputs (.npz of {value: array}) instead.")
@click.option("--input-shape", default=None,
              help="One input's shape without batch axis, for the random test batch.")
@click.option("--rtol", default=1e-4, show_default=True)
@click.option("--atol", default=1e-5, show_default=True)
def verify_mxnet(symbol: str, params: str, mxnet_python: str | None, reference: str | None,
                 input_shape: str | None, rtol: float, atol: float) -> None:
    """Print per-node max differences between the imported net and mxnet.

    Exits with code 1 when a node is outside tolerance.
    """
    from repurpose.mxnet import verify as run_verify

    report = run_verify(symbol, params, input_shape=_shape(input_shape),
                        mxnet_python=mxnet_python, reference=reference, rtol=rtol, atol=atol)
    click.echo(report.format())
    if not report.ok:
        raise SystemExit(1)
