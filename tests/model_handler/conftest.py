"""Fixtures of the ModelHandler tests."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from mh_models import Inception, ResNetLike, make_chain, make_graph, make_resnet
from torch import nn

from repurpose.graph import GraphNet


@pytest.fixture
def images() -> np.ndarray:
    return np.random.default_rng(0).random((10, 3, 6, 6), dtype=np.float32)


@pytest.fixture
def chain() -> nn.Sequential:
    return make_chain()


@pytest.fixture
def resnet() -> ResNetLike:
    return make_resnet()


@pytest.fixture
def graph() -> GraphNet:
    return make_graph()


@pytest.fixture
def inception() -> Inception:
    torch.manual_seed(0)
    return Inception().eval()

