"""repurpose.distributed on a local Ray (2 CPUs): the same numbers as local extract/predict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import repurpose as rp

ray = pytest.importorskip("ray", reason="Ray is a test extra (pip install 'repurpose[ray]')")
from repurpose import distributed  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    yield
    ray.shutdown()


def _handler() -> rp.ModelHandler:
    net = rp.graph.GraphNet(
        [rp.graph.Node("conv", "conv2d", ("data",), ("conv",),
                       {"in_channels": 3, "out_channels": 4, "kernel_size": 3}),
         rp.graph.Node("relu", "relu", ("conv",), ("relu",), {})],
        ["data"], ["relu"], {"data": [1, 3, 8, 8]})
    return rp.ModelHandler(net, preprocess=rp.Preprocess(resize=(8, 8)))


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (root / cls).mkdir(parents=True)
        for k in range(5):
            pixels = rng.integers(0, 255, (9 + k, 11, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / cls / f"{k}.png")
    return root


def test_extract_on_arrays_equals_local(local_ray: None) -> None:
    handler = _handler()
    x = np.random.default_rng(1).normal(size=(10, 3, 8, 8)).astype(np.float32)
    ds = ray.data.from_numpy([x[:5], x[5:]])  # two blocks, one per actor
    rows = distributed.extract(handler, ds, ["conv", "relu"], batch_size=4,
                               num_actors=2).take_all()
    local = handler.extract(x, ["conv", "relu"], progress=False)
    for name in ("conv", "relu"):
        np.testing.assert_allclose(np.stack([r[name] for r in rows]), local[name],
                                   rtol=1e-6, atol=1e-6)


def test_image_folder_and_prediction_equal_local(local_ray: None, tmp_path: Path) -> None:
    handler, folder = _handler(), _folder(tmp_path / "imgs")
    ds = distributed.read_image_folder(folder)
    rows = sorted(distributed.extract(handler, ds, "relu", num_actors=1).take_all(),
                  key=lambda r: r["path"])
    local, labels = handler.extract(str(folder), "relu", progress=False, return_labels=True)
    np.testing.assert_allclose(np.stack([r["relu"] for r in rows]), local["relu"],
                               rtol=1e-5, atol=1e-6)
    assert [r["label"] for r in rows] == ["cat"] * 5 + ["dog"] * 5
    rep = rp.LogisticRegressionRepurposer(handler, feature_layers="relu", progress=False)
    rep.fit(str(folder))
    got = sorted(distributed.predict_proba(rep, ds, num_actors=1).take_all(),
                 key=lambda r: r["path"])
    np.testing.assert_allclose(np.stack([r["proba"] for r in got]),
                               rep.predict_proba(str(folder)), rtol=1e-5, atol=1e-6)
    pred = sorted(distributed.predict(rep, ds, num_actors=1).take_all(),
                  key=lambda r: r["path"])
    assert [r["prediction"] for r in pred] == rep.predict(str(folder)).tolist()


def test_bad_arguments(local_ray: None) -> None:
    ds = ray.data.from_items([{"x": 1.0}])
    with pytest.raises(ValueError, match=r"columns \['x'\]; name the input column"):
        distributed.extract(_handler(), ds, "relu")
    with pytest.raises(ValueError, match="num_actors=0"):
        distributed.extract(_handler(), ds, "relu", column="x", num_actors=0)
