"""Reader for MXNet symbol JSON (current ``attrs``, older ``attr``, pre-nnvm ``param``).

All MXNet attribute values are strings (``"(3, 3)"``, ``"True"``, ``"1e-05"``, ``"None"``);
:class:`Attrs` parses them on demand, with the operator's default for absent keys.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from repurpose._exceptions import ModelFormatError

__all__ = ["Attrs", "MXNode", "Symbol", "load_symbol", "parse_symbol"]

_MAX_NODES = 1_000_000


class Attrs(Mapping[str, str]):
    """The string attributes of one MXNet node, with typed getters.

    Each getter returns ``default`` when the key is absent (MXNet stores only explicitly
    set attributes) and raises :class:`ModelFormatError` naming the node when a value
    does not parse.
    """

    def __init__(self, values: Mapping[str, str], node: str = "?", op: str = "?") -> None:
        self._values = dict(values)
        self.node = node
        self.op = op

    def __getitem__(self, key: str) -> str:
        return self._values[key]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def _bad(self, key: str, kind: str) -> ModelFormatError:
        return ModelFormatError(
            f"node {self.node!r} ({self.op}): attribute {key}={self._values[key]!r} is not {kind}"
        )

    def _raw(self, key: str) -> str | None:
        value = self._values.get(key)
        if value is None or value.strip() in ("None", ""):
            return None
        return value.strip()

    def as_str(self, key: str, default: Any = None) -> Any:
        value = self._raw(key)
        return default if value is None else value.strip("'\"")

    def as_int(self, key: str, default: Any = None) -> Any:
        value = self._raw(key)
        if value is None:
            return default
        try:
            return int(value)
        except ValueError:
            try:
                as_float = float(value)
            except ValueError:
                raise self._bad(key, "an integer") from None
            if not as_float.is_integer():
                raise self._bad(key, "an integer") from None
            return int(as_float)

    def as_float(self, key: str, default: Any = None) -> Any:
        value = self._raw(key)
        if value is None:
            return default
        try:
            return float(value)
        except ValueError:
            raise self._bad(key, "a number") from None

    def as_bool(self, key: str, default: Any = None) -> Any:
        value = self._raw(key)
        if value is None:
            return default
        low = value.lower()
        if low in ("true", "1"):
            return True
        if low in ("false", "0"):
            return False
        raise self._bad(key, "a boolean (True/False/1/0)")

    def as_tuple(self, key: str, default: Any = None) -> Any:
        """Parse ``"(3, 3)"``, ``"[3,3]"`` or ``"3"``; ``None`` items stay ``None``."""
        value = self._raw(key)
        if value is None:
            return default
        body = value.strip("()[] ")
        items: list[int | None] = []
        for part in body.split(","):
            part = part.strip().rstrip("L")
            if not part:
                continue
            if part == "None":
                items.append(None)
                continue
            try:
                items.append(int(part))
            except ValueError:
                raise self._bad(key, "a tuple of integers") from None
        return tuple(items)


@dataclass
class MXNode:
    """One node of a symbol graph."""

    index: int
    name: str
    op: str
    attrs: Attrs
    inputs: list[tuple[int, int]] = field(default_factory=list)

    @property
    def is_variable(self) -> bool:
        return self.op == "null"


@dataclass
class Symbol:
    """A parsed symbol: nodes in topological order and the graph heads."""

    nodes: list[MXNode]
    heads: list[tuple[int, int]]
    source: str = "<symbol>"
    _by_name: dict[str, MXNode] | None = field(default=None, repr=False)

    def node_by_name(self, name: str) -> MXNode | None:
        """The first node called ``name`` (or None)."""
        if self._by_name is None:
            self._by_name = {}
            for node in self.nodes:
                self._by_name.setdefault(node.name, node)
        return self._by_name.get(name)


def load_symbol(path_or_json: str | Path | Mapping[str, Any]) -> Symbol:
    """Read a symbol from a file path, a JSON string or an already-parsed dict."""
    if isinstance(path_or_json, Mapping):
        return parse_symbol(path_or_json)
    text = str(path_or_json)
    source = "<json string>"
    if text.lstrip()[:1] not in ("{", "["):
        path = Path(path_or_json)
        source = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise ModelFormatError(f"{path}: not a UTF-8 text file; expected symbol JSON") from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelFormatError(f"{source}: not valid JSON ({err}); expected an MXNet "
                               "symbol file such as model-symbol.json") from err
    except RecursionError as err:
        raise ModelFormatError(f"{source}: JSON nested too deeply") from err
    return parse_symbol(doc, source)


def _entry(value: Any, n_nodes: int, where: str, source: str) -> tuple[int, int]:
    if (not isinstance(value, Sequence) or isinstance(value, str) or len(value) not in (2, 3)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ModelFormatError(f"{source}: {where}: bad entry {value!r}; expected "
                               "[node_id, output_index] or [node_id, output_index, version]")
    nid, idx = int(value[0]), int(value[1])
    if not 0 <= nid < n_nodes or not 0 <= idx < 1024:
        raise ModelFormatError(f"{source}: {where}: entry {value!r} refers to a missing node")
    return nid, idx


def _node_attrs(raw: Mapping[str, Any], name: str, op: str, source: str) -> Attrs:
    merged: dict[str, str] = {}
    for key in ("param", "attr", "attrs"):
        block = raw.get(key)
        if block is None:
            continue
        if not isinstance(block, Mapping):
            raise ModelFormatError(f"{source}: node {name!r}: {key!r} must be an object")
        for k, v in block.items():
            merged[str(k)] = v if isinstance(v, str) else json.dumps(v)
    return Attrs(merged, name, op)


def unique_name(name: str, seen: dict[str, int]) -> str:
    """``name``, or ``name#k`` for the k-th later op node of the same name.

    MXNet identifies nodes by position, so one name can label several nodes (a gluon block
    called twice, like Xception's shared ReLU); layer names here must be unique.
    """
    k = seen.get(name, 0)
    seen[name] = k + 1
    return name if k == 0 else f"{name}#{k}"


def parse_symbol(doc: Any, source: str = "<symbol>") -> Symbol:
    """Validate a decoded symbol JSON document and return a :class:`Symbol`."""
    if not isinstance(doc, Mapping) or not isinstance(doc.get("nodes"), list):
        raise ModelFormatError(f"{source}: not an MXNet symbol (no 'nodes' list)")
    raw_nodes = doc["nodes"]
    if not raw_nodes or len(raw_nodes) > _MAX_NODES:
        raise ModelFormatError(f"{source}: the symbol has {len(raw_nodes)} nodes")
    nodes: list[MXNode] = []
    seen: dict[str, int] = {}
    for i, raw in enumerate(raw_nodes):
        if not isinstance(raw, Mapping) or not isinstance(raw.get("op"), str) \
                or not isinstance(raw.get("name"), str):
            raise ModelFormatError(f"{source}: node #{i} lacks a string 'op' and 'name'")
        name, op = raw["name"], raw["op"]
        inputs_raw = raw.get("inputs", [])
        if not isinstance(inputs_raw, list):
            raise ModelFormatError(f"{source}: node {name!r}: 'inputs' must be a list")
        inputs = [_entry(e, len(raw_nodes), f"node {name!r} input", source) for e in inputs_raw]
        later = [nid for nid, _ in inputs if nid >= i]
        if later:
            raise ModelFormatError(f"{source}: node {name!r} reads node #{later[0]}, which "
                                   "comes later; nodes must be in topological order")
        if op == "null" and inputs:
            raise ModelFormatError(f"{source}: variable node {name!r} has inputs")
        attrs = _node_attrs(raw, name, op, source)
        if op != "null":
            name = unique_name(name, seen)
        nodes.append(MXNode(i, name, op, attrs, inputs))
    heads_raw = doc.get("heads")
    if not isinstance(heads_raw, list) or not heads_raw:
        raise ModelFormatError(f"{source}: the symbol has no 'heads' (graph outputs)")
    heads = [_entry(e, len(nodes), "heads", source) for e in heads_raw]
    return Symbol(nodes, heads, source)
