"""Head2ToeRepurposer: group-lasso selection, the refit, saving and errors.

The generic contract checks run in tests/test_common.py (registered as "head2toe").
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose as rp
from repurpose.repurposers._head2toe import group_lasso_scores


def _features(seed=0, informative=(("fc7", 5), ("fc6", 1))):
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1, 2], 20)
    feats = {"fc6": rng.normal(size=(60, 8)), "fc7": rng.normal(size=(60, 12))}
    for layer, j in informative:
        feats[layer][:, j] += 3 * y
    return feats, y


def test_group_lasso_ranks_the_informative_features_first():
    feats, y = _features()
    x = np.concatenate([feats["fc6"], feats["fc7"]], axis=1)
    x = (x - x.mean(0)) / x.std(0)
    scores = group_lasso_scores(x, y, 3, alpha=0.3, n_iter=300)
    assert set(np.argsort(-scores)[:2]) == {1, 8 + 5}
    # a strong penalty removes most features exactly
    assert (scores == 0).sum() >= 10


def test_alpha_one_removes_every_feature():
    feats, y = _features()
    x = feats["fc7"] / feats["fc7"].std(0)
    np.testing.assert_allclose(group_lasso_scores(x, y, 3, alpha=1.0, n_iter=100), 0.0,
                               atol=1e-12)


def test_selection_maps_back_to_layers_and_predicts():
    feats, y = _features()
    rep = rp.Head2ToeRepurposer(keep=2, progress=False).fit_features(feats, y)
    assert {k: v.tolist() for k, v in rep.selection_.items()} == {"fc6": [1], "fc7": [5]}
    assert rep.selected_.tolist() == [1, 8 + 5]
    assert rep.model_.coef_.shape == (3, 2)
    assert (rep.predict_features(feats) == y).mean() > 0.9


@settings(max_examples=25, deadline=None)
@given(keep=st.one_of(st.floats(0.01, 1.0), st.integers(1, 40)))
def test_the_number_kept_follows_keep(keep):
    feats, y = _features()
    rep = rp.Head2ToeRepurposer(keep=keep, n_iter=5, progress=False).fit_features(feats, y)
    total = 20
    expected = min(keep, total) if isinstance(keep, int) else max(1, round(keep * total))
    assert len(rep.selected_) == expected == sum(len(v) for v in rep.selection_.values())
    assert len(np.unique(rep.selected_)) == expected


def test_save_and_load_predict_the_same(tmp_path):
    feats, y = _features()
    rep = rp.Head2ToeRepurposer(keep=0.25, progress=False).fit_features(feats, y)
    rep.save(tmp_path / "h2t", include_handler=False)
    loaded = rp.load(tmp_path / "h2t")
    assert isinstance(loaded, rp.Head2ToeRepurposer)
    np.testing.assert_array_equal(loaded.selected_, rep.selected_)
    np.testing.assert_allclose(loaded.predict_proba_features(feats),
                               rep.predict_proba_features(feats))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"keep": 0.0}, r"keep=0.0; expected a number in \(0, 1\]"),
        ({"keep": 1.5}, r"keep=1.5; expected a number in \(0, 1\]"),
        ({"alpha": 1.0}, r"alpha=1.0; expected a number in \[0, 1\)"),
        ({"C": -1.0}, r"C=-1.0; expected a number in \(0, inf\)"),
        ({"n_iter": 0}, "n_iter=0; expected an integer >= 1"),
    ],
)
def test_bad_parameters_are_named(options, message):
    feats, y = _features()
    with pytest.raises(ValueError, match=message):
        rp.Head2ToeRepurposer(progress=False, **options).fit_features(feats, y)
