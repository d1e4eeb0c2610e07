"""CLI commands of the handler part of the library: ``inspect`` and ``extract``.

:func:`load_model_spec` turns the MODEL argument shared by several commands into a
:class:`~repurpose.ModelHandler`.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np
from torch import nn

from repurpose._exceptions import RandomWeightsWarning
from repurpose.cli._app import cli, convert, verify  # noqa: F401
from repurpose.cli._options import PreprocessOptions, preprocess_options
from repurpose.model_handler import ModelHandler

__all__ = ["load_model_spec", "load_entry_point", "load_array_data"]


def load_model_spec(
    model: str | os.PathLike[str],
    weights: str | os.PathLike[str] | None = None,
    entry_point: str | None = None,
    prep: PreprocessOptions | None = None,
) -> ModelHandler:
    """Build a handler from a model given on the command line.

    Parameters
    ----------
    model : str or Path
        A Caffe ``.prototxt`` (``weights``: its ``.caffemodel``); an MXNet
        ``*-symbol.json`` (``weights``: its ``.params``); or a directory written by
        ``ModelHandler.save`` (or ``repurpose convert``).
    weights : str or Path, optional
        The weights file of a Caffe or MXNet model. Without it the network has random
        weights: a warning says so.
    entry_point : str, optional
        ``"package.module:function"``; the function takes no arguments and returns the
        ``nn.Module`` (or a ModelHandler) whose weights a saved plain-module handler holds.
    prep : PreprocessOptions, optional
        The shared preprocessing options; each one given replaces the model's own.

    Returns
    -------
    ModelHandler
    """
    prep = prep or PreprocessOptions()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RandomWeightsWarning)
        handler, exclude = _load(Path(model), weights, entry_point, prep)
    for w in caught:
        if issubclass(w.category, RandomWeightsWarning):
            click.echo(f"warning: {w.message}", err=True)
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return prep.apply(handler, exclude)


def _load(path: Path, weights: str | os.PathLike[str] | None, entry_point: str | None,
          prep: PreprocessOptions) -> tuple[ModelHandler, tuple[str, ...]]:
    name = path.name
    weights = None if weights is None else Path(weights)
    if name.endswith(".prototxt"):
        # Caffe's own preprocessing fits a mean image to the input (resize, then crop).
        return ModelHandler.from_caffe(path, weights, mean=prep.mean_value()), ("mean",)
    if name.endswith("-symbol.json"):
        return ModelHandler.from_mxnet(path, weights, input_shape=prep.shape()), ()
    if name.endswith(".onnx"):
        return ModelHandler.from_onnx(path, input_shape=prep.shape()), ()
    if path.is_dir():
        if weights is not None:
            raise ValueError("--weights is for Caffe and MXNet files; a saved directory has them")
        if (path / "handler.json").is_file():
            module = None if entry_point is None else load_entry_point(entry_point)
            return ModelHandler.load(path, module=module), ()
        if (path / "graph.json").is_file():
            from repurpose.graph import load_graph

            return ModelHandler(load_graph(path)), ()
    if not path.exists():
        raise FileNotFoundError(f"model {str(path)!r} does not exist")
    raise ValueError(
        f"cannot tell the format of {str(path)!r}; give a Caffe .prototxt, an MXNet "
        "*-symbol.json, or a directory written by ModelHandler.save"
    )


def load_entry_point(spec: str) -> nn.Module:
    """Call ``"module:function"`` and return the module it builds."""
    mod_name, sep, func_name = spec.partition(":")
    if not sep or not mod_name or not func_name:
        raise ValueError(f"entry point {spec!r} must look like 'package.module:function'")
    # Let users name a module in the current directory, as `python -m` would.
    added = os.getcwd() not in sys.path
    if added:
        sys.path.insert(0, os.getcwd())
    try:
        func = getattr(importlib.import_module(mod_name), func_name)
    except ImportError as err:
        raise ValueError(f"cannot import {mod_name!r} for entry point {spec!r}: {err}") from err
    except AttributeError as err:
        raise ValueError(f"module {mod_name!r} has no function {func_name!r}") from err
    finally:
        if added:
            sys.path.remove(os.getcwd())
    built = func()
    if isinstance(built, ModelHandler):
        return built.module
    if not isinstance(built, nn.Module):
        raise ValueError(f"entry point {spec!r} returned {type(built).__name__}, not an nn.Module")
    return built


def load_array_data(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray | None]:
    """Read inputs (and labels, if any) from a ``.npy`` or ``.npz`` file.

    An ``.npz`` holds the inputs under ``x`` (or ``X``, ``data``, ``inputs``, or its only
    array) and optional labels under ``y`` (or ``labels``).
    """
    file = Path(path)
    if file.suffix == ".npy":
        return np.load(file, allow_pickle=False), None
    with np.load(file, allow_pickle=False) as z:
        keys = list(z.files)
        x_key = next((k for k in ("x", "X", "data", "inputs") if k in keys), None)
        if x_key is None and len(keys) == 1:
            x_key = keys[0]
        if x_key is None:
            raise ValueError(f"{file} has arrays {keys}; store the inputs under 'x'")
        y_key = next((k for k in ("y", "labels") if k in keys), None)
        return z[x_key], None if y_key is None else z[y_key]


@cli.command()
@click.argument("model")
@click.option("--weights", help="Weights file of a Caffe/MXNet model.")
@click.option("--entry-point", help="module:function that builds the saved plain module.")
@preprocess_options
def inspect(model: str, weights: str | None, entry_point: str | None,
            prep: PreprocessOptions) -> None:
    """Print the layer table of MODEL (output shapes for --input-shape) and its
    preprocessing."""
    handler = load_model_spec(model, weights, entry_point, prep)
    click.echo(str(handler.summary()))
    click.echo(f"preprocessing: {handler.preprocess or 'none (RGB in [0, 1])'}")


@cli.command()
@click.argument("model")
@click.argument("data", type=click.Path(exists=True))
@click.option("--layers", required=True, help="Comma-separated layer names or globs.")
@click.option("--pooling", type=click.Choice(["avg", "max", "flatten", "none"]), default="avg",
              show_default=True)
@click.option("--out", required=True,
              help="A .npz file, or a directory to stream one .npy per layer into.")
@click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--weights", help="Weights file of a Caffe/MXNet model.")
@click.option("--entry-point", help="module:function that builds the saved plain module.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bar.")
@preprocess_options
def extract(model: str, data: str, layers: str, pooling: str, out: str, batch_size: int,
            weights: str | None, entry_point: str | None, no_progress: bool,
            prep: PreprocessOptions) -> None:
    """Extract features of several layers of MODEL for DATA.

    DATA is an image folder (one subfolder per class; the labels stored are the
    subfolder names) or a .npy/.npz file of inputs.
    """
    handler = load_model_spec(model, weights, entry_point, prep)
    names = [n.strip() for n in layers.split(",") if n.strip()]
    inputs: Any = data
    labels = None
    if Path(data).is_file():
        inputs, labels = load_array_data(data)
    else:
        inputs = handler.image_folder(data, on_error=prep.on_error)
    to_dir = not out.endswith(".npz")
    features, found = handler.extract(
        inputs, names, pooling=None if pooling == "none" else pooling, batch_size=batch_size,
        progress=not no_progress, out=out if to_dir else None, return_labels=True,
    )
    labels = found if labels is None else labels
    if not to_dir:
        _save_npz(out, features, labels)
    for name, arr in features.items():
        click.echo(f"{name}: {arr.shape[0]} x {' x '.join(str(d) for d in arr.shape[1:])}")
    click.echo(f"wrote {out}")


def _save_npz(out: str, features: dict[str, np.ndarray], labels: np.ndarray | None) -> None:
    arrays = dict(features)
    if labels is not None and "labels" not in arrays:
        arrays["labels"] = labels
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write next to the target, then rename: an existing file survives any failure.
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
