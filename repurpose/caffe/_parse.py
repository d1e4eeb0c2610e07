"""Reading Caffe files: text prototxt, binary caffemodel and binaryproto blobs.

Everything is normalised to the V2 form (``layer`` with string types); legacy V1 nets
(``layers`` with enum types) are upgraded field by field, and the old input declarations
(``input`` + ``input_dim`` / ``input_shape``) become :class:`NetSpec.inputs`.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from google.protobuf import message as pb_message
from google.protobuf import text_format

from repurpose._exceptions import ModelFormatError
from repurpose.caffe import _generic, _schema

__all__ = [
    "NetSpec",
    "read_prototxt",
    "read_caffemodel",
    "read_blobproto",
    "blob_to_array",
    "MAX_ELEMENTS",
    "CaffeWeights",
]

# Refuse any declared tensor larger than this many elements before allocating it.
MAX_ELEMENTS = 1 << 30

DATA_LAYER_TYPES = frozenset(
    {"Data", "ImageData", "MemoryData", "HDF5Data", "WindowData", "DummyData", "Python"}
)


@dataclass
class NetSpec:
    """A parsed, phase-filtered, V2-normalised net."""

    name: str
    layers: list[Any]  # V2 LayerParameter messages, in file order
    inputs: dict[str, list[int] | None] = field(default_factory=dict)
    ceil_mode_schema: bool = False
    path: str = ""
    # per layer (parallel to ``layers``): its parameters decoded without the schema
    params: list[dict[str, Any]] = field(default_factory=list)


class CaffeWeights(dict[str, list[np.ndarray]]):
    """``{layer name: [blob arrays]}``; ``fields`` holds, per layer, the LayerParameter
    fields of the caffemodel the schema lacks (by number, see ``_generic.unknown_fields``)."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: dict[str, dict[int, Any]] = {}


def _read_bytes(path: str | Path, what: str) -> bytes:
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError as err:
        raise ModelFormatError(f"{what} file not found: {str(p)!r}") from err
    except IsADirectoryError as err:
        raise ModelFormatError(f"{what} path {str(p)!r} is a directory, not a file") from err
    except OSError as err:
        raise ModelFormatError(f"cannot read {what} file {str(p)!r}: {err}") from err


_CEIL_RE = re.compile(r"\bceil_mode\s*:")
_ROUND_RE = re.compile(r"\bround_mode\s*:\s*(CEIL|FLOOR|0|1)\b")


def _parse_text(text: str, ceil: bool, path: str) -> Any:
    msg = _schema.net_class(ceil)()
    try:
        text_format.Parse(text, msg)
        return msg
    except text_format.ParseError as err:
        if "has no field named" not in str(err) and "no field named" not in str(err):
            raise ModelFormatError(_parse_error_text(err, path)) from err
        first = err
    msg = _schema.net_class(ceil)()
    try:
        text_format.Parse(text, msg, allow_unknown_field=True)
    except text_format.ParseError as err:
        raise ModelFormatError(_parse_error_text(err, path)) from err
    warnings.warn(
        f"{path}: fields this importer's schema does not know (first at line "
        f"{first.GetLine()}: {_error_detail(first)}); built-in converters ignore them, "
        "converters added with register_layer find them in LayerContext.params",
        stacklevel=4,
    )
    return msg


def _error_detail(err: text_format.ParseError) -> str:
    detail = str(err)
    line, col = err.GetLine(), err.GetColumn()
    prefix = f"{line}:{col} : "
    return detail[len(prefix):] if detail.startswith(prefix) else detail


def _parse_error_text(err: text_format.ParseError, path: str) -> str:
    line, col = err.GetLine(), err.GetColumn()
    detail = _error_detail(err)
    where = f"line {line}, column {col}" if line is not None else "unknown position"
    return f"prototxt syntax error in {path} at {where}: {detail}"


def read_prototxt(path: str | Path, phase: str = "TEST") -> NetSpec:
    """Parse a text ``.prototxt`` into a :class:`NetSpec` (V2 layers, ``phase`` kept)."""
    raw = _read_bytes(path, "prototxt")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ModelFormatError(
            f"{path} is not a text prototxt (not UTF-8 at byte {err.start}); "
            "pass the binary .caffemodel as the weights argument"
        ) from err
    ceil = bool(_CEIL_RE.search(text))
    if ceil:  # one file mixing both spellings: rewrite round_mode into ceil_mode
        text = _ROUND_RE.sub(
            lambda m: "ceil_mode: " + ("true" if m.group(1) in ("CEIL", "0") else "false"), text
        )
    msg = _parse_text(text, ceil, str(path))
    layers = _v2_layers(msg, str(path))
    try:
        params = _generic.layer_blocks(text, str(path))
    except (ModelFormatError, ValueError, IndexError):  # syntax protobuf has, we lack
        params = []
    if len(params) != len(layers):
        params = [{} for _ in layers]
    spec = NetSpec(name=msg.name, layers=[], ceil_mode_schema=ceil, path=str(path))
    _collect_legacy_inputs(msg, spec)
    kept = [(layer, p) for layer, p in zip(layers, params) if _included(layer, phase, msg)]
    spec.layers = [layer for layer, _ in kept]
    spec.params = [p for _, p in kept]
    return spec


def read_caffemodel(path: str | Path, ceil_mode: bool = False) -> CaffeWeights:
    """Read a binary ``.caffemodel``: ``{layer name: [blob arrays]}`` for layers with blobs
    (and, in ``.fields``, the layer fields the schema lacks)."""
    raw = _read_bytes(path, "caffemodel")
    msg = _schema.net_class(ceil_mode)()
    try:
        msg.ParseFromString(raw)
    except (pb_message.DecodeError, RuntimeError, ValueError) as err:
        raise ModelFormatError(
            f"{path} is not a valid binary .caffemodel (truncated or corrupt: {err})"
        ) from err
    if not msg.layer and not msg.layers:
        raise ModelFormatError(
            f"{path} holds no layers; is it a binary .caffemodel (not a prototxt or mean file)?"
        )
    weights = CaffeWeights()
    for layer in _v2_layers(msg, str(path)):
        extra = _generic.unknown_fields(layer)
        if extra:
            weights.fields[layer.name] = extra
        if layer.blobs:
            where = f"{path}: layer {layer.name!r}"
            weights[layer.name] = [
                blob_to_array(b, f"{where} blob {i}") for i, b in enumerate(layer.blobs)
            ]
    return weights


def read_blobproto(path: str | Path) -> np.ndarray:
    """Read a ``.binaryproto`` file (one BlobProto, e.g. a mean image) as a float32 array."""
    raw = _read_bytes(path, "binaryproto")
    blob = _schema.blob_class()()
    try:
        blob.ParseFromString(raw)
    except (pb_message.DecodeError, RuntimeError, ValueError) as err:
        raise ModelFormatError(f"{path} is not a valid .binaryproto blob: {err}") from err
    return blob_to_array(blob, str(path))


def blob_to_array(blob: Any, where: str) -> np.ndarray:
    """Convert a BlobProto to a float32 array, checking the declared shape against the data."""
    legacy = any(blob.HasField(f) for f in ("num", "channels", "height", "width"))
    shape = (
        (blob.num, blob.channels, blob.height, blob.width) if legacy else tuple(blob.shape.dim)
    )
    if any(d < 0 for d in shape):
        raise ModelFormatError(f"{where}: negative dimension in shape {shape}")
    count = math.prod(shape)
    if count > MAX_ELEMENTS:
        raise ModelFormatError(
            f"{where}: shape {shape} declares {count} elements (limit {MAX_ELEMENTS})"
        )
    data = _blob_data(blob, where)
    if data.size != count:
        raise ModelFormatError(
            f"{where}: shape {shape} needs {count} values but the blob holds {data.size}; "
            "the file is corrupt or truncated"
        )
    return data.reshape(shape)


def _blob_data(blob: Any, where: str) -> np.ndarray:
    if len(blob.double_data):
        return np.asarray(blob.double_data, dtype=np.float64).astype(np.float32)
    if blob.HasField("raw_data"):
        dtypes = {0: "<f8", 1: "<f4", 2: "<f2"}
        if blob.raw_data_type not in dtypes:
            raise ModelFormatError(f"{where}: raw_data of type {blob.raw_data_type} unsupported")
        dtype = np.dtype(dtypes[blob.raw_data_type])
        if len(blob.raw_data) % dtype.itemsize:
            raise ModelFormatError(f"{where}: raw_data length is not a whole number of values")
        return np.frombuffer(blob.raw_data, dtype=dtype).astype(np.float32)
    return np.asarray(blob.data, dtype=np.float32)


# ---------------------------------------------------------------- V1 -> V2 normalisation


def _v2_layers(msg: Any, path: str) -> list[Any]:
    if msg.layer and msg.layers:
        raise ModelFormatError(
            f"{path} mixes current 'layer' and legacy 'layers' entries; Caffe refuses such nets"
        )
    if msg.layer:
        return list(msg.layer)
    if msg.layers:
        return [_upgrade_v1(v1, type(msg.layer.add())) for v1 in msg.layers]
    if not msg.input:
        raise ModelFormatError(
            f"{path} defines no layers; is it a Caffe net definition (e.g. deploy.prototxt), "
            "not a solver or another file?"
        )
    return []


def _upgrade_v1(v1: Any, layer_cls: Any) -> Any:
    layer = layer_cls()
    layer.name = v1.name
    enum = v1.DESCRIPTOR.fields_by_name["type"].enum_type
    type_name = enum.values_by_number[v1.type].name if v1.type in enum.values_by_number else ""
    layer.type = _schema.V1_TYPES.get(type_name, type_name)
    layer.bottom.extend(v1.bottom)
    layer.top.extend(v1.top)
    layer.blobs.extend(v1.blobs)
    layer.loss_weight.extend(v1.loss_weight)
    for i in range(max(len(v1.blobs_lr), len(v1.weight_decay))):  # Caffe's upgrade
        spec = layer.param.add()
        if i < len(v1.blobs_lr):
            spec.lr_mult = v1.blobs_lr[i]
        if i < len(v1.weight_decay):
            spec.decay_mult = v1.weight_decay[i]
    for rule in v1.include:
        layer.include.add().CopyFrom(rule)
    for rule in v1.exclude:
        layer.exclude.add().CopyFrom(rule)
    for fd, value in v1.ListFields():
        if fd.name.endswith("_param") and fd.name in layer.DESCRIPTOR.fields_by_name:
            getattr(layer, fd.name).CopyFrom(value)
    return layer


# ---------------------------------------------------------------- inputs and phases


def _check_dims(dims: list[int], where: str) -> list[int]:
    if any(d < 0 for d in dims):
        raise ModelFormatError(f"{where}: negative dimension in input shape {dims}")
    if math.prod(dims) > MAX_ELEMENTS:
        raise ModelFormatError(f"{where}: input shape {dims} is absurdly large")
    return [int(d) for d in dims]


def _collect_legacy_inputs(msg: Any, spec: NetSpec) -> None:
    names = list(msg.input)
    if msg.input_dim and len(msg.input_dim) != 4 * len(names):
        raise ModelFormatError(
            f"{spec.path}: {len(names)} input(s) need {4 * len(names)} input_dim values, "
            f"got {len(msg.input_dim)}"
        )
    if msg.input_shape and len(msg.input_shape) not in (1, len(names)):
        raise ModelFormatError(
            f"{spec.path}: {len(names)} input(s) but {len(msg.input_shape)} input_shape entries"
        )
    for i, name in enumerate(names):
        dims: list[int] | None = None
        if msg.input_dim:
            dims = list(msg.input_dim[4 * i : 4 * i + 4])
        elif msg.input_shape:
            dims = list(msg.input_shape[min(i, len(msg.input_shape) - 1)].dim)
        spec.inputs[name] = None if dims is None else _check_dims(dims, f"input {name!r}")


def _rule_met(rule: Any, phase: int, level: int, stages: set[str]) -> bool:
    if rule.HasField("phase") and rule.phase != phase:
        return False
    if rule.HasField("min_level") and level < rule.min_level:
        return False
    if rule.HasField("max_level") and level > rule.max_level:
        return False
    if any(s not in stages for s in rule.stage):
        return False
    return not any(s in stages for s in rule.not_stage)


def _included(layer: Any, phase_name: str, msg: Any) -> bool:
    """Caffe's ``Net::StateMeetsRule`` logic (include wins over exclude)."""
    phases = {"TRAIN": 0, "TEST": 1}
    if phase_name.upper() not in phases:
        raise ValueError(f"phase must be 'TRAIN' or 'TEST', got {phase_name!r}")
    phase = phases[phase_name.upper()]
    level = msg.state.level if msg.HasField("state") else 0
    stages = set(msg.state.stage) if msg.HasField("state") else set()
    included = len(layer.include) == 0
    for rule in layer.exclude:
        if _rule_met(rule, phase, level, stages):
            included = False
    for rule in layer.include:
        if _rule_met(rule, phase, level, stages):
            included = True
    return included


def input_layer_shapes(layer: Any) -> list[list[int] | None]:
    """Shapes declared by an ``Input`` layer, one per top."""
    shapes = [list(s.dim) for s in layer.input_param.shape]
    tops = list(layer.top)
    if len(shapes) not in (0, 1, len(tops)):
        raise ModelFormatError(
            f"Input layer {layer.name!r} has {len(tops)} tops but {len(shapes)} shapes"
        )
    out: list[list[int] | None] = []
    for i, top in enumerate(tops):
        dims = shapes[min(i, len(shapes) - 1)] if shapes else None
        out.append(None if dims is None else _check_dims(dims, f"input {top!r}"))
    return out
