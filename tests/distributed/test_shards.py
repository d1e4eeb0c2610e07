"""Sharded extraction (`extract(..., out=, shard=)`) and `merge_features`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from torch import nn

import repurpose as rp
from repurpose.model_handler._shards import shard_bounds


@given(n=st.integers(0, 500), count=st.integers(1, 40))
def test_shards_partition_the_rows_in_order(n: int, count: int) -> None:
    bounds = [shard_bounds(n, i, count) for i in range(count)]
    rows = [r for start, stop in bounds for r in range(start, stop)]
    assert rows == list(range(n))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1


def _handler() -> rp.ModelHandler:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    return rp.ModelHandler(net, preprocess=rp.Preprocess(resize=(8, 8)))


@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 23), count=st.integers(1, 6))
def test_merged_shards_equal_one_run(tmp_path_factory: pytest.TempPathFactory, n: int,
                                     count: int) -> None:
    handler = _handler()
    x = np.random.default_rng(n).normal(size=(n, 3, 8, 8)).astype(np.float32)
    out = tmp_path_factory.mktemp("shards")
    for i in range(count):
        handler.extract(x, ["0", "3"], out=out, shard=(i, count), batch_size=4, progress=False)
    merged = rp.merge_features(out)
    whole = handler.extract(x, ["0", "3"], batch_size=4, progress=False)
    for name in whole:
        np.testing.assert_allclose(merged[name], whole[name], rtol=1e-6, atol=1e-6)


def test_image_folder_shards_keep_labels(tmp_path: Path) -> None:
    for cls, count in (("cat", 3), ("dog", 4)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for k in range(count):
            Image.new("RGB", (10, 9), (40 * k, 20, 200)).save(tmp_path / "imgs" / cls / f"{k}.png")
    handler, folder = _handler(), str(tmp_path / "imgs")
    for i in range(3):
        handler.extract(folder, ["3"], out=tmp_path / "f", shard=(i, 3), progress=False)
    merged, labels = rp.merge_features(tmp_path / "f", return_labels=True)
    whole, whole_labels = handler.extract(folder, ["3"], progress=False, return_labels=True)
    np.testing.assert_allclose(merged["3"], whole["3"], rtol=1e-6, atol=1e-6)
    assert labels is not None and whole_labels is not None
    assert labels.tolist() == whole_labels.tolist()


def test_bad_shard_arguments_and_missing_shards(tmp_path: Path) -> None:
    handler, x = _handler(), np.zeros((5, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"shard=\(2, 2\); give \(index, count\)"):
        handler.extract(x, ["0"], out=tmp_path, shard=(2, 2), progress=False)
    with pytest.raises(ValueError, match="give out=<directory>"):
        handler.extract(x, ["0"], shard=(0, 2), progress=False)
    handler.extract(x, ["0"], out=tmp_path / "a", shard=(0, 3), progress=False)
    with pytest.raises(ValueError, match=r"lacks shard\(s\) \[1, 2\] of 3"):
        rp.merge_features(tmp_path / "a")
    with pytest.raises(ValueError, match="no finished shards"):
        rp.merge_features(tmp_path)
