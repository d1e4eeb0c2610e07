"""Generic graph ops shared by the importers.

Where a standard torch module does the job it is used as is, so that ``layer_types``,
freezing and BatchNorm handling see ordinary ``nn.Conv2d``, ``nn.Linear`` and
``_BatchNorm`` modules. Framework-specific semantics (Caffe's pooling, MXNet's pooling
conventions, LRN variants) live in the importers' own op modules.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from repurpose.graph._graph import register_op

__all__ = ["FlattenLinear", "AnyBatchNorm", "Concat", "EltwiseSum", "EltwiseProd", "EltwiseMax"]


register_op("identity")(nn.Identity)
register_op("conv2d")(nn.Conv2d)
register_op("conv_transpose2d")(nn.ConvTranspose2d)
register_op("sigmoid")(nn.Sigmoid)
register_op("tanh")(nn.Tanh)
register_op("elu")(nn.ELU)
register_op("prelu")(nn.PReLU)
register_op("dropout")(nn.Dropout)
register_op("flatten")(nn.Flatten)
register_op("softmax")(nn.Softmax)
register_op("log_softmax")(nn.LogSoftmax)


@register_op("relu")
def _relu(negative_slope: float = 0.0) -> nn.Module:
    return nn.ReLU() if negative_slope == 0.0 else nn.LeakyReLU(negative_slope)


@register_op("linear")
class FlattenLinear(nn.Linear):
    """``nn.Linear`` that first flattens every axis from ``axis`` on (Caffe's InnerProduct).

    ``axis=-1`` applies the layer to the last axis only, like ``nn.Linear``.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 axis: int = 1) -> None:
        super().__init__(in_features, out_features, bias)
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis != -1 and x.dim() > self.axis + 1:
            x = torch.flatten(x, self.axis)
        return super().forward(x)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, axis={self.axis}"


@register_op("batch_norm")
class AnyBatchNorm(_BatchNorm):
    """BatchNorm over axis 1 of an input of any rank >= 2."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"batch_norm expects at least 2-D input, got {input.dim()}-D")


@register_op("concat")
class Concat(nn.Module):
    """Concatenate inputs along ``dim``."""

    def __init__(self, dim: int = 1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat(xs, dim=self.dim)


@register_op("add")
class EltwiseSum(nn.Module):
    """Weighted sum of the inputs (``coeffs`` default to all ones)."""

    def __init__(self, coeffs: Sequence[float] | None = None) -> None:
        super().__init__()
        self.coeffs = None if coeffs is None else [float(c) for c in coeffs]

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        if self.coeffs is None:
            out = xs[0]
            for x in xs[1:]:
                out = out + x
            return out
        out = xs[0] * self.coeffs[0]
        for c, x in zip(self.coeffs[1:], xs[1:]):
            out = out + c * x
        return out


@register_op("mul")
class EltwiseProd(nn.Module):
    """Elementwise product of the inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out * x
        return out


@register_op("max")
class EltwiseMax(nn.Module):
    """Elementwise maximum of the inputs."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = torch.maximum(out, x)
        return out
