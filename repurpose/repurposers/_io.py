"""Saving and loading repurposers without pickle: a JSON config plus safetensors arrays.

Layout of a saved repurposer (a directory, or the same files in a ``.zip``)::

    config.json          format, library version, registry name, params, classes_, state meta
    arrays.safetensors   numeric arrays: base state ("base/...") and the subclass's ("state/...")
    handler/             the handler in its own format (unless include_handler=False)

Loading reads JSON and safetensors only; the class is looked up in the registry by name.
Nothing in the file is ever executed: pickles (including ``torch.save`` archives) are refused
with :class:`repurpose.UnsafeFileError`.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from repurpose._exceptions import ModelFormatError, RepurposeError, UnsafeFileError
from repurpose._header import header, read_document
from repurpose._version import __version__
from repurpose.repurposers._base import Repurposer
from repurpose.repurposers._registry import get_repurposer_class

__all__ = ["save_repurposer", "load", "module_state_to_arrays", "arrays_to_module_state"]

FORMAT_NAME = "repurpose.repurposer"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
ARRAYS_FILE = "arrays.safetensors"
HANDLER_DIR = "handler"
_PICKLE_PROTOCOLS = {bytes([0x80, p]) for p in range(2, 6)}


# ----- torch helpers for network repurposers ---------------------------------------------
def module_state_to_arrays(
    state_dict: Mapping[str, torch.Tensor], prefix: str = ""
) -> dict[str, np.ndarray]:
    """Turn a torch state dict into named numpy arrays for ``_get_state``.

    Parameters
    ----------
    state_dict : mapping of str to Tensor
        For example ``module.state_dict()``.
    prefix : str
        Prepended to every key (to keep several modules apart).

    Returns
    -------
    dict of str to ndarray
    """
    out = {}
    for key, value in state_dict.items():
        t = value.detach().cpu()
        if t.dtype == torch.bfloat16:
            t = t.to(torch.float32)
        out[prefix + key] = np.ascontiguousarray(t.numpy())
    return out


def arrays_to_module_state(
    arrays: Mapping[str, np.ndarray], prefix: str = ""
) -> dict[str, torch.Tensor]:
    """Inverse of :func:`module_state_to_arrays`: select ``prefix`` keys, strip it, to tensors.

    Returns
    -------
    dict of str to Tensor
        Ready for ``module.load_state_dict``.
    """
    return {
        key[len(prefix):]: torch.from_numpy(np.array(value))
        for key, value in arrays.items()
        if key.startswith(prefix)
    }


# ----- JSON encoding of params and labels ------------------------------------------------
def _to_json(value: Any, where: str) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_to_json(v, where) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v, where) for v in value]}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) and not k.startswith("__") for k in value):
            return {k: _to_json(v, where) for k, v in value.items()}
        return {"__items__": [[_to_json(k, where), _to_json(v, where)] for k, v in value.items()]}
    raise RepurposeError(
        f"{where} = {value!r} cannot be saved as JSON (accepted: None, bool, int, float, str, "
        "and lists, tuples and dicts of these); override _params_to_json/_params_from_json"
    )


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(v) for v in value["__tuple__"])
        if set(value) == {"__items__"}:
            return {_hashable(_from_json(k)): _from_json(v) for k, v in value["__items__"]}
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _classes_to_json(classes: np.ndarray) -> dict[str, Any]:
    if classes.dtype.kind in "iufbU":
        return {"dtype": classes.dtype.str, "values": classes.tolist()}
    if classes.dtype.kind == "O":
        return {"dtype": "object", "values": [_to_json(v, "a label") for v in classes.tolist()]}
    raise RepurposeError(f"labels of dtype {classes.dtype} cannot be saved; use str or int labels")


def _classes_from_json(obj: Mapping[str, Any]) -> np.ndarray:
    values = [_from_json(v) for v in obj["values"]]
    if obj["dtype"] == "object":
        out = np.empty(len(values), dtype=object)
        out[:] = values
        return out
    dtype = np.dtype(obj["dtype"])
    if dtype.kind not in "iufbU":
        raise ModelFormatError(f"saved labels have unsupported dtype {obj['dtype']!r}")
    return np.array(values, dtype=dtype)


# ----- save ------------------------------------------------------------------------------
def save_repurposer(rep: Repurposer, path: str | Path, include_handler: bool = True) -> Path:
    """Save a fitted repurposer (see :meth:`Repurposer.save`)."""
    rep._check_fitted()
    name = type(rep)._registry_name
    if name is None or get_repurposer_class(name) is not type(rep):
        raise RepurposeError(
            f"{type(rep).__name__} is not registered, so it could not be loaded again; "
            "decorate the class with @repurpose.register_repurposer('name')"
        )
    path = Path(path)
    is_zip = path.suffix.lower() == ".zip"
    if not is_zip:
        _check_target_dir(path)
    parent = path.parent
    parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".repurpose-save-") as tmp:
        staging = Path(tmp) / "rep"
        staging.mkdir()
        _write(rep, name, staging, include_handler)
        if is_zip:
            _zip_dir(staging, Path(tmp) / "out.zip")
            os.replace(Path(tmp) / "out.zip", path)
        else:
            _swap_into_place(staging, path, Path(tmp))
    return path


def _write(rep: Repurposer, name: str, out: Path, include_handler: bool) -> None:
    base_meta, base_arrays = rep._base_state()
    meta, arrays = rep._get_state()
    config = {
        **header(FORMAT_NAME, FORMAT_VERSION),
        "library_version": __version__,
        "class": name,
        "params": _to_json(rep._params_to_json(), "a parameter"),
        "classes": _classes_to_json(np.asarray(rep.classes_)),
        "base_state": _to_json(base_meta, "base state"),
        "state": _to_json(meta, "state from _get_state"),
        "handler": None,
    }
    tensors = {f"base/{k}": v for k, v in base_arrays.items()}
    tensors.update({f"state/{k}": v for k, v in arrays.items()})
    save_file({k: _array_for_file(k, v) for k, v in tensors.items()}, str(out / ARRAYS_FILE))
    if include_handler and getattr(rep, "handler", None) is not None:
        rep.handler.save(out / HANDLER_DIR)
        config["handler"] = HANDLER_DIR
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2))
    rep._save_extra(out)


def _array_for_file(key: str, value: Any) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "iufb":
        raise RepurposeError(
            f"state array {key!r} has dtype {arr.dtype}; only numeric arrays can be saved"
        )
    return np.ascontiguousarray(arr)


def _check_target_dir(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise RepurposeError(f"cannot save to {str(path)!r}: it is a file, not a directory")
    if path.is_dir() and any(path.iterdir()) and not (path / CONFIG_FILE).is_file():
        raise RepurposeError(
            f"cannot save to {str(path)!r}: the directory is not empty and is not a saved "
            "repurposer; choose a new or empty directory"
        )


def _swap_into_place(staging: Path, path: Path, tmp: Path) -> None:
    if path.exists():
        os.replace(path, tmp / "old")
    os.replace(staging, path)


def _zip_dir(src: Path, dest: Path) -> None:
    with zipfile.ZipFile(dest, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(src.rglob("*")):
            if file.is_file():
                zf.write(file, file.relative_to(src).as_posix())


# ----- load ------------------------------------------------------------------------------
def load(path: str | Path, handler: Any = None) -> Repurposer:
    """Load a repurposer saved with :meth:`Repurposer.save`, without executing any code.

    Parameters
    ----------
    path : str or Path
        The saved directory or ``.zip`` file.
    handler : ModelHandler, optional
        Use this handler instead of the saved one (needed if it was saved without one).

    Returns
    -------
    Repurposer
        Fitted, predicting exactly as before saving.

    Raises
    ------
    UnsafeFileError
        If the file is a pickle (or holds one) instead of JSON and safetensors.
    ModelFormatError
        If the file is not a saved repurposer, or is damaged.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no saved repurposer at {str(path)!r}")
    if path.is_dir():
        return _load_dir(path, handler)
    _refuse_pickle(path)
    if not zipfile.is_zipfile(path):
        raise ModelFormatError(
            f"{str(path)!r} is not a saved repurposer (expected a directory or a .zip made by "
            "Repurposer.save)"
        )
    with tempfile.TemporaryDirectory(prefix="repurpose-load-") as tmp:
        _safe_extract(path, Path(tmp))
        return _load_dir(Path(tmp), handler)


def _refuse_pickle(file: Path) -> None:
    with open(file, "rb") as f:
        head = f.read(9)
    # A safetensors file starts with its 8-byte header length, then the JSON header ("{"):
    # a header of 640-1535 bytes also starts with 0x80 0x02-0x05, so that is no pickle.
    if head[:2] in _PICKLE_PROTOCOLS and head[8:9] != b"{":
        raise UnsafeFileError(
            f"{str(file)!r} is a Python pickle; repurpose never loads pickles because they can "
            "run arbitrary code. Save with Repurposer.save (JSON + safetensors)"
        )


def _safe_extract(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            target = (dest / info.filename).resolve()
            if not target.is_relative_to(dest.resolve()) or info.filename.endswith(".pkl"):
                raise UnsafeFileError(
                    f"{str(archive)!r} holds an unexpected member {info.filename!r} (a pickle "
                    "or a path outside the archive); refusing to load it"
                )
        zf.extractall(dest)
    for file in dest.rglob("*"):
        if file.is_file():
            _refuse_pickle(file)


def _load_dir(path: Path, handler: Any) -> Repurposer:
    config = _read_config(path)
    arrays = _read_arrays(path / ARRAYS_FILE)
    cls = get_repurposer_class(str(config["class"]))
    params = cls._params_from_json(_from_json(config["params"]))
    if handler is None and config.get("handler"):
        handler = _load_handler(path / str(config["handler"]))
    rep = cls(handler=handler, **params)  # type: ignore[call-arg]
    rep.classes_ = _classes_from_json(config["classes"])
    rep.n_classes_ = len(rep.classes_)
    base = {k[5:]: v for k, v in arrays.items() if k.startswith("base/")}
    state = {k[6:]: v for k, v in arrays.items() if k.startswith("state/")}
    try:
        rep._set_base_state(_from_json(config["base_state"]), base)
        rep._set_state(_from_json(config["state"]), state)
    except (KeyError, ValueError, RuntimeError) as err:
        raise ModelFormatError(f"{str(path)!r}: saved state does not match {cls.__name__}: "
                               f"{err}") from err
    rep._load_extra(path)
    return rep


def _read_config(path: Path) -> dict[str, Any]:
    file = path / CONFIG_FILE
    if file.is_file():
        _refuse_pickle(file)
    config = read_document(file, FORMAT_NAME, FORMAT_VERSION,
                           "it is not a saved repurposer (write one with Repurposer.save)")
    missing = [k for k in ("class", "params", "classes", "base_state", "state") if k not in config]
    if missing:
        raise ModelFormatError(f"{str(file)!r} lacks the field(s) {missing}")
    return config


def _read_arrays(file: Path) -> dict[str, np.ndarray]:
    if not file.is_file():
        raise ModelFormatError(f"missing {str(file)!r}")
    _refuse_pickle(file)
    if zipfile.is_zipfile(file):
        raise UnsafeFileError(
            f"{str(file)!r} is a zip archive (torch.save or np.savez?), not safetensors; "
            "refusing to load it"
        )
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFormatError(f"{str(file)!r} is not a valid safetensors file: {err}") from err


def _load_handler(path: Path) -> Any:
    from repurpose.model_handler import ModelHandler

    try:
        return ModelHandler.load(path)
    except (TypeError, ValueError) as err:
        raise ModelFormatError(
            f"could not load the saved handler in {str(path)!r} ({err}); pass "
            "handler=ModelHandler(your_module, ...) to repurpose.load"
        ) from err

