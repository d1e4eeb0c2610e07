"""The serialisable layer graph that imported networks are built from."""

from repurpose.graph import _ops, _torch_ops  # noqa: F401  (register the generic ops)
from repurpose.graph._graph import (
    FORMAT_NAME,
    GraphNet,
    Node,
    build_op,
    list_ops,
    load_graph,
    register_op,
    save_graph,
)
from repurpose.graph._plan import Plan

__all__ = [
    "FORMAT_NAME",
    "GraphNet",
    "Node",
    "Plan",
    "build_op",
    "list_ops",
    "load_graph",
    "register_op",
    "save_graph",
]
