"""The ``torch.nn`` graph op: a standard ``torch.nn`` layer rebuilt from its class name and
constructor arguments, for plain torch modules converted into a graph.

Only the classes in :data:`TORCH_LAYERS` can be built, so a saved graph names a class and
JSON arguments, and loading it runs no code from the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from repurpose.graph._graph import register_op

__all__ = ["TORCH_LAYERS", "torch_layer", "Reshape"]

TORCH_LAYERS = frozenset({
    "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
    "Linear", "Bilinear", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "LayerNorm", "GroupNorm",
    "InstanceNorm1d", "InstanceNorm2d", "LocalResponseNorm", "ReLU", "ReLU6", "LeakyReLU",
    "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish", "Hardswish", "Hardsigmoid",
    "Hardtanh", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Softplus", "Softsign",
    "MaxPool1d", "MaxPool2d", "MaxPool3d", "AvgPool1d", "AvgPool2d", "AvgPool3d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveAvgPool3d", "AdaptiveMaxPool1d",
    "AdaptiveMaxPool2d", "Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout",
    "Flatten", "Unflatten", "Identity", "Upsample", "UpsamplingNearest2d",
    "UpsamplingBilinear2d", "ZeroPad2d", "ConstantPad2d", "ReflectionPad2d",
    "ReplicationPad2d", "PixelShuffle", "PixelUnshuffle", "ChannelShuffle", "Embedding",
})


@register_op("torch.nn")
def torch_layer(type: str, kwargs: dict[str, Any] | None = None) -> nn.Module:  # noqa: A002
    """Build ``torch.nn.<type>(**kwargs)`` for a class in :data:`TORCH_LAYERS`."""
    if type not in TORCH_LAYERS:
        raise ValueError(f"torch.nn.{type} is not a layer that graphs may hold; allowed: "
                         f"{', '.join(sorted(TORCH_LAYERS))}")
    return getattr(nn, type)(**(kwargs or {}))


@register_op("reshape")
class Reshape(nn.Module):
    """Reshape to ``shape``: ``0`` keeps the input's size on that axis (the batch, usually),
    ``-1`` is inferred (ONNX ``Reshape`` semantics)."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = [int(d) for d in shape]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape)]
        return x.reshape(shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
