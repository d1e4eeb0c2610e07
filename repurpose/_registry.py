"""One registry of converters, shared by every importer (Caffe layers, MXNet and ONNX ops).

Each importer keeps its own public ``register_*`` function with its own docstring; they all
store converters here, so the rules (one converter per name, the same refusal wording) are
written once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

__all__ = ["ConverterRegistry"]

F = TypeVar("F", bound=Callable[..., object])


class ConverterRegistry(Generic[F]):
    """Converters by name, for one source format.

    Parameters
    ----------
    kind : str
        How a name is described in messages, e.g. ``"MXNet op"``.
    hint : str, optional
        Appended to the refusal of a second converter for one name.

    Examples
    --------
    >>> registry = ConverterRegistry("Toy op", hint="choose another name")
    >>> registry.add("Relu", print)
    <built-in function print>
    >>> "Relu" in registry, registry.names()
    (True, ['Relu'])
    >>> registry.add("Relu", print)
    Traceback (most recent call last):
    ...
    ValueError: Toy op 'Relu' already has a converter; choose another name
    """

    def __init__(self, kind: str, hint: str = "") -> None:
        self.kind = kind
        self.hint = hint
        self._converters: dict[str, F] = {}

    def add(self, name: str, converter: F) -> F:
        """Store ``converter`` under ``name``; refuse a name that already has one."""
        if name in self._converters:
            hint = f"; {self.hint}" if self.hint else ""
            raise ValueError(f"{self.kind} {name!r} already has a converter{hint}")
        self._converters[name] = converter
        return converter

    def register(self, name: str, converter: F | None = None) -> Callable[[F], F] | None:
        """``add`` as a decorator when ``converter`` is omitted; else add it and return None."""
        if converter is None:
            return lambda func: self.add(name, func)
        self.add(name, converter)
        return None

    def __contains__(self, name: object) -> bool:
        return name in self._converters

    def __getitem__(self, name: str) -> F:
        return self._converters[name]

    def __delitem__(self, name: str) -> None:
        del self._converters[name]

    def get(self, name: str) -> F | None:
        """The converter for ``name``, or None."""
        return self._converters.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._converters)

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._converters)
