"""The preprocessing options shared by every command that reads images or builds a model.

One group, the same for Caffe, MXNet and saved models: each option given replaces that
field of the model's own :class:`~repurpose.Preprocess` (Caffe imports start from Caffe's
conventions, other models from plain RGB in [0, 1]).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from repurpose.cli._app import CliError
from repurpose.model_handler import ModelHandler, Preprocess

__all__ = ["PreprocessOptions", "preprocess_options", "parse_ints", "parse_floats"]


def parse_ints(text: str | None, option: str, example: str) -> tuple[int, ...] | None:
    """``"3,224,224"`` or ``"224x224"`` -> ints; None stays None."""
    if text is None:
        return None
    try:
        values = tuple(int(p) for p in text.replace("x", ",").split(",") if p.strip())
    except ValueError:
        raise CliError(f"{option} {text!r} must look like {example}") from None
    if not values or min(values) < 1:
        raise CliError(f"{option} {text!r} must look like {example}")
    return values


def parse_floats(text: str | None, option: str) -> tuple[float, ...] | None:
    """``"104,117,123"`` -> floats; None stays None."""
    if text is None:
        return None
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise CliError(f"{option} {text!r}: give comma-separated numbers") from None


@dataclasses.dataclass(frozen=True)
class PreprocessOptions:
    """The values of the shared options as given on the command line (None: not given)."""

    resize: str | None = None
    crop: str | None = None
    channel_order: str | None = None
    raw_scale: float | None = None
    mean: str | None = None
    std: str | None = None
    input_scale: float | None = None
    input_shape: str | None = None
    on_error: str = "raise"

    def shape(self) -> tuple[int, ...] | None:
        """``--input-shape`` as ints."""
        return parse_ints(self.input_shape, "--input-shape", "3,224,224")

    def mean_value(self) -> Any:
        """``--mean``: a mean file (.binaryproto/.npy) read as an image, or numbers."""
        if self.mean is None:
            return None
        if Path(self.mean).is_file():
            from repurpose.caffe import load_mean

            return load_mean(self.mean)
        try:
            return parse_floats(self.mean, "--mean")
        except CliError:
            raise CliError(f"--mean {self.mean!r} is neither a file nor comma-separated "
                           "numbers") from None

    def fields(self) -> dict[str, Any]:
        """The :class:`Preprocess` fields that were given."""
        out: dict[str, Any] = {}
        resize = parse_ints(self.resize, "--resize", "256 (shorter side) or 256,256")
        if resize is not None:
            if len(resize) not in (1, 2):
                raise CliError(f"--resize {self.resize!r}: give one size or H,W")
            out["resize"] = resize[0] if len(resize) == 1 else resize
        crop = parse_ints(self.crop, "--crop", "227,227")
        if crop is not None:
            out["crop"] = (crop[0], crop[0]) if len(crop) == 1 else crop
        given = {"channel_order": self.channel_order, "raw_scale": self.raw_scale,
                 "mean": self.mean_value(), "std": parse_floats(self.std, "--std"),
                 "input_scale": self.input_scale}
        out.update({k: v for k, v in given.items() if v is not None})
        return out

    def apply(self, handler: ModelHandler, exclude: tuple[str, ...] = ()) -> ModelHandler:
        """``handler`` with the given fields (but ``exclude``) replacing its preprocessing's."""
        fields = {k: v for k, v in self.fields().items() if k not in exclude}
        shape = self.shape()
        if not fields and shape is None:
            return handler
        pre = handler.preprocess
        if fields:
            pre = dataclasses.replace(pre or Preprocess(), **fields)
        return ModelHandler(handler.module, shape or handler.input_shape, pre, handler.device)


_OPTIONS = [
    click.option("--resize", help="Resize images first: one size (the shorter side, keeping "
                 "the aspect ratio) or H,W. Needed when images differ in size."),
    click.option("--crop", help="Centre crop H,W after resizing (e.g. 227,227)."),
    click.option("--channel-order", type=click.Choice(["RGB", "BGR"], case_sensitive=False),
                 help="Channel order the network expects (Caffe: BGR)."),
    click.option("--raw-scale", type=float,
                 help="Multiply pixels in [0, 1] by this (Caffe: 255)."),
    click.option("--mean", help="Per-channel mean in the network's channel order and scale "
                 "(e.g. 104,117,123), or a mean file (.binaryproto/.npy)."),
    click.option("--std", help="Per-channel standard deviation, e.g. 0.229,0.224,0.225."),
    click.option("--input-scale", type=float, help="Multiply by this last (Caffe's scale)."),
    click.option("--input-shape", help="One input's shape without batch axis, e.g. 3,224,224."),
    click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise",
                 show_default=True, help="An unreadable image stops the run, or is skipped "
                 "with a warning."),
]
_NAMES = [f.name for f in dataclasses.fields(PreprocessOptions)]


def preprocess_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared options to a command; it receives them as ``prep``."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        prep = PreprocessOptions(**{k: kwargs.pop(k) for k in _NAMES})
        return func(*args, prep=prep, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper
