"""Layer converters: one function per Caffe layer type, in a registry.

A converter receives a :class:`LayerContext` and returns a :class:`Converted` (graph op,
JSON attributes, and the state dict made from the layer's blobs). Add your own with
:func:`register_layer`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from repurpose._exceptions import ModelFormatError, UnsupportedLayerError
from repurpose._registry import ConverterRegistry

__all__ = ["LayerContext", "Converted", "register_layer", "supported_layers", "get_converter",
           "check_supported"]


@dataclass
class Converted:
    """What a converter returns: one graph node's op, attrs and weights.

    Attributes
    ----------
    op : str
        A registered graph op (``"conv2d"``, ``"caffe.pool"``, ...).
    attrs : dict
        JSON-serialisable keyword arguments of the op factory.
    state : dict of str to ndarray
        Entries of the module's state dict taken from the Caffe blobs (may be empty).
    """

    op: str
    attrs: dict[str, Any] = field(default_factory=dict)
    state: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class LayerContext:
    """Everything a converter may read about one layer.

    Attributes
    ----------
    layer : message
        The V2 ``caffe.LayerParameter`` (read ``layer.convolution_param`` etc.).
    in_shapes : list of tuple of int
        Shapes of the bottoms (with batch axis), in order.
    blobs : list of ndarray or None
        The layer's weights from the caffemodel; ``None`` when none were loaded for it.
    params : dict
        The layer's parameters as written in the prototxt, decoded without the schema, so
        fields of fork layers the schema lacks are here too: ``{"interp_param": {"height":
        9}}``. Messages are dicts, enum values strings; a field written once is a value,
        written several times a list.
    binary_fields : dict of int to object
        Fields of the layer in the caffemodel that the schema lacks, by field number.
    """

    layer: Any
    in_shapes: list[tuple[int, ...]]
    blobs: list[np.ndarray] | None
    params: dict[str, Any] = field(default_factory=dict)
    binary_fields: dict[int, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.layer.name)

    @property
    def type(self) -> str:
        return str(self.layer.type)

    def blob(self, index: int, shape: Sequence[int], role: str) -> np.ndarray | None:
        """Blob ``index`` reshaped to ``shape`` (legacy 4-D shapes squeezed), or ``None``."""
        if self.blobs is None:
            return None
        if index >= len(self.blobs):
            raise ModelFormatError(
                f"layer {self.name!r} ({self.type}) has {len(self.blobs)} blob(s) in the "
                f"weights file; its {role} needs blob {index}"
            )
        arr = self.blobs[index]
        shape = tuple(int(d) for d in shape)
        if arr.shape == shape:
            return arr
        if [d for d in arr.shape if d != 1] == [d for d in shape if d != 1]:
            return arr.reshape(shape)
        raise ModelFormatError(
            f"layer {self.name!r} ({self.type}): {role} blob has shape {arr.shape} in the "
            f"weights file but the net needs {shape}"
        )


Converter = Callable[[LayerContext], Converted]
_CONVERTERS: ConverterRegistry[Converter] = ConverterRegistry("Caffe layer type")


def register_layer(type_name: str, converter: Converter | None = None) -> Any:
    """Register a converter for a Caffe layer type (also usable as a decorator).

    Parameters
    ----------
    type_name : str
        The Caffe type string, as in ``type: "Interp"``.
    converter : callable, optional
        ``f(ctx: LayerContext) -> Converted``. Omit it to use ``register_layer`` as a
        decorator.

    Raises
    ------
    ValueError
        If ``type_name`` already has a converter.

    Examples
    --------
    >>> from repurpose.caffe import Converted, register_layer
    >>> @register_layer("MyIdentity")
    ... def _identity(ctx):
    ...     return Converted("identity")
    """

    if converter is None:
        return lambda fn: _CONVERTERS.add(type_name, fn)
    return _CONVERTERS.add(type_name, converter)


def supported_layers() -> list[str]:
    """The Caffe layer types that have a converter, sorted (``Input`` becomes a graph input)."""
    return sorted([*_CONVERTERS, "Input"])


def get_converter(layer: Any) -> Converter:
    try:
        return _CONVERTERS[layer.type]
    except KeyError:
        raise unsupported_error([layer]) from None


def check_supported(layers: Sequence[Any]) -> None:
    """Raise one error naming every layer whose type has no converter."""
    missing = [layer for layer in layers if layer.type not in _CONVERTERS]
    if missing:
        raise unsupported_error(missing)


def unsupported_error(layers: Sequence[Any]) -> UnsupportedLayerError:
    types = sorted({str(layer.type) for layer in layers})
    where = "; ".join(f"layer {layer.name!r} has type {layer.type!r}" for layer in layers[:20])
    more = f" (and {len(layers) - 20} more)" if len(layers) > 20 else ""
    return UnsupportedLayerError(
        f"{len(types)} layer type(s) of this net have no converter: {', '.join(types)}. "
        f"{where}{more}. Supported types: {', '.join(supported_layers())}. "
        "Add converters with repurpose.caffe.register_layer."
    )


# ------------------------------------------------------------------ helpers


def _pair(values: Sequence[int], h: int | None, w: int | None, default: int,
          what: str, layer: str) -> list[int]:
    if h is not None or w is not None:
        return [int(h if h is not None else default), int(w if w is not None else default)]
    vals = list(values)
    if not vals:
        return [default, default]
    if len(vals) == 1:
        return [int(vals[0])] * 2
    if len(vals) == 2:
        return [int(v) for v in vals]
    raise UnsupportedLayerError(f"layer {layer!r}: {len(vals)}-D {what} is not supported (2-D)")


def _opt(msg: Any, name: str) -> int | None:
    return int(getattr(msg, name)) if msg.HasField(name) else None


def _axis(axis: int, rank: int, layer: str) -> int:
    if not -rank <= axis < rank:
        raise ModelFormatError(f"layer {layer!r}: axis {axis} out of range for {rank}-D input")
    return axis % rank


def _one_input(ctx: LayerContext) -> tuple[int, ...]:
    if len(ctx.in_shapes) != 1:
        raise ModelFormatError(
            f"layer {ctx.name!r} ({ctx.type}) takes 1 bottom, got {len(ctx.in_shapes)}"
        )
    return ctx.in_shapes[0]


def _state(**arrays: np.ndarray | None) -> dict[str, np.ndarray]:
    return {k: v for k, v in arrays.items() if v is not None}


# ------------------------------------------------------------------ vision layers


def _conv_common(ctx: LayerContext) -> tuple[dict[str, Any], Any, tuple[int, ...]]:
    p = ctx.layer.convolution_param
    if not ctx.in_shapes or len(ctx.in_shapes) != len(ctx.layer.top):
        raise ModelFormatError(f"layer {ctx.name!r}: a convolution needs one top per bottom, "
                               f"got {len(ctx.in_shapes)} bottom(s), {len(ctx.layer.top)} top(s)")
    shape = ctx.in_shapes[0]
    if any(s[1:] != shape[1:] for s in ctx.in_shapes):
        raise ModelFormatError(f"layer {ctx.name!r}: bottoms of a shared-weight convolution "
                               f"differ in shape: {ctx.in_shapes}")
    if len(shape) != 4 or p.axis != 1:
        raise UnsupportedLayerError(
            f"layer {ctx.name!r}: only 2-D convolution on NCHW input is supported "
            f"(input shape {shape}, axis {p.axis})"
        )
    if not p.HasField("num_output") or p.num_output == 0:
        raise ModelFormatError(f"layer {ctx.name!r}: convolution needs num_output > 0")
    kernel = _pair(p.kernel_size, _opt(p, "kernel_h"), _opt(p, "kernel_w"), 0, "kernel",
                   ctx.name)
    if min(kernel) <= 0:
        raise ModelFormatError(f"layer {ctx.name!r}: kernel size {kernel} must be positive")
    group = int(p.group)
    if group == 0 or shape[1] % group or p.num_output % group:
        raise ModelFormatError(
            f"layer {ctx.name!r}: group {group} must divide the input channels {shape[1]} "
            f"and num_output {p.num_output}"
        )
    stride = _pair(p.stride, _opt(p, "stride_h"), _opt(p, "stride_w"), 1, "stride", ctx.name)
    dilation = _pair(p.dilation, None, None, 1, "dilation", ctx.name)
    attrs: dict[str, Any] = {
        "kernel_size": kernel,
        "stride": stride,
        "padding": _pair(p.pad, _opt(p, "pad_h"), _opt(p, "pad_w"), 0, "pad", ctx.name),
        "dilation": dilation,
        "groups": group,
        "bias": bool(p.bias_term),
    }
    if min(stride) <= 0 or min(dilation) <= 0:
        raise ModelFormatError(f"layer {ctx.name!r}: stride and dilation must be positive")
    return attrs, p, shape


@register_layer("Convolution")
def _convolution(ctx: LayerContext) -> Converted:
    attrs, p, shape = _conv_common(ctx)
    attrs.update(in_channels=shape[1], out_channels=int(p.num_output))
    wshape = (p.num_output, shape[1] // attrs["groups"], *attrs["kernel_size"])
    state = _state(weight=ctx.blob(0, wshape, "weight"),
                   bias=ctx.blob(1, (p.num_output,), "bias") if p.bias_term else None)
    return Converted("conv2d" if len(ctx.in_shapes) == 1 else "caffe.conv2d_shared", attrs,
                     state)


@register_layer("Deconvolution")
def _deconvolution(ctx: LayerContext) -> Converted:
    attrs, p, shape = _conv_common(ctx)
    attrs.update(in_channels=shape[1], out_channels=int(p.num_output))
    wshape = (shape[1], p.num_output // attrs["groups"], *attrs["kernel_size"])
    state = _state(weight=ctx.blob(0, wshape, "weight"),
                   bias=ctx.blob(1, (p.num_output,), "bias") if p.bias_term else None)
    op = "conv_transpose2d" if len(ctx.in_shapes) == 1 else "caffe.conv_transpose2d_shared"
    return Converted(op, attrs, state)


def pooling_ceil(p: Any) -> bool:
    """Whether a PoolingParameter asks for ceil rounding, in either schema variant."""
    if "ceil_mode" in p.DESCRIPTOR.fields_by_name:
        return bool(p.ceil_mode)
    return int(p.round_mode) == 0


@register_layer("Pooling")
def _pooling(ctx: LayerContext) -> Converted:
    p = ctx.layer.pooling_param
    shape = _one_input(ctx)
    if len(shape) != 4:
        raise UnsupportedLayerError(f"layer {ctx.name!r}: pooling needs 4-D input, got {shape}")
    if p.pool not in (0, 1):
        raise UnsupportedLayerError(
            f"layer {ctx.name!r}: STOCHASTIC pooling is not supported (MAX and AVE are)"
        )
    method = "max" if p.pool == 0 else "ave"
    if p.global_pooling:
        return Converted("caffe.pool", {"method": method, "kernel": list(shape[2:]),
                                        "stride": [1, 1], "pad": [0, 0], "ceil": True,
                                        "global_pooling": True})
    kernel = _pair([p.kernel_size] if p.HasField("kernel_size") else [],
                   _opt(p, "kernel_h"), _opt(p, "kernel_w"), 0, "kernel", ctx.name)
    stride = _pair([p.stride], _opt(p, "stride_h"), _opt(p, "stride_w"), 1, "stride", ctx.name)
    pad = _pair([p.pad], _opt(p, "pad_h"), _opt(p, "pad_w"), 0, "pad", ctx.name)
    if min(kernel) <= 0 or min(stride) <= 0:
        raise ModelFormatError(
            f"layer {ctx.name!r}: pooling kernel {kernel} and stride {stride} must be positive"
        )
    if pad[0] >= kernel[0] or pad[1] >= kernel[1]:
        raise ModelFormatError(f"layer {ctx.name!r}: pad {pad} must be smaller than kernel "
                               f"{kernel} (Caffe's rule)")
    return Converted("caffe.pool", {"method": method, "kernel": kernel, "stride": stride,
                                    "pad": pad, "ceil": pooling_ceil(p),
                                    "global_pooling": False})


@register_layer("InnerProduct")
def _inner_product(ctx: LayerContext) -> Converted:
    p = ctx.layer.inner_product_param
    shape = _one_input(ctx)
    axis = _axis(p.axis, len(shape), ctx.name)
    k = math.prod(shape[axis:])
    n = int(p.num_output)
    if n == 0:
        raise ModelFormatError(f"layer {ctx.name!r}: InnerProduct needs num_output > 0")
    weight = ctx.blob(0, (k, n) if p.transpose else (n, k), "weight")
    if weight is not None and p.transpose:
        weight = np.ascontiguousarray(weight.T)
    state = _state(weight=weight, bias=ctx.blob(1, (n,), "bias") if p.bias_term else None)
    attrs = {"in_features": k, "out_features": n, "bias": bool(p.bias_term),
             "axis": -1 if axis == len(shape) - 1 else axis}
    return Converted("linear", attrs, state)


@register_layer("LRN")
def _lrn(ctx: LayerContext) -> Converted:
    p = ctx.layer.lrn_param
    if p.local_size % 2 == 0:
        raise ModelFormatError(f"layer {ctx.name!r}: LRN local_size {p.local_size} must be odd")
    region = "across" if p.norm_region == 0 else "within"
    return Converted("caffe.lrn", {"size": int(p.local_size), "alpha": float(p.alpha),
                                   "beta": float(p.beta), "k": float(p.k), "region": region})


@register_layer("BatchNorm")
def _batch_norm(ctx: LayerContext) -> Converted:
    p = ctx.layer.batch_norm_param
    shape = _one_input(ctx)
    c = shape[1]
    global_stats = p.use_global_stats if p.HasField("use_global_stats") else True
    attrs = {"num_features": c, "eps": float(p.eps), "affine": False,
             "momentum": 1.0 - float(p.moving_average_fraction),
             "track_running_stats": bool(global_stats)}
    if ctx.blobs is not None and len(ctx.blobs) > 3:
        raise UnsupportedLayerError(
            f"BatchNorm layer {ctx.name!r} has {len(ctx.blobs)} blobs (NVIDIA-Caffe's fused "
            "scale/bias form); only Caffe's 3-blob BatchNorm is supported"
        )
    if not global_stats:
        return Converted("batch_norm", attrs)
    mean, var = ctx.blob(0, (c,), "mean"), ctx.blob(1, (c,), "variance")
    factor = ctx.blob(2, (1,), "scale factor")
    if mean is None or var is None or factor is None:
        return Converted("batch_norm", attrs)
    f = float(factor.reshape(-1)[0])
    if f == 0.0 and (np.any(mean) or np.any(var)):
        warnings.warn(
            f"BatchNorm layer {ctx.name!r} has scale factor 0 but non-zero statistics; Caffe "
            "then uses mean = var = 0 (NVIDIA-Caffe files store true statistics this way). "
            "Following Caffe.", stacklevel=2)
    scale = 0.0 if f == 0.0 else 1.0 / f
    state = {"running_mean": (mean * scale).astype(np.float32),
             "running_var": (var * scale).astype(np.float32)}
    return Converted("batch_norm", attrs, state)


def _scale_shape(ctx: LayerContext, axis: int, num_axes: int, what: str) -> list[int]:
    shape = ctx.in_shapes[0]
    axis = _axis(axis, len(shape), ctx.name) if shape else 0
    end = len(shape) if num_axes == -1 else axis + num_axes
    if num_axes < -1 or end > len(shape):
        raise ModelFormatError(f"layer {ctx.name!r}: {what} num_axes {num_axes} does not fit "
                               f"input shape {shape} from axis {axis}")
    return list(shape[axis:end])


@register_layer("Scale")
def _scale(ctx: LayerContext) -> Converted:
    p = ctx.layer.scale_param
    if len(ctx.in_shapes) == 2:
        in0, in1 = ctx.in_shapes
        axis = _axis(p.axis, len(in0), ctx.name)
        bshape = list(in1)
        if list(in0[axis : axis + len(bshape)]) != bshape:
            raise ModelFormatError(f"layer {ctx.name!r}: scale input shape {in1} does not "
                                   f"match input shape {in0} from axis {axis}")
        bias = ctx.blob(0, bshape, "bias") if p.bias_term else None
        return Converted("caffe.scale", {"axis": axis, "shape": None,
                                         "bias_term": bool(p.bias_term),
                                         "bias_shape": bshape}, _state(bias=bias))
    _one_input(ctx)
    shape = _scale_shape(ctx, p.axis, p.num_axes, "Scale")
    axis = _axis(p.axis, len(ctx.in_shapes[0]), ctx.name)
    state = _state(weight=ctx.blob(0, shape, "scale"),
                   bias=ctx.blob(1, shape, "bias") if p.bias_term else None)
    return Converted("caffe.scale", {"axis": axis, "shape": shape,
                                     "bias_term": bool(p.bias_term)}, state)


@register_layer("Bias")
def _bias(ctx: LayerContext) -> Converted:
    p = ctx.layer.bias_param
    axis = _axis(p.axis, len(ctx.in_shapes[0]), ctx.name)
    if len(ctx.in_shapes) == 2:
        return Converted("caffe.bias", {"axis": axis, "shape": None})
    shape = _scale_shape(ctx, p.axis, p.num_axes, "Bias")
    return Converted("caffe.bias", {"axis": axis, "shape": shape},
                     _state(bias=ctx.blob(0, shape, "bias")))


# ------------------------------------------------------------------ activations


@register_layer("ReLU")
def _relu(ctx: LayerContext) -> Converted:
    return Converted("relu", {"negative_slope": float(ctx.layer.relu_param.negative_slope)})


@register_layer("PReLU")
def _prelu(ctx: LayerContext) -> Converted:
    shape = _one_input(ctx)
    n = 1 if ctx.layer.prelu_param.channel_shared else shape[1]
    return Converted("prelu", {"num_parameters": n},
                     _state(weight=ctx.blob(0, (n,), "slope")))


@register_layer("ELU")
def _elu(ctx: LayerContext) -> Converted:
    return Converted("elu", {"alpha": float(ctx.layer.elu_param.alpha)})


def _simple(op: str) -> Converter:
    def convert(ctx: LayerContext) -> Converted:
        return Converted(op)
    return convert


register_layer("Sigmoid", _simple("sigmoid"))
register_layer("TanH", _simple("tanh"))
register_layer("AbsVal", _simple("caffe.absval"))
register_layer("BNLL", _simple("caffe.bnll"))


@register_layer("Power")
def _power(ctx: LayerContext) -> Converted:
    p = ctx.layer.power_param
    return Converted("caffe.power", {"power": float(p.power), "scale": float(p.scale),
                                     "shift": float(p.shift)})


def _exp_log(op: str, field_name: str) -> Converter:
    def convert(ctx: LayerContext) -> Converted:
        p = getattr(ctx.layer, field_name)
        if p.base != -1 and p.base <= 0:
            raise ModelFormatError(f"layer {ctx.name!r}: base {p.base} must be -1 or positive")
        return Converted(op, {"base": float(p.base), "scale": float(p.scale),
                              "shift": float(p.shift)})
    return convert


register_layer("Exp", _exp_log("caffe.exp", "exp_param"))
register_layer("Log", _exp_log("caffe.log", "log_param"))


@register_layer("Dropout")
def _dropout(ctx: LayerContext) -> Converted:
    # Caffe's dropout is inverted (scaled at train time), like nn.Dropout: identity in eval.
    return Converted("dropout", {"p": float(ctx.layer.dropout_param.dropout_ratio)})


@register_layer("Softmax")
def _softmax(ctx: LayerContext) -> Converted:
    shape = _one_input(ctx)
    return Converted("softmax", {"dim": _axis(ctx.layer.softmax_param.axis, len(shape),
                                              ctx.name)})


# ------------------------------------------------------------------ blob plumbing


@register_layer("Eltwise")
def _eltwise(ctx: LayerContext) -> Converted:
    p = ctx.layer.eltwise_param
    if len({tuple(s) for s in ctx.in_shapes}) != 1:
        raise ModelFormatError(f"layer {ctx.name!r}: Eltwise inputs differ in shape "
                               f"{ctx.in_shapes}")
    if p.operation == 1:
        coeffs = list(p.coeff)
        if coeffs and len(coeffs) != len(ctx.in_shapes):
            raise ModelFormatError(f"layer {ctx.name!r}: {len(coeffs)} coeff for "
                                   f"{len(ctx.in_shapes)} bottoms")
        return Converted("add", {"coeffs": [float(c) for c in coeffs] or None})
    if p.coeff:
        raise ModelFormatError(f"layer {ctx.name!r}: coeff is only allowed with SUM")
    return Converted("mul" if p.operation == 0 else "max")


@register_layer("Concat")
def _concat(ctx: LayerContext) -> Converted:
    p = ctx.layer.concat_param
    axis = p.axis if p.HasField("axis") or not p.HasField("concat_dim") else p.concat_dim
    return Converted("concat", {"dim": _axis(axis, len(ctx.in_shapes[0]), ctx.name)})


@register_layer("Slice")
def _slice(ctx: LayerContext) -> Converted:
    p = ctx.layer.slice_param
    shape = _one_input(ctx)
    axis = p.axis if p.HasField("axis") or not p.HasField("slice_dim") else p.slice_dim
    axis = _axis(axis, len(shape), ctx.name)
    n = len(ctx.layer.top)
    points = [int(v) for v in p.slice_point] or None
    if points is not None and len(points) != n - 1:
        raise ModelFormatError(f"layer {ctx.name!r}: {len(points)} slice points for {n} tops")
    return Converted("caffe.slice", {"axis": axis, "points": points, "n": n})


@register_layer("Split")
def _split(ctx: LayerContext) -> Converted:
    _one_input(ctx)
    return Converted("caffe.split", {"n": len(ctx.layer.top)})


@register_layer("Flatten")
def _flatten(ctx: LayerContext) -> Converted:
    p = ctx.layer.flatten_param
    rank = len(_one_input(ctx))
    return Converted("flatten", {"start_dim": _axis(p.axis, rank, ctx.name),
                                 "end_dim": _axis(p.end_axis, rank, ctx.name)})


@register_layer("Reshape")
def _reshape(ctx: LayerContext) -> Converted:
    p = ctx.layer.reshape_param
    _one_input(ctx)
    dims = [int(d) for d in p.shape.dim]
    if dims.count(-1) > 1 or any(d < -1 for d in dims):
        raise ModelFormatError(f"layer {ctx.name!r}: bad reshape dims {dims}")
    return Converted("caffe.reshape", {"dims": dims, "axis": int(p.axis),
                                       "num_axes": int(p.num_axes)})


@register_layer("Crop")
def _crop(ctx: LayerContext) -> Converted:
    p = ctx.layer.crop_param
    if len(ctx.in_shapes) != 2:
        raise ModelFormatError(f"layer {ctx.name!r}: Crop takes 2 bottoms")
    axis = _axis(p.axis, len(ctx.in_shapes[0]), ctx.name)
    offsets = [int(o) for o in p.offset]
    if len(offsets) not in (0, 1, len(ctx.in_shapes[0]) - axis):
        raise ModelFormatError(f"layer {ctx.name!r}: {len(offsets)} crop offsets for "
                               f"{len(ctx.in_shapes[0]) - axis} axes")
    return Converted("caffe.crop", {"axis": axis, "offsets": offsets})


@register_layer("ArgMax")
def _argmax(ctx: LayerContext) -> Converted:
    p = ctx.layer.argmax_param
    shape = _one_input(ctx)
    axis = _axis(p.axis, len(shape), ctx.name) if p.HasField("axis") else None
    span = shape[axis] if axis is not None else math.prod(shape[1:])
    if not 1 <= p.top_k <= span:
        raise ModelFormatError(f"layer {ctx.name!r}: top_k {p.top_k} must be in 1..{span}")
    return Converted("caffe.argmax", {"top_k": int(p.top_k),
                                      "out_max_val": bool(p.out_max_val), "axis": axis})
