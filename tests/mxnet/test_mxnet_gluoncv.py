"""Real GluonCV model-zoo architectures (exported by gluon from `gluoncv.model_zoo`) against
mxnet 1.9.1: every recorded node output, with seeded weights both sides rebuild
(`repurpose.mxnet._reference.synthetic_params`), since the zoo's weights are too large to
commit. Fixtures: `make mxnet-fixtures` with gluoncv installed in `.venv-mxnet`."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch
from mx_helpers import FIXTURES

import repurpose as rp
from repurpose.mxnet._reference import synthetic_input, synthetic_params

ZOO = FIXTURES / "gluoncv"
MODELS = sorted(p.name[: -len("-symbol.json.gz")] for p in ZOO.glob("*-symbol.json.gz"))
RTOL, ATOL = 1e-4, 1e-4


def _load(name: str) -> tuple[dict, dict[str, np.ndarray], dict[str, np.ndarray]]:
    with gzip.open(ZOO / f"{name}-symbol.json.gz", "rt") as f:
        doc = json.load(f)
    shapes = json.loads((ZOO / f"{name}-shapes.json").read_text())
    with np.load(ZOO / f"{name}-io.npz", allow_pickle=False) as data:
        ref = {k: data[k] for k in data.files}
    return doc, synthetic_params(shapes), ref


def test_the_fixtures_cover_ten_architectures() -> None:
    assert len(MODELS) >= 10, MODELS


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_architecture_matches_mxnet(name: str) -> None:
    doc, params, ref = _load(name)
    shape = tuple(int(d) for d in ref.pop("__input_shape__"))
    net = rp.mxnet.load_net(doc, params)
    x = torch.from_numpy(synthetic_input(shape))
    with torch.no_grad():
        values = net.run({"data": x}, list(ref))
    for key, expected in ref.items():
        got = values[key].numpy().astype(np.float64)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * scale,
                                   err_msg=f"{name}: {key}")


def test_every_gluoncv_op_has_a_converter() -> None:
    used: set[str] = set()
    for name in MODELS:
        with gzip.open(ZOO / f"{name}-symbol.json.gz", "rt") as f:
            used |= {n["op"] for n in json.load(f)["nodes"] if n["op"] != "null"}
    assert used <= set(rp.mxnet.list_supported_ops()), used - set(rp.mxnet.list_supported_ops())
