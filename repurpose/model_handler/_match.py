"""The one layer-name matcher, used by the handler and every repurposer.

A pattern is an exact layer name, a *container* name, or an fnmatch glob; never a
substring (``"conv1"`` does not match ``"conv10"``). A container is a qualified name above
the layers: a dotted prefix of layer names (``"layer4"`` or ``"layer4.1"`` for
``"layer4.1.conv2"``), or a module that holds layers. It stands for the whole block.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Iterable, Mapping, Sequence

from repurpose._exceptions import LayerNotFoundError

__all__ = ["containers_of", "select", "match_layers", "not_found"]

_GLOB = frozenset("*?[")


def containers_of(names: Sequence[str], modules: Iterable[str] = ()) -> dict[str, list[str]]:
    """``{container: its layers, in order}`` for every dotted prefix of ``names``.

    ``modules`` adds module names that are not layers (a container whose layers never run
    has no members).
    """
    layers = set(names)
    out: dict[str, list[str]] = {}
    for name in names:
        parts = name.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix not in layers:
                out.setdefault(prefix, []).append(name)
    for module in modules:
        if module and module not in layers:
            out.setdefault(module, [])
    return out


def select(patterns: str | Iterable[str], names: Sequence[str],
           containers: Mapping[str, Sequence[str]], what: str = "layer") -> list[str]:
    """Match ``patterns`` against layer and container names, in the order asked.

    Exact and container names come back as given (a container stays one name: the block);
    globs expand to the layers they match, in execution order.

    Raises
    ------
    LayerNotFoundError
        A pattern matches nothing; the message shows the closest names.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    layers = set(names)
    found: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"{what} names must be strings, got {pattern!r}")
        if pattern in layers or pattern in containers:
            matched = [pattern]
        elif _GLOB & set(pattern):
            matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if not matched:
                raise LayerNotFoundError(
                    f"{what} pattern {pattern!r} matches no layer; see ModelHandler.layer_names"
                )
        else:
            raise not_found(pattern, [*names, *containers], what)
        found.extend(m for m in matched if m not in found)
    return found


def match_layers(patterns: str | Iterable[str], names: Sequence[str],
                 what: str = "layer") -> list[str]:
    """The names in ``names`` that ``patterns`` select, containers expanded, in order.

    Parameters
    ----------
    patterns : str or iterable of str
        Exact names, container names (``"layer1"``: every name below it) or fnmatch globs
        (``"layer1.*"``). Never substrings.
    names : sequence of str
        The available names, in order; the result keeps this order.
    what : str
        What a pattern is, for the error message (``"fixed_layers entry"``).

    Raises
    ------
    LayerNotFoundError
        A pattern matches nothing. The message lists the closest names.

    Examples
    --------
    >>> names = ["conv1", "conv10", "layer1.0.conv1", "layer1.0.relu", "fc"]
    >>> match_layers(["conv1", "layer1"], names)
    ['conv1', 'layer1.0.conv1', 'layer1.0.relu']
    >>> match_layers("conv1*", names)
    ['conv1', 'conv10']
    """
    containers = containers_of(names)
    chosen: set[str] = set()
    for name in select(patterns, names, containers, what):
        chosen.update(containers.get(name) or [name])
    return [n for n in names if n in chosen]


def not_found(name: str, names: Sequence[str], what: str = "layer") -> LayerNotFoundError:
    """A LayerNotFoundError naming ``name`` and the closest of ``names``."""
    close = difflib.get_close_matches(name, list(names), n=3, cutoff=0.5)
    if close:
        hint = f"closest: {', '.join(close)}"
    else:
        hint = f"available: {', '.join(list(names)[:5])}{', ...' if len(names) > 5 else ''}"
    return LayerNotFoundError(
        f"{what} {name!r} not found; {hint}. Layers are matched by exact name, container "
        "name or glob. See ModelHandler.layer_names"
    )
