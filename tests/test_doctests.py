"""Every ``>>>`` example in the package runs (one test per module that has examples)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil
import warnings

import pytest

import repurpose

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules_with_examples() -> list[str]:
    names = [repurpose.__name__] + [
        m.name for m in pkgutil.walk_packages(repurpose.__path__, repurpose.__name__ + ".")
    ]
    out = []
    for name in names:
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        tests = doctest.DocTestFinder(exclude_empty=True).find(module, name)
        if any(t.examples for t in tests if t.name.startswith(name)):
            out.append(name)
    return out


MODULES = _modules_with_examples()


def test_the_search_finds_the_modules_with_examples():
    assert len(MODULES) >= 20
    assert "repurpose.model_handler._data" in MODULES and "repurpose._compare" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_module_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    module = importlib.import_module(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = doctest.testmod(module, optionflags=FLAGS, extraglobs={"rp": repurpose},
                                 verbose=False, report=True)
    assert result.attempted > 0
    assert result.failed == 0, f"{result.failed} example(s) of {name} failed (see stdout)"
