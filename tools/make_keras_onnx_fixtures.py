"""Build the Keras-origin ONNX fixtures of tests/onnx (run with `make keras-onnx-fixtures`).

Needs tensorflow-cpu and tf2onnx in their own venv (.venv-tf); never imports repurpose.
Each net is a real Keras application (``keras.applications`` or the builder behind one,
narrowed so the committed files stay small), or a small model of other Keras layers, with
seeded random weights (``weights=None``, nothing is downloaded) and random biases and
normalisation statistics, so that no layer is an identity. Each is exported by a real
exporter: ``tf2onnx.convert.from_keras`` or Keras 3's own ``Model.export(format="onnx")``
(tf2onnx inside), NHWC input. For NAME it writes:

- NAME.onnx, the exported model;
- NAME.npz: ``input`` (a seeded NHWC batch), ``output`` (Keras ``model.predict``) and
  ``features`` (the output of one middle Keras layer, as Keras computes it);

and keras_fixtures.json with, per net, the exporter, opset, the ONNX value holding the
middle layer's output (and its layout in the file) and the versions used.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from keras.src.applications import nasnet, resnet  # noqa: E402

SEED = 0


@dataclass
class Net:
    build: Callable[[], keras.Model]
    exporter: str  # "tf2onnx" or "keras"
    opset: int
    middle: str  # a Keras layer whose output the tests compare
    low: float = -1.0  # range of the reference input
    high: float = 1.0
    layout: str | None = None  # of the middle value, where shape inference cannot tell


def mobilenet_v2() -> keras.Model:
    return keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3), weights=None,
                                          classes=10)


def mobilenet_v3_small() -> keras.Model:
    # include_preprocessing: a Rescaling layer (x / 127.5 - 1) on the NHWC input
    return keras.applications.MobileNetV3Small(alpha=0.35, input_shape=(64, 64, 3),
                                               weights=None, classes=5,
                                               include_preprocessing=True)


def resnet_tiny() -> keras.Model:
    """ResNet50's builder and residual blocks (v1), one narrow block per stage."""

    def stacks(x: keras.KerasTensor) -> keras.KerasTensor:
        x = resnet.stack_residual_blocks_v1(x, 8, 1, stride1=1, name="conv2")
        x = resnet.stack_residual_blocks_v1(x, 16, 1, name="conv3")
        return resnet.stack_residual_blocks_v1(x, 32, 1, name="conv4")

    return resnet.ResNet(stacks, False, True, name="resnet_tiny", weights=None,
                         input_shape=(64, 64, 3), classes=10)


def nasnet_tiny() -> keras.Model:
    """NASNetMobile's builder with one cell per stage and few filters."""
    return nasnet.NASNet(input_shape=(64, 64, 3), penultimate_filters=96, num_blocks=1,
                         stem_block_filters=8, skip_reduction=False, filter_multiplier=2,
                         weights=None, classes=5, default_size=64)


def layer_zoo() -> keras.Model:
    """Keras layers beyond the applications' convolutions, as tf2onnx writes them: GELU
    (tanh form; the exact one becomes Erfc, which tf2onnx cannot convert), decomposed
    LayerNormalization, SeparableConv2D with swish, bilinear UpSampling2D,
    Conv2DTranspose(padding="same") (asymmetric pads), AveragePooling2D(padding="same"),
    Cropping2D, Dense on a feature map (reshapes computed from Shape), global max pooling."""
    layers = keras.layers
    x = inputs = keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, padding="same", name="conv_gelu",
                      activation=lambda t: keras.activations.gelu(t, approximate=True))(x)
    x = layers.LayerNormalization(name="layer_norm")(x)
    x = layers.SeparableConv2D(8, 3, activation="swish", name="separable_swish")(x)
    x = layers.UpSampling2D(interpolation="bilinear", name="upsample")(x)
    x = layers.Conv2DTranspose(6, 3, strides=2, padding="same", name="deconv_same")(x)
    x = layers.AveragePooling2D(3, strides=2, padding="same", name="avg_pool_same")(x)
    x = layers.Cropping2D(((1, 2), (0, 1)), name="crop")(x)
    x = layers.Dense(5, activation="elu", name="dense_on_map")(x)
    x = layers.GlobalMaxPooling2D(name="global_max")(x)
    outputs = layers.Dense(4, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="layer_zoo")


def attention_zoo() -> keras.Model:
    """Attention on a feature map, and layers tf2onnx writes as comparisons and logic:
    dilated and depth-multiplied convolutions, thresholded ReLU (Greater, Not, Cast),
    PReLU, asymmetric ZeroPadding2D, hard sigmoid gate, MultiHeadAttention (reshapes to
    batch * heads), LayerNormalization, Permute, Flatten."""
    layers = keras.layers
    x = inputs = keras.Input((12, 12, 3))
    a = layers.Conv2D(6, 3, dilation_rate=2, padding="same", name="dilated")(x)
    b = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise_x2")(x)
    x = layers.Concatenate(name="concat")([a, b])
    x = layers.ReLU(max_value=4.0, negative_slope=0.1, threshold=0.5, name="relu_threshold")(x)
    x = layers.PReLU(shared_axes=[1, 2], name="prelu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="max_pool_same")(x)
    x = layers.ZeroPadding2D(((0, 1), (1, 0)), name="pad")(x)
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.Multiply(name="gate")([x, layers.Activation("hard_sigmoid", name="hsig")(x)])
    x = layers.LeakyReLU(0.2, name="leaky")(x)
    s = layers.Reshape((-1, 12), name="to_sequence")(x)
    s = layers.MultiHeadAttention(2, 4, name="attention")(s, s)
    s = layers.LayerNormalization(name="seq_norm")(s)
    s = layers.Permute((2, 1), name="permute")(s)
    s = layers.Flatten(name="flatten")(s)
    outputs = layers.Dense(3, activation="softmax", name="predictions")(s)
    return keras.Model(inputs, outputs, name="attention_zoo")


NETS = {
    "keras_mobilenet_v2_tf2onnx_opset13": Net(mobilenet_v2, "tf2onnx", 13, "block_5_add"),
    "keras_mobilenet_v3_small_export_opset18": Net(mobilenet_v3_small, "keras", 18,
                                                   "expanded_conv_5_add", 0.0, 255.0),
    "keras_resnet_tiny_tf2onnx_opset9": Net(resnet_tiny, "tf2onnx", 9, "conv3_block1_out"),
    "keras_resnet_tiny_tf2onnx_opset18": Net(resnet_tiny, "tf2onnx", 18, "conv3_block1_out"),
    "keras_nasnet_tiny_tf2onnx_opset13": Net(nasnet_tiny, "tf2onnx", 13, "normal_concat_2"),
    "keras_layer_zoo_tf2onnx_opset17": Net(layer_zoo, "tf2onnx", 17, "dense_on_map",
                                           layout="NHWC"),  # Dense reshapes back to NHWC
    "keras_attention_zoo_tf2onnx_opset15": Net(attention_zoo, "tf2onnx", 15, "attention",
                                               layout="NLC"),  # (batch, length, channels)
}


def randomise_statistics(model: keras.Model, rng: np.random.Generator) -> None:
    """Give every bias, normalisation scale and shift and batch-norm moving statistic a
    random value (Keras starts them at 0 or 1, which would hide mistakes in them)."""
    for var in model.weights:
        last = var.path.rsplit("/", 1)[-1]
        if last in ("gamma", "moving_variance"):
            value = rng.uniform(0.5, 1.5, var.shape)
        elif last in ("bias", "beta", "moving_mean"):
            value = rng.normal(0.0, 0.1, var.shape)
        else:
            continue
        var.assign(value.astype(np.float32))


def export(model: keras.Model, net: Net, path: Path) -> None:
    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")
    if net.exporter == "keras":
        model.export(str(path), format="onnx", opset_version=net.opset, input_signature=[spec],
                     verbose=False)
    else:
        tf2onnx.convert.from_keras(model, input_signature=(spec,), opset=net.opset,
                                   output_path=str(path))


def middle_value(path: Path, layer: str, nhwc: tuple[int, ...], layout: str | None
                 ) -> tuple[str, str]:
    """The last ONNX value computed inside Keras layer ``layer`` (tf2onnx keeps the
    TensorFlow op names, ``model/layer_1/Op:0``) and its layout there, NHWC or NCHW
    (tf2onnx moves transposes, so either occurs); ``nhwc`` is Keras's output shape."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    pattern = re.compile(rf"/{re.escape(layer)}(_\d+)?/")
    hits = [n.output[0] for n in model.graph.node if pattern.search(n.output[0])
            and n.op_type != "Transpose"]
    if not hits:
        raise SystemExit(f"no ONNX value of Keras layer {layer!r} in {path}")
    if layout is not None:
        return hits[-1], layout
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in model.graph.value_info}
    shape, (h, w, c) = shapes[hits[-1]][1:], nhwc[1:]
    layouts = [k for k, s in (("NHWC", [h, w, c]), ("NCHW", [c, h, w])) if s == shape]
    if len(layouts) != 1:
        raise SystemExit(f"{hits[-1]} has shape {shape}; cannot tell its layout")
    return hits[-1], layouts[0]


def write_net(out: Path, name: str, net: Net) -> dict[str, object]:
    keras.utils.set_random_seed(SEED)
    model = net.build()
    rng = np.random.default_rng(SEED)
    randomise_statistics(model, rng)
    x = rng.uniform(net.low, net.high, (2, *model.input_shape[1:])).astype(np.float32)
    output = model.predict(x, verbose=0)
    middle = keras.Model(model.inputs, model.get_layer(net.middle).output)
    features = middle.predict(x, verbose=0)
    path = out / f"{name}.onnx"
    export(model, net, path)
    np.savez_compressed(out / f"{name}.npz", input=x, output=output, features=features)
    value, layout = middle_value(path, net.middle, features.shape, net.layout)
    return {"keras_model": model.name, "exporter": net.exporter, "opset": net.opset,
            "keras_layer": net.middle, "onnx_value": value, "onnx_layout": layout,
            "params": int(model.count_params())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default="tests/onnx/fixtures")
    parser.add_argument("--only", nargs="*", choices=sorted(NETS),
                        help="rewrite only these nets (the others keep their manifest entries)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "keras_fixtures.json"
    old = json.loads(manifest_path.read_text())["nets"] if manifest_path.is_file() else {}
    nets = {}
    for name, net in NETS.items():
        if args.only and name not in args.only:
            if name in old:
                nets[name] = old[name]
            continue
        nets[name] = write_net(out, name, net)
        print("wrote", name, nets[name]["onnx_value"])
    manifest = {
        "generator": "tools/make_keras_onnx_fixtures.py",
        "versions": {"python": platform.python_version(), "tensorflow": tf.__version__,
                     "keras": keras.__version__, "tf2onnx": tf2onnx.__version__,
                     "onnx": onnx.__version__, "numpy": np.__version__},
        "seed": SEED,
        "nets": nets,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
