"""The Examples sections of the ONNX and conversion modules run."""

import doctest

import pytest

from repurpose.model_handler import _to_graph
from repurpose.onnx import _convert


@pytest.mark.parametrize("module", [_convert, _to_graph], ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
