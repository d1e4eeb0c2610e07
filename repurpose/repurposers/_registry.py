"""The repurposer registry: saved repurposers name their class here, never as code."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from repurpose._exceptions import RepurposeError

if TYPE_CHECKING:
    from repurpose.repurposers._base import Repurposer

__all__ = ["register_repurposer", "list_repurposers", "get_repurposer_class"]

_REGISTRY: dict[str, type[Repurposer]] = {}

T = TypeVar("T", bound="type[Repurposer]")


def register_repurposer(name: str) -> Callable[[T], T]:
    """Register a :class:`Repurposer` subclass under ``name`` (a class decorator).

    The name is written into saved repurposers, so :func:`repurpose.load` can find the class
    again without executing anything from the file.

    Parameters
    ----------
    name : str
        A short, unique name such as ``"lr"``.

    Returns
    -------
    callable
        The decorator; it returns the class unchanged (with ``_registry_name`` set).

    Raises
    ------
    RepurposeError
        If ``name`` is already taken by another class.

    Examples
    --------
    >>> import repurpose as rp
    >>> "lr" in rp.list_repurposers()
    True
    """
    if not isinstance(name, str) or not name:
        raise RepurposeError(f"a repurposer name must be a non-empty string, got {name!r}")

    def decorator(cls: T) -> T:
        existing = _REGISTRY.get(name)
        if existing is not None and not _same_class(existing, cls):
            raise RepurposeError(
                f"repurposer name {name!r} is already registered by "
                f"{existing.__module__}.{existing.__qualname__}; choose another name "
                f"(taken: {', '.join(list_repurposers())})"
            )
        _REGISTRY[name] = cls
        cls._registry_name = name
        return cls

    return decorator


def _same_class(a: type, b: type) -> bool:
    # Re-executing a module (importlib.reload, notebooks) re-registers "the same" class.
    return a is b or (a.__module__ == b.__module__ and a.__qualname__ == b.__qualname__)


def list_repurposers() -> list[str]:
    """Return the registered repurposer names, sorted.

    Returns
    -------
    list of str
        For example ``["lr", "mlp", "svm", ...]``.
    """
    return sorted(_REGISTRY)


def get_repurposer_class(name: str) -> type[Repurposer]:
    """Return the class registered under ``name``.

    Raises
    ------
    RepurposeError
        If no class has that name; the message lists the registered names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise RepurposeError(
            f"no repurposer is registered as {name!r}; registered: "
            f"{', '.join(list_repurposers())}. Import the module that defines it first "
            "(custom classes register with @repurpose.register_repurposer)."
        ) from None
