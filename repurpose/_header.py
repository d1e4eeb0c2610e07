"""The versioned JSON header shared by every saved format, written and read in one place.

Every JSON document repurpose writes (``graph.json``, ``handler.json``, a repurposer's
``config.json``) starts with ``{"format": <name>, "format_version": <int>, ...}``. A reader
accepts its own format at any version up to the one it knows, and refuses anything else
with a :class:`~repurpose.ModelFormatError` worded the same way for every format.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from repurpose._exceptions import ModelFormatError
from repurpose._version import __version__

__all__ = ["header", "check_header", "read_json", "read_document"]


def header(name: str, version: int) -> dict[str, Any]:
    """The header fields to put first in a document of format ``name``."""
    return {"format": name, "format_version": int(version)}


def check_header(doc: Any, name: str, version: int, source: str) -> dict[str, Any]:
    """Return ``doc`` if it is a ``name`` document this library can read.

    Parameters
    ----------
    doc : object
        The decoded JSON.
    name : str
        The expected format name (``"repurpose.handler"``).
    version : int
        The newest format version this library reads.
    source : str
        Where the document came from, for the messages (a file name).

    Raises
    ------
    ModelFormatError
        ``doc`` is not a JSON object of format ``name``, or its version is not a whole
        number, or is newer than ``version``.
    """
    found = doc.get("format") if isinstance(doc, Mapping) else None
    if not isinstance(doc, Mapping) or found != name:
        raise ModelFormatError(f"{source} is not a {name} document (format={found!r})")
    raw = doc.get("format_version", 0)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise ModelFormatError(
            f"{source} has format_version={raw!r}; expected a whole number"
        )
    if raw > version:
        raise ModelFormatError(
            f"{source} has format version {raw}, newer than this library ({__version__}) "
            f"reads ({version}); upgrade repurpose"
        )
    return dict(doc)


def read_json(file: Path, missing_hint: str) -> Any:
    """Decode a JSON file; a missing or undecodable file is a :class:`ModelFormatError`.

    ``missing_hint`` completes the message for a missing file ("is it a directory written
    by ModelHandler.save?").
    """
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ModelFormatError(
            f"{str(file.parent)!r} has no {file.name}; {missing_hint}"
        ) from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFormatError(f"{file} is not valid JSON: {err}") from err


def read_document(file: Path, name: str, version: int, missing_hint: str) -> dict[str, Any]:
    """:func:`read_json` then :func:`check_header`."""
    return check_header(read_json(file, missing_hint), name, version, str(file))
