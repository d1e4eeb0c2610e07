"""The arithmetic of fused inference steps: folding per-channel affines into weights.

A BatchNorm in eval mode, a Caffe Scale and a Caffe Bias are each ``x * a + b`` per
channel; a run of them composes into one such pair, which folds into the convolution or
InnerProduct before it (``W' = W * a``, ``b' = bias * a + b``, computed in float64). Sibling
convolutions that read the same value and feed one channel concatenation can become one
convolution with any smaller kernels zero-padded, which writes the concatenation directly
(the plan merges only siblings of one kernel size: padding costs more than it saves).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

if TYPE_CHECKING:
    from repurpose.graph._graph import Node

__all__ = ["Affine", "ConvSpec", "affine_of", "compose", "activation", "fc_call",
           "affine_call", "conv_spec", "merge_convs"]

Affine = tuple[torch.Tensor, torch.Tensor]  # per-channel (scale, shift), float64
StepCall = Callable[[list[Any], list[bool]], Any]


def affine_of(node: Node, m: nn.Module, rank: int | None) -> Affine | None:
    """``(a, b)`` with ``layer(x) == x * a + b`` per channel (axis 1), or None.

    ``rank`` is the input's rank when known (it resolves a negative Scale axis).
    """
    if isinstance(m, _BatchNorm) and node.op in ("batch_norm", "mxnet.batch_norm"):
        if m.running_mean is None or m.running_var is None or getattr(m, "axis", 1) != 1:
            return None
        a = torch.rsqrt(m.running_var.double() + m.eps)
        if m.affine:
            a = a * m.weight.detach().double()
        b = -m.running_mean.double() * a
        if m.affine:
            b = b + m.bias.detach().double()
        return a, b
    if node.op not in ("caffe.scale", "caffe.bias") or len(node.inputs) != 1:
        return None
    axis = getattr(m, "axis", None)
    if axis != 1 and not (rank is not None and axis == 1 - rank):
        return None
    w: torch.Tensor | None = getattr(m, "weight", None) if node.op == "caffe.scale" else None
    bias: torch.Tensor | None = getattr(m, "bias", None)
    ref = w if node.op == "caffe.scale" else bias
    if ref is None or ref.dim() != 1 or (bias is not None and bias.shape != ref.shape):
        return None
    a = torch.ones_like(ref, dtype=torch.float64) if w is None else w.detach().double()
    b = torch.zeros_like(a) if bias is None else bias.detach().double()
    return a, b


def compose(first: Affine, then: Affine) -> Affine:
    """The affine ``then(first(x))``."""
    return first[0] * then[0], first[1] * then[0] + then[1]


def activation(act: nn.Module | None) -> Callable[[torch.Tensor], torch.Tensor]:
    """The in-place form of a ReLU / LeakyReLU module (identity for None)."""
    if act is None:
        return lambda y: y
    if isinstance(act, nn.LeakyReLU):
        slope = act.negative_slope
        return lambda y: F.leaky_relu_(y, slope)
    return torch.relu_


def _folded(weight: torch.Tensor, bias: torch.Tensor | None,
            affine: Affine | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    weight = weight.detach()
    bias = None if bias is None else bias.detach()
    if affine is None:
        return weight, bias
    a, b = (t.to(weight.device) for t in affine)
    w64 = weight.double() * a.reshape([-1] + [1] * (weight.dim() - 1))
    b64 = b if bias is None else bias.double() * a + b
    return w64.to(weight.dtype), b64.to(weight.dtype)


def fc_call(m: nn.Linear, affine: Affine | None, act: nn.Module | None) -> StepCall:
    """InnerProduct (flattening from axis 1) with the affine folded in, then ``act``."""
    weight, bias = _folded(m.weight, m.bias, affine)
    post = activation(act)

    def call(args: list[Any], _w: list[bool]) -> torch.Tensor:
        x = args[0]
        if x.dim() > 2:
            x = torch.flatten(x, 1)
        return post(F.linear(x, weight, bias))

    return call


def affine_call(ab: Affine, act: nn.Module | None) -> StepCall:
    """``act(x * a + b)`` per channel, overwriting ``x`` when allowed."""
    post = activation(act)
    cache: dict[tuple[Any, ...], tuple[torch.Tensor, torch.Tensor]] = {}

    def call(args: list[Any], writable: list[bool]) -> torch.Tensor:
        x = args[0]
        key = (x.device, x.dtype, x.dim())
        if key not in cache:
            shape = [1, -1] + [1] * (x.dim() - 2)
            cache[key] = (ab[0].to(x.device, x.dtype).reshape(shape),
                          ab[1].to(x.device, x.dtype).reshape(shape))
        a, b = cache[key]
        y = x.mul_(a).add_(b) if writable[0] else torch.addcmul(b, x, a)
        return post(y)

    return call


@dataclass(frozen=True)
class ConvSpec:
    """A 2-D convolution with folded weights and an optional trailing activation."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    stride: tuple[int, ...]
    padding: Any
    dilation: tuple[int, ...]
    groups: int
    act: nn.Module | None

    def call(self) -> StepCall:
        weight, bias, post = self.weight, self.bias, activation(self.act)
        stride, padding, dilation, groups = self.stride, self.padding, self.dilation, self.groups
        pointwise = None
        if type(self.act) is nn.ReLU and not isinstance(padding, str) and \
                torch.backends.mkldnn.is_available():
            pointwise = getattr(torch.ops.mkldnn, "_convolution_pointwise", None)

        def call(args: list[Any], _w: list[bool]) -> torch.Tensor:
            x = args[0]
            if pointwise is not None and x.device.type == "cpu" and x.dim() == 4 and \
                    x.dtype == weight.dtype == torch.float32:
                # conv + ReLU as one oneDNN primitive (what torch.compile emits on CPU)
                return pointwise(x, weight, bias, padding, stride, dilation, groups, "relu",
                                 [], "")
            return post(F.conv2d(x, weight, bias, stride, padding, dilation, groups))

        return call


def conv_spec(m: nn.Conv2d, affine: Affine | None, act: nn.Module | None) -> ConvSpec:
    weight, bias = _folded(m.weight, m.bias, affine)
    return ConvSpec(weight, bias, tuple(m.stride), m.padding, tuple(m.dilation), m.groups,
                    act)


def merge_convs(specs: Sequence[ConvSpec]) -> ConvSpec | None:
    """One convolution computing ``cat([conv(x) for conv in specs], 1)``, or None.

    The convolutions must share stride, activation and an output grid: a ``k``-kernel with
    padding ``p`` sits at offset ``P - p`` inside the largest kernel ``K`` (padding ``P``),
    which needs ``K - k == 2 (P - p)``. The added weights are zeros, so each output sums
    the same products as before (an inf or NaN input next to a small kernel's window
    would, however, reach its outputs).
    """
    first = specs[0]
    if any(isinstance(s.padding, str) or s.groups != 1 or tuple(s.dilation) != (1, 1)
           or s.stride != first.stride or type(s.act) is not type(first.act)
           or getattr(s.act, "negative_slope", 0) != getattr(first.act, "negative_slope", 0)
           or s.weight.shape[1] != first.weight.shape[1] or s.weight.dtype != first.weight.dtype
           for s in specs):
        return None
    kernel = [max(s.weight.shape[2 + d] for s in specs) for d in range(2)]
    pad = [max(s.padding[d] for s in specs) for d in range(2)]
    offsets = []
    for s in specs:
        off = [pad[d] - s.padding[d] for d in range(2)]
        if any(kernel[d] - s.weight.shape[2 + d] != 2 * off[d] for d in range(2)):
            return None
        offsets.append(off)
    out = sum(s.weight.shape[0] for s in specs)
    weight = first.weight.new_zeros((out, first.weight.shape[1], *kernel))
    start = 0
    for s, (dy, dx) in zip(specs, offsets):
        n, _, kh, kw = s.weight.shape
        weight[start:start + n, :, dy:dy + kh, dx:dx + kw] = s.weight
        start += n
    if all(s.bias is None for s in specs):
        bias = None
    else:
        bias = torch.cat([s.weight.new_zeros(s.weight.shape[0]) if s.bias is None else s.bias
                          for s in specs])
    return ConvSpec(weight, bias, first.stride, tuple(pad), (1, 1), 1, first.act)
