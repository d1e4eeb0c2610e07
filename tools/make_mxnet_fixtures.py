"""Build the MXNet golden fixtures of tests/mxnet (run with `make mxnet-fixtures`).

Needs mxnet 1.9.1 + numpy 1.23.5 in its own venv (.venv-mxnet); never imports repurpose.
For each net it writes NAME-symbol.json, NAME-0000.params (random weights) and NAME-io.npz
(the input under "data" and the output of every internal node, keyed like the importer's
values: "node" or "node:k"). It also writes hand-made .params files for every record
version and dtype (our own writer, checked against mx.nd.load) and symbols in the older
`attr` and pre-nnvm `param` JSON forms (checked to give the same outputs in mxnet).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import struct
from pathlib import Path

# MXNet's own (non-oneDNN) CPU kernels: the reference semantics (pool.h etc.); the oneDNN
# path also fails on Deconvolution with target_shape.
os.environ.setdefault("MXNET_MKLDNN_ENABLED", "0")
os.environ.setdefault("MXNET_SUBGRAPH_BACKEND", "NONE")
os.environ.setdefault("MXNET_STORAGE_FALLBACK_LOG_VERBOSE", "0")

import mxnet as mx  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location(
    "mx_reference", HERE.parent / "repurpose" / "mxnet" / "_reference.py")
assert _spec and _spec.loader
reference = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference)

S = mx.sym
RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- networks
def conv_ops() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")
    c1 = S.Convolution(x, kernel=(3, 3), num_filter=8, pad=(1, 1), name="conv1")
    c2 = S.Convolution(c1, kernel=(3, 3), num_filter=8, stride=(2, 2), dilate=(2, 2),
                       pad=(2, 2), num_group=2, no_bias=True, name="conv2")
    d1 = S.Deconvolution(c2, kernel=(3, 3), num_filter=4, stride=(2, 2), pad=(1, 1),
                         adj=(1, 1), name="deconv1")
    d2 = S.Deconvolution(c2, kernel=(4, 4), num_filter=6, stride=(2, 2), no_bias=False,
                         target_shape=(9, 9), num_group=2, name="deconv2")
    bn1 = S.BatchNorm(c1, name="bn_default")  # fix_gamma=True, eps=1e-3 by default
    bn2 = S.BatchNorm(c1, fix_gamma=False, eps=1e-5, name="bn_gamma")
    bn3 = S.BatchNorm(S.transpose(c1, axes=(0, 2, 3, 1), name="to_nhwc"), fix_gamma=False,
                      axis=3, name="bn_axis3")
    fc1 = S.FullyConnected(c2, num_hidden=5, name="fc1")
    fc2 = S.FullyConnected(c2, num_hidden=3, flatten=False, no_bias=True, name="fc_noflat")
    return S.Group([d1, d2, bn1, bn2, bn3, fc1, fc2]), (2, 3, 8, 8)


def act_ops() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")
    c = S.Convolution(x, kernel=(1, 1), num_filter=6, name="conv")
    outs = [S.Activation(c, act_type=a, name=f"act_{a}")
            for a in ("relu", "sigmoid", "tanh", "softrelu", "softsign")]
    outs += [S.LeakyReLU(c, name="leaky_default"),
             S.LeakyReLU(c, act_type="leaky", slope=0.1, name="leaky"),
             S.LeakyReLU(c, act_type="prelu", name="prelu"),
             S.LeakyReLU(c, act_type="elu", slope=0.7, name="elu"),
             S.LeakyReLU(c, act_type="selu", name="selu"),
             S.LeakyReLU(c, act_type="gelu", name="gelu"),
             S.clip(c, a_min=-0.5, a_max=0.6, name="clip"),
             S.Dropout(c, p=0.3, name="drop"),
             S.softmax(c, axis=1, name="softmax1"),
             S.softmax(c, name="softmax_last"),
             S.log_softmax(c, axis=1, name="log_softmax"),
             S.SoftmaxActivation(c, name="smact_inst"),
             S.SoftmaxActivation(c, mode="channel", name="smact_chan"),
             S.LRN(c, nsize=3, name="lrn_default"),
             S.LRN(c, nsize=5, alpha=0.01, beta=0.5, knorm=1.0, name="lrn"),
             S.L2Normalization(c, name="l2_inst"),
             S.L2Normalization(c, mode="channel", name="l2_chan"),
             S.L2Normalization(c, mode="spatial", eps=1e-6, name="l2_spat"),
             S.UpSampling(c, scale=2, sample_type="nearest", name="upsample"),
             S.Cast(c, dtype="float16", name="cast16"),
             S.SoftmaxOutput(c, S.var("lab1"), name="smout_4d"),
             S.SoftmaxOutput(c, S.var("lab2"), multi_output=True, name="smout_multi"),
             S.SoftmaxOutput(c, S.var("lab3"), preserve_shape=True, name="smout_pres"),
             S._internal._copy(c, name="copy"), S.identity(c, name="ident"),
             S.BlockGrad(c, name="blockgrad")]
    return S.Group(outs), (2, 3, 5, 5)


def pool_ops() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")
    outs = []
    for pool in ("max", "avg", "sum"):
        for conv in ("valid", "full"):
            for pad in (0, 1):
                for cip in (True, False):
                    if pool != "avg" and not cip:
                        continue
                    kw = {} if cip else {"count_include_pad": False}
                    outs.append(S.Pooling(x, kernel=(3, 3), stride=(2, 2), pad=(pad, pad),
                                          pool_type=pool, pooling_convention=conv,
                                          name=f"{pool}_{conv}_p{pad}_{int(cip)}", **kw))
    outs.append(S.Pooling(x, kernel=(2, 3), stride=(3, 2), pad=(1, 0), pool_type="avg",
                          pooling_convention="full", name="avg_rect"))
    outs.append(S.Pooling(x, kernel=(3, 3), pool_type="max", name="max_defaults"))
    outs.append(S.Pooling(x, kernel=(3, 3), pool_type="avg", name="avg_defaults"))
    for pool in ("max", "avg", "sum"):
        outs.append(S.Pooling(x, kernel=(1, 1), global_pool=True, pool_type=pool,
                              name=f"global_{pool}"))
    flat = S.Reshape(x, shape=(0, 0, -1), name="as_1d")
    # 'same' is not testable here: mxnet 1.9.1 rejects it for 2-D and fails on 1-D input
    outs.append(S.Pooling(flat, kernel=(3,), stride=(2,), pad=(1,), pool_type="avg",
                          pooling_convention="full", name="avg_full_1d"))
    return S.Group(outs), (2, 3, 7, 7)


def math_ops() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")
    a = S.Convolution(x, kernel=(1, 1), num_filter=4, name="conv_a")
    b = S.Convolution(x, kernel=(1, 1), num_filter=4, name="conv_b")
    pos = S.Activation(b, act_type="sigmoid", name="pos") + 0.5
    m = S.mean(a, axis=(2, 3), keepdims=True, name="mean_hw")
    outs = [a + b, a - b, a * b, a / pos,
            S.elemwise_add(a, b, name="eadd"), S.elemwise_sub(a, b, name="esub"),
            S.elemwise_mul(a, b, name="emul"), S.elemwise_div(a, pos, name="ediv"),
            S.broadcast_add(a, m, name="badd"), S.broadcast_sub(a, m, name="bsub"),
            S.broadcast_mul(a, m, name="bmul"), S.broadcast_div(a, m + 2.0, name="bdiv"),
            a + 1.5, a - 0.5, 2.0 - a, a * 3.0, a / 4.0, 2.0 / pos, pos ** 2.0,
            S.maximum(a, 0.1), S.minimum(a, 0.2), S.add_n(a, b, a, name="addn"),
            S.sum(a, axis=1, name="sum_c"), S.mean(a, name="mean_all"),
            S.sum(a, axis=(1,), keepdims=True, exclude=True, name="sum_excl"),
            S.max(a, axis=2, name="max_h"), S.Concat(a, b, dim=1, name="concat_c"),
            S.Concat(a, b, dim=2, name="concat_h"), S.Flatten(a, name="flatten")]
    return S.Group(outs), (2, 3, 4, 4)


def shape_ops() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")
    c = S.Convolution(x, kernel=(1, 1), num_filter=6, name="conv")
    parts = S.SliceChannel(c, num_outputs=3, name="slice")
    sq = S.split(c, num_outputs=6, axis=1, squeeze_axis=True, name="split_sq")
    outs = [parts[0] * parts[2], sq[5],
            S.Reshape(c, shape=(0, -1), name="r_0_m1"),
            S.Reshape(c, shape=(-2,), name="r_m2"),
            S.Reshape(c, shape=(0, -3, 0), name="r_m3"),
            S.Reshape(c, shape=(0, -4, 2, -1, -2), name="r_m4"),
            S.Reshape(c, shape=(-1, 4), reverse=True, name="r_rev"),
            S.Reshape(S.SwapAxis(S.Reshape(c, shape=(0, 2, 3, 4, 4), name="shuf1"),
                                 dim1=1, dim2=2, name="shuf_swap"),
                      shape=(0, -3, -2), name="shuf2"),
            S.transpose(c, axes=(0, 3, 1, 2), name="transp"),
            S.transpose(c, name="transp_rev"),
            S.slice_axis(c, axis=1, begin=1, end=4, name="slice_axis"),
            S.slice_axis(c, axis=-1, begin=-3, end=None, name="slice_axis_neg"),
            S.expand_dims(c, axis=1, name="expand"),
            S.squeeze(S.expand_dims(c, axis=2, name="exp2"), axis=2, name="squeeze")]
    return S.Group(outs), (2, 3, 4, 4)


def head_ops() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")
    fc = S.FullyConnected(S.Flatten(x), num_hidden=5, name="fc")
    return S.SoftmaxOutput(fc, S.var("softmax_label"), name="softmax"), (3, 2, 3, 3)


def _bn_relu(x, name):  # type: ignore[no-untyped-def]
    return S.Activation(S.BatchNorm(x, fix_gamma=False, eps=2e-5, name=f"{name}_bn"),
                        act_type="relu", name=f"{name}_relu")


def resnet() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")
    x = S.BatchNorm(x, fix_gamma=True, eps=2e-5, name="bn_data")
    x = S.Convolution(x, kernel=(3, 3), num_filter=8, pad=(1, 1), no_bias=True, name="conv0")
    x = S.Pooling(_bn_relu(x, "stage0"), kernel=(3, 3), stride=(2, 2), pad=(1, 1),
                  pool_type="max", name="pool0")
    for i, (ch, stride) in enumerate([(8, 1), (16, 2)]):
        y = S.Convolution(_bn_relu(x, f"unit{i}_a"), kernel=(3, 3), num_filter=ch,
                          stride=(stride, stride), pad=(1, 1), no_bias=True,
                          name=f"unit{i}_conv1")
        y = S.Convolution(_bn_relu(y, f"unit{i}_b"), kernel=(3, 3), num_filter=ch, pad=(1, 1),
                          no_bias=True, name=f"unit{i}_conv2")
        short = x if stride == 1 else S.Convolution(x, kernel=(1, 1), num_filter=ch,
                                                    stride=(2, 2), no_bias=True,
                                                    name=f"unit{i}_sc")
        x = y + short
    x = _bn_relu(x, "final")
    x = S.Pooling(x, kernel=(7, 7), global_pool=True, pool_type="avg", name="pool1")
    x = S.FullyConnected(S.Flatten(x, name="flatten0"), num_hidden=10, name="fc1")
    return S.SoftmaxOutput(x, name="softmax"), (2, 3, 16, 16)


def inception() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    x = S.var("data")

    def cbr(y, ch, k, pad, name):  # type: ignore[no-untyped-def]
        y = S.Convolution(y, kernel=(k, k), num_filter=ch, pad=(pad, pad), name=f"{name}_conv")
        return _bn_relu(y, name)

    x = cbr(x, 8, 3, 1, "stem")
    b1 = cbr(x, 4, 1, 0, "b1")
    b2 = cbr(cbr(x, 4, 1, 0, "b2a"), 6, 3, 1, "b2b")
    b3 = cbr(cbr(x, 2, 1, 0, "b3a"), 4, 5, 2, "b3b")
    b4 = cbr(S.Pooling(x, kernel=(3, 3), stride=(1, 1), pad=(1, 1), pool_type="avg",
                       name="b4_pool"), 4, 1, 0, "b4")
    cat = S.Concat(b1, b2, b3, b4, name="mixed")
    out = S.Pooling(cat, kernel=(3, 3), stride=(2, 2), pool_type="max",
                    pooling_convention="full", name="reduce_pool")
    return S.FullyConnected(out, num_hidden=4, name="fc"), (2, 3, 10, 10)


def zoo_ops() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    """Ops of GluonCV / insightface exports beyond the basics (Crop, bilinear up-sampling,
    resizing, adaptive pooling, hard sigmoid, slicing, padding, norms, comparisons, ...)."""
    x = S.var("data")
    c = S.Convolution(x, kernel=(1, 1), num_filter=4, name="conv")
    small = S.Pooling(c, kernel=(2, 2), stride=(2, 2), pool_type="max", name="pool")
    c8 = S.slice(c, begin=(None, None, 0, 0), end=(None, None, 8, 8), name="slice8")
    pos = S.Activation(c, act_type="sigmoid", name="pos")
    gap = S.mean(c, axis=(2, 3), keepdims=True, name="gap")
    outs = [
        S.Crop(c, h_w=(5, 6), offset=(1, 2), name="crop_hw"),
        S.Crop(c, h_w=(5, 6), center_crop=True, name="crop_center"),
        S.Crop(c, small, num_args=2, name="crop_like"),
        S.Crop(c, small, num_args=2, center_crop=True, name="crop_like_center"),
        S.UpSampling(c, S.var("up2_weight"), sample_type="bilinear", scale=2, num_filter=4,
                     name="up_bilinear2"),
        S.UpSampling(c, S.var("up3_weight"), sample_type="bilinear", scale=3, num_filter=4,
                     name="up_bilinear3"),
        S.contrib.BilinearResize2D(c, height=13, width=7, name="resize_size"),
        S.contrib.BilinearResize2D(c, height=5, width=4, align_corners=False,
                                   name="resize_noalign"),
        S.contrib.BilinearResize2D(c, scale_height=2.0, scale_width=1.5, name="resize_scale"),
        S.contrib.BilinearResize2D(c, small, mode="like", name="resize_like"),
        S.contrib.AdaptiveAvgPooling2D(c, output_size=1, name="adapool1"),
        S.contrib.AdaptiveAvgPooling2D(c, output_size=(2, 3), name="adapool23"),
        S.contrib.AdaptiveAvgPooling2D(c, output_size=4, name="adapool4"),
        S.hard_sigmoid(c, name="hsig_default"),
        S.hard_sigmoid(c, alpha=0.1, beta=0.3, name="hsig"),
        S.slice(c, begin=(None, 1, 2, None), end=(None, 3, None, -1), name="slice_none"),
        S.slice(c, begin=(0, 0, 8, 1), end=(2, 4, 0, 9), step=(1, 2, -2, 3),
                name="slice_step"),
        S.slice_like(c, small, axes=(2, 3), name="slice_like_hw"),
        S.slice_like(c, small, name="slice_like_all"),
        S.Pad(c, mode="constant", pad_width=(0, 0, 0, 0, 1, 2, 2, 1), constant_value=0.5,
              name="pad_const"),
        S.Pad(c, mode="edge", pad_width=(0, 0, 0, 0, 2, 1, 1, 2), name="pad_edge"),
        S.Pad(c, mode="reflect", pad_width=(0, 0, 0, 0, 1, 2, 2, 1), name="pad_reflect"),
        S.tile(c, reps=(1, 2, 1, 1), name="tile"),
        S.repeat(c, repeats=2, axis=2, name="repeat"),
        S.reverse(c, axis=1, name="reverse"),
        S.erf(c, name="erf"), S.floor(c * 3.0, name="floor"), S.ceil(c * 3.0, name="ceil"),
        S.sign(c, name="sign"), S.round(c * 3.0, name="round"),
        S.zeros_like(c, name="zeros"), S.ones_like(c, name="ones"),
        S.broadcast_like(gap, c, name="bcast_like"),
        S.broadcast_to(gap, shape=(0, 0, 9, 9), name="bcast_to"),
        S.broadcast_axis(gap, axis=(2, 3), size=(9, 9), name="bcast_axis"),
        S.where(c > 0.1, c, pos, name="where"),
        S.broadcast_greater(c, gap, name="bgreater"), c < pos, c >= 0.2, c == c,
        S.argmax(c, axis=1, name="argmax"),
        S.argmax(c, axis=2, keepdims=True, name="argmax_keep"),
        S.norm(c, ord=2, axis=1, keepdims=True, name="norm_c"),
        S.norm(c, name="norm_all"),
        S.softmin(c, axis=1, name="softmin"),
        S.InstanceNorm(c, S.var("in_gamma"), S.var("in_beta"), name="instancenorm"),
        S.LayerNorm(c, S.var("ln_gamma"), S.var("ln_beta"), axis=1, name="layernorm_c"),
        S.LayerNorm(c, S.var("lnl_gamma"), S.var("lnl_beta"), name="layernorm_last"),
        S.GroupNorm(c, S.var("gn_gamma"), S.var("gn_beta"), num_groups=2, name="groupnorm"),
        S.depth_to_space(c8, block_size=2, name="d2s"),
        S.space_to_depth(c8, block_size=2, name="s2d"),
    ]
    return S.Group(outs), (2, 3, 9, 9)


def retinaface_like() -> tuple[mx.sym.Symbol, tuple[int, ...]]:
    """The RetinaFace (insightface) pattern: a strided backbone, an FPN whose up-sampled
    maps are cropped to the lateral map (``Crop`` with two inputs) and added, SSH context
    modules, and per-level heads with the Reshape-SoftmaxActivation-Reshape score trick."""
    x = S.var("data")

    def conv(y, ch, k, stride, name, act=True):  # type: ignore[no-untyped-def]
        y = S.Convolution(y, kernel=(k, k), num_filter=ch, stride=(stride, stride),
                          pad=(k // 2, k // 2), name=f"{name}_conv")
        y = S.BatchNorm(y, fix_gamma=False, eps=2e-5, name=f"{name}_bn")
        return S.LeakyReLU(y, act_type="prelu", name=f"{name}_relu") if act else y

    c2 = conv(conv(x, 8, 3, 2, "stage1"), 8, 3, 2, "stage2")
    c3 = conv(c2, 16, 3, 2, "stage3")
    c4 = conv(c3, 16, 3, 2, "stage4")
    levels = {}
    top = conv(c4, 8, 1, 1, "lat32")
    levels[32] = top
    for stride, feat in ((16, c3), (8, c2)):
        lateral = conv(feat, 8, 1, 1, f"lat{stride}")
        up = S.UpSampling(top, scale=2, sample_type="nearest", workspace=512,
                          name=f"up{stride}")
        up = S.Crop(up, lateral, num_args=2, name=f"crop{stride}")
        top = conv(S.elemwise_add(lateral, up, name=f"fpn_add{stride}"), 8, 3, 1,
                   f"agg{stride}")
        levels[stride] = top
    outs = []
    for stride, feat in levels.items():
        a = conv(feat, 4, 3, 1, f"ssh{stride}_a", act=False)
        b = conv(conv(feat, 4, 3, 1, f"ssh{stride}_b1"), 4, 3, 1, f"ssh{stride}_b2", act=False)
        ssh = S.Activation(S.Concat(a, b, dim=1, name=f"ssh{stride}_cat"), act_type="relu",
                           name=f"ssh{stride}_relu")
        score = S.Convolution(ssh, kernel=(1, 1), num_filter=4, name=f"cls{stride}")
        shaped = S.Reshape(score, shape=(0, 2, -1, 0), name=f"cls{stride}_reshape")
        prob = S.SoftmaxActivation(shaped, mode="channel", name=f"cls{stride}_softmax")
        outs.append(S.Reshape(prob, shape=(0, 4, -1, 0), name=f"cls{stride}_prob"))
        outs.append(S.Convolution(ssh, kernel=(1, 1), num_filter=8, name=f"bbox{stride}"))
        outs.append(S.Convolution(ssh, kernel=(1, 1), num_filter=20, name=f"landmark{stride}"))
    return S.Group(outs), (2, 3, 44, 52)


NETS = {"conv_ops": conv_ops, "act_ops": act_ops, "pool_ops": pool_ops, "math_ops": math_ops,
        "shape_ops": shape_ops, "head_ops": head_ops, "resnet": resnet, "inception": inception}
LATER_NETS = {"zoo_ops": zoo_ops, "retinaface_like": retinaface_like}


# ---------------------------------------------------------------- weights and running
def random_params(sym: mx.sym.Symbol, shape: tuple[int, ...]):  # type: ignore[no-untyped-def]
    arg_shapes, _, aux_shapes = sym.infer_shape_partial(data=shape)
    args, auxs = {}, {}
    for name, s in zip(sym.list_arguments(), arg_shapes):
        if name == "data" or name.endswith("label") or name.startswith("lab"):
            continue
        if len(s) >= 2:
            value = RNG.normal(0, 1 / np.sqrt(np.prod(s[1:])), s)
        elif name.endswith(("gamma", "var")):
            value = RNG.uniform(0.5, 1.5, s)
        else:
            value = RNG.normal(0, 0.2, s)
        args[name] = mx.nd.array(value.astype(np.float32))
    for name, s in zip(sym.list_auxiliary_states(), aux_shapes):
        low, high = (0.5, 1.5) if name.endswith("var") else (-0.3, 0.3)
        auxs[name] = mx.nd.array(RNG.uniform(low, high, s).astype(np.float32))
    return args, auxs


def write_net(out: Path, name: str, sym: mx.sym.Symbol, shape: tuple[int, ...],
              args, auxs) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    mx.model.save_checkpoint(str(out / name), 0, sym, args, auxs)
    data = RNG.normal(0, 1, shape).astype(np.float32)
    params = {f"arg:{k}": v for k, v in args.items()} | {f"aux:{k}": v for k, v in auxs.items()}
    outputs, _ = reference.run_internals(sym, params, {"data": data})
    np.savez_compressed(out / f"{name}-io.npz", __input__data=data, **outputs)
    return outputs


def gluon_net(out: Path) -> None:
    from mxnet.gluon import nn

    net = nn.HybridSequential()
    net.add(nn.Conv2D(6, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            nn.MaxPool2D(3, 2, ceil_mode=True), nn.Conv2D(8, 3, use_bias=False),
            nn.BatchNorm(scale=False), nn.LeakyReLU(0.1), nn.AvgPool2D(2, ceil_mode=True),
            nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(8, activation="tanh"), nn.Dense(3))
    net.initialize(mx.init.Xavier())
    net(mx.nd.zeros((1, 3, 9, 9)))  # finish deferred initialisation
    for p in net.collect_params().values():  # non-trivial BN statistics
        if p.name.endswith(("running_mean", "beta")):
            p.set_data(mx.nd.array(RNG.uniform(-0.3, 0.3, p.shape)))
        elif p.name.endswith(("running_var", "gamma")):
            p.set_data(mx.nd.array(RNG.uniform(0.5, 1.5, p.shape)))
    net.hybridize()
    data = RNG.normal(0, 1, (2, 3, 9, 9)).astype(np.float32)
    net(mx.nd.array(data))
    net.export(str(out / "gluon"), epoch=0)
    sym = mx.sym.load(str(out / "gluon-symbol.json"))
    params = mx.nd.load(str(out / "gluon-0000.params"))
    outputs, _ = reference.run_internals(sym, params, {"data": data})
    np.savez_compressed(out / "gluon-io.npz", __input__data=data, **outputs)


# ---------------------------------------------------------------- GluonCV architectures
# Real model-zoo architectures (random init), exported as gluon does. Their weights are too
# large to commit, so the fixture holds the symbol (gzipped), the parameter shapes and the
# outputs of a sample of nodes for weights that reference.synthetic_params rebuilds.
ZOO_MODELS = {"mobilenetv3_small": 64, "se_resnet18_v1": 64, "resnest14": 64,
              "hrnet_w18_small_v1_c": 64, "fcn_resnet50_voc": 64,
              "residualattentionnet56": 224, "nasnet_4_1056": 64, "xception": 71,
              "darknet53": 64, "densenet121": 224}
COMMON_OPS = {"Convolution", "BatchNorm", "Activation", "elemwise_add", "null"}


def gluoncv_models(out: Path) -> None:
    import gzip

    from gluoncv.model_zoo import get_model

    out = out / "gluoncv"
    out.mkdir(exist_ok=True)
    for name, size in ZOO_MODELS.items():
        kwargs = {"pretrained_base": False} if name.startswith("fcn") else {}
        net = get_model(name, pretrained=False, **kwargs)
        net.initialize()
        net.hybridize()
        net(mx.nd.zeros((1, 3, size, size)))
        net.export(str(out / name), epoch=0)
        sym = mx.sym.load(str(out / f"{name}-symbol.json"))
        loaded = mx.nd.load(str(out / f"{name}-0000.params"))
        shapes = {k: list(v.shape) for k, v in loaded.items()}
        params = {k: mx.nd.array(v) for k, v in reference.synthetic_params(shapes).items()}
        data = reference.synthetic_input((1, 3, size, size))
        outputs, _ = reference.run_internals(sym, params, {"data": data})
        doc = json.loads((out / f"{name}-symbol.json").read_text())
        keep = _sample_outputs(outputs, {n["name"]: n["op"] for n in doc["nodes"]})
        np.savez_compressed(out / f"{name}-io.npz", __input_shape__=np.array(data.shape),
                            **keep)
        with gzip.open(out / f"{name}-symbol.json.gz", "wt") as f:
            json.dump(doc, f, separators=(",", ":"))
        (out / f"{name}-shapes.json").write_text(json.dumps(shapes, indent=0))
        (out / f"{name}-symbol.json").unlink()
        (out / f"{name}-0000.params").unlink()
        print("wrote gluoncv", name, len(keep), "node outputs")


def _sample_outputs(outputs: dict[str, np.ndarray], ops: dict[str, str],
                    budget: int = 100_000, cap: int = 40_000) -> dict[str, np.ndarray]:
    """The head plus outputs of the rarer ops (then of every tenth node), within a budget
    of array elements, so the fixture stays small."""
    names = list(outputs)
    rare = [k for k in names if ops.get(k.split(":")[0]) not in COMMON_OPS]
    order = [names[-1]] + rare + names[::10]
    keep: dict[str, np.ndarray] = {}
    used = 0
    for key in order:
        size = outputs[key].size
        if key in keep or size > cap or used + size > budget:
            continue
        keep[key] = outputs[key]
        used += size
    return keep


# ---------------------------------------------------------------- older JSON forms
def old_forms(out: Path, name: str) -> None:
    doc = json.loads((out / f"{name}-symbol.json").read_text())
    attr = json.loads(json.dumps(doc))
    for node in attr["nodes"]:
        if "attrs" in node:
            node["attr"] = node.pop("attrs")
    attr["attrs"] = {"mxnet_version": ["int", 901]}
    param = {"nodes": [], "arg_nodes": doc["arg_nodes"],
             "heads": [h[:2] for h in doc["heads"]]}
    for node in doc["nodes"]:
        hints = {k: v for k, v in node.get("attrs", {}).items() if k.startswith("__")}
        ops = {k: v for k, v in node.get("attrs", {}).items() if not k.startswith("__")}
        entry = {"op": node["op"], "param": ops, "name": node["name"],
                 "inputs": [i[:2] for i in node["inputs"]], "backward_source_id": -1}
        if hints:
            entry["attr"] = hints
        param["nodes"].append(entry)
    (out / f"{name}_attr-symbol.json").write_text(json.dumps(attr, indent=1))
    (out / f"{name}_param-symbol.json").write_text(json.dumps(param, indent=1))
    # mxnet itself must read both and compute the same outputs
    io = np.load(out / f"{name}-io.npz")
    params = mx.nd.load(str(out / f"{name}-0000.params"))
    for form in ("attr", "param"):
        sym = mx.sym.load(str(out / f"{name}_{form}-symbol.json"))
        got, _ = reference.run_internals(sym, params, {"data": io["__input__data"]})
        for key, value in got.items():
            np.testing.assert_allclose(value, io[key], rtol=1e-6, atol=1e-7, err_msg=key)


# ---------------------------------------------------------------- hand-written .params
V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
CODES = {np.float32: 0, np.float64: 1, np.float16: 2, np.uint8: 3, np.int32: 4, np.int8: 5,
         np.int64: 6, np.bool_: 7}


def record(arr: np.ndarray, version: str) -> bytes:
    shape = struct.pack("<i", arr.ndim) + struct.pack(f"<{arr.ndim}q", *arr.shape)
    tail = struct.pack("<iii", 1, 0, CODES[arr.dtype.type]) + arr.tobytes()
    if version in ("v2", "v3"):
        return struct.pack("<Ii", V2 if version == "v2" else V3, 0) + shape + tail
    if version == "v1":
        return struct.pack("<I", V1) + shape + tail
    return struct.pack(f"<I{arr.ndim}I", arr.ndim, *arr.shape) + tail


def write_params(path: Path, arrays: dict[str, np.ndarray], version: str) -> None:
    parts = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    parts += [record(a, version) for a in arrays.values()]
    parts.append(struct.pack("<Q", len(arrays)))
    for name in arrays:
        parts.append(struct.pack("<Q", len(name.encode())) + name.encode())
    path.write_bytes(b"".join(parts))


def params_fixtures(out: Path) -> None:
    arrays = {f"arg:{np.dtype(t).name}_w": (RNG.normal(0, 3, (2, 3)) if t is not np.bool_
                                             else RNG.normal(0, 1, (2, 3)) > 0).astype(t)
              for t in CODES}
    arrays["aux:vec"] = np.arange(5, dtype=np.float32)
    arrays["noprefix_4d"] = RNG.normal(0, 1, (2, 1, 2, 3)).astype(np.float32)
    np.savez(out / "params_expected.npz", **{k.replace(":", "__"): v for k, v in arrays.items()})
    for version in ("v1", "v2", "v3", "legacy"):
        path = out / f"params_{version}.params"
        write_params(path, arrays, version)
        with mx.util.np_shape(version == "v3"):
            loaded = mx.nd.load(str(path))
        assert list(loaded) == list(arrays), version
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key].asnumpy(), value, err_msg=key)
    with mx.util.np_shape(True), mx.util.np_array(True):  # a real V3 file, 0-d scalar
        mx.npx.save(str(out / "params_mxnet_v3.params"),
                   {"arg:w": mx.np.array(arrays["noprefix_4d"]),
                    "arg:scalar": mx.np.array(2.5)})
    mx.nd.save(str(out / "params_mxnet_v2.params"), mx.nd.load(str(out / "params_v2.params")))
    mx.nd.save(str(out / "params_unnamed.params"), [mx.nd.array([1.0, 2.0])])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="tests/mxnet/fixtures")
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    for name, build in NETS.items():
        sym, shape = build()
        args, auxs = random_params(sym, shape)
        write_net(out, name, sym, shape, args, auxs)
        print("wrote", name)
    gluon_net(out)
    old_forms(out, "conv_ops")
    old_forms(out, "resnet")
    params_fixtures(out)
    # Nets added later use their own generator, so the older fixtures stay as committed.
    global RNG
    for name, build in LATER_NETS.items():
        RNG = np.random.default_rng(sum(map(ord, name)))
        sym, shape = build()
        write_net(out, name, sym, shape, *random_params(sym, shape))
        print("wrote", name)
    if importlib.util.find_spec("gluoncv") is not None:
        gluoncv_models(out)
    else:
        print("gluoncv is not installed: GluonCV architecture fixtures not rebuilt")
    print("mxnet", mx.__version__, "fixtures in", out)


if __name__ == "__main__":
    main()
