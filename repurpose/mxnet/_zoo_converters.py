"""Converters of the MXNet ops that model-zoo exports use beyond the basics.

GluonCV and insightface (RetinaFace) exports: ``Crop``, bilinear ``UpSampling``,
``_contrib_BilinearResize2D``, ``_contrib_AdaptiveAvgPooling2D``, ``hard_sigmoid``, general
``slice``/``slice_like``, ``Pad``, ``tile``/``repeat``/``reverse``, broadcasting, comparisons,
``where``, ``argmax``, ``norm``, ``softmin`` and the instance/layer/group norms. Absent
attributes take MXNet 1.9 defaults.
"""

from __future__ import annotations

from repurpose.mxnet import _zoo_ops  # noqa: F401  (registers the graph ops)
from repurpose.mxnet._convert import ConvertContext, register_op
from repurpose.mxnet._converters import _binary, _scalar, _simple

__all__: list[str] = []


def _two_inputs(ctx: ConvertContext, wanted: bool) -> list[str]:
    return [ctx.input(0), ctx.input(1)] if wanted else [ctx.input(0)]


@register_op("Crop")
def _crop(ctx: ConvertContext) -> None:
    num_args = ctx.attrs.as_int("num_args", 1)
    if num_args not in (1, 2):
        raise ctx.fail(f"num_args={num_args}: Crop takes 1 or 2 inputs")
    ctx.emit("mxnet.crop", {"h_w": list(ctx.attrs.as_tuple("h_w", (0, 0))),
                            "offset": list(ctx.attrs.as_tuple("offset", (0, 0))),
                            "center_crop": ctx.attrs.as_bool("center_crop", False)},
             inputs=_two_inputs(ctx, num_args == 2))


@register_op("_contrib_BilinearResize2D")
def _bilinear_resize(ctx: ConvertContext) -> None:
    a = ctx.attrs
    mode = a.as_str("mode", "size")
    if mode not in ("size", "like"):
        raise ctx.fail(f"mode={mode!r} is not supported (size, like)")
    ctx.emit("mxnet.bilinear_resize", {
        "height": a.as_int("height", 1), "width": a.as_int("width", 1),
        "scale_height": a.as_float("scale_height"), "scale_width": a.as_float("scale_width"),
        "align_corners": a.as_bool("align_corners", True),
    }, inputs=_two_inputs(ctx, mode == "like"))


@register_op("_contrib_AdaptiveAvgPooling2D")
def _adaptive_pool(ctx: ConvertContext) -> None:
    size = ctx.attrs.as_tuple("output_size") or (1,)
    ctx.emit("mxnet.adaptive_avg_pool", {"output_size": [int(v) for v in size]})


@register_op("hard_sigmoid")
def _hard_sigmoid(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.hard_sigmoid", {"alpha": ctx.attrs.as_float("alpha", 0.2),
                                    "beta": ctx.attrs.as_float("beta", 0.5)})


@register_op("slice")
def _slice(ctx: ConvertContext) -> None:
    begin = list(ctx.attrs.as_tuple("begin"))
    end = list(ctx.attrs.as_tuple("end"))
    step = ctx.attrs.as_tuple("step")
    ctx.emit("mxnet.slice", {"begin": begin, "end": end,
                             "step": list(step) if step else None})


register_op("crop", _slice)  # MXNet's alias of slice


@register_op("slice_like")
def _slice_like(ctx: ConvertContext) -> None:
    axes = ctx.attrs.as_tuple("axes")
    ctx.emit("mxnet.slice_like", {"axes": list(axes) if axes else None},
             inputs=[ctx.input(0), ctx.input(1)])


@register_op("Pad")
def _pad(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.pad", {"mode": ctx.attrs.as_str("mode", "constant"),
                           "pad_width": list(ctx.attrs.as_tuple("pad_width")),
                           "constant_value": ctx.attrs.as_float("constant_value", 0.0)})


register_op("pad", _pad)


@register_op("tile")
def _tile(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.tile", {"reps": list(ctx.attrs.as_tuple("reps"))})


@register_op("repeat")
def _repeat(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.repeat", {"repeats": ctx.attrs.as_int("repeats"),
                              "axis": ctx.attrs.as_int("axis")})


@register_op("reverse")
def _reverse(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.flip", {"axis": list(ctx.attrs.as_tuple("axis"))})


register_op("flip", _reverse)


def _fill(value: float):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        ctx.emit("mxnet.fill_like", {"value": value})
    return convert


register_op("zeros_like", _fill(0.0))
register_op("ones_like", _fill(1.0))


@register_op("broadcast_like")
def _broadcast_like(ctx: ConvertContext) -> None:
    if ctx.attrs.as_tuple("lhs_axes") or ctx.attrs.as_tuple("rhs_axes"):
        raise ctx.fail("lhs_axes/rhs_axes are not supported")
    ctx.emit("mxnet.broadcast", {}, inputs=[ctx.input(0), ctx.input(1)])


@register_op("broadcast_to")
def _broadcast_to(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.broadcast", {"shape": list(ctx.attrs.as_tuple("shape"))})


@register_op("broadcast_axis")
def _broadcast_axis(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.broadcast", {"axis": list(ctx.attrs.as_tuple("axis")),
                                 "size": list(ctx.attrs.as_tuple("size"))})


register_op("broadcast_axes", _broadcast_axis)


@register_op("where")
def _where(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.where", {}, inputs=[ctx.input(0), ctx.input(1), ctx.input(2)])


@register_op("argmax")
def _argmax(ctx: ConvertContext) -> None:
    ctx.emit("mxnet.argmax", {"axis": ctx.attrs.as_int("axis"),
                              "keepdims": ctx.attrs.as_bool("keepdims", False)})


@register_op("norm")
def _norm(ctx: ConvertContext) -> None:
    order = ctx.attrs.as_int("ord", 2)
    if order not in (1, 2):
        raise ctx.fail(f"ord={order} is not supported (1 or 2)")
    axis = ctx.attrs.as_tuple("axis")
    ctx.emit("mxnet.norm", {"ord": order, "axis": list(axis) if axis else None,
                            "keepdims": ctx.attrs.as_bool("keepdims", False)})


@register_op("softmin")
def _softmin(ctx: ConvertContext) -> None:
    # softmin(x) = softmax(-x / T): the softmax op with a negated temperature
    ctx.emit("mxnet.softmax", {"mode": "axis", "axis": ctx.attrs.as_int("axis", -1),
                               "temperature": -ctx.attrs.as_float("temperature", 1.0)})


def _affine_norm(op: str, default_eps: float):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        gamma = ctx.param(1, "gamma")
        shape = ctx.param_shape(1, "gamma", lambda: _norm_width(ctx, op))
        attrs = {"channels": int(shape[0]), "eps": ctx.attrs.as_float("eps", default_eps)}
        if op == "mxnet.layer_norm":
            attrs["axis"] = ctx.attrs.as_int("axis", -1)
        ctx.emit(op, attrs, weights={"weight": gamma, "bias": ctx.param(2, "beta")})
    return convert


def _norm_width(ctx: ConvertContext, op: str) -> tuple[int]:
    shape = ctx.input_shape(0)
    if op == "mxnet.group_norm":
        return (ctx.attrs.as_int("num_groups", 1),)
    if op == "mxnet.layer_norm":
        return (shape[ctx.attrs.as_int("axis", -1)],)
    return (shape[1],)


register_op("InstanceNorm", _affine_norm("mxnet.instance_norm", 1e-3))
register_op("LayerNorm", _affine_norm("mxnet.layer_norm", 1e-5))
register_op("GroupNorm", _affine_norm("mxnet.group_norm", 1e-5))


def _depth_space(to_space: bool):  # type: ignore[no-untyped-def]
    def convert(ctx: ConvertContext) -> None:
        ctx.emit("mxnet.depth_space", {"block_size": ctx.attrs.as_int("block_size"),
                                       "to_space": to_space})
    return convert


register_op("depth_to_space", _depth_space(True))
register_op("space_to_depth", _depth_space(False))

_COMPARE_NAMES = ("greater", "greater_equal", "lesser", "lesser_equal", "equal", "not_equal")
for _fn in _COMPARE_NAMES:
    register_op(f"_{_fn}", _binary(_fn))
    register_op(f"broadcast_{_fn}", _binary(_fn))
    register_op(f"_{_fn}_scalar", _scalar(_fn))
for _fn in ("erf", "floor", "ceil", "sign", "round"):
    register_op(_fn, _simple("mxnet.unary", {"fn": _fn}))
