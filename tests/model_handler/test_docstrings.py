"""The Examples sections of the public docstrings run."""

import doctest

import pytest

from repurpose import _imported, _preprocess
from repurpose.model_handler import _data, _handler


@pytest.mark.parametrize("module", [_data, _handler, _preprocess, _imported],
                         ids=lambda m: m.__name__)
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
