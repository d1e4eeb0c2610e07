"""Converters of the built-in MXNet ops. Absent attributes take MXNet 1.x defaults."""

from __future__ import annotations

import numpy as np

from repurpose.mxnet import _ops  # noqa: F401  (registers the mxnet.* graph ops)
from repurpose.mxnet._convert import ConvertContext, register_op

__all__: list[str] = []


def _spatial(ctx: ConvertContext, key: str, n: int, default: int) -> list[int]:
    value = ctx.attrs.as_tuple(key)
    if not value:
        return [default] * n
    if len(value) != n:
        raise ctx.fail(f"{key}={value} does not have {n} values like the kernel")
    return [int(v) for v in value]


def _check_layout(ctx: ConvertContext, accepted: tuple[str, ...]) -> None:
    layout = ctx.attrs.as_str("layout")
    if layout is not None and layout not in accepted:
        raise ctx.fail(f"layout {layout!r} is not supported (only {', '.join(accepted)})")


@register_op("Convolution")
def _convolution(ctx: ConvertContext) -> None:
    kernel = ctx.attrs.as_tuple("kernel")
    if not kernel or len(kernel) != 2:
        raise ctx.fail(f"kernel={kernel}: only 2-D convolution is supported")
    _check_layout(ctx, ("NCHW",))
    k = [int(v) for v in kernel]
    nf = ctx.attrs.as_int("num_filter")
    groups = ctx.attrs.as_int("num_group", 1)
    no_bias = ctx.attrs.as_bool("no_bias", False)
    shape = ctx.param_shape(1, "weight", lambda: (nf, ctx.input_shape(0)[1] // groups, *k))
    attrs = {
        "in_channels": shape[1] * groups, "out_channels": shape[0], "kernel_size": k,
        "stride": _spatial(ctx, "stride", 2, 1), "padding": _spatial(ctx, "pad", 2, 0),
        "dilation": _spatial(ctx, "dilate", 2, 1), "groups": groups, "bias": not no_bias,
    }
    weights = {"weight": ctx.param(1, "weight")}
    if not no_bias:
        weights["bias"] = ctx.param(2, "bias")
    ctx.emit("conv2d", attrs, weights=weights)


@register_op("Deconvolution")
def _deconvolution(ctx: ConvertContext) -> None:
    kernel = ctx.attrs.as_tuple("kernel")
    if not kernel or len(kernel) != 2:
        raise ctx.fail(f"kernel={kernel}: only 2-D deconvolution is supported")
    _check_layout(ctx, ("NCHW",))
    k = [int(v) for v in kernel]
    nf = ctx.attrs.as_int("num_filter")
    groups = ctx.attrs.as_int("num_group", 1)
    no_bias = ctx.attrs.as_bool("no_bias", True)  # MXNet's Deconvolution default
    shape = ctx.param_shape(1, "weight", lambda: (ctx.input_shape(0)[1], nf // groups, *k))
    common = {
        "in_channels": shape[0], "out_channels": shape[1] * groups, "kernel_size": k,
        "stride": _spatial(ctx, "stride", 2, 1), "dilation": _spatial(ctx, "dilate", 2, 1),
        "groups": groups, "bias": not no_bias,
    }
    weights = {"weight": ctx.param(1, "weight")}
    if not no_bias:
        weights["bias"] = ctx.param(2, "bias")
    target = ctx.attrs.as_tuple("target_shape")
    if target and any(t for t in target):
        ctx.emit("mxnet.deconv2d", {**common, "target_shape": [int(t) for t in target]},
                 weights=weights)
        return
    attrs = {**common, "padding": _spatial(ctx, "pad", 2, 0),
             "output_padding": _spatial(ctx, "adj", 2, 0)}
    ctx.emit("conv_transpose2d", attrs, weights=weights)


@register_op("BatchNorm")
def _batch_norm(ctx: ConvertContext) -> None:
    a = ctx.attrs
    if a.as_bool("output_mean_var", False):
        raise ctx.fail("output_mean_var=True is not supported")
    axis = a.as_int("axis", 1)
    gamma = ctx.param(1, "gamma")
    shape = ctx.param_shape(1, "gamma", lambda: (ctx.input_shape(0)[axis],))
    if a.as_bool("fix_gamma", True):  # MXNet's default: gamma is treated as 1
        gamma = np.ones(shape, np.float32)
    attrs = {"num_features": shape[0], "eps": a.as_float("eps", 1e-3),
             "momentum": round(1.0 - a.as_float("momentum", 0.9), 9)}
    weights = {"weight": gamma, "bias": ctx.param(2, "beta"),
               "running_mean": ctx.param(3, "moving_mean"),
               "running_var": ctx.param(4, "moving_var")}
    if axis == 1:
        ctx.emit("batch_norm", attrs, weights=weights)
    else:
        ctx.emit("mxnet.batch_norm", {**attrs, "axis": axis}, weights=weights)


_ACTIVATIONS = {"relu": ("relu", {}), "sigmoid": ("sigmoid", {}), "tanh": ("tanh", {}),
                "softrelu": ("mxnet.unary", {"fn": "softrelu"}),
                "softsign": ("mxnet.unary", {"fn": "softsign"})}


@register_op("Activation")
def _activation(ctx: ConvertContext) -> None:
    act = ctx.attrs.as_str("act_type")
    if act not in _ACTIVATIONS:
        raise ctx.fail(f"act_type={act!r} is not one of {', '.join(_ACTIVATIONS)}")
    op, attrs = _ACTIVATIONS[act]
    ctx.emit(op, attrs)


@register_op("LeakyReLU")
def _leaky_relu(ctx: ConvertContext) -> None:
    act = ctx.attrs.as_str("act_type", "leaky")
    slope = ctx.attrs.as_float("slope", 0.25)
    if act == "leaky":
        ctx.emit("relu", {"negative_slope": slope})
    elif act == "rrelu":  # inference uses the mean slope
        lower = ctx.attrs.as_float("lower_bound", 0.125)
        upper = ctx.attrs.as_float("upper_bound", 0.334)
        ctx.emit("relu", {"negative_slope": (lower + upper) / 2})
    elif act == "elu":
        ctx.emit("elu", {"alpha": slope})
    elif act in ("selu", "gelu"):
        ctx.emit("mxnet.unary", {"fn": act})
    elif act == "prelu":
        shape = ctx.param_shape(1, "gamma", lambda: (ctx.input_shape(0)[1],))
        gamma = ctx.param(1, "gamma")
        ctx.emit("prelu", {"num_parameters": int(np.prod(shape))},
                 weights={"weight": None if gamma is None else gamma.reshape(-1)})
    else:
        raise ctx.fail(f"act_type={act!r} is not one of leaky, prelu, elu, selu, gelu, rrelu")


@register_op("Pooling")
def _pooling(ctx: ConvertContext) -> None:
    a = ctx.attrs
    pool_type = a.as_str("pool_type", "max")
    if pool_type not in ("max", "avg", "sum"):
        raise ctx.fail(f"pool_type={pool_type!r} is not supported (max, avg, sum)")
    _check_layout(ctx, ("NCHW", "NCW"))
    global_pool = a.as_bool("global_pool", False)
    kernel = [int(v) for v in (a.as_tuple("kernel") or ())]
    if not global_pool and len(kernel) not in (1, 2):
        raise ctx.fail(f"kernel={kernel}: only 1-D and 2-D pooling are supported")
    convention = a.as_str("pooling_convention", "valid")
    if convention not in ("valid", "full", "same"):
        raise ctx.fail(f"pooling_convention={convention!r} is not valid, full or same")
    n = len(kernel)
    ctx.emit("mxnet.pool", {
        "kernel": kernel, "pool_type": pool_type, "global_pool": global_pool,
        "stride": _spatial(ctx, "stride", n, 1) if n else [],
        "pad": _spatial(ctx, "pad", n, 0) if n else [],
        "convention": convention, "count_include_pad": a.as_bool("count_include_pad", True),
    })


@register_op("FullyConnected")
def _fully_connected(ctx: ConvertContext) -> None:
    hidden = ctx.attrs.as_int("num_hidden")
    no_bias = ctx.attrs.as_bool("no_bias", False)
    flatten = ctx.attrs.as_bool("flatten", True)

    def infer() -> tuple[int, int]:
        shape = ctx.input_shape(0)
        return hidden, int(np.prod(shape[1:])) if flatten else shape[-1]

    shape = ctx.param_shape(1, "weight", infer)
    weights = {"weight": ctx.param(1, "weight")}
    if not no_bias:
        weights["bias"] = ctx.param(2, "bias")
    ctx.emit("linear", {"in_features": shape[1], "out_features": shape[0],
                        "bias": not no_bias, "axis": 1 if flatten else -1}, weights=weights)


def _simple(op: str, attrs: dict | None = None):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        ctx.emit(op, dict(attrs or {}))
    return convert


for _name in ("Flatten", "flatten"):
    register_op(_name, _simple("flatten"))
for _name in ("_copy", "identity", "BlockGrad", "stop_gradient", "_identity_with_attr_like_rhs"):
    register_op(_name, _simple("identity"))


@register_op("Concat")
def _concat(ctx: ConvertContext) -> None:
    ctx.emit("concat", {"dim": ctx.attrs.as_int("dim", 1)},
             inputs=[ctx.input(i) for i in range(ctx.num_inputs)])


register_op("concat", _concat)


def _add_n(ctx: ConvertContext) -> None:
    ctx.emit("add", {}, inputs=[ctx.input(i) for i in range(ctx.num_inputs)])


for _name in ("add_n", "ElementWiseSum", "_sum"):
    register_op(_name, _add_n)

_BINARY_NAMES = {
    "add": ("elemwise_add", "_plus", "_Plus", "_add", "broadcast_add", "broadcast_plus"),
    "sub": ("elemwise_sub", "_minus", "_Minus", "_sub", "broadcast_sub", "broadcast_minus"),
    "mul": ("elemwise_mul", "_mul", "_Mul", "broadcast_mul"),
    "div": ("elemwise_div", "_div", "_Div", "broadcast_div"),
    "maximum": ("_maximum", "_Maximum", "broadcast_maximum"),
    "minimum": ("_minimum", "_Minimum", "broadcast_minimum"),
    "power": ("_power", "_Power", "broadcast_power"),
}


def _binary(fn: str):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        ctx.emit("mxnet.binary", {"fn": fn}, inputs=[ctx.input(0), ctx.input(1)])
    return convert


for _fn, _names in _BINARY_NAMES.items():
    for _name in _names:
        register_op(_name, _binary(_fn))

_SCALAR_NAMES = {
    "add": ("_plus_scalar", "_PlusScalar"), "sub": ("_minus_scalar", "_MinusScalar"),
    "rsub": ("_rminus_scalar", "_RMinusScalar"), "mul": ("_mul_scalar", "_MulScalar"),
    "div": ("_div_scalar", "_DivScalar"), "rdiv": ("_rdiv_scalar", "_RDivScalar"),
    "power": ("_power_scalar", "_PowerScalar"), "rpower": ("_rpower_scalar", "_RPowerScalar"),
    "maximum": ("_maximum_scalar", "_MaximumScalar"),
    "minimum": ("_minimum_scalar", "_MinimumScalar"),
}


def _scalar(fn: str):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        ctx.emit("mxnet.scalar", {"fn": fn, "scalar": ctx.attrs.as_float("scalar", 0.0)})
    return convert


for _fn, _names in _SCALAR_NAMES.items():
    for _name in _names:
        register_op(_name, _scalar(_fn))

for _fn in ("relu", "sigmoid", "tanh", "exp", "log", "sqrt", "square", "abs", "negative",
            "rsqrt", "reciprocal"):
    register_op(_fn, _simple("mxnet.unary", {"fn": _fn}))


@register_op("Dropout")
def _dropout(ctx: ConvertContext) -> None:
    p = ctx.attrs.as_float("p", 0.5)
    if ctx.attrs.as_str("mode", "training") == "always" and p > 0:
        ctx.emit("mxnet.dropout_always", {"p": p})
    else:
        ctx.emit("dropout", {"p": p})


def _softmax_like(log: bool):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        axis = ctx.attrs.as_int("axis", -1)
        temperature = ctx.attrs.as_float("temperature", 1.0)
        if temperature == 1.0:
            ctx.emit("log_softmax" if log else "softmax", {"dim": axis})
        else:
            ctx.emit("mxnet.softmax", {"axis": axis, "temperature": temperature, "log": log})
    return convert


register_op("softmax", _softmax_like(False))
register_op("log_softmax", _softmax_like(True))


@register_op("SoftmaxOutput")
def _softmax_output(ctx: ConvertContext) -> None:
    """Inference form; the label input (input 1) is ignored."""
    if ctx.attrs.as_bool("multi_output", False):
        ctx.emit("softmax", {"dim": 1})
    elif ctx.attrs.as_bool("preserve_shape", False):
        ctx.emit("softmax", {"dim": -1})
    else:
        ctx.emit("mxnet.softmax", {"mode": "instance"})


register_op("Softmax", _softmax_output)


@register_op("SoftmaxActivation")
def _softmax_activation(ctx: ConvertContext) -> None:
    # "instance" flattens to 2-D as (prod(shape[:-1]), shape[-1]): the last axis
    ctx.emit("softmax", {"dim": 1 if ctx.attrs.as_str("mode", "instance") == "channel" else -1})


@register_op("clip")
def _clip(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.clip", {"a_min": ctx.attrs.as_float("a_min"),
                            "a_max": ctx.attrs.as_float("a_max")})


@register_op("Reshape")
def _reshape(ctx: ConvertContext) -> None:
    shape = ctx.attrs.as_tuple("shape")
    if not shape:
        raise ctx.fail("only the 'shape' attribute is supported (not the deprecated "
                       "target_shape)")
    ctx.emit("mxnet.reshape", {"shape": list(shape),
                               "reverse": ctx.attrs.as_bool("reverse", False)})


register_op("reshape", _reshape)


@register_op("transpose")
def _transpose(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.transpose", {"axes": list(ctx.attrs.as_tuple("axes", ()))})


@register_op("SwapAxis")
def _swap_axis(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.swapaxes", {"dim1": ctx.attrs.as_int("dim1", 0),
                                "dim2": ctx.attrs.as_int("dim2", 0)})


register_op("swapaxes", _swap_axis)


@register_op("SliceChannel")
def _slice_channel(ctx: ConvertContext) -> None:
    n = ctx.attrs.as_int("num_outputs")
    if not n or n < 1:
        raise ctx.fail("num_outputs is required")
    ctx.emit("mxnet.split", {"num_outputs": n, "axis": ctx.attrs.as_int("axis", 1),
                             "squeeze_axis": ctx.attrs.as_bool("squeeze_axis", False)},
             num_outputs=n)


register_op("split", _slice_channel)


@register_op("slice_axis")
def _slice_axis(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.slice_axis", {"axis": ctx.attrs.as_int("axis"),
                                  "begin": ctx.attrs.as_int("begin", 0),
                                  "end": ctx.attrs.as_int("end")})


@register_op("expand_dims")
def _expand_dims(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.expand_dims", {"axis": ctx.attrs.as_int("axis")})


@register_op("squeeze")
def _squeeze(ctx: ConvertContext) -> None:
    axis = ctx.attrs.as_tuple("axis")
    ctx.emit("mxnet.squeeze", {"axis": None if axis is None else list(axis)})


def _reduce(fn: str):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        axis = ctx.attrs.as_tuple("axis")
        ctx.emit("mxnet.reduce", {"fn": fn, "axis": None if axis is None else list(axis),
                                  "keepdims": ctx.attrs.as_bool("keepdims", False),
                                  "exclude": ctx.attrs.as_bool("exclude", False)})
    return convert


for _fn in ("mean", "sum", "max", "min"):
    register_op(_fn, _reduce(_fn))
register_op("sum_axis", _reduce("sum"))


@register_op("L2Normalization")
def _l2norm(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.l2norm", {"mode": ctx.attrs.as_str("mode", "instance"),
                              "eps": ctx.attrs.as_float("eps", 1e-10)})


@register_op("LRN")
def _lrn(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.lrn", {"nsize": ctx.attrs.as_int("nsize"),
                           "alpha": ctx.attrs.as_float("alpha", 1e-4),
                           "beta": ctx.attrs.as_float("beta", 0.75),
                           "knorm": ctx.attrs.as_float("knorm", 2.0)})


@register_op("UpSampling")
def _upsampling(ctx: ConvertContext) -> None:
    kind = ctx.attrs.as_str("sample_type", "nearest")
    scale = ctx.attrs.as_int("scale")
    if kind == "bilinear":
        _upsampling_bilinear(ctx, scale)
        return
    if kind != "nearest" or ctx.attrs.as_int("num_args", 1) != 1:
        raise ctx.fail(f"sample_type={kind!r} with {ctx.attrs.as_int('num_args', 1)} inputs "
                       "is not supported (nearest with one input, or bilinear)")
    ctx.emit("mxnet.upsample_nearest", {"scale": scale})


def _upsampling_bilinear(ctx: ConvertContext, scale: int) -> None:
    # MXNet runs bilinear up-sampling as a depthwise deconvolution with the given weight:
    # kernel 2s - s % 2, stride s, padding ceil((s - 1) / 2), no bias.
    channels = ctx.attrs.as_int("num_filter", 0) or ctx.input_shape(0)[1]
    kernel, pad = 2 * scale - scale % 2, -(-(scale - 1) // 2)
    ctx.emit("conv_transpose2d", {
        "in_channels": channels, "out_channels": channels, "kernel_size": [kernel, kernel],
        "stride": [scale, scale], "padding": [pad, pad], "groups": channels, "bias": False,
    }, weights={"weight": ctx.param(1, "weight")})


@register_op("Cast")
def _cast(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.cast", {"dtype": ctx.attrs.as_str("dtype")})


register_op("amp_cast", _cast)
register_op("cast", _cast)
