"""CLI commands of the repurposer part of the library: ``demo``, ``fit`` and ``predict``."""

from __future__ import annotations

import csv
import inspect
import io
import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
import numpy as np

from repurpose.cli._app import CliError, cli, convert, verify  # noqa: F401
from repurpose.cli._options import PreprocessOptions, preprocess_options

__all__ = ["demo", "fit", "predict"]


@cli.command()
@click.option("--smoke", is_flag=True, help="A few-second version (also REPURPOSE_SMOKE=1).")
@click.option("--k", "ks", help="Comma-separated K values (default 5,10,20,50).")
@click.option("--layers", help="Comma-separated feature layers; a+b combines two "
              "(default conv2,fc6,fc7,fc6+fc7).")
@click.option("-r", "--repurposers", help="Comma-separated repurposer names (default: all "
              "registered meta-models).")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
def demo(smoke: bool, ks: str | None, layers: str | None, repurposers: str | None,
         no_progress: bool) -> None:
    """Transfer learning on built-in digits: pretrain on 0-4, repurpose to 5-9.

    Prints test accuracy for each registered meta-model repurposer and feature layer,
    next to logistic regression on raw pixels and the CNN trained from scratch.
    """
    from repurpose.demo import format_table, run_demo

    k_values = None
    if ks is not None:
        try:
            k_values = [int(k) for k in _split(ks) or []]
        except ValueError as err:
            raise CliError(f"--k {ks!r}: give comma-separated integers such as 5,10") from err
    result = run_demo(ks=k_values, layers=_split(layers), repurposers=_split(repurposers),
                      smoke=True if smoke else None, progress=not no_progress)
    click.echo(format_table(result))


@cli.command()
@click.argument("data", required=False, type=click.Path(exists=True))
@click.option("-r", "--repurposer", default="lr", show_default=True,
              help="Registered repurposer name (see `repurpose.list_repurposers()`).")
@click.option("--model", help="Source model: Caffe .prototxt, MXNet *-symbol.json or a saved "
              "handler directory. Needed with DATA.")
@click.option("--weights", help="Weights file of a Caffe/MXNet model.")
@click.option("--entry-point", help="module:function that builds the saved plain module.")
@click.option("--layers", help="Comma-separated feature layers (default with --features: all).")
@click.option("--pooling", type=click.Choice(["avg", "max", "flatten"]), default=None,
              help="Pooling of spatial features (default: the repurposer's).")
@click.option("--features", type=click.Path(exists=True, dir_okay=False),
              help=".npz with one array per layer and a 'labels' array (`repurpose extract`).")
@click.option("-p", "--param", "params", multiple=True, metavar="NAME=VALUE",
              help="A constructor argument; VALUE is read as JSON, else as a string.")
@click.option("-o", "--out", required=True, help="Directory (or .zip) to save the repurposer to.")
@click.option("--no-handler", is_flag=True, help="Do not store the source model in the output.")
@click.option("--no-progress", is_flag=True, help="Hide the progress bars.")
@preprocess_options
def fit(data: str | None, repurposer: str, model: str | None, weights: str | None,
        entry_point: str | None, layers: str | None, pooling: str | None,
        features: str | None, params: Sequence[str], out: str, no_handler: bool,
        no_progress: bool, prep: PreprocessOptions) -> None:
    """Train a repurposer on DATA (an image folder, one subfolder per class: the subfolder
    names are the labels) or --features.

    \b
    Examples:
      repurpose fit --model vgg_dir --layers fc6,fc7 photos/ -o rep_dir
      repurpose fit --features feats.npz -r svm -p C=0.5 -o rep_dir
    """
    from repurpose.repurposers import get_repurposer_class

    if (data is None) == (features is None):
        raise CliError("give either DATA (an image folder) or --features FILE.npz, not both")
    cls = get_repurposer_class(repurposer)
    handler = None if model is None else _handler(model, weights, entry_point, prep)
    kwargs = _constructor_args(cls, params, _split(layers), pooling, not no_progress)
    rep = cls(handler=handler, **kwargs)
    if features is not None:
        feats, labels = _read_features(features)
        if not hasattr(rep, "fit_features"):
            raise CliError(f"repurposer {repurposer!r} trains on images, not on --features")
        rep.fit_features(feats, labels)
        accuracy = float(np.mean(rep.predict_features(feats) == labels))
    else:
        if handler is None:
            raise CliError("DATA needs --model (the source network to repurpose)")
        accuracy = _fit_folder(rep, handler.image_folder(data, on_error=prep.on_error))
    rep.save(out, include_handler=not no_handler)
    click.echo(f"fitted {repurposer} ({type(rep).__name__}) on classes "
               f"{', '.join(map(str, rep.classes_.tolist()))}; training accuracy {accuracy:.3f}")
    click.echo(f"saved to {out}")


@cli.command()
@click.argument("saved", type=click.Path(exists=True))
@click.argument("data", required=False, type=click.Path(exists=True))
@click.option("--features", type=click.Path(exists=True, dir_okay=False),
              help=".npz with one array per feature layer (labels, if present, are scored).")
@click.option("--model", help="Source model, if the repurposer was saved with --no-handler.")
@click.option("--weights", help="Weights file of a Caffe/MXNet model.")
@click.option("--entry-point", help="module:function that builds the saved plain module.")
@click.option("--out", help="Write a CSV here (default: print it).")
@preprocess_options
def predict(saved: str, data: str | None, features: str | None, model: str | None,
            weights: str | None, entry_point: str | None, out: str | None,
            prep: PreprocessOptions) -> None:
    """Predict with the repurposer saved at SAVED, for DATA (image folder or .npy/.npz) or
    --features. The CSV has one row per sample: id, label, and one probability per class.

    Preprocessing options given replace those saved with the model."""
    from repurpose.repurposers import load

    if (data is None) == (features is None):
        raise CliError("give either DATA or --features FILE.npz, not both")
    handler = None if model is None else _handler(model, weights, entry_point, prep)
    rep = load(saved, handler=handler)
    if features is not None:
        feats, truth = _read_features(features, need_labels=False)
        proba = rep.predict_proba_features(feats)
        ids = [str(i) for i in range(len(proba))]
    else:
        if handler is None and rep.handler is not None:
            rep.handler = prep.apply(rep.handler)
        proba, ids, truth = _predict_data(rep, str(data), prep.on_error)
    labels = rep.classes_[np.argmax(proba, axis=1)]
    _write_csv(out, ids, labels, proba, rep.classes_)
    if truth is not None and len(truth) == len(labels):
        click.echo(f"accuracy {float(np.mean(labels == np.asarray(truth))):.3f}", err=True)


# ----- helpers ---------------------------------------------------------------------------
def _fit_folder(rep: Any, folder: Any) -> float:
    """Fit on an image folder, reading (and extracting) it once; the training accuracy."""
    data, labels = rep._prepare(folder, None, labels=True, fitting=True)
    rep._fit_prepared(data, labels, None)
    pred = rep.classes_[np.argmax(rep._predict_proba_prepared(data), axis=1)]
    return float(np.mean(pred == np.asarray(labels)))


def _handler(model: str, weights: str | None, entry_point: str | None,
             prep: PreprocessOptions) -> Any:
    from repurpose.cli._handler_cmds import load_model_spec

    return load_model_spec(model, weights, entry_point, prep)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    return names or None


def _constructor_args(cls: type, params: Sequence[str], layers: list[str] | None,
                      pooling: str | None, progress: bool) -> dict[str, Any]:
    accepted = set(inspect.signature(cls).parameters)
    kwargs: dict[str, Any] = {}
    for item in params:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise CliError(f"--param {item!r}: use NAME=VALUE")
        kwargs[name.strip()] = _parse_value(value)
    defaults: dict[str, Any] = {"feature_layers": layers, "pooling": pooling,
                                "progress": progress}
    for name, value in defaults.items():
        if value is not None and name in accepted:
            kwargs.setdefault(name, value)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise CliError(f"{cls.__name__} has no parameter(s) {unknown}; it accepts "
                       f"{', '.join(sorted(accepted - {'handler'}))}")
    return kwargs


def _parse_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return text
    return tuple(value) if isinstance(value, list) else value


def _read_features(path: str, need_labels: bool = True) -> tuple[dict[str, np.ndarray], Any]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    labels = arrays.pop("labels", None)
    if need_labels and labels is None:
        raise CliError(f"{path} has no 'labels' array; store the labels under 'labels'")
    if not arrays:
        raise CliError(f"{path} holds no feature arrays")
    return arrays, labels


def _predict_data(rep: Any, data: str, on_error: str) -> tuple[np.ndarray, list[str], Any]:
    path = Path(data)
    if path.is_file():
        from repurpose.cli._handler_cmds import load_array_data

        inputs, truth = load_array_data(path)
        return rep.predict_proba(inputs), [str(i) for i in range(len(inputs))], truth
    if rep.handler is None:
        raise CliError("this repurposer was saved without its model; pass --model")
    folder = rep.handler.image_folder(path, on_error=on_error)
    proba = rep.predict_proba(folder)
    read = set(folder.loaded)
    samples = [(p, i) for p, i in folder.samples if p in read]
    ids = [str(p.relative_to(path)) for p, _ in samples]
    truth = np.array([folder.classes[i] for _, i in samples])
    return proba, ids, truth


def _write_csv(out: str | None, ids: Sequence[str], labels: np.ndarray, proba: np.ndarray,
               classes: np.ndarray) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "label", *[f"p_{c}" for c in classes.tolist()]])
    for row_id, label, p in zip(ids, labels.tolist(), proba):
        writer.writerow([row_id, label, *[f"{v:.6g}" for v in p]])
    if out is None:
        click.echo(buffer.getvalue(), nl=False)
        return
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".csv")
    with os.fdopen(fd, "w", newline="") as f:
        f.write(buffer.getvalue())
    os.replace(tmp, target)
    click.echo(f"wrote {len(ids)} predictions to {out}", err=True)
