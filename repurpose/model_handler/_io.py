"""Saving and loading handlers: JSON metadata plus safetensors weights. Nothing is pickled.

Layout of a saved handler directory::

    handler.json          format, kind ("graph" or "module"), layer list, input shape,
                          preprocessing, frozen layers
    preprocess_mean.npz   the mean image, when the preprocessing has one
    graph.json            (kind "graph") the layer graph, see repurpose.graph.save_graph
    weights.safetensors   the state dict
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from repurpose._exceptions import ModelFormatError
from repurpose._header import header, read_document
from repurpose._preprocess import Preprocess
from repurpose.graph import GraphNet, load_graph, save_graph

__all__ = ["FORMAT", "HANDLER_FILE", "write_handler", "read_handler", "is_saved_handler"]

FORMAT = "repurpose.handler"
FORMAT_VERSION = 1
HANDLER_FILE = "handler.json"
MEAN_FILE = "preprocess_mean.npz"
WEIGHTS_FILE = "weights.safetensors"


def is_saved_handler(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by ``ModelHandler.save``."""
    return (Path(path) / HANDLER_FILE).is_file()


def write_handler(path: str | os.PathLike[str], module: nn.Module, meta: dict[str, Any],
                  preprocess: Preprocess | None) -> Path:
    """Write a handler directory. Files are written to a temporary folder first, so an
    error part-way never leaves a half-written handler over an existing one."""
    from safetensors.torch import save_model

    target = Path(path)
    if target.exists() and not target.is_dir():
        raise ValueError(f"cannot save to {str(target)!r}: it exists and is not a directory")
    target.parent.mkdir(parents=True, exist_ok=True)
    doc = {**header(FORMAT, FORMAT_VERSION), **meta, "preprocess": None}
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{target.name}.") as tmp:
        stage = Path(tmp)
        if isinstance(module, GraphNet):
            doc["kind"] = "graph"
            save_graph(module, stage)
        else:
            doc["kind"] = "module"
            save_model(module, str(stage / WEIGHTS_FILE))
        if preprocess is not None:
            doc["preprocess"] = preprocess.to_json()
            if preprocess.mean_image is not None:
                np.savez(stage / MEAN_FILE, mean=preprocess.mean_image)
        (stage / HANDLER_FILE).write_text(json.dumps(doc, indent=1))
        target.mkdir(exist_ok=True)
        stale = target / MEAN_FILE
        if stale.exists() and preprocess is not None and preprocess.mean_image is None:
            stale.unlink()
        for item in stage.iterdir():
            shutil.move(str(item), str(target / item.name))
    return target


def read_handler(path: str | os.PathLike[str], module: nn.Module | None
                 ) -> tuple[nn.Module, dict[str, Any], Preprocess | None]:
    """Read a handler directory; returns (module with weights, metadata, preprocess)."""
    root = Path(path)
    doc = _read_doc(root)
    kind = doc.get("kind")
    if module is None:
        if kind != "graph":
            raise ValueError(
                f"{str(root)!r} holds the weights of a plain torch module "
                f"({doc.get('module_class', '?')}); build that module and pass it as "
                "ModelHandler.load(path, module=...)"
                + (f". It was not converted to a graph: {doc['not_converted']}"
                   if doc.get("not_converted") else "")
            )
        module = load_graph(root)
    elif kind == "graph":  # a plain module converted on save (see _to_graph.py)
        from repurpose.model_handler._to_graph import load_into

        load_into(module, load_graph(root), str(root / WEIGHTS_FILE))
    else:
        _load_weights(module, root / WEIGHTS_FILE)
    return module, doc, _read_preprocess(root, doc)


def _read_doc(root: Path) -> dict[str, Any]:
    return read_document(root / HANDLER_FILE, FORMAT, FORMAT_VERSION,
                         "is it a directory written by ModelHandler.save?")


def _load_weights(module: nn.Module, file: Path) -> None:
    from safetensors.torch import load_model

    if not file.is_file():
        raise ModelFormatError(f"{file} is missing")
    try:
        missing, unexpected = load_model(module, str(file), strict=False)
    except Exception as err:  # safetensors and torch raise several types
        detail = " ".join(str(err).split())  # one line, for the CLI
        raise ModelFormatError(
            f"cannot load {file} into {type(module).__name__}: {detail}"
        ) from err
    if missing or unexpected:
        raise ModelFormatError(
            f"the weights in {file} do not fit {type(module).__name__}: missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; build the module "
            "exactly as it was when saved"
        )


def _read_preprocess(root: Path, doc: dict[str, Any]) -> Preprocess | None:
    spec = doc.get("preprocess")
    if spec is None:
        return None
    mean = None
    if spec.get("mean") == "image":
        try:
            with np.load(root / MEAN_FILE, allow_pickle=False) as z:
                mean = z["mean"]
        except (OSError, KeyError, ValueError) as err:
            raise ModelFormatError(f"cannot read the mean image {root / MEAN_FILE}: {err}") from err
    try:
        return Preprocess.from_json(spec, mean)
    except (TypeError, ValueError) as err:
        raise ModelFormatError(f"bad preprocess entry in {root / HANDLER_FILE}: {err}") from err
