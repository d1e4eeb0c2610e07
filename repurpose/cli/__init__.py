"""Command-line interface: ``repurpose`` (also ``python -m repurpose``)."""

from repurpose.cli import _caffe_cmds, _handler_cmds, _mxnet_cmds, _repurposer_cmds  # noqa: F401
from repurpose.cli import _onnx_cmds  # noqa: F401
from repurpose.cli._app import CliError, cli


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="repurpose")


__all__ = ["cli", "main", "CliError"]
