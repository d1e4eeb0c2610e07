"""CLI commands of the caffe part of the library."""

from repurpose.cli._app import cli, convert, verify  # noqa: F401
