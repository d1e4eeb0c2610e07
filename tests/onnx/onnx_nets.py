"""Tiny networks for the ONNX tests: torch modules exported with ``torch.onnx`` and a
Keras-style model written node by node in the pattern tf2onnx emits."""

from __future__ import annotations

import io
import warnings

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn


# ----- torch nets ------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class TinyResNet(nn.Module):
    """ResNet-shaped: stem, max-pool, residual blocks, global pool, view(N, -1), fc."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 5, 2, 2, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(Block(8, 8, 1))
        self.layer2 = nn.Sequential(Block(8, 16, 2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int = 2) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(inplace=True),
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden), nn.Hardswish(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res else self.conv(x)


class TinyMobileNet(nn.Module):
    """MobileNetV2/V3-shaped: depthwise convs, ReLU6, hardswish, dropout, flatten, fc."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), nn.ReLU6()),
            InvertedResidual(8, 8, 1), InvertedResidual(8, 12, 2))
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(12, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class TinyInception(nn.Module):
    """Inception/VGG-shaped: parallel branches concatenated, ceil-mode and padded pooling,
    LRN, upsampling, sigmoid gate, leaky ReLU, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.lrn = nn.LocalResponseNorm(3)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.b1 = nn.Conv2d(6, 4, 1)
        self.b2 = nn.Sequential(nn.Conv2d(6, 4, 1), nn.LeakyReLU(0.1),
                                nn.Conv2d(4, 4, 3, padding=1))
        self.b3 = nn.AvgPool2d(3, 1, 1, count_include_pad=False)
        self.prelu = nn.PReLU(14)
        self.fc = nn.Linear(14 * 16 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.lrn(torch.relu(self.stem(x))))
        x = torch.cat([self.b1(x), self.b2(x), self.b3(x)], 1)
        x = self.prelu(x) * torch.sigmoid(x)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.max_pool2d(x, 2)
        return torch.softmax(self.fc(x.reshape(x.shape[0], -1)), dim=1)


def init_bn(module: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial statistics, then switch to eval mode."""
    gen = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return module.eval()


def export(module: nn.Module, shape: tuple[int, ...], opset: int, dynamic: bool = True) -> bytes:
    """``torch.onnx.export`` (the TorchScript exporter) to bytes."""
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (torch.zeros(shape),), f, dynamo=False,
                          opset_version=opset, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": {0: "N"}} if dynamic else None)
    return f.getvalue()


# ----- a Keras model as tf2onnx writes it ------------------------------------------------
class GraphWriter:
    """Append ONNX nodes and initializers with tf2onnx-style names."""

    def __init__(self, opset: int, seed: int = 0) -> None:
        self.opset = opset
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weight(self, name: str, *shape: int, scale: float = 0.3) -> str:
        return self.const(name, (self.rng.normal(size=shape) * scale).astype(np.float32))

    def node(self, op: str, inputs: list[str], out: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op, inputs, [out], name=out.split(":")[0], **attrs))
        return out

    def ints_input(self, name: str, values: list[int]) -> str:
        return self.const(name, np.array(values, np.int64))

    def clip(self, x: str, out: str, low: float, high: float) -> str:
        if self.opset < 11:
            return self.node("Clip", [x], out, min=low, max=high)
        lo = self.const(out + "/min", np.array(low, np.float32))
        hi = self.const(out + "/max", np.array(high, np.float32))
        return self.node("Clip", [x, lo, hi], out)

    def pad(self, x: str, out: str, pads: list[int]) -> str:
        if self.opset < 11:
            return self.node("Pad", [x], out, pads=pads, mode="constant", value=0.0)
        return self.node("Pad", [x, self.ints_input(out + "/pads", pads)], out, mode="constant")

    def reduce_mean(self, x: str, out: str, axes: list[int], keepdims: int) -> str:
        if self.opset < 18:
            return self.node("ReduceMean", [x], out, axes=axes, keepdims=keepdims)
        return self.node("ReduceMean", [x, self.ints_input(out + "/axes", axes)], out,
                         keepdims=keepdims)

    def squeeze(self, x: str, out: str, axes: list[int]) -> str:
        if self.opset < 13:
            return self.node("Squeeze", [x], out, axes=axes)
        return self.node("Squeeze", [x, self.ints_input(out + "/axes", axes)], out)

    def unsqueeze(self, x: str, out: str, axes: list[int]) -> str:
        if self.opset < 13:
            return self.node("Unsqueeze", [x], out, axes=axes)
        return self.node("Unsqueeze", [x, self.ints_input(out + "/axes", axes)], out)

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[str],
              rank: int = 2) -> onnx.ModelProto:
        outs = [helper.make_tensor_value_info(o, TensorProto.FLOAT, [f"d{i}" for i in range(rank)])
                for o in outputs]
        graph = helper.make_graph(self.nodes, "keras_model", inputs, outs, self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)],
                                  producer_name="tf2onnx")
        model.ir_version = min(model.ir_version, 7 if self.opset < 13 else 8)
        onnx.checker.check_model(model)
        return model


def keras_model(opset: int, pooling: str = "global", hw: int = 12) -> onnx.ModelProto:
    """A small Keras CNN in tf2onnx's layout: NHWC input transposed to NCHW, convs with
    folded BN (Mul + Add) or BatchNormalization, ReLU6 as Clip, ZeroPadding2D as Pad,
    global pooling (GlobalAveragePool + Squeeze, or ReduceMean), Flatten by a
    Shape/Gather/Concat-computed Reshape, Dense as MatMul + Add, Softmax."""
    w = GraphWriter(opset)
    x = "input_1"
    inp = helper.make_tensor_value_info(x, TensorProto.FLOAT, ["unk__0", hw, hw, 3])
    t = w.node("Transpose", [x], "model/conv1/Conv2D__6:0", perm=[0, 3, 1, 2])
    t = w.pad(t, "model/conv1_pad/Pad:0", [0, 0, 0, 0, 0, 0, 1, 1])
    t = w.node("Conv", [t, w.weight("model/conv1/Conv2D/ReadVariableOp:0", 8, 3, 3, 3)],
               "model/conv1/Conv2D:0", strides=[2, 2], kernel_shape=[3, 3], pads=[0, 0, 0, 0])
    bn = [w.const(f"model/bn1/{k}:0", v.astype(np.float32)) for k, v in (
        ("gamma", w.rng.random(8) + 0.5), ("beta", w.rng.normal(size=8) * 0.1),
        ("mean", w.rng.normal(size=8) * 0.1), ("var", w.rng.random(8) + 0.5))]
    t = w.node("BatchNormalization", [t, *bn], "model/bn1/FusedBatchNormV3:0", epsilon=1e-3)
    t = w.clip(t, "model/conv1_relu/Relu6:0", 0.0, 6.0)
    dw = w.weight("model/dw/depthwise/ReadVariableOp:0", 8, 1, 3, 3)
    t = w.node("Conv", [t, dw], "model/dw/depthwise:0", group=8, kernel_shape=[3, 3],
               strides=[1, 1], pads=[1, 1, 1, 1])
    t = w.node("Mul", [t, w.weight("model/dw_bn/mul:0", 1, 8, 1, 1)], "model/dw_bn/mul_1:0")
    t = w.node("Add", [t, w.weight("model/dw_bn/sub:0", 1, 8, 1, 1)], "model/dw_bn/add_1:0")
    t = w.node("LeakyRelu", [t], "model/dw_relu/LeakyRelu:0", alpha=0.2)
    pw = w.weight("model/pw/Conv2D/ReadVariableOp:0", 12, 8, 1, 1)
    t = w.node("Conv", [t, pw, w.weight("model/pw/BiasAdd/ReadVariableOp:0", 12)],
               "model/pw/BiasAdd:0", kernel_shape=[1, 1], strides=[2, 2], pads=[0, 0, 1, 1])
    t = w.node("PRelu", [t, w.weight("model/pw_prelu/Neg:0", 12, 1, 1)], "model/pw_prelu/add:0")
    gate = w.node("Sigmoid", [t], "model/se/Sigmoid:0")
    t = w.node("Mul", [t, gate], "model/se/mul:0")
    if pooling == "global":
        t = w.node("GlobalAveragePool", [t], "model/gap/Mean:0")
        t = w.squeeze(t, "model/gap/Mean_Squeeze__10:0", [2, 3])
    else:
        t = w.reduce_mean(t, "model/gap/Mean:0", [2, 3], 1)
        shape = w.node("Shape", [t], "model/flatten/Shape:0")
        batch = w.node("Gather", [shape, w.ints_input("model/flatten/zero:0", [0])],
                       "model/flatten/strided_slice:0", axis=0)
        flat = w.ints_input("model/flatten/minus1:0", [-1])
        target = w.node("Concat", [batch, flat], "model/flatten/Reshape/shape:0", axis=0)
        t = w.node("Reshape", [t, target], "model/flatten/Reshape:0")
    t = w.node("MatMul", [t, w.weight("model/dense/MatMul/ReadVariableOp:0", 12, 5)],
               "model/dense/MatMul:0")
    t = w.node("Add", [t, w.weight("model/dense/BiasAdd/ReadVariableOp:0", 5)],
               "model/dense/BiasAdd:0")
    w.node("Softmax", [t], "Identity:0", axis=-1 if opset >= 13 else 1)
    return w.model([inp], ["Identity:0"])
