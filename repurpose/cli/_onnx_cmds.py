"""CLI commands of the onnx part of the library: ``convert onnx``, ``verify onnx``, ``export``."""

from __future__ import annotations

from pathlib import Path

import click

from repurpose.cli._app import CliError, cli, convert, verify
from repurpose.cli._mxnet_cmds import _shape

__all__ = ["convert_onnx", "verify_onnx", "export"]


_SHAPE_HELP = "One input's shape without batch axis, e.g. 3,224,224."
_NHWC_HELP = "Keep an NHWC input (default: drop the NHWC->NCHW transpose of Keras exports)."


@convert.command("onnx")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory to write (graph.json + weights.safetensors + handler.json).")
@click.option("--input-shape", default=None, help=_SHAPE_HELP)
@click.option("--keep-nhwc", is_flag=True, help=_NHWC_HELP)
def convert_onnx(model: str, output: str, input_shape: str | None, keep_nhwc: bool) -> None:
    """Convert an ONNX MODEL into a saved model that needs no onnx package to load."""
    from repurpose.model_handler import ModelHandler

    out = Path(output)
    if out.exists() and any(out.iterdir()):
        raise CliError(f"output directory {output!r} is not empty; choose a new one")
    handler = ModelHandler.from_onnx(model, input_shape=_shape(input_shape),
                                     nchw_input=not keep_nhwc)
    handler.save(out)
    click.echo(f"wrote {out} ({len(handler.layer_names)} layers; "
               f"input shape {handler.input_shape})")


@verify.command("onnx")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--input-shape", default=None, help=_SHAPE_HELP)
@click.option("--keep-nhwc", is_flag=True, help=_NHWC_HELP)
@click.option("--rtol", default=1e-4, show_default=True)
@click.option("--atol", default=1e-5, show_default=True)
def verify_onnx(model: str, input_shape: str | None, keep_nhwc: bool, rtol: float,
                atol: float) -> None:
    """Print per-layer max differences between the imported MODEL and onnxruntime.

    Exits with code 1 when a layer is outside tolerance.
    """
    from repurpose.onnx import verify as run_verify

    report = run_verify(model, input_shape=_shape(input_shape), nchw_input=not keep_nhwc,
                        rtol=rtol, atol=atol)
    click.echo(report.format())
    if not report.ok:
        raise SystemExit(1)


@cli.command("export")
@click.argument("source", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="The .onnx file to write.")
@click.option("--layers", default=None,
              help="Comma-separated layers to export up to (they become the outputs).")
@click.option("--input-shape", default=None, help=_SHAPE_HELP)
@click.option("--opset", default=17, show_default=True)
def export(source: str, output: str, layers: str | None, input_shape: str | None,
           opset: int) -> None:
    """Export SOURCE to ONNX: a saved repurposer (input -> class probabilities), or a
    model (a saved handler, .prototxt, *-symbol.json, .onnx), whole or up to --layers."""
    from repurpose.cli._handler_cmds import load_model_spec

    path = Path(source)
    shape = _shape(input_shape)
    if (path / "config.json").is_file() or path.suffix == ".zip":
        if layers is not None:
            raise CliError("--layers is for models; a repurposer exports end to end")
        from repurpose.repurposers import load

        written = load(path).export_onnx(output, input_shape=shape, opset=opset)
    else:
        names = None if layers is None else [n.strip() for n in layers.split(",") if n.strip()]
        written = load_model_spec(path).export_onnx(output, names, shape, opset)
    click.echo(f"wrote {written}")
