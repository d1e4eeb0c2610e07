"""Graph ops with ONNX semantics that no standard torch module has.

Where a standard module matches an ONNX op exactly (``Relu``, ``BatchNormalization``,
symmetric ``Conv``), the converters use the generic ops of :mod:`repurpose.graph` instead,
so that freezing and ``layer_types`` see ordinary torch layers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from repurpose.graph import register_op

__all__ = [
    "PaddedConv2d", "CroppedConvTranspose2d", "Pool", "GlobalPool", "Flatten", "Transpose",
    "Squeeze", "Unsqueeze", "Binary", "Unary", "Where", "Clip", "HardSigmoid", "PReluAny",
    "Softmax2d", "Pad", "Resize", "Reduce", "BatchReshape", "MatMul", "Slice", "Gather",
    "Split", "Constant", "Cast",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "int64": torch.int64, "int32": torch.int32, "bool": torch.bool,
           "uint8": torch.uint8, "int8": torch.int8}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name`` (``"float32"``)."""
    return _DTYPES[name]


@register_op("onnx.conv2d")
class PaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` preceded by an explicit (possibly asymmetric) zero padding.

    ``pads`` is in ``F.pad`` order: (left, right, top, bottom).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int] = (1, 1), dilation: Sequence[int] = (1, 1),
                 groups: int = 1, bias: bool = True, pads: Sequence[int] = (0, 0, 0, 0)) -> None:
        kh, kw = kernel_size
        super().__init__(in_channels, out_channels, (kh, kw), (stride[0], stride[1]), 0,
                         (dilation[0], dilation[1]), groups, bias)
        self.pads = [int(p) for p in pads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.pads):
            x = F.pad(x, self.pads)
        return super().forward(x)


@register_op("onnx.conv_transpose2d")
class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` without padding, then cropped by (possibly asymmetric) ONNX
    ``pads``, which ConvTranspose removes from its full output.

    ``crop`` is in ``F.pad`` order: (left, right, top, bottom).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Sequence[int],
                 stride: Sequence[int] = (1, 1), output_padding: Sequence[int] = (0, 0),
                 groups: int = 1, bias: bool = True, dilation: Sequence[int] = (1, 1),
                 crop: Sequence[int] = (0, 0, 0, 0)) -> None:
        super().__init__(in_channels, out_channels, (kernel_size[0], kernel_size[1]),
                         (stride[0], stride[1]), 0, (output_padding[0], output_padding[1]),
                         groups, bias, (dilation[0], dilation[1]))
        self.crop = [int(c) for c in crop]

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        y = super().forward(x)
        return F.pad(y, [-c for c in self.crop]) if any(self.crop) else y


@register_op("onnx.pool")
class Pool(nn.Module):
    """ONNX ``MaxPool``/``AveragePool`` over 1 to 3 spatial axes, with asymmetric pads
    (``F.pad`` order) and ``count_include_pad``."""

    def __init__(self, mode: str, kernel_size: Sequence[int], stride: Sequence[int],
                 pads: Sequence[int] | None = None, dilation: Sequence[int] | None = None,
                 ceil_mode: bool = False, count_include_pad: bool = False) -> None:
        super().__init__()
        n = len(kernel_size)
        if n not in (1, 2, 3):
            raise ValueError(f"kernel_size={list(kernel_size)}; 1 to 3 spatial axes supported")
        self.mode = mode
        self.kernel_size = tuple(int(k) for k in kernel_size)
        self.stride = tuple(int(s) for s in stride)
        self.pads = [int(p) for p in pads] if pads is not None else [0] * (2 * n)
        self.dilation = tuple(int(d) for d in dilation) if dilation is not None else (1,) * n
        self.ceil_mode = bool(ceil_mode)
        self.count_include_pad = bool(count_include_pad)
        self._max = getattr(F, f"max_pool{n}d")
        self._avg = getattr(F, f"avg_pool{n}d")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self._pool(x)
        if self.ceil_mode and any(self.pads):
            out = self._drop_windows_in_end_padding(x, out)
        return out

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "max":
            if any(self.pads):
                x = F.pad(x, self.pads, value=float("-inf"))
            return self._max(x, self.kernel_size, self.stride, 0, self.dilation,
                             ceil_mode=self.ceil_mode)
        padded = F.pad(x, self.pads) if any(self.pads) else x
        out = self._avg(padded, self.kernel_size, self.stride, 0, self.ceil_mode, True)
        if any(self.pads) and not self.count_include_pad:
            ones = F.pad(torch.ones_like(x[:1, :1]), self.pads)
            out = out / self._avg(ones, self.kernel_size, self.stride, 0, self.ceil_mode, True)
        return out

    def _drop_windows_in_end_padding(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """With ``ceil_mode``, ONNX drops a last window that starts in the end padding; torch
        only sees the padded input here and keeps it."""
        n = len(self.kernel_size)
        for axis in range(n):
            size = int(x.shape[2 + axis])
            begin = self.pads[2 * (n - 1 - axis)]
            count = int(out.shape[2 + axis])
            if (count - 1) * self.stride[axis] >= size + begin:
                out = out.narrow(2 + axis, 0, count - 1)
        return out

    def extra_repr(self) -> str:
        return f"{self.mode}, kernel_size={self.kernel_size}, stride={self.stride}, " \
               f"pads={self.pads}"


@register_op("onnx.global_pool")
class GlobalPool(nn.Module):
    """``GlobalAveragePool``/``GlobalMaxPool``: reduce every axis after 1, keeping them."""

    def __init__(self, mode: str = "avg") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(2, x.dim()))
        return x.mean(dims, keepdim=True) if self.mode == "avg" else x.amax(dims, keepdim=True)


@register_op("onnx.flatten")
class Flatten(nn.Module):
    """ONNX ``Flatten``: a 2-D result, axes before ``axis`` in rows, the rest in columns."""

    def __init__(self, axis: int = 1) -> None:
        super().__init__()
        self.axis = int(axis)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.axis == 0:
            return x.reshape(1, -1)
        x = torch.flatten(x, 0, self.axis - 1) if self.axis > 1 else x
        return torch.flatten(x, 1) if x.dim() > 1 else x.unsqueeze(1)


@register_op("onnx.transpose")
class Transpose(nn.Module):
    def __init__(self, perm: Sequence[int]) -> None:
        super().__init__()
        self.perm = [int(p) for p in perm]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(self.perm)


@register_op("onnx.squeeze")
class Squeeze(nn.Module):
    def __init__(self, axes: Sequence[int]) -> None:
        super().__init__()
        self.axes = [int(a) for a in axes]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in sorted(self.axes, reverse=True):  # one by one: exports to every opset
            x = x.squeeze(axis)
        return x


@register_op("onnx.unsqueeze")
class Unsqueeze(nn.Module):
    """``axes`` index the output and are applied in increasing order."""

    def __init__(self, axes: Sequence[int]) -> None:
        super().__init__()
        self.axes = sorted(int(a) for a in axes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for axis in self.axes:
            x = x.unsqueeze(axis)
        return x


_BINARY: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
    "pow": torch.pow, "max": torch.maximum, "min": torch.minimum,
    "greater": torch.gt, "less": torch.lt, "equal": torch.eq, "greater_equal": torch.ge,
    "less_equal": torch.le, "and": torch.logical_and, "or": torch.logical_or,
    "xor": torch.logical_xor,
}


@register_op("onnx.binary")
class Binary(nn.Module):
    """An elementwise binary op with numpy broadcasting; one operand may be a stored
    constant (the buffer ``constant``, at argument position ``const_pos``)."""

    def __init__(self, op: str, const_shape: Sequence[int] | None = None,
                 const_pos: int = 1, const_dtype: str = "float32") -> None:
        super().__init__()
        if op not in _BINARY:
            raise ValueError(f"op={op!r}; expected one of {sorted(_BINARY)}")
        self.op = op
        self.const_pos = int(const_pos)
        self.constant: torch.Tensor | None
        if const_shape is None:
            self.constant = None
        else:
            self.register_buffer(
                "constant", torch.zeros([int(d) for d in const_shape], dtype=torch_dtype(
                    const_dtype)))

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        args = list(xs)
        if self.constant is not None:
            args.insert(self.const_pos, self.constant)
        return _BINARY[self.op](args[0], args[1])

    def extra_repr(self) -> str:
        return self.op


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log, "neg": torch.neg,
    "abs": torch.abs, "reciprocal": torch.reciprocal, "erf": torch.erf, "floor": torch.floor,
    "ceil": torch.ceil, "softplus": F.softplus, "softsign": F.softsign, "sign": torch.sign,
    "sin": torch.sin, "cos": torch.cos, "round": torch.round, "not": torch.logical_not,
}


@register_op("onnx.unary")
class Unary(nn.Module):
    """An elementwise function without parameters."""

    def __init__(self, fn: str) -> None:
        super().__init__()
        if fn not in _UNARY:
            raise ValueError(f"fn={fn!r}; expected one of {sorted(_UNARY)}")
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _UNARY[self.fn](x)

    def extra_repr(self) -> str:
        return self.fn


@register_op("onnx.where")
class Where(nn.Module):
    """``condition ? x : y`` elementwise, with numpy broadcasting."""

    def forward(self, condition: torch.Tensor, x: torch.Tensor, y: torch.Tensor
                ) -> torch.Tensor:
        return torch.where(condition.to(torch.bool), x, y)


@register_op("onnx.batch_reshape")
class BatchReshape(nn.Module):
    """Reshape to ``(batch * batch_factor, *shape)``, e.g. ``N * heads`` in attention;
    in ``shape``, ``0`` keeps the input's size on that axis and ``-1`` is inferred."""

    def __init__(self, shape: Sequence[int], batch_factor: int) -> None:
        super().__init__()
        self.shape = [int(d) for d in shape]
        self.batch_factor = int(batch_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rest = [x.shape[i] if d == 0 else d for i, d in enumerate(self.shape, 1)]
        return x.reshape([x.shape[0] * self.batch_factor, *rest])

    def extra_repr(self) -> str:
        return f"batch*{self.batch_factor}, shape={self.shape}"


@register_op("onnx.clip")
def _clip(min: float | None = None, max: float | None = None) -> nn.Module:  # noqa: A002
    if min == 0.0 and max == 6.0:
        return nn.ReLU6()
    return Clip(min, max)


class Clip(nn.Module):
    """``torch.clamp`` between optional bounds."""

    def __init__(self, min: float | None = None, max: float | None = None) -> None:  # noqa: A002
        super().__init__()
        self.min, self.max = min, max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(x, self.min, self.max)

    def extra_repr(self) -> str:
        return f"min={self.min}, max={self.max}"


@register_op("onnx.hard_sigmoid")
class HardSigmoid(nn.Module):
    """``max(0, min(1, alpha * x + beta))``."""

    def __init__(self, alpha: float = 0.2, beta: float = 0.5) -> None:
        super().__init__()
        self.alpha, self.beta = float(alpha), float(beta)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp(self.alpha * x + self.beta, 0.0, 1.0)


@register_op("onnx.prelu")
class PReluAny(nn.Module):
    """PReLU whose learned slope broadcasts against the input in any way."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.full([int(d) for d in shape], 0.25))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.where(x >= 0, x, x * self.weight)


@register_op("onnx.softmax_2d")
class Softmax2d(nn.Module):
    """Opset < 13 ``Softmax``/``LogSoftmax``: over all axes from ``axis`` on, flattened."""

    def __init__(self, axis: int = 1, log: bool = False) -> None:
        super().__init__()
        self.axis, self.log = int(axis), bool(log)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = torch.flatten(x, self.axis)
        out = F.log_softmax(flat, -1) if self.log else F.softmax(flat, -1)
        return out.reshape(x.shape)


@register_op("onnx.pad")
class Pad(nn.Module):
    """``F.pad`` with ONNX modes (``constant``, ``reflect``, ``edge``); pads in F.pad order."""

    _MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}

    def __init__(self, pads: Sequence[int], mode: str = "constant", value: float = 0.0) -> None:
        super().__init__()
        if mode not in self._MODES:
            raise ValueError(f"pad mode={mode!r}; expected one of {sorted(self._MODES)}")
        self.pads = [int(p) for p in pads]
        self.mode, self.value = mode, float(value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "constant":
            return F.pad(x, self.pads, value=self.value)
        return F.pad(x, self.pads, mode=self._MODES[self.mode])


@register_op("onnx.resize")
class Resize(nn.Module):
    """``F.interpolate`` by fixed ``scales`` or to fixed spatial ``sizes``."""

    def __init__(self, mode: str = "nearest", scales: Sequence[float] | None = None,
                 sizes: Sequence[int] | None = None, align_corners: bool | None = None) -> None:
        super().__init__()
        self.mode = mode
        self.scales = None if scales is None else [float(s) for s in scales]
        self.sizes = None if sizes is None else [int(s) for s in sizes]
        self.align_corners = align_corners

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sizes is not None:
            return F.interpolate(x, size=self.sizes, mode=self.mode,
                                 align_corners=self.align_corners)
        return F.interpolate(x, scale_factor=self.scales, mode=self.mode,
                             align_corners=self.align_corners, recompute_scale_factor=False)


_REDUCE = {"mean", "sum", "max", "min", "prod", "l2"}


@register_op("onnx.reduce")
class Reduce(nn.Module):
    """``ReduceMean``, ``ReduceSum``, ... over ``axes`` (None: all axes)."""

    def __init__(self, op: str, axes: Sequence[int] | None = None, keepdims: bool = True) -> None:
        super().__init__()
        if op not in _REDUCE:
            raise ValueError(f"reduce op={op!r}; expected one of {sorted(_REDUCE)}")
        self.op = op
        self.axes = None if axes is None else [int(a) for a in axes]
        self.keepdims = bool(keepdims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = tuple(range(x.dim())) if self.axes is None else tuple(self.axes)
        if self.op == "mean":
            return x.mean(dims, keepdim=self.keepdims)
        if self.op == "sum":
            return x.sum(dims, keepdim=self.keepdims)
        if self.op == "max":
            return x.amax(dims, keepdim=self.keepdims)
        if self.op == "min":
            return x.amin(dims, keepdim=self.keepdims)
        if self.op == "l2":
            return torch.sqrt((x * x).sum(dims, keepdim=self.keepdims))
        out = x
        for d in sorted(dims, reverse=True):
            out = out.prod(d, keepdim=self.keepdims)
        return out


@register_op("onnx.matmul")
class MatMul(nn.Module):
    """``torch.matmul`` of two computed values."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.matmul(a, b)


@register_op("onnx.slice")
class Slice(nn.Module):
    """Basic slicing: ``specs`` is a list of ``[axis, start, end, step]`` (step > 0)."""

    def __init__(self, specs: Sequence[Sequence[int]]) -> None:
        super().__init__()
        self.specs = [[int(v) for v in s] for s in specs]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        index: list[slice] = [slice(None)] * x.dim()
        for axis, start, end, step in self.specs:
            index[axis] = slice(start, end, step)
        return x[tuple(index)]


@register_op("onnx.gather")
class Gather(nn.Module):
    """``Gather`` with constant indices: a scalar index drops the axis."""

    def __init__(self, axis: int, indices: int | Sequence[int]) -> None:
        super().__init__()
        self.axis = int(axis)
        self.indices = indices if isinstance(indices, int) else [int(i) for i in indices]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.indices, int):
            return x.select(self.axis, self.indices)
        index = torch.tensor(self.indices, device=x.device)
        return torch.index_select(x, self.axis, index)


@register_op("onnx.split")
class Split(nn.Module):
    """Split along ``axis`` into pieces of the given ``sizes``; returns a tuple."""

    def __init__(self, axis: int, sizes: Sequence[int]) -> None:
        super().__init__()
        self.axis = int(axis)
        self.sizes = [int(s) for s in sizes]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(torch.split(x, self.sizes, dim=self.axis))


@register_op("onnx.constant")
class Constant(nn.Module):
    """A stored tensor (the buffer ``value``), for a constant that a layer reads as data."""

    def __init__(self, shape: Sequence[int], dtype: str = "float32") -> None:
        super().__init__()
        self.register_buffer("value", torch.zeros([int(d) for d in shape],
                                                  dtype=torch_dtype(dtype)))

    value: torch.Tensor

    def forward(self) -> torch.Tensor:
        return self.value


@register_op("onnx.cast")
class Cast(nn.Module):
    def __init__(self, dtype: str) -> None:
        super().__init__()
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(torch_dtype(self.dtype))


register_op("onnx.hardswish")(nn.Hardswish)
register_op("onnx.gelu")(nn.GELU)
register_op("onnx.selu")(nn.SELU)
register_op("onnx.lrn")(nn.LocalResponseNorm)
register_op("onnx.layer_norm")(nn.LayerNorm)
