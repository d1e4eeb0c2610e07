"""Fused inference plans on imported Caffe nets equal the layer-by-layer import."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from caffe_writer import NetWriter

import repurpose.caffe as rc
from repurpose.graph import GraphNet


def assert_close(fused: dict, plain: dict) -> None:
    """Every requested blob within 1e-5 of its largest magnitude."""
    assert fused.keys() == plain.keys()
    for k, ref in plain.items():
        err = float((fused[k] - ref).abs().max())
        assert err <= 1e-5 * max(float(ref.abs().max()), 1.0), (k, err)


def run_both(net: GraphNet, x: torch.Tensor, wanted: list[str]) -> tuple[dict, dict]:
    with torch.no_grad():
        fused = net.run({net.input_names[0]: x}, wanted)
        plain = net.run({net.input_names[0]: x}, wanted, fuse=False)
    return fused, plain


def bottleneck_net() -> NetWriter:
    """A ResNet-style net: BatchNorm + Scale (+ ReLU) after every conv, a projection
    shortcut, an identity shortcut, global pooling and an InnerProduct."""
    w = NetWriter((2, 3, 12, 12), input_form="input_shape", seed=3)
    rng = np.random.default_rng(4)

    def conv_bn(name: str, bottom: str, cin: int, cout: int, k: int, stride: int = 1,
                relu: bool = True) -> str:
        w.layer(name, "Convolution", [bottom], [name], [rng.normal(size=(cout, cin, k, k)) *
                                                       np.sqrt(1 / (cin * k * k))],
                convolution_param={"num_output": cout, "kernel_size": [k], "pad": [k // 2],
                                   "stride": [stride], "bias_term": False})
        w.layer(f"bn_{name}", "BatchNorm", [name], [name],
                [rng.normal(size=cout), rng.uniform(0.5, 2, size=cout) * 3, [3.0]])
        w.layer(f"scale_{name}", "Scale", [name], [name], [(cout,), (cout,)],
                scale_param={"bias_term": True})
        if relu:
            w.layer(f"{name}_relu", "ReLU", [name], [name])
        return name

    conv_bn("conv1", "data", 3, 8, 3, stride=2)
    top = "conv1"
    for block, (cout, stride) in enumerate([(16, 1), (16, 1), (24, 2)]):
        name = f"res{block}"
        shortcut = top if block == 1 else conv_bn(f"{name}_proj", top, 8 if block == 0
                                                  else 16, cout, 1, stride, relu=False)
        cin = 8 if block == 0 else 16
        x = conv_bn(f"{name}_a", top, cin, 6, 1, stride)
        x = conv_bn(f"{name}_b", x, 6, 6, 3)
        x = conv_bn(f"{name}_c", x, 6, cout, 1, relu=False)
        w.layer(name, "Eltwise", [shortcut, x], [name])
        w.layer(f"{name}_relu", "ReLU", [name], [name])
        top = name
    w.layer("pool", "Pooling", [top], ["pool"], pooling_param={"pool": "AVE",
                                                                "global_pooling": True})
    w.layer("fc", "InnerProduct", ["pool"], ["fc"], [(5, 24), (5,)],
            inner_product_param={"num_output": 5})
    return w


@pytest.fixture
def bottleneck(tmp_path: Path) -> tuple[Path, Path]:
    return bottleneck_net().write(tmp_path)


def test_bn_scale_relu_resnet_folds_and_matches(bottleneck: tuple[Path, Path]) -> None:
    net = rc.load_net(*bottleneck)
    x = torch.randn(2, 3, 12, 12) * 10
    bn_out = net.node("bn_res2_a").outputs[0]  # an in-place blob's earlier version
    for wanted in (["fc"], ["res0", "fc"], ["res1_b", "pool"], [bn_out]):
        assert_close(*run_both(net, x, wanted))
    steps = net.plan(["fc"]).describe()
    assert "conv: conv1 + bn_conv1 + scale_conv1 + conv1_relu" in steps
    assert "conv: res0_proj + bn_res0_proj + scale_res0_proj" in steps
    # each conv + BN + Scale (+ ReLU) becomes one step: 12 convs, 7 of them with a ReLU
    assert len(steps) == len(net.plan(["fc"], fused=False).steps) - 12 * 2 - 7
    assert net.plan(["fc"]).overwrites == 2 * 3  # each residual sum and its ReLU


def test_handler_extraction_uses_the_plan_with_the_same_features(
        bottleneck: tuple[Path, Path]) -> None:
    h = rc.handler_from_caffe(*bottleneck)
    x = np.random.default_rng(0).normal(size=(5, 3, 12, 12)).astype(np.float32) * 10
    feats = h.extract(x, ["res1", "fc"], pooling="avg", batch_size=2, progress=False)
    values = [h.module.node(n).outputs[0] for n in ["res1", "fc"]]  # res1: before its ReLU
    with torch.no_grad():
        ref = h.module.run({"data": torch.from_numpy(x)}, values, fuse=False)
    np.testing.assert_allclose(feats["res1"], ref[values[0]].mean((2, 3)).numpy(), rtol=1e-5,
                               atol=1e-5)
    np.testing.assert_allclose(feats["fc"], ref["fc"].numpy(), rtol=1e-5, atol=1e-5)


def test_verify_compares_the_unfused_import(bottleneck: tuple[Path, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cv2")
    asked: list[bool] = []
    plan = GraphNet.plan

    def spy(self: GraphNet, wanted, fused: bool = True):  # type: ignore[no-untyped-def]
        asked.append(fused)
        return plan(self, wanted, fused)

    monkeypatch.setattr(GraphNet, "plan", spy)
    report = rc.verify(*bottleneck, seed=1)
    assert asked == [False]
    assert all(r.ok for r in report if r.max_abs_diff is not None)


@pytest.mark.realdata
def test_real_squeezenet_fused_plan_matches(realdata: Path) -> None:
    d = realdata / "squeezenet_v1.0"
    net = rc.load_net(d / "deploy.prototxt", d / "squeezenet_v1.0_dc.caffemodel")
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 227, 227))
                         .astype(np.float32) * 50)
    for wanted in (["fire9/concat"], ["conv1", "fire2/conv1x1_1", "fire5/concat"]):
        assert_close(*run_both(net, x, wanted))
    plan = net.plan(["fire9/concat"])
    assert "conv: conv1 + relu_conv1" in plan.describe()
    # 8 fire modules x 4 steps (squeeze, the two expands apart, concat) + conv1, 3 pools,
    # dropout: the 1x1 and 3x3 expands are not merged (padding 1x1 to 3x3 costs more)
    assert len(plan.steps) == 37
    assert "conv: fire2/conv1x1_2 + fire2/relu_conv1x1_2" in plan.describe()
    assert plan.peak_live <= 2  # the input of each step, plus a fire's squeeze output
