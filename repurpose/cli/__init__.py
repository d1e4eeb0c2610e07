"""Command-line interface: ``repurpose`` (also ``python -m repurpose``)."""

from repurpose.cli import (  # noqa: F401
    _caffe_cmds,
    _handler_cmds,
    _mxnet_cmds,
    _onnx_cmds,
    _repurposer_cmds,
)
from repurpose.cli._app import CliError, cli


def main() -> None:
    """Entry point of the console script."""
    cli(prog_name="repurpose")


__all__ = ["cli", "main", "CliError"]
