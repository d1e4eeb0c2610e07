"""Schema-free decoding of layer parameters, so fork layers keep fields the schema lacks.

Text prototxt: every ``layer { ... }`` block is parsed without a schema into plain Python
(dicts, lists, numbers, strings, booleans; enum names stay strings). Binary caffemodel:
the fields of each ``LayerParameter`` the schema lacks, by field number.
"""

from __future__ import annotations

import re
import struct
from typing import Any

from google.protobuf import message as pb_message
from google.protobuf.unknown_fields import UnknownFieldSet

from repurpose._exceptions import ModelFormatError

__all__ = ["layer_blocks", "parse_message", "unknown_fields", "STRUCTURAL"]

# LayerParameter fields that are the net's wiring, not the layer's parameters
STRUCTURAL = frozenset({"name", "type", "bottom", "top", "phase", "loss_weight", "param",
                        "blobs", "propagate_down", "include", "exclude"})

_TOKEN = re.compile(
    r"""\s+|\#[^\n]*"""                          # blanks, comments
    r"""|"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'"""   # strings
    r"""|[{}:<>\[\],;]|[^\s{}:<>\[\],;"'\#]+"""     # punctuation, words
)
_CLOSE = {"{": "}", "<": ">"}


def _tokens(text: str) -> list[str]:
    return [t for t in _TOKEN.findall(text) if t.strip() and not t.startswith("#")]


def _scalar(tok: str) -> Any:
    if tok[0] in "\"'":
        return bytes(tok[1:-1], "utf-8").decode("unicode_escape")
    low = tok.lower()
    if low in ("true", "t"):
        return True
    if low in ("false", "f"):
        return False
    try:
        return int(tok, 0)
    except ValueError:
        pass
    try:
        return float(tok[:-1] if low.endswith("f") and not low.endswith("inf") else tok)
    except ValueError:
        return tok  # an enum name


class _Reader:
    def __init__(self, tokens: list[str], path: str) -> None:
        self.toks, self.i, self.path = tokens, 0, path

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise ModelFormatError(f"{self.path}: prototxt ends inside a message")
        self.i += 1
        return tok

    def message(self, close: str | None) -> list[tuple[str, Any]]:
        fields: list[tuple[str, Any]] = []
        while (tok := self.peek()) != close:
            if tok is None:
                raise ModelFormatError(f"{self.path}: prototxt ends inside a message")
            name = self.take()
            if self.peek() == ":":
                self.take()
            fields.extend((name, v) for v in self.values())
            if self.peek() in (",", ";"):
                self.take()
        if close is not None:
            self.take()
        return fields

    def values(self) -> list[Any]:
        tok = self.take()
        if tok in _CLOSE:
            return [self.message(_CLOSE[tok])]
        if tok == "[":
            out: list[Any] = []
            while self.peek() != "]":
                out.extend(self.values())
                if self.peek() == ",":
                    self.take()
            self.take()
            return out
        return [_scalar(tok)]


def parse_message(text: str, path: str = "prototxt") -> dict[str, Any]:
    """A whole text-format message (e.g. a solver) as a mapping, without a schema."""
    return _mapping(_Reader(_tokens(text), path).message(None))


def layer_blocks(text: str, path: str = "prototxt") -> list[dict[str, Any]]:
    """The parameters of every ``layer``/``layers`` block of a prototxt, in file order."""
    fields = _Reader(_tokens(text), path).message(None)
    blocks = []
    for name, value in fields:
        if name in ("layer", "layers") and isinstance(value, list):
            block = [(k, v) for k, v in value if k not in STRUCTURAL]
            blocks.append(_mapping(block))
    return blocks


def _mapping(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """Pairs to a dict: a field given once is a value, given several times a list."""
    out: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for name, _ in fields:
        counts[name] = counts.get(name, 0) + 1
    for name, value in fields:
        value = _mapping(value) if isinstance(value, list) else value
        if counts[name] > 1:
            out.setdefault(name, []).append(value)
        else:
            out[name] = value
    return out


# ------------------------------------------------------------------ binary


def _decode(wire_type: int, data: Any, depth: int) -> Any:
    if wire_type == 0:
        return int(data)
    if wire_type == 5:
        return struct.unpack("<f", struct.pack("<I", data))[0]
    if wire_type == 1:
        return struct.unpack("<d", struct.pack("<Q", data))[0]
    if wire_type == 3:
        return _fields(data, depth + 1)
    raw = bytes(data)
    try:
        text = raw.decode("utf-8")
        if text.isprintable():
            return text
    except UnicodeDecodeError:
        pass
    if depth < 8:
        from google.protobuf import empty_pb2

        msg = empty_pb2.Empty()
        try:
            msg.ParseFromString(raw)
            return _fields(UnknownFieldSet(msg), depth + 1)
        except (pb_message.DecodeError, RuntimeError, ValueError):
            pass
    return raw


def _fields(fields: Any, depth: int) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for f in fields:
        value = _decode(f.wire_type, f.data, depth)
        if f.field_number in out:
            prev = out[f.field_number]
            out[f.field_number] = (prev if isinstance(prev, list) else [prev]) + [value]
        else:
            out[f.field_number] = value
    return out


def unknown_fields(msg: Any) -> dict[int, Any]:
    """Fields of a parsed message its schema lacks, by number, decoded as far as the wire
    format allows (varint: int, 32-bit: float, 64-bit: double, bytes: text, nested
    fields or bytes)."""
    return _fields(UnknownFieldSet(msg), 0)
