"""The layering of the package (docs/architecture.md), enforced on every import.

Every module under ``repurpose/`` is parsed with ``ast``; every ``repurpose.*`` import in it,
including lazy imports inside functions and ``TYPE_CHECKING`` blocks, is mapped to the
component it reaches. A module may import its own component and components of strictly
lower layers, nothing else: no upward imports, and no sideways imports between components
of one layer (the Caffe importer never imports the MXNet one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "repurpose"

# (layer, component, module prefixes). A prefix ending in "." covers a package's submodules
# only; "=" marks one exact module. Keep this table and docs/architecture.md in step.
LAYERS: list[tuple[int, str, tuple[str, ...]]] = [
    (0, "base", ("=repurpose._exceptions", "=repurpose._validation", "=repurpose._version",
                 "=repurpose._header", "=repurpose._registry", "=repurpose._compare",
                 "=repurpose._memory",
                 "=repurpose.metrics")),
    (1, "graph", ("=repurpose.graph", "repurpose.graph.")),
    (1, "preprocess", ("=repurpose._preprocess",)),
    (1, "transferability", ("=repurpose.transferability", "repurpose.transferability.")),
    (2, "imported", ("=repurpose._imported",)),
    (3, "caffe importer", ("repurpose.caffe.",)),
    (3, "mxnet importer", ("repurpose.mxnet.",)),
    (3, "onnx importer", ("repurpose.onnx.",)),
    (3, "datasets", ("=repurpose.datasets", "repurpose.datasets.")),
    (4, "model_handler", ("=repurpose.model_handler", "repurpose.model_handler.")),
    (5, "repurposers", ("=repurpose.repurposers", "repurpose.repurposers.")),
    (6, "caffe public face", ("=repurpose.caffe",)),
    (6, "mxnet public face", ("=repurpose.mxnet",)),
    (6, "onnx public face", ("=repurpose.onnx",)),
    (6, "plot", ("=repurpose.plot", "repurpose.plot.")),
    (6, "demo", ("=repurpose.demo",)),
    (6, "testing", ("=repurpose.testing",)),
    (6, "distributed", ("=repurpose.distributed", "repurpose.distributed.")),
    (7, "cli", ("=repurpose.cli", "repurpose.cli.", "=repurpose.__main__")),
    (7, "package", ("=repurpose",)),
]


def component_of(module: str) -> tuple[int, str]:
    """``(layer, component)`` of a dotted module name; KeyError when it has none."""
    for layer, name, prefixes in LAYERS:
        for prefix in prefixes:
            if prefix.startswith("="):
                if module == prefix[1:]:
                    return layer, name
            elif module.startswith(prefix):
                return layer, name
    raise KeyError(module)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(dotted: str) -> bool:
    base = ROOT.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """``(line, module)`` for every ``repurpose`` module the source imports, anywhere in it.

    ``from a import b`` counts as importing ``a.b`` when that is a module, else ``a``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                target = f"{base}.{alias.name}"
                found.append((node.lineno, target if _is_module(target) else base))
    return [(line, name) for line, name in found
            if name == "repurpose" or name.startswith("repurpose.")]


def violations(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports of ``source`` (the text of ``module``) that break the layering."""
    layer, component = component_of(module)
    out = []
    for line, target in imported_modules(source, module, is_package):
        t_layer, t_component = component_of(target)
        if t_component != component and t_layer >= layer:
            out.append(f"{module}:{line} imports {target} ({t_component}, layer {t_layer}) "
                       f"from {component} (layer {layer})")
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    unmapped = []
    for path in MODULES:
        try:
            component_of(module_name(path))
        except KeyError:
            unmapped.append(module_name(path))
    assert not unmapped, (f"modules with no layer: {unmapped}; add them to LAYERS here and "
                          "to docs/architecture.md")


@pytest.mark.parametrize("path", MODULES, ids=module_name)
def test_imports_follow_the_layers(path):
    found = violations(path.read_text(), module_name(path), path.name == "__init__.py")
    assert not found, "\n".join(found)


@pytest.mark.parametrize(("module", "source", "broken"), [
    ("repurpose.caffe._api", "from repurpose.model_handler import ModelHandler", True),
    ("repurpose.caffe._api", "def f():\n    from repurpose.model_handler import X\n", True),
    ("repurpose.caffe._api", "import repurpose.mxnet._convert", True),
    ("repurpose.caffe._api", "from repurpose import mxnet", True),
    ("repurpose.model_handler._x", "from repurpose.caffe import handler_from_caffe", True),
    ("repurpose.graph._graph", "from .. import _preprocess", True),
    ("repurpose.repurposers._x", "from repurpose import ModelHandler", True),
    ("repurpose.caffe._api", "from repurpose.caffe import _parse\nfrom repurpose import graph",
     False),
    ("repurpose.model_handler._x", "from repurpose.caffe._api import import_model", False),
    ("repurpose.caffe", "from repurpose.model_handler._importers import handler_from_caffe",
     False),
])
def test_the_checker_catches_upward_and_sideways_imports(module, source, broken):
    assert bool(violations(source, module)) is broken


def test_architecture_doc_names_every_component():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [prefix.lstrip("=").rstrip(".") for _, _, prefixes in LAYERS for prefix in prefixes
               if f"`{prefix.lstrip('=').rstrip('.')}" not in doc]
    assert not missing, f"docs/architecture.md does not mention {missing}"
