"""Converters and ops for layer types beyond BVLC's core that OpenCV's Caffe importer accepts.

Permute (SSD), ShuffleChannel (ShuffleNet), Interp (DeepLab/PSPNet), Axpy (SENet forks),
depthwise convolution aliases of fork builds, MVN, Threshold, Tile, Reduction and a few
activations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repurpose._exceptions import ModelFormatError
from repurpose.caffe._layers import (
    Converted,
    LayerContext,
    _axis,
    _convolution,
    _one_input,
    _prelu,
    _simple,
    register_layer,
)
from repurpose.graph import register_op

__all__ = ["CaffePermute", "CaffeShuffleChannel", "CaffeInterp", "CaffeMVN", "CaffeThreshold",
           "CaffeTile", "CaffeReduction", "CaffeAxpy", "CaffeReorg", "CaffeClip", "CaffeSwish",
           "CaffeMish"]


# ------------------------------------------------------------------ ops


@register_op("caffe.permute")
class CaffePermute(nn.Module):
    """Reorder the axes (``order`` lists every axis)."""

    def __init__(self, order: Sequence[int] = (0, 1, 2, 3)) -> None:
        super().__init__()
        self.order = [int(o) for o in order]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.order).contiguous()


@register_op("caffe.shuffle_channel")
class CaffeShuffleChannel(nn.Module):
    """ShuffleNet's channel shuffle: view C as (group, C / group), transpose, flatten."""

    def __init__(self, group: int = 1) -> None:
        super().__init__()
        self.group = int(group)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        y = x.reshape(n, self.group, c // self.group, *x.shape[2:]).transpose(1, 2)
        return y.reshape(x.shape)


@register_op("caffe.reorg")
class CaffeReorg(nn.Module):
    """YOLOv2's Reorg as OpenCV runs it (darknet's ``reorg_cpu`` with ``forward=0`` on the
    input's C, H, W): ``(N, C, H, W)`` to ``(N, C * s * s, H / s, W / s)``."""

    def __init__(self, stride: int = 2) -> None:
        super().__init__()
        self.stride = int(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.stride
        y = x.reshape(n, c // (s * s), h, s, w, s).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * s * s, h // s, w // s)


@register_op("caffe.interp")
class CaffeInterp(nn.Module):
    """DeepLab/PSPNet Interp: crop by ``pad_beg``/``pad_end`` (<= 0), then bilinear resize
    with aligned corners to ``size``."""

    def __init__(self, size: Sequence[int] = (1, 1), pad_beg: int = 0, pad_end: int = 0) -> None:
        super().__init__()
        self.size = [int(s) for s in size]
        self.pad_beg, self.pad_end = int(pad_beg), int(pad_end)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        x = x[..., -self.pad_beg: h + self.pad_end, -self.pad_beg: w + self.pad_end]
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=True)


@register_op("caffe.mvn")
class CaffeMVN(nn.Module):
    """Caffe MVN: subtract the mean over (H, W) or (C, H, W); optionally divide by
    ``std + eps`` (eps added after the square root, as Caffe does)."""

    def __init__(self, normalize_variance: bool = True, across_channels: bool = False,
                 eps: float = 1e-9) -> None:
        super().__init__()
        self.normalize_variance, self.across_channels = bool(normalize_variance), \
            bool(across_channels)
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(1 if self.across_channels else 2, x.dim()))
        y = x - x.mean(dims, keepdim=True)
        if not self.normalize_variance:
            return y
        return y / ((y * y).mean(dims, keepdim=True).sqrt() + self.eps)


@register_op("caffe.threshold")
class CaffeThreshold(nn.Module):
    """1 where ``x > threshold``, else 0."""

    def __init__(self, threshold: float = 0.0) -> None:
        super().__init__()
        self.threshold = float(threshold)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x > self.threshold).to(x.dtype)


@register_op("caffe.tile")
class CaffeTile(nn.Module):
    """Repeat the input ``tiles`` times along ``axis``."""

    def __init__(self, axis: int = 1, tiles: int = 1) -> None:
        super().__init__()
        self.axis, self.tiles = int(axis), int(tiles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reps = [1] * x.dim()
        reps[self.axis] = self.tiles
        return x.repeat(reps)


@register_op("caffe.reduction")
class CaffeReduction(nn.Module):
    """Caffe Reduction over all axes from ``axis`` on: sum, asum, sumsq or mean, times coeff."""

    def __init__(self, operation: str = "sum", axis: int = 0, coeff: float = 1.0) -> None:
        super().__init__()
        if operation not in ("sum", "asum", "sumsq", "mean"):
            raise ValueError(f"reduction operation must be sum/asum/sumsq/mean, got "
                             f"{operation!r}")
        self.operation, self.axis, self.coeff = operation, int(axis), float(coeff)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(*x.shape[: self.axis], -1)
        if self.operation == "asum":
            flat = flat.abs()
        elif self.operation == "sumsq":
            flat = flat * flat
        out = flat.mean(-1) if self.operation == "mean" else flat.sum(-1)
        return out * self.coeff if self.coeff != 1.0 else out


@register_op("caffe.axpy")
class CaffeAxpy(nn.Module):
    """``a * x + y`` with ``a`` one value per sample and channel ((N, C) or (N, C, 1, 1))."""

    def forward(self, a: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(y, a.reshape(*a.shape[:2], *([1] * (x.dim() - 2))), x)


@register_op("caffe.clip")
class CaffeClip(nn.Module):
    """Clamp to ``[low, high]`` (ReLU6: 0 and 6)."""

    def __init__(self, low: float = 0.0, high: float = 6.0) -> None:
        super().__init__()
        self.low, self.high = float(low), float(high)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(self.low, self.high)


@register_op("caffe.swish")
class CaffeSwish(nn.Module):
    """``x * sigmoid(x)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(x)


@register_op("caffe.mish")
class CaffeMish(nn.Module):
    """``x * tanh(softplus(x))``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.mish(x)


# ------------------------------------------------------------------ converters


@register_layer("Permute")
def _permute(ctx: LayerContext) -> Converted:
    rank = len(_one_input(ctx))
    order = [int(o) for o in ctx.layer.permute_param.order]
    if len(set(order)) != len(order) or any(o >= rank for o in order):
        raise ModelFormatError(f"layer {ctx.name!r}: permute order {order} is not a set of "
                               f"distinct axes of a {rank}-D input")
    order += [a for a in range(rank) if a not in order]  # unlisted axes keep their order
    return Converted("caffe.permute", {"order": order})


@register_layer("ShuffleChannel")
def _shuffle_channel(ctx: LayerContext) -> Converted:
    shape = _one_input(ctx)
    group = int(ctx.layer.shuffle_channel_param.group)
    if group <= 0 or len(shape) < 2 or shape[1] % group:
        raise ModelFormatError(f"layer {ctx.name!r}: group {group} must divide the "
                               f"{shape[1] if len(shape) > 1 else '?'} channels")
    return Converted("caffe.shuffle_channel", {"group": group})


def interp_size(p: object, h: int, w: int, layer: str) -> list[int]:
    """Output size of DeepLab's Interp for an (already cropped) ``h x w`` input."""
    has = p.HasField  # type: ignore[attr-defined]
    zoom, shrink = int(p.zoom_factor), int(p.shrink_factor)  # type: ignore[attr-defined]
    if has("height") and has("width") and not (has("zoom_factor") or has("shrink_factor")):
        return [int(p.height), int(p.width)]  # type: ignore[attr-defined]
    if not (has("zoom_factor") or has("shrink_factor")):
        raise ModelFormatError(f"layer {layer!r}: Interp needs height and width, "
                               "zoom_factor or shrink_factor")
    if zoom < 1 or shrink < 1:
        raise ModelFormatError(f"layer {layer!r}: zoom/shrink factors must be >= 1")
    if has("shrink_factor"):
        h, w = (h - 1) // shrink + 1, (w - 1) // shrink + 1
    if has("zoom_factor"):
        h, w = h + (h - 1) * (zoom - 1), w + (w - 1) * (zoom - 1)
    return [h, w]


@register_layer("Reorg")
def _reorg(ctx: LayerContext) -> Converted:
    shape = _one_input(ctx)
    p = ctx.layer.reorg_param
    s = int(p.stride)
    if p.reverse:
        raise ModelFormatError(f"layer {ctx.name!r}: Reorg with reverse: true is not supported")
    if len(shape) != 4 or s < 1 or shape[1] % (s * s) or shape[2] % s or shape[3] % s:
        raise ModelFormatError(f"layer {ctx.name!r}: Reorg stride {s} must divide the height "
                               f"and width, and its square the channels, of {shape}")
    return Converted("caffe.reorg", {"stride": s})


@register_layer("Interp")
def _interp(ctx: LayerContext) -> Converted:
    shape = _one_input(ctx)
    p = ctx.layer.interp_param
    if len(shape) != 4 or p.pad_beg > 0 or p.pad_end > 0:
        raise ModelFormatError(f"layer {ctx.name!r}: Interp needs a 4-D input and "
                               "pad_beg/pad_end <= 0")
    h, w = shape[2] + p.pad_beg + p.pad_end, shape[3] + p.pad_beg + p.pad_end
    size = interp_size(p, h, w, ctx.name)
    if min(h, w, *size) <= 0:
        raise ModelFormatError(f"layer {ctx.name!r}: Interp gives an empty output {size}")
    return Converted("caffe.interp", {"size": size, "pad_beg": int(p.pad_beg),
                                      "pad_end": int(p.pad_end)})


def _depthwise(ctx: LayerContext) -> Converted:
    """Fork types of a depthwise convolution: one group per input channel unless the layer
    sets ``group`` itself."""
    p = ctx.layer.convolution_param
    if not p.HasField("group") or p.group == 1:
        layer = type(ctx.layer)()
        layer.CopyFrom(ctx.layer)
        layer.convolution_param.group = int(ctx.in_shapes[0][1]) if ctx.in_shapes and \
            len(ctx.in_shapes[0]) > 1 else 1
        ctx = LayerContext(layer, ctx.in_shapes, ctx.blobs)
    return _convolution(ctx)


register_layer("DepthwiseConvolution", _depthwise)
register_layer("ConvolutionDepthwise", _depthwise)
register_layer("Identity", _simple("identity"))
register_layer("ReLU6", _simple("caffe.clip"))
register_layer("Swish", _simple("caffe.swish"))
register_layer("Mish", _simple("caffe.mish"))
register_layer("ChannelsPReLU", _prelu)  # OpenCV's name for a per-channel PReLU


@register_layer("Axpy")
def _axpy(ctx: LayerContext) -> Converted:
    if len(ctx.in_shapes) != 3:
        raise ModelFormatError(f"layer {ctx.name!r}: Axpy takes 3 bottoms (a, x, y), got "
                               f"{len(ctx.in_shapes)}")
    a, x, y = ctx.in_shapes
    if tuple(x) != tuple(y) or len(x) < 2 or math.prod(a) != x[0] * x[1]:
        raise ModelFormatError(f"layer {ctx.name!r}: Axpy needs x and y of one shape and a "
                               f"with one value per sample and channel, got {ctx.in_shapes}")
    return Converted("caffe.axpy")


@register_layer("MVN")
def _mvn(ctx: LayerContext) -> Converted:
    p = ctx.layer.mvn_param
    _one_input(ctx)
    return Converted("caffe.mvn", {"normalize_variance": bool(p.normalize_variance),
                                   "across_channels": bool(p.across_channels),
                                   "eps": float(p.eps)})


@register_layer("Threshold")
def _threshold(ctx: LayerContext) -> Converted:
    return Converted("caffe.threshold", {"threshold": float(ctx.layer.threshold_param.threshold)})


@register_layer("Tile")
def _tile(ctx: LayerContext) -> Converted:
    p = ctx.layer.tile_param
    shape = _one_input(ctx)
    if not p.HasField("tiles") or p.tiles < 1:
        raise ModelFormatError(f"layer {ctx.name!r}: Tile needs tiles >= 1")
    return Converted("caffe.tile", {"axis": _axis(p.axis, len(shape), ctx.name),
                                    "tiles": int(p.tiles)})


REDUCTIONS = {1: "sum", 2: "asum", 3: "sumsq", 4: "mean"}


@register_layer("Reduction")
def _reduction(ctx: LayerContext) -> Converted:
    p = ctx.layer.reduction_param
    shape = _one_input(ctx)
    axis = _axis(p.axis, len(shape), ctx.name) if shape else 0
    if math.prod(shape[axis:]) == 0:
        raise ModelFormatError(f"layer {ctx.name!r}: nothing to reduce in shape {shape}")
    return Converted("caffe.reduction", {"operation": REDUCTIONS[int(p.operation)],
                                         "axis": axis, "coeff": float(p.coeff)})
