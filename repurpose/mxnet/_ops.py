"""Graph ops with MXNet semantics (registered as ``"mxnet.*"``).

Each op is rebuilt from its JSON attributes alone, so saved graphs load without the
original files. Shape-dependent details (pooling windows, reshape codes, deconvolution
target shapes) are resolved at run time from the input, so one graph serves any size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repurpose.graph import register_op
from repurpose.graph._ops import AnyBatchNorm

__all__ = ["Pool", "reshape_shape"]


def _ints(values: Sequence[int] | None) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def _pair(values: Sequence[int]) -> tuple[int, int]:
    a, b = (int(v) for v in values)
    return a, b


@register_op("mxnet.pool")
class Pool(nn.Module):
    """MXNet ``Pooling``: max / avg / sum, conventions valid / full / same, 1-D or 2-D.

    The average divisor follows MXNet's ``pool.h``: a window counts the padding up to
    ``size + pad`` (``count_include_pad=True``) or only the real elements (False), and
    never the overhang that the ``full`` convention adds past the padding.
    """

    def __init__(self, kernel: Sequence[int], pool_type: str = "max",
                 stride: Sequence[int] | None = None, pad: Sequence[int] | None = None,
                 convention: str = "valid", count_include_pad: bool = True,
                 global_pool: bool = False) -> None:
        super().__init__()
        self.kernel = _ints(kernel)
        self.pool_type = pool_type
        self.stride = _ints(stride) or [1] * len(self.kernel)
        self.pad = _ints(pad) or [0] * len(self.kernel)
        self.convention = convention
        self.count_include_pad = count_include_pad
        self.global_pool = global_pool

    def extra_repr(self) -> str:
        return (f"{self.pool_type}, kernel={self.kernel}, stride={self.stride}, pad={self.pad}, "
                f"convention={self.convention}, global_pool={self.global_pool}")

    def _out_size(self, size: int, k: int, s: int, p: int) -> int:
        if self.convention == "full":
            return 1 + math.ceil((size + 2 * p - k) / s)
        if self.convention == "same":
            return math.ceil((size + 2 * p) / s)
        return 1 + (size + 2 * p - k) // s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x.dim() - 2
        if self.global_pool:
            dims = tuple(range(2, x.dim()))
            if self.pool_type == "max":
                return x.amax(dim=dims, keepdim=True)
            if self.pool_type == "sum":
                return x.sum(dim=dims, keepdim=True)
            return x.mean(dim=dims, keepdim=True)
        if spatial == 1:
            return self._pool2d(x.unsqueeze(2), [1] + self.kernel, [1] + self.stride,
                                [0] + self.pad).squeeze(2)
        return self._pool2d(x, self.kernel, self.stride, self.pad)

    def _pool2d(self, x: torch.Tensor, k: list[int], s: list[int], p: list[int]) -> torch.Tensor:
        sizes = x.shape[2:]
        outs = [self._out_size(int(n), kk, ss, pp) for n, kk, ss, pp in zip(sizes, k, s, p)]
        right = [max(0, (o - 1) * ss + kk - int(n) - pp)
                 for o, n, kk, ss, pp in zip(outs, sizes, k, s, p)]
        pads = [p[1], right[1], p[0], right[0]]
        fill = float("-inf") if self.pool_type == "max" else 0.0
        xp = F.pad(x, pads, value=fill) if any(pads) else x
        # torch's channels-last pooling kernels are several times faster on CPU; the output
        # goes back to the input's layout (GraphNet.layout decides that for the whole net)
        cl = torch.channels_last
        out_format = cl if x.is_contiguous(memory_format=cl) else torch.contiguous_format
        xp = xp.contiguous(memory_format=cl)
        if self.pool_type == "max":
            out = F.max_pool2d(xp, k, s)[:, :, :outs[0], :outs[1]]
            return out.contiguous(memory_format=out_format)
        y = F.avg_pool2d(xp, k, s)[:, :, :outs[0], :outs[1]].contiguous(memory_format=out_format)
        y = y * float(k[0] * k[1])
        if self.pool_type == "sum":
            return y
        div = [self._divisor(o, int(n), kk, ss, pp, x.device, x.dtype)
               for o, n, kk, ss, pp in zip(outs, sizes, k, s, p)]
        return y / (div[0][:, None] * div[1][None, :])

    def _divisor(self, out: int, size: int, k: int, s: int, p: int,
                 device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        start = torch.arange(out, device=device) * s - p
        end = torch.clamp(start + k, max=size + p)
        if not self.count_include_pad:
            start = torch.clamp(start, min=0)
            end = torch.clamp(end, max=size)
        return (end - start).clamp(min=1).to(dtype)


@register_op("mxnet.batch_norm")
class AxisBatchNorm(AnyBatchNorm):
    """BatchNorm over any channel axis (MXNet's ``axis`` attribute)."""

    def __init__(self, num_features: int, eps: float = 1e-3, momentum: float = 0.1,
                 axis: int = 1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.axis = axis

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        axis = self.axis % input.dim()
        if axis == 1:
            return super().forward(input)
        moved = input.movedim(axis, 1)
        return super().forward(moved).movedim(1, axis)


@register_op("mxnet.deconv2d")
class TargetDeconv(nn.ConvTranspose2d):
    """``Deconvolution`` with ``target_shape``: padding is derived from the input size."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int], dilation: Sequence[int], groups: int, bias: bool,
                 target_shape: Sequence[int]) -> None:
        k, st, dil = _pair(kernel_size), _pair(stride), _pair(dilation)
        super().__init__(in_channels, out_channels, k, st, dilation=dil, groups=groups,
                         bias=bias)
        self.target_shape = _ints(target_shape)

    def forward(self, input: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        pads, adjs = [], []
        for i, target in enumerate(self.target_shape):
            dk = self.dilation[i] * (self.kernel_size[i] - 1) + 1
            total = self.stride[i] * (input.shape[2 + i] - 1) + dk - target
            if total < 0:
                raise ValueError(f"Deconvolution target_shape {self.target_shape} is too big "
                                 f"for input {tuple(input.shape)}")
            adjs.append(total % 2)
            pads.append((total + 1) // 2)
        return F.conv_transpose2d(input, self.weight, self.bias, self.stride, tuple(pads),
                                  tuple(adjs), self.groups, self.dilation)


_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "maximum": torch.maximum, "minimum": torch.minimum, "power": torch.pow,
}
# MXNet's comparisons return 1.0 / 0.0 in the input's dtype
_COMPARE = {"greater": torch.gt, "greater_equal": torch.ge, "lesser": torch.lt,
            "lesser_equal": torch.le, "equal": torch.eq, "not_equal": torch.ne}


def _compare(cmp: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    def fn(a: torch.Tensor, b: torch.Tensor | float) -> torch.Tensor:
        return cmp(a, b).to(a.dtype)
    return fn


for _fn, _cmp in _COMPARE.items():
    _BINARY[_fn] = _compare(_cmp)


@register_op("mxnet.binary")
class Binary(nn.Module):
    """Elementwise / broadcast binary op (``fn`` in add, sub, mul, div, maximum, minimum, power)."""

    def __init__(self, fn: str) -> None:
        super().__init__()
        if fn not in _BINARY:
            raise ValueError(f"binary fn {fn!r} is not one of {sorted(_BINARY)}")
        self.fn = fn

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return _BINARY[self.fn](a, b)

    def extra_repr(self) -> str:
        return self.fn


_SCALAR = {
    "add": lambda x, c: x + c, "sub": lambda x, c: x - c, "rsub": lambda x, c: c - x,
    "mul": lambda x, c: x * c, "div": lambda x, c: x / c, "rdiv": lambda x, c: c / x,
    "power": lambda x, c: x ** c, "rpower": lambda x, c: torch.pow(torch.full_like(x, c), x),
    "maximum": lambda x, c: torch.clamp(x, min=c), "minimum": lambda x, c: torch.clamp(x, max=c),
}
for _fn, _cmp in _COMPARE.items():
    _SCALAR[_fn] = _compare(_cmp)


@register_op("mxnet.scalar")
class Scalar(nn.Module):
    """``x op scalar``; ``fn`` is a key of ``_SCALAR`` (add, sub, rsub, mul, div, ...)."""

    def __init__(self, fn: str, scalar: float) -> None:
        super().__init__()
        if fn not in _SCALAR:
            raise ValueError(f"scalar fn {fn!r} is not one of {sorted(_SCALAR)}")
        self.fn = fn
        self.scalar = float(scalar)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _SCALAR[self.fn](x, self.scalar)

    def extra_repr(self) -> str:
        return f"{self.fn}, {self.scalar}"


_UNARY = {
    "relu": torch.relu, "sigmoid": torch.sigmoid, "tanh": torch.tanh, "exp": torch.exp,
    "log": torch.log, "sqrt": torch.sqrt, "square": torch.square, "abs": torch.abs,
    "negative": torch.neg, "softsign": F.softsign, "softrelu": F.softplus,
    "selu": F.selu, "gelu": F.gelu, "rsqrt": torch.rsqrt, "reciprocal": torch.reciprocal,
    "erf": torch.erf, "floor": torch.floor, "ceil": torch.ceil, "sign": torch.sign,
    # MXNet rounds half away from zero (torch.round: half to even)
    "round": lambda x: torch.sign(x) * torch.floor(torch.abs(x) + 0.5),
}


@register_op("mxnet.unary")
class Unary(nn.Module):
    """A parameter-free elementwise function (``fn``: see ``_UNARY``)."""

    def __init__(self, fn: str) -> None:
        super().__init__()
        if fn not in _UNARY:
            raise ValueError(f"unary fn {fn!r} is not one of {sorted(_UNARY)}")
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _UNARY[self.fn](x)

    def extra_repr(self) -> str:
        return self.fn


@register_op("mxnet.clip")
class Clip(nn.Module):
    """``clip(a_min, a_max)`` (ReLU6 in MobileNet exports)."""

    def __init__(self, a_min: float, a_max: float) -> None:
        super().__init__()
        self.a_min, self.a_max = float(a_min), float(a_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.a_min, self.a_max)


@register_op("mxnet.dropout_always")
class AlwaysDropout(nn.Module):
    """``Dropout(mode='always')``: drops at inference too, as MXNet does."""

    def __init__(self, p: float = 0.5) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.dropout(x, self.p, training=True)


@register_op("mxnet.softmax")
class Softmax(nn.Module):
    """Softmax variants.

    ``mode``: ``"axis"`` (over ``axis``, with ``temperature``), ``"instance"`` (over all
    non-batch axes, shape kept: ``SoftmaxOutput`` / ``SoftmaxActivation`` default).
    """

    def __init__(self, mode: str = "axis", axis: int = -1, temperature: float = 1.0,
                 log: bool = False) -> None:
        super().__init__()
        self.mode, self.axis, self.temperature, self.log = mode, axis, float(temperature), log

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fn = torch.log_softmax if self.log else torch.softmax
        if self.mode == "instance":
            return fn(x.reshape(x.shape[0], -1), 1).reshape(x.shape)
        return fn(x / self.temperature if self.temperature != 1.0 else x, self.axis)


def reshape_shape(src: Sequence[int], spec: Sequence[int], reverse: bool = False) -> list[int]:
    """MXNet ``Reshape`` special codes 0, -1, -2, -3, -4 applied to an input shape."""
    dims, codes = list(src), list(spec)
    if reverse:
        dims, codes = dims[::-1], codes[::-1]
    out: list[int] = []
    infer, i, j = -1, 0, 0
    while j < len(codes):
        code = codes[j]
        if code == 0:
            out.append(dims[i])
            i += 1
        elif code == -1:
            if infer >= 0:
                raise ValueError(f"Reshape shape {tuple(spec)}: only one -1 is allowed")
            infer = len(out)
            out.append(1)
            i += 1
        elif code == -2:
            out.extend(dims[i:])
            i = len(dims)
        elif code == -3:
            out.append(dims[i] * dims[i + 1])
            i += 2
        elif code == -4:
            d0, d1, d2 = dims[i], codes[j + 1], codes[j + 2]
            if d1 == -1:
                d1 = d0 // d2
            if d2 == -1:
                d2 = d0 // d1
            out.extend([d1, d2])
            i += 1
            j += 2
        else:
            out.append(code)
            i += 1
        j += 1
    if infer >= 0:
        known = math.prod(out)
        out[infer] = math.prod(dims) // known if known else 0
    return out[::-1] if reverse else out


@register_op("mxnet.reshape")
class Reshape(nn.Module):
    """MXNet ``Reshape`` with its special codes, resolved per input."""

    def __init__(self, shape: Sequence[int], reverse: bool = False) -> None:
        super().__init__()
        self.shape = _ints(shape)
        self.reverse = reverse

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(reshape_shape(list(x.shape), self.shape, self.reverse))

    def extra_repr(self) -> str:
        return f"{self.shape}, reverse={self.reverse}"


@register_op("mxnet.transpose")
class Transpose(nn.Module):
    """``transpose(axes)``; empty axes reverse the dims. ``SwapAxis`` maps here too."""

    def __init__(self, axes: Sequence[int] | None = None) -> None:
        super().__init__()
        self.axes = _ints(axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = self.axes or list(range(x.dim()))[::-1]
        return x.permute(*axes)


@register_op("mxnet.swapaxes")
class SwapAxes(nn.Module):
    """``SwapAxis(dim1, dim2)``."""

    def __init__(self, dim1: int = 0, dim2: int = 0) -> None:
        super().__init__()
        self.dim1, self.dim2 = dim1, dim2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(self.dim1, self.dim2)


@register_op("mxnet.split")
class Split(nn.Module):
    """``SliceChannel`` / ``split``: ``num_outputs`` equal parts along ``axis``."""

    def __init__(self, num_outputs: int, axis: int = 1, squeeze_axis: bool = False) -> None:
        super().__init__()
        self.num_outputs, self.axis, self.squeeze_axis = num_outputs, axis, squeeze_axis

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        size = x.shape[self.axis] // self.num_outputs
        parts = torch.split(x, size, dim=self.axis)
        if self.squeeze_axis:
            parts = tuple(p.squeeze(self.axis) for p in parts)
        return tuple(parts)


@register_op("mxnet.slice_axis")
class SliceAxis(nn.Module):
    """``slice_axis(axis, begin, end)``; ``end=None`` means to the end, negatives count back."""

    def __init__(self, axis: int, begin: int, end: int | None = None) -> None:
        super().__init__()
        self.axis, self.begin, self.end = axis, begin, end

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[self.axis]
        begin = self.begin + size if self.begin < 0 else self.begin
        end = size if self.end is None else (self.end + size if self.end < 0 else self.end)
        return x.narrow(self.axis, begin, end - begin)


@register_op("mxnet.expand_dims")
class ExpandDims(nn.Module):
    """``expand_dims(axis)``."""

    def __init__(self, axis: int) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(self.axis)


@register_op("mxnet.squeeze")
class Squeeze(nn.Module):
    """``squeeze(axis)``; no axis squeezes every size-1 dim."""

    def __init__(self, axis: Sequence[int] | None = None) -> None:
        super().__init__()
        self.axis = None if axis is None else _ints(axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None:
            return x.squeeze()
        return x.squeeze(tuple(a % x.dim() for a in self.axis))


@register_op("mxnet.reduce")
class Reduce(nn.Module):
    """``mean`` / ``sum`` / ``max`` / ``min`` with ``axis``, ``keepdims`` and ``exclude``."""

    def __init__(self, fn: str, axis: Sequence[int] | None = None, keepdims: bool = False,
                 exclude: bool = False) -> None:
        super().__init__()
        if fn not in ("mean", "sum", "max", "min"):
            raise ValueError(f"reduce fn {fn!r} is not one of mean, sum, max, min")
        self.fn, self.keepdims, self.exclude = fn, keepdims, exclude
        self.axis = None if axis is None else _ints(axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis is None or (not self.axis and not self.exclude):
            dims = list(range(x.dim()))
        else:
            given = {a % x.dim() for a in self.axis}
            dims = [d for d in range(x.dim()) if (d in given) != self.exclude]
        if not dims:
            return x
        if self.fn == "mean":
            y = x.mean(dim=dims, keepdim=self.keepdims)
        elif self.fn == "sum":
            y = x.sum(dim=dims, keepdim=self.keepdims)
        elif self.fn == "max":
            y = x.amax(dim=dims, keepdim=self.keepdims)
        else:
            y = x.amin(dim=dims, keepdim=self.keepdims)
        return y.reshape(1) if y.dim() == 0 else y  # MXNet 1.x has no 0-d arrays


@register_op("mxnet.l2norm")
class L2Normalization(nn.Module):
    """``L2Normalization``: ``x / sqrt(sum(x^2) + eps)`` per instance, channel or spatial."""

    def __init__(self, mode: str = "instance", eps: float = 1e-10) -> None:
        super().__init__()
        if mode not in ("instance", "channel", "spatial"):
            raise ValueError(f"L2Normalization mode {mode!r} is not instance, channel, spatial")
        self.mode, self.eps = mode, float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "instance":
            dims: list[int] = list(range(1, x.dim()))
        elif self.mode == "channel":
            dims = [1]
        else:
            dims = list(range(2, x.dim()))
        return x / torch.sqrt(x.square().sum(dim=dims, keepdim=True) + self.eps)


@register_op("mxnet.lrn")
class LRN(nn.Module):
    """MXNet ``LRN``: ``x / (knorm + alpha / nsize * sum(x^2 over nsize channels))^beta``."""

    def __init__(self, nsize: int, alpha: float = 1e-4, beta: float = 0.75,
                 knorm: float = 2.0) -> None:
        super().__init__()
        self.nsize, self.alpha, self.beta, self.knorm = nsize, alpha, beta, knorm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.local_response_norm(x, self.nsize, self.alpha, self.beta, self.knorm)


@register_op("mxnet.upsample_nearest")
class UpsampleNearest(nn.Module):
    """``UpSampling(sample_type='nearest', scale)``."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = int(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=self.scale, mode="nearest")


_DTYPES = {
    "float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
    "uint8": torch.uint8, "int8": torch.int8, "int32": torch.int32, "int64": torch.int64,
    "bool": torch.bool, "bfloat16": torch.bfloat16, "int16": torch.int16,
}


@register_op("mxnet.cast")
class Cast(nn.Module):
    """``Cast(dtype)`` / ``amp_cast``."""

    def __init__(self, dtype: str) -> None:
        super().__init__()
        if dtype not in _DTYPES:
            raise ValueError(f"Cast dtype {dtype!r} is not one of {sorted(_DTYPES)}")
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(_DTYPES[self.dtype])


@register_op("mxnet.constant")
class Constant(nn.Module):
    """A stored array used as data (a parameter variable feeding an op's data input)."""

    def __init__(self, shape: Sequence[int], dtype: str = "float32") -> None:
        super().__init__()
        torch_dtype = getattr(torch, dtype, None)
        if not isinstance(torch_dtype, torch.dtype):
            raise ValueError(f"constant dtype {dtype!r} is not a torch dtype name")
        value = torch.zeros(tuple(int(d) for d in shape), dtype=torch_dtype)
        self.value = nn.Parameter(value, requires_grad=value.is_floating_point())

    def forward(self) -> torch.Tensor:
        return self.value
