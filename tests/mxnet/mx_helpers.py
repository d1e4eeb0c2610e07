"""Shared helpers of the MXNet importer tests (fixtures made by tools/make_mxnet_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures"
NETS = ["conv_ops", "act_ops", "pool_ops", "math_ops", "shape_ops", "head_ops", "resnet",
        "inception", "gluon", "zoo_ops",
        "retinaface_like"]


def load_io(name: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The input and the per-node reference outputs of fixture net ``name``."""
    with np.load(FIXTURES / f"{name}-io.npz", allow_pickle=False) as data:
        outputs = {k: data[k] for k in data.files}
    return outputs.pop("__input__data"), outputs

