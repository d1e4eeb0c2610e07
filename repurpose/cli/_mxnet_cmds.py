"""CLI commands of the mxnet part of the library."""

from repurpose.cli._app import cli, convert, verify  # noqa: F401
