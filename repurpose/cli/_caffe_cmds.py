"""CLI commands of the caffe part of the library: ``convert caffe`` and ``verify caffe``."""

from __future__ import annotations

import click

from repurpose.cli._app import CliError, cli, convert, verify  # noqa: F401
from repurpose.cli._options import PreprocessOptions, preprocess_options

__all__ = ["convert_caffe", "verify_caffe"]


@convert.command("caffe")
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False), required=False)
@click.option("-o", "--output", required=True, type=click.Path(file_okay=False),
              help="Directory to write the converted model to.")
@preprocess_options
def convert_caffe(prototxt: str, weights: str | None, output: str,
                  prep: PreprocessOptions) -> None:
    """Convert a Caffe model (PROTOTXT [WEIGHTS]) into a self-describing directory.

    The preprocessing options given are stored with it (used by extract, fit, predict).
    """
    from repurpose.cli._handler_cmds import load_model_spec

    handler = load_model_spec(prototxt, weights, prep=prep)
    path = handler.save(output)
    click.echo(f"wrote {path} ({len(handler.layer_names)} layers)")


@verify.command("caffe")
@click.argument("prototxt", type=click.Path(dir_okay=False))
@click.argument("weights", type=click.Path(dir_okay=False))
@click.option("--image", type=click.Path(dir_okay=False), default=None,
              help="Image to run (default: random input).")
@click.option("--mean", default=None, help="Mean file or per-channel values (with --image).")
@click.option("--rtol", default=1e-4, show_default=True,
              help="Tolerance relative to each blob's largest absolute value.")
@click.option("--atol", default=1e-5, show_default=True, help="Absolute tolerance.")
def verify_caffe(prototxt: str, weights: str, image: str | None, mean: str | None,
                 rtol: float, atol: float) -> None:
    """Compare every blob of our import of PROTOTXT WEIGHTS with OpenCV's Caffe runtime."""
    from repurpose.caffe import verify as run_verify

    mean_value = PreprocessOptions(mean=mean).mean_value()
    report = run_verify(prototxt, weights, image=image, mean=mean_value, rtol=rtol, atol=atol)
    width = max([len(r.value) for r in report] + [4])
    click.echo(f"{'blob'.ljust(width)}  {'layer':<20} {'shape':<20} {'max|diff|':>10} "
               f"{'max rel':>10}")
    failed = 0
    worst = 0.0
    for r in report:
        if r.max_abs_diff is None:
            verdict, diff, rel = "not in OpenCV", "-", "-"
        else:
            verdict = "ok" if r.ok else "MISMATCH"
            diff, rel = f"{r.max_abs_diff:.3g}", f"{r.max_rel_err:.3g}"
            failed += not r.ok
            worst = max(worst, r.max_rel_err or 0.0)
        click.echo(f"{r.value.ljust(width)}  {r.layer:<20} {str(r.shape):<20} {diff:>10} "
                   f"{rel:>10}  {verdict}")
    compared = sum(r.max_abs_diff is not None for r in report)
    click.echo(f"{compared} blobs compared, {failed} mismatched; largest error relative to "
               f"the blob's scale {worst:.3g} (ok when max|diff| <= atol + rtol * max|blob|, "
               f"rtol={rtol}, atol={atol})")
    if failed:
        raise SystemExit(1)
