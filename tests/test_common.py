"""The repurposer contract checks, run on every registered repurposer (later ones too)."""

from __future__ import annotations

import pytest

import repurpose as rp
from repurpose.repurposers import get_repurposer_class
from repurpose.testing import check_repurposer, tiny_problem


@pytest.fixture(scope="module")
def problem():
    return tiny_problem()


@pytest.mark.parametrize("name", rp.list_repurposers())
def test_registered_repurposer_meets_the_contract(name, problem):
    cls = get_repurposer_class(name)
    if cls._test_instance(problem.handler) is None:
        pytest.skip(f"{name} opts out of the generic checks (see its _test_instance)")
    check_repurposer(cls._test_instance, problem)


def test_check_repurposer_catches_a_broken_repurposer(problem):
    class Broken(rp.LogisticRegressionRepurposer):
        def _predict_proba_features(self, features):
            return super()._predict_proba_features(features) * 0.5  # rows sum to 0.5

    with pytest.raises(AssertionError, match="sum to 1"):
        check_repurposer(lambda h: Broken(h, ["fc7"], progress=False), problem)
