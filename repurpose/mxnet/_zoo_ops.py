"""Graph ops for the MXNet ops of model-zoo exports beyond the basics (``"mxnet.*"``).

GluonCV classification, segmentation and face models (ResNet v1b-d, MobileNet v3, SE nets,
ResNeSt, FCN/PSP/DeepLab heads, RetinaFace) use cropping, bilinear resizing, adaptive
pooling, hard sigmoid, general slicing and padding, broadcasting, comparisons and the
instance/layer/group norms. Shapes are resolved from the input at run time, so one graph
serves any input size, as for the other MXNet ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repurpose.graph import register_op

__all__ = ["Crop", "BilinearResize", "SliceSteps", "GroupNormMX", "DepthSpace"]


def _ints(values: Sequence[int | None] | None) -> list[int]:
    return [] if values is None else [int(v) for v in values if v is not None]


@register_op("mxnet.crop")
class Crop(nn.Module):
    """``Crop``: a window of ``h_w`` (or of the second input's size) at ``offset`` or centred."""

    def __init__(self, h_w: Sequence[int] = (0, 0), offset: Sequence[int] = (0, 0),
                 center_crop: bool = False) -> None:
        super().__init__()
        self.h_w, self.offset, self.center_crop = _ints(h_w), _ints(offset), bool(center_crop)

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        h, w = (like.shape[-2], like.shape[-1]) if like is not None else self.h_w
        H, W = x.shape[-2], x.shape[-1]
        if h > H or w > W:
            raise ValueError(f"Crop of {(h, w)} does not fit an input of {(H, W)}")
        top, left = ((H - h) // 2, (W - w) // 2) if self.center_crop else self.offset
        return x[..., top : top + h, left : left + w]


@register_op("mxnet.bilinear_resize")
class BilinearResize(nn.Module):
    """``_contrib_BilinearResize2D`` in modes ``size`` (height/width or scales) and ``like``."""

    def __init__(self, height: int = 1, width: int = 1, scale_height: float | None = None,
                 scale_width: float | None = None, align_corners: bool = True) -> None:
        super().__init__()
        self.height, self.width = int(height), int(width)
        self.scale_height, self.scale_width = scale_height, scale_width
        self.align_corners = bool(align_corners)

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        if like is not None:
            size = (int(like.shape[-2]), int(like.shape[-1]))
        else:
            h = self.height if self.scale_height is None else int(x.shape[-2] * self.scale_height)
            w = self.width if self.scale_width is None else int(x.shape[-1] * self.scale_width)
            size = (h, w)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)


@register_op("mxnet.adaptive_avg_pool")
class AdaptiveAvgPool(nn.Module):
    """``_contrib_AdaptiveAvgPooling2D(output_size)``."""

    def __init__(self, output_size: Sequence[int]) -> None:
        super().__init__()
        sizes = _ints(output_size)
        self.output_size = sizes * 2 if len(sizes) == 1 else sizes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = self.output_size
        return F.adaptive_avg_pool2d(x, (h, w))


@register_op("mxnet.hard_sigmoid")
class HardSigmoid(nn.Module):
    """``hard_sigmoid``: ``clip(alpha * x + beta, 0, 1)``."""

    def __init__(self, alpha: float = 0.2, beta: float = 0.5) -> None:
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x * self.alpha + self.beta, 0.0, 1.0)


@register_op("mxnet.slice")
class SliceSteps(nn.Module):
    """``slice(begin, end, step)`` with Python semantics per axis (``None`` = default)."""

    def __init__(self, begin: Sequence[int | None], end: Sequence[int | None],
                 step: Sequence[int | None] | None = None) -> None:
        super().__init__()
        self.begin, self.end = list(begin), list(end)
        self.step = list(step) if step else [None] * len(self.begin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis, (b, e, s) in enumerate(zip(self.begin, self.end, self.step)):
            if s is not None and s < 0:
                index = torch.arange(*slice(b, e, s).indices(x.shape[axis]), device=x.device)
                x = x.index_select(axis, index)
            else:
                x = x[(slice(None),) * axis + (slice(b, e, s),)]
        return x


@register_op("mxnet.slice_like")
class SliceLike(nn.Module):
    """``slice_like(axes)``: the leading part of ``x`` with the shape of ``like`` on ``axes``."""

    def __init__(self, axes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.axes = None if axes is None else _ints(axes)

    def forward(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        axes = range(x.dim()) if not self.axes else [a % x.dim() for a in self.axes]
        for axis in axes:
            x = x.narrow(axis, 0, int(like.shape[axis]))
        return x


@register_op("mxnet.pad")
class Pad(nn.Module):
    """``Pad(mode, pad_width, constant_value)``; ``pad_width`` is (before, after) per axis."""

    _MODES = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}

    def __init__(self, mode: str, pad_width: Sequence[int], constant_value: float = 0.0) -> None:
        super().__init__()
        if mode not in self._MODES:
            raise ValueError(f"Pad mode {mode!r} is not one of {sorted(self._MODES)}")
        self.mode, self.constant_value = mode, float(constant_value)
        widths = _ints(pad_width)
        pairs = [widths[i : i + 2] for i in range(0, len(widths), 2)]
        while pairs and pairs[0] == [0, 0]:  # torch pads trailing axes only
            pairs.pop(0)
        self.torch_pad = [w for pair in reversed(pairs) for w in pair]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.torch_pad, value=self.constant_value)
        return F.pad(x, self.torch_pad, mode=self._MODES[self.mode])


@register_op("mxnet.tile")
class Tile(nn.Module):
    """``tile(reps)`` (numpy's tile)."""

    def __init__(self, reps: Sequence[int]) -> None:
        super().__init__()
        self.reps = _ints(reps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.tile(tuple(self.reps))


@register_op("mxnet.repeat")
class Repeat(nn.Module):
    """``repeat(repeats, axis)``; no axis repeats the flattened array."""

    def __init__(self, repeats: int, axis: int | None = None) -> None:
        super().__init__()
        self.repeats, self.axis = int(repeats), axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return x.flatten().repeat_interleave(self.repeats)
        return x.repeat_interleave(self.repeats, dim=self.axis)


@register_op("mxnet.flip")
class Flip(nn.Module):
    """``reverse(axis)`` / ``flip``."""

    def __init__(self, axis: Sequence[int]) -> None:
        super().__init__()
        self.axis = _ints(axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(tuple(self.axis))


@register_op("mxnet.fill_like")
class FillLike(nn.Module):
    """``zeros_like`` / ``ones_like``."""

    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full_like(x, self.value)


@register_op("mxnet.broadcast")
class Broadcast(nn.Module):
    """``broadcast_like`` (second input), ``broadcast_to(shape)`` (0 keeps a dim) and
    ``broadcast_axis(axis, size)``."""

    def __init__(self, shape: Sequence[int] | None = None, axis: Sequence[int] | None = None,
                 size: Sequence[int] | None = None) -> None:
        super().__init__()
        self.shape = None if shape is None else _ints(shape)
        self.axis, self.size = _ints(axis), _ints(size)

    def forward(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        if like is not None:
            return x.expand_as(like)
        if self.shape is not None:
            return x.expand([d if d != 0 else x.shape[i] for i, d in enumerate(self.shape)])
        target = list(x.shape)
        for a, s in zip(self.axis, self.size):
            target[a % x.dim()] = s
        return x.expand(target)


@register_op("mxnet.where")
class Where(nn.Module):
    """``where(condition, x, y)`` (a non-zero condition picks ``x``)."""

    def forward(self, cond: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.where(cond != 0, x, y)


@register_op("mxnet.argmax")
class ArgMax(nn.Module):
    """``argmax(axis, keepdims)``; MXNet returns the indices as floats."""

    def __init__(self, axis: int | None = None, keepdims: bool = False) -> None:
        super().__init__()
        self.axis, self.keepdims = axis, bool(keepdims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return x.flatten().argmax().reshape(1).to(x.dtype)
        return x.argmax(dim=self.axis, keepdim=self.keepdims).to(x.dtype)


@register_op("mxnet.norm")
class Norm(nn.Module):
    """``norm(ord, axis, keepdims)`` (a full reduction has shape (1,), as in MXNet 1.x)."""

    def __init__(self, ord: int = 2, axis: Sequence[int] | None = None,
                 keepdims: bool = False) -> None:
        super().__init__()
        self.ord, self.keepdims = int(ord), bool(keepdims)
        self.axis = None if axis is None else _ints(axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return torch.linalg.vector_norm(x.flatten(), self.ord).reshape(1)
        return torch.linalg.vector_norm(x, self.ord, dim=self.axis, keepdim=self.keepdims)


class _AffineNorm(nn.Module):
    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = float(eps)
        self.weight = nn.Parameter(torch.ones(int(channels)))
        self.bias = nn.Parameter(torch.zeros(int(channels)))


@register_op("mxnet.instance_norm")
class InstanceNormMX(_AffineNorm):
    """``InstanceNorm``: per sample and channel over the spatial axes (eps default 1e-3)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.instance_norm(x, weight=self.weight, bias=self.bias, eps=self.eps)


@register_op("mxnet.layer_norm")
class LayerNormMX(_AffineNorm):
    """``LayerNorm(axis)``: normalise over one axis, scale and shift along it."""

    def __init__(self, channels: int, eps: float = 1e-5, axis: int = -1) -> None:
        super().__init__(channels, eps)
        self.axis = int(axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axis = self.axis % x.dim()
        moved = x.movedim(axis, -1)
        out = F.layer_norm(moved, (moved.shape[-1],), self.weight, self.bias, self.eps)
        return out.movedim(-1, axis)


@register_op("mxnet.group_norm")
class GroupNormMX(_AffineNorm):
    """MXNet 1.x ``GroupNorm``: its gamma and beta hold one value per *group*, not channel."""

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        super().__init__(channels, eps)  # ``channels`` is the number of groups here

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        groups = self.weight.shape[0]
        g = x.reshape(x.shape[0], groups, -1)
        mean = g.mean(-1, keepdim=True)
        var = g.var(-1, unbiased=False, keepdim=True)
        g = (g - mean) / torch.sqrt(var + self.eps)
        g = g * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)
        return g.reshape(x.shape)


@register_op("mxnet.depth_space")
class DepthSpace(nn.Module):
    """``depth_to_space`` (DCR order) and ``space_to_depth`` with ``block_size``."""

    def __init__(self, block_size: int, to_space: bool) -> None:
        super().__init__()
        self.block, self.to_space = int(block_size), bool(to_space)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = self.block
        n, c, h, w = x.shape
        if self.to_space:
            y = x.reshape(n, b, b, c // (b * b), h, w).permute(0, 3, 4, 1, 5, 2)
            return y.reshape(n, c // (b * b), h * b, w * b)
        y = x.reshape(n, c, h // b, b, w // b, b).permute(0, 3, 5, 1, 2, 4)
        return y.reshape(n, c * b * b, h // b, w // b)
