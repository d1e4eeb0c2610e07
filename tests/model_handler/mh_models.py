"""Tiny models shared by the ModelHandler tests (imported by conftest and tests)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from repurpose.graph import GraphNet, Node


class Block(nn.Module):
    """A residual block with functional ops (relu, add)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.conv2(y) + x)


class ResNetLike(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Sequential(Block(4), Block(4))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.layer1(self.stem(x))
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.fc(x)


class Inception(nn.Module):
    """Two parallel branches merged by concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 1)
        self.b1 = nn.Conv2d(4, 2, 1)
        self.b2 = nn.Conv2d(4, 2, 3, padding=1)
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        return self.head(torch.cat([self.b1(x), self.b2(x)], 1))


def make_chain() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(6, 3),
    ).eval()


def make_graph() -> GraphNet:
    nodes = [
        Node("conv1", "conv2d", ("data",), ("c1",),
             {"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1}),
        Node("relu1", "relu", ("c1",), ("r1",)),
        Node("bn1", "batch_norm", ("r1",), ("b1",), {"num_features": 4}),
        Node("sum", "add", ("b1", "c1"), ("s",), {"coeffs": [1.0, -0.5]}),
        Node("fc", "linear", ("s",), ("out",), {"in_features": 4 * 6 * 6, "out_features": 3}),
    ]
    torch.manual_seed(0)
    net = GraphNet(nodes, ["data"], ["out"], {"data": [1, 3, 6, 6]})
    net.bn1.running_mean.uniform_()
    return net.eval()


def make_resnet() -> ResNetLike:
    torch.manual_seed(0)
    net = ResNetLike().eval()
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
    return net


def state_copy(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def same_state(module: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    now = module.state_dict()
    return now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)
