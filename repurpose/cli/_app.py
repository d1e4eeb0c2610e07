"""The ``repurpose`` command group. Subcommands live in the sibling ``_*_cmds`` modules."""

from __future__ import annotations

from typing import Any

import click

from repurpose._exceptions import RepurposeError

__all__ = ["cli", "convert", "verify", "CliError"]

# Errors that are the user's input, not our bug: shown as one line, exit code 2.
_USER_ERRORS = (RepurposeError, OSError, ValueError, KeyError)


class CliError(click.ClickException):
    """A one-line error with exit code 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except _USER_ERRORS as err:
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise CliError(message) from err


@click.group(cls=_Group)
@click.version_option(package_name="repurpose")
def cli() -> None:
    """Repurpose trained networks (Caffe, MXNet, PyTorch) for new tasks."""


@cli.group(cls=_Group)
def convert() -> None:
    """Convert a Caffe or MXNet model into a self-describing saved model."""


@cli.group(cls=_Group)
def verify() -> None:
    """Compare an imported model with its original framework, blob by blob."""


from repurpose.cli import _advise_cmds  # noqa: E402,F401  (registers `repurpose advise`)
