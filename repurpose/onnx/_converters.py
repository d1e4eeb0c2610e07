"""Converters of the ONNX ops (default domain, opsets 9 to 21) into graph layers.

Attributes that moved to inputs across opsets (``Clip`` min/max in 11, ``Squeeze`` axes in
13, ``Pad`` pads in 11, ``Reduce*`` axes in 13/18, ``Split`` sizes in 13, ``Slice`` in 10)
are read from wherever the model's opset puts them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from repurpose.onnx._convert import ConvertContext, register_op

__all__: list[str] = []


# ----- helpers ---------------------------------------------------------------------------
def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


def _ints(values: Any) -> list[int]:
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _from_attr_or_input(ctx: ConvertContext, attr: str, index: int, since: int) -> Any:
    """A setting given as attribute ``attr`` before opset ``since``, as input ``index`` after."""
    if ctx.opset < since:
        value = ctx.attr(attr)
        return None if value is None else list(value)
    return _ints(ctx.const(index, f"({attr}) ")) if ctx.has_input(index) else None


def _spatial_pads(ctx: ConvertContext, in_sizes: Sequence[int], kernel: Sequence[int],
                  stride: Sequence[int], dilation: Sequence[int]) -> list[int]:
    """ONNX pads ``[begin_1, ..., begin_n, end_1, ..., end_n]`` after resolving ``auto_pad``."""
    n = len(kernel)
    auto = ctx.attr("auto_pad", "NOTSET")
    if auto in ("NOTSET", ""):
        pads = list(ctx.attr("pads", [0] * 2 * n))
        if len(pads) != 2 * n:
            raise ctx.fail(f"pads={pads} do not fit {n} spatial axes")
        return pads
    if auto == "VALID":
        return [0] * 2 * n
    begin, end = [], []
    for size, k, s, d in zip(in_sizes, kernel, stride, dilation):
        total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
        small, large = total // 2, total - total // 2
        begin.append(small if auto == "SAME_UPPER" else large)
        end.append(large if auto == "SAME_UPPER" else small)
    return begin + end


def _fpad(onnx_pads: Sequence[int]) -> list[int]:
    """ONNX pads ``[b_1, ..., b_n, e_1, ..., e_n]`` -> ``F.pad`` order (last axis first)."""
    n = len(onnx_pads) // 2
    out: list[int] = []
    for axis in reversed(range(n)):
        out += [int(onnx_pads[axis]), int(onnx_pads[axis + n])]
    return out


def _check_2d(ctx: ConvertContext, rank: int) -> None:
    if rank != 4:
        raise ctx.fail(f"input has {rank} axes; only 2-D (N, C, H, W) inputs are supported")


# ----- convolution, normalisation, dense -------------------------------------------------
@register_op("Conv")
def _conv(ctx: ConvertContext) -> None:
    weight = ctx.const(1, "(weights) ").astype(np.float32)
    shape = ctx.shape(0)
    _check_2d(ctx, len(shape))
    bias = ctx.const(2, "(bias) ").astype(np.float32) if ctx.has_input(2) else None
    out_c, in_per_group, kh, kw = weight.shape
    stride = list(ctx.attr("strides", [1, 1]))
    dilation = list(ctx.attr("dilations", [1, 1]))
    groups = int(ctx.attr("group", 1))
    pads = _spatial_pads(ctx, shape[2:], (kh, kw), stride, dilation)
    common = {"in_channels": in_per_group * groups, "out_channels": out_c,
              "kernel_size": [kh, kw], "stride": stride, "dilation": dilation,
              "groups": groups, "bias": bias is not None}
    if pads[0] == pads[2] and pads[1] == pads[3]:
        ctx.emit("conv2d", {**common, "padding": pads[:2]}, weights={"weight": weight,
                                                                     "bias": bias})
    else:
        ctx.emit("onnx.conv2d", {**common, "pads": _fpad(pads)},
                 weights={"weight": weight, "bias": bias})


@register_op("ConvTranspose")
def _conv_transpose(ctx: ConvertContext) -> None:
    weight = ctx.const(1, "(weights) ").astype(np.float32)
    _check_2d(ctx, len(ctx.shape(0)))
    bias = ctx.const(2, "(bias) ").astype(np.float32) if ctx.has_input(2) else None
    if ctx.attr("output_shape") is not None or ctx.attr("auto_pad", "NOTSET") not in (
            "NOTSET", "VALID"):
        raise ctx.fail("output_shape and auto_pad SAME are not supported; give pads")
    pads = list(ctx.attr("pads", [0, 0, 0, 0]))
    in_c, out_per_group, kh, kw = weight.shape
    groups = int(ctx.attr("group", 1))
    attrs = {"in_channels": in_c, "out_channels": out_per_group * groups,
             "kernel_size": [kh, kw], "stride": list(ctx.attr("strides", [1, 1])),
             "output_padding": list(ctx.attr("output_padding", [0, 0])),
             "groups": groups, "bias": bias is not None,
             "dilation": list(ctx.attr("dilations", [1, 1]))}
    weights = {"weight": weight, "bias": bias}
    if pads[0] == pads[2] and pads[1] == pads[3]:
        ctx.emit("conv_transpose2d", {**attrs, "padding": pads[:2]}, weights=weights)
    else:  # Keras Conv2DTranspose(padding="same", strides=2) via tf2onnx: [0, 0, 1, 1]
        ctx.emit("onnx.conv_transpose2d", {**attrs, "crop": _fpad(pads)}, weights=weights)


@register_op("BatchNormalization")
def _batch_norm(ctx: ConvertContext) -> None:
    if ctx.attr("training_mode", 0):
        raise ctx.fail("training_mode=1 is not supported; export the model in eval mode")
    scale, bias, mean, var = (ctx.const(i).astype(np.float32) for i in range(1, 5))
    attrs = {"num_features": int(scale.size), "eps": float(ctx.attr("epsilon", 1e-5)),
             "momentum": 1.0 - float(ctx.attr("momentum", 0.9))}
    ctx.emit("batch_norm", attrs, weights={"weight": scale, "bias": bias,
                                           "running_mean": mean, "running_var": var})


@register_op("LayerNormalization")
def _layer_norm(ctx: ConvertContext) -> None:
    shape = ctx.shape(0)
    axis = _axis(int(ctx.attr("axis", -1)), len(shape))
    normalized = list(shape[axis:])
    scale = ctx.const(1).astype(np.float32)
    bias = ctx.const(2).astype(np.float32) if ctx.has_input(2) else None
    if list(scale.shape) != normalized:
        raise ctx.fail(f"scale of shape {scale.shape} does not cover axes {normalized}")
    ctx.emit("onnx.layer_norm", {"normalized_shape": normalized,
                                 "eps": float(ctx.attr("epsilon", 1e-5)),
                                 "bias": bias is not None},
             weights={"weight": scale, "bias": bias})


@register_op("LRN")
def _lrn(ctx: ConvertContext) -> None:
    ctx.emit("onnx.lrn", {"size": int(ctx.attr("size")), "alpha": float(ctx.attr("alpha", 1e-4)),
                          "beta": float(ctx.attr("beta", 0.75)), "k": float(ctx.attr("bias", 1.0))})


def _linear(ctx: ConvertContext, weight: np.ndarray, bias: np.ndarray | None) -> None:
    out_f, in_f = weight.shape
    ctx.emit("linear", {"in_features": in_f, "out_features": out_f, "bias": bias is not None,
                        "axis": -1}, weights={"weight": weight, "bias": bias})


@register_op("Gemm")
def _gemm(ctx: ConvertContext) -> None:
    if ctx.attr("transA", 0):
        raise ctx.fail("transA=1 is not supported")
    b = ctx.const(1, "(B, the weights) ").astype(np.float32)
    weight = b if ctx.attr("transB", 0) else b.T
    weight = float(ctx.attr("alpha", 1.0)) * weight
    bias = None
    if ctx.has_input(2):
        c = float(ctx.attr("beta", 1.0)) * ctx.const(2, "(C, the bias) ").astype(np.float32)
        if c.ndim == 2 and c.shape[0] != 1:
            raise ctx.fail(f"bias C of shape {c.shape} varies along the batch axis")
        bias = np.broadcast_to(c.reshape(-1), (weight.shape[0],)).copy()
    _linear(ctx, np.ascontiguousarray(weight), bias)


@register_op("MatMul")
def _matmul(ctx: ConvertContext) -> None:
    if ctx.is_const(1) and ctx.const(1).ndim == 2:
        _linear(ctx, np.ascontiguousarray(ctx.const(1).astype(np.float32).T), None)
    else:
        ctx.emit("onnx.matmul", {}, inputs=[ctx.input(0), ctx.input(1)])


# ----- elementwise -----------------------------------------------------------------------
def _binary(op: str) -> Any:
    def convert(ctx: ConvertContext) -> None:
        consts = [i for i in (0, 1) if ctx.is_const(i)]
        if not consts:
            ctx.emit("onnx.binary", {"op": op}, inputs=[ctx.input(0), ctx.input(1)])
            return
        pos = consts[0]
        value = ctx.const(pos)
        dtype = "float32" if value.dtype.kind == "f" else "int64"
        ctx.emit("onnx.binary", {"op": op, "const_shape": list(value.shape),
                                 "const_pos": pos, "const_dtype": dtype},
                 inputs=[ctx.input(1 - pos)], weights={"constant": value.astype(dtype)})

    return convert


for _onnx_op, _op in (("Add", "add"), ("Sub", "sub"), ("Mul", "mul"), ("Div", "div"),
                      ("Pow", "pow"), ("Greater", "greater"), ("Less", "less"),
                      ("Equal", "equal"), ("GreaterOrEqual", "greater_equal"),
                      ("LessOrEqual", "less_equal"), ("And", "and"), ("Or", "or"),
                      ("Xor", "xor")):
    register_op(_onnx_op, _binary(_op))


@register_op("Where")
def _where(ctx: ConvertContext) -> None:  # Keras ReLU(threshold=...) via tf2onnx
    ctx.emit("onnx.where", {}, inputs=[ctx.input(i) for i in range(3)])


def _variadic(op: str | None, single: str) -> Any:
    binary = _binary(single)

    def convert(ctx: ConvertContext) -> None:
        if len(ctx.node.input) == 2:
            binary(ctx)
        elif len(ctx.node.input) == 1:
            ctx.alias(0)
        elif op is None:
            raise ctx.fail("more than 2 inputs are not supported")
        else:
            ctx.emit(op, {}, inputs=[ctx.input(i) for i in range(len(ctx.node.input))])

    return convert


register_op("Sum", _variadic("add", "add"))
register_op("Max", _variadic("max", "max"))
register_op("Min", _variadic(None, "min"))


def _simple(op: str, **attrs: Any) -> Any:
    def convert(ctx: ConvertContext) -> None:
        ctx.emit(op, dict(attrs))

    return convert


register_op("Relu", _simple("relu"))
register_op("Sigmoid", _simple("sigmoid"))
register_op("Tanh", _simple("tanh"))
register_op("HardSwish", _simple("onnx.hardswish"))
register_op("Selu", _simple("onnx.selu"))
for _onnx_op, _fn in (("Sqrt", "sqrt"), ("Exp", "exp"), ("Log", "log"), ("Neg", "neg"),
                      ("Abs", "abs"), ("Reciprocal", "reciprocal"), ("Erf", "erf"),
                      ("Floor", "floor"), ("Ceil", "ceil"), ("Softplus", "softplus"),
                      ("Softsign", "softsign"), ("Sign", "sign"), ("Sin", "sin"),
                      ("Cos", "cos"), ("Round", "round"), ("Not", "not")):
    register_op(_onnx_op, _simple("onnx.unary", fn=_fn))


@register_op("LeakyRelu")
def _leaky_relu(ctx: ConvertContext) -> None:
    ctx.emit("relu", {"negative_slope": float(ctx.attr("alpha", 0.01))})


@register_op("Elu")
def _elu(ctx: ConvertContext) -> None:
    ctx.emit("elu", {"alpha": float(ctx.attr("alpha", 1.0))})


@register_op("Gelu")
def _gelu(ctx: ConvertContext) -> None:
    ctx.emit("onnx.gelu", {"approximate": ctx.attr("approximate", "none")})


@register_op("HardSigmoid")
def _hard_sigmoid(ctx: ConvertContext) -> None:
    ctx.emit("onnx.hard_sigmoid", {"alpha": float(ctx.attr("alpha", 0.2)),
                                   "beta": float(ctx.attr("beta", 0.5))})


@register_op("PRelu")
def _prelu(ctx: ConvertContext) -> None:
    slope = ctx.const(1, "(slope) ").astype(np.float32)
    shape = ctx.shape(0)
    padded = (1,) * (len(shape) - slope.ndim) + tuple(slope.shape)
    channels = shape[1] if len(shape) > 1 else 1
    if slope.size == 1 or (padded[1] == channels and slope.size == channels):
        ctx.emit("prelu", {"num_parameters": int(slope.size)},
                 weights={"weight": slope.reshape(-1)})
    else:
        ctx.emit("onnx.prelu", {"shape": list(slope.shape)}, weights={"weight": slope})


@register_op("Clip")
def _clip(ctx: ConvertContext) -> None:
    if ctx.opset < 11:
        low, high = ctx.attr("min"), ctx.attr("max")
    else:
        low = float(ctx.const(1, "(min) ")) if ctx.has_input(1) else None
        high = float(ctx.const(2, "(max) ")) if ctx.has_input(2) else None
    ctx.emit("onnx.clip", {"min": None if low is None else float(low),
                           "max": None if high is None else float(high)})


def _softmax(log: bool) -> Any:
    def convert(ctx: ConvertContext) -> None:
        rank = len(ctx.shape(0))
        axis = _axis(int(ctx.attr("axis", 1 if ctx.opset < 13 else -1)), rank)
        if ctx.opset >= 13 or axis == rank - 1:
            ctx.emit("log_softmax" if log else "softmax", {"dim": axis})
        else:
            ctx.emit("onnx.softmax_2d", {"axis": axis, "log": log})

    return convert


register_op("Softmax", _softmax(False))
register_op("LogSoftmax", _softmax(True))


@register_op("Identity")
def _identity(ctx: ConvertContext) -> None:
    ctx.alias(0)


@register_op("Dropout")
def _dropout(ctx: ConvertContext) -> None:
    ctx.alias(0)


@register_op("Cast")
def _cast(ctx: ConvertContext) -> None:
    from onnx import helper

    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(int(ctx.attr("to"))))
    ctx.emit("onnx.cast", {"dtype": str(dtype)})


# ----- pooling ---------------------------------------------------------------------------
def _pool(mode: str) -> Any:
    def convert(ctx: ConvertContext) -> None:
        shape = ctx.shape(0)
        kernel = list(ctx.attr("kernel_shape"))
        n = len(kernel)
        if len(shape) != n + 2 or n > 3:
            raise ctx.fail(f"a {n}-D kernel on an input of {len(shape)} axes is not supported")
        stride = list(ctx.attr("strides", [1] * n))
        dilation = list(ctx.attr("dilations", [1] * n))
        pads = _spatial_pads(ctx, shape[2:], kernel, stride, dilation)
        if mode == "avg" and any(d != 1 for d in dilation):
            raise ctx.fail("dilated average pooling is not supported")
        ctx.emit("onnx.pool", {"mode": mode, "kernel_size": kernel, "stride": stride,
                               "pads": _fpad(pads), "dilation": dilation,
                               "ceil_mode": bool(ctx.attr("ceil_mode", 0)),
                               "count_include_pad": bool(ctx.attr("count_include_pad", 0))})

    return convert


register_op("MaxPool", _pool("max"))
register_op("AveragePool", _pool("avg"))
register_op("GlobalAveragePool", _simple("onnx.global_pool", mode="avg"))
register_op("GlobalMaxPool", _simple("onnx.global_pool", mode="max"))


def _reduce(op: str) -> Any:
    def convert(ctx: ConvertContext) -> None:
        since = 13 if op == "sum" else 18
        axes = _from_attr_or_input(ctx, "axes", 1, since)
        rank = len(ctx.shape(0))
        if axes is None and ctx.attr("noop_with_empty_axes", 0):
            ctx.alias(0)
            return
        ctx.emit("onnx.reduce", {"op": op, "axes": None if axes is None else
                                 [_axis(a, rank) for a in axes],
                                 "keepdims": bool(ctx.attr("keepdims", 1))})

    return convert


for _onnx_op, _op in (("ReduceMean", "mean"), ("ReduceSum", "sum"), ("ReduceMax", "max"),
                      ("ReduceMin", "min"), ("ReduceProd", "prod"), ("ReduceL2", "l2")):
    register_op(_onnx_op, _reduce(_op))


# ----- shapes ----------------------------------------------------------------------------
@register_op("Flatten")
def _flatten(ctx: ConvertContext) -> None:
    ctx.emit("onnx.flatten", {"axis": _axis(int(ctx.attr("axis", 1)), len(ctx.shape(0)))})


@register_op("Reshape")
def _reshape(ctx: ConvertContext) -> None:
    folded = ctx.folded(1) if ctx.is_const(1) else None
    if folded is None:
        raise ctx.fail("the target shape must be computable from constants and input shapes")
    target = _ints(folded.values[0])
    if ctx.attr("allowzero", 0) and 0 in target:
        raise ctx.fail("allowzero=1 with a zero in the shape is not supported")
    batched = ctx.batched(0)
    if folded.batch_dependent:
        varying = [i for i, v in enumerate(folded.values[0]) if
                   any(v != other[i] for other in folded.values[1:])]
        factor = _batch_factor(ctx, folded.values) if batched and varying == [0] else None
        if factor == 1:
            target[0] = 0  # the input's first axis (the batch), copied
        elif len(varying) == 1 and -1 not in target:
            target[varying[0]] = -1
        elif factor is not None:  # N * heads in attention, beside a -1
            ctx.emit("onnx.batch_reshape", {"shape": target[1:], "batch_factor": factor})
            return
        else:
            raise ctx.fail(f"the target shape depends on the batch size on axes {varying}")
    elif batched and target and target[0] == ctx._b.declared_batch:
        target[0] = 0  # the exporter baked in the batch size of its example input
    ctx.emit("reshape", {"shape": target})


def _batch_factor(ctx: ConvertContext, targets: Sequence[np.ndarray]) -> int | None:
    """``m`` when the target's first axis is ``m`` times the input's at every probe."""
    pairs = [(int(t[0]), shape[0]) for t, shape in zip(targets, ctx.shapes(0))]
    if any(b <= 0 or a % b for a, b in pairs):
        return None
    ratios = {a // b for a, b in pairs}
    return ratios.pop() if len(ratios) == 1 else None


@register_op("Transpose")
def _transpose(ctx: ConvertContext) -> None:
    rank = len(ctx.shape(0))
    perm = ctx.attr("perm") or list(reversed(range(rank)))
    ctx.emit("onnx.transpose", {"perm": [int(p) for p in perm]})


@register_op("Squeeze")
def _squeeze(ctx: ConvertContext) -> None:
    shape = ctx.shape(0)
    axes = _from_attr_or_input(ctx, "axes", 1, 13)
    if axes is None:
        axes = [i for i, d in enumerate(shape) if d == 1]
    ctx.emit("onnx.squeeze", {"axes": [_axis(a, len(shape)) for a in axes]})


@register_op("Unsqueeze")
def _unsqueeze(ctx: ConvertContext) -> None:
    axes = _from_attr_or_input(ctx, "axes", 1, 13) or []
    rank = len(ctx.shape(0)) + len(axes)
    ctx.emit("onnx.unsqueeze", {"axes": [_axis(a, rank) for a in axes]})


@register_op("Concat")
def _concat(ctx: ConvertContext) -> None:
    rank = len(ctx.shape(0))
    inputs = [ctx.input(i) for i in range(len(ctx.node.input)) if ctx.has_input(i)]
    ctx.emit("concat", {"dim": _axis(int(ctx.attr("axis")), rank)}, inputs=inputs)


@register_op("Split")
def _split(ctx: ConvertContext) -> None:
    shape = ctx.shape(0)
    axis = _axis(int(ctx.attr("axis", 0)), len(shape))
    sizes = _from_attr_or_input(ctx, "split", 1, 13)
    count = len(ctx.node.output)
    if sizes is None:
        step = math.ceil(shape[axis] / count)
        sizes = [min(step, shape[axis] - i * step) for i in range(count)]
    ctx.emit("onnx.split", {"axis": axis, "sizes": sizes}, num_outputs=count)


@register_op("Slice")
def _slice(ctx: ConvertContext) -> None:
    rank = len(ctx.shape(0))
    if ctx.opset < 10:
        starts, ends = list(ctx.attr("starts")), list(ctx.attr("ends"))
        axes = list(ctx.attr("axes", range(len(starts))))
        steps = [1] * len(starts)
    else:
        starts, ends = _ints(ctx.const(1)), _ints(ctx.const(2))
        axes = _ints(ctx.const(3)) if ctx.has_input(3) else list(range(len(starts)))
        steps = _ints(ctx.const(4)) if ctx.has_input(4) else [1] * len(starts)
    if any(s <= 0 for s in steps):
        raise ctx.fail(f"steps {steps} must be positive")
    specs = [[_axis(a, rank), s, e, st] for a, s, e, st in zip(axes, starts, ends, steps)]
    ctx.emit("onnx.slice", {"specs": specs})


@register_op("Gather")
def _gather(ctx: ConvertContext) -> None:
    indices = ctx.const(1, "(indices) ")
    rank = len(ctx.shape(0))
    if indices.ndim > 1:
        raise ctx.fail(f"indices of shape {indices.shape}; only scalars and 1-D are supported")
    value: int | list[int] = int(indices) if indices.ndim == 0 else _ints(indices)
    ctx.emit("onnx.gather", {"axis": _axis(int(ctx.attr("axis", 0)), rank), "indices": value})


@register_op("Pad")
def _pad(ctx: ConvertContext) -> None:
    rank = len(ctx.shape(0))
    if ctx.opset < 11:
        pads, value = list(ctx.attr("pads")), float(ctx.attr("value", 0.0))
    else:
        pads = _ints(ctx.const(1, "(pads) "))
        value = float(ctx.const(2)) if ctx.has_input(2) else 0.0
    axes = _ints(ctx.const(3)) if ctx.has_input(3) else list(range(rank))
    begin, end = [0] * rank, [0] * rank
    for i, axis in enumerate(axes):
        begin[_axis(axis, rank)] = pads[i]
        end[_axis(axis, rank)] = pads[i + len(axes)]
    padded = [d for d in range(rank) if begin[d] or end[d]]
    first = padded[0] if padded else rank - 1
    mode = ctx.attr("mode", "constant")
    if mode != "constant":
        if first < 2:
            raise ctx.fail(f"{mode} padding of the batch or channel axis is not supported")
        first = 2  # torch pads every spatial axis in these modes
    fpad: list[int] = []
    for d in range(rank - 1, first - 1, -1):
        fpad += [begin[d], end[d]]
    ctx.emit("onnx.pad", {"pads": fpad, "mode": mode, "value": value})


@register_op("Resize")
def _resize(ctx: ConvertContext) -> None:
    shape = ctx.shape(0)
    scales: list[float] | None
    if ctx.opset < 11:
        scales, sizes = _floats(ctx.const(1)), None
        coords = "asymmetric"
    else:
        scales = _floats(ctx.const(2)) if ctx.has_input(2) and ctx.const(2).size else None
        sizes = _ints(ctx.const(3)) if ctx.has_input(3) else None
        coords = ctx.attr("coordinate_transformation_mode", "half_pixel")
    _emit_resize(ctx, shape, scales, sizes, coords)


@register_op("Upsample")
def _upsample(ctx: ConvertContext) -> None:
    scales = ctx.attr("scales") if ctx.opset < 9 else _floats(ctx.const(1, "(scales) "))
    _emit_resize(ctx, ctx.shape(0), list(scales), None, "asymmetric")


def _floats(values: Any) -> list[float]:
    return [float(v) for v in np.asarray(values).reshape(-1)]


def _emit_resize(ctx: ConvertContext, shape: Sequence[int], scales: list[float] | None,
                 sizes: list[int] | None, coords: str) -> None:
    _check_2d(ctx, len(shape))
    if ctx.attr("axes") is not None:
        raise ctx.fail("the axes attribute is not supported")
    if (scales and scales[:2] != [1.0, 1.0]) or (sizes and sizes[1] != shape[1]):
        raise ctx.fail("resizing the batch or channel axis is not supported")
    mode = ctx.attr("mode", "nearest")
    attrs: dict[str, Any] = {"scales": None if sizes is not None else scales[2:]
                             if scales else None,
                             "sizes": None if sizes is None else sizes[2:]}
    if mode == "nearest":
        attrs.update(mode=_nearest_mode(ctx, coords, shape, scales, sizes), align_corners=None)
    elif mode in ("linear", "cubic"):
        if coords == "align_corners":
            corners = True
        elif coords in ("half_pixel", "pytorch_half_pixel"):
            corners = False
        else:
            raise ctx.fail(f"{mode} resizing with coordinate_transformation_mode={coords!r} "
                           "is not supported (use half_pixel or align_corners)")
        if mode == "cubic" and float(ctx.attr("cubic_coeff_a", -0.75)) != -0.75:
            raise ctx.fail("cubic_coeff_a other than -0.75 is not supported")
        attrs.update(mode="bilinear" if mode == "linear" else "bicubic", align_corners=corners)
    else:
        raise ctx.fail(f"mode={mode!r} is not supported")
    ctx.emit("onnx.resize", attrs)


def _nearest_mode(ctx: ConvertContext, coords: str, shape: Sequence[int],
                  scales: list[float] | None, sizes: list[int] | None) -> str:
    rounding = ctx.attr("nearest_mode", "round_prefer_floor") if ctx.opset >= 11 else "floor"
    if coords == "asymmetric" and rounding == "floor":
        return "nearest"
    factors = scales[2:] if scales else [s / d for s, d in zip(sizes or [], shape[2:])]
    integral = all(float(f).is_integer() and f >= 1 for f in factors)
    if coords in ("half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn") and integral:
        return "nearest"  # integer upsampling never hits a rounding tie: floor(dst / s)
    if coords == "half_pixel" and rounding == "round_prefer_ceil":
        return "nearest-exact"
    raise ctx.fail(f"nearest resizing with coordinate_transformation_mode={coords!r} and "
                   f"nearest_mode={rounding!r} at scales {factors} is not supported")
