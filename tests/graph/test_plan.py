"""The GraphNet executor: values freed after their last reader, fused inference plans."""

from __future__ import annotations

import weakref
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import repurpose.caffe  # noqa: F401  (registers caffe.* ops)
from repurpose import ModelHandler
from repurpose.graph import GraphNet, Node
from repurpose.graph._fuse import ConvSpec, merge_convs


def conv(name: str, src: str, dst: str, cin: int, cout: int, k: int = 3, pad: int = 1,
         bias: bool = True) -> Node:
    return Node(name, "conv2d", (src,), (dst,), {"in_channels": cin, "out_channels": cout,
                                                 "kernel_size": k, "padding": pad,
                                                 "bias": bias})


def bn(name: str, src: str, dst: str, c: int, affine: bool = False) -> Node:
    return Node(name, "batch_norm", (src,), (dst,), {"num_features": c, "affine": affine})


def scale(name: str, src: str, dst: str, c: int) -> Node:
    return Node(name, "caffe.scale", (src,), (dst,), {"shape": [c], "bias_term": True})


def relu(name: str, src: str, dst: str) -> Node:
    return Node(name, "relu", (src,), (dst,))


def _randomise(net: GraphNet, seed: int = 0) -> GraphNet:
    """Random weights and BN statistics (fresh BN would be an identity)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in net.state_dict().items():
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.5)
    return net.eval()


def resnet_like() -> GraphNet:
    """conv-BN-Scale-ReLU stem, a bottleneck-ish residual, an InnerProduct with BN."""
    nodes = [
        conv("c1", "data", "c1", 3, 8, bias=False), bn("bn1", "c1", "b1", 8),
        scale("sc1", "b1", "s1", 8), relu("r1", "s1", "r1"),
        conv("c2", "r1", "c2", 8, 8, k=1, pad=0), bn("bn2", "c2", "b2", 8, affine=True),
        relu("r2", "b2", "r2"),
        conv("c3", "r2", "c3", 8, 8), bn("bn3", "c3", "b3", 8), scale("sc3", "b3", "s3", 8),
        Node("sum", "add", ("s3", "r1"), ("sum",)), relu("rsum", "sum", "rsum"),
        bn("bn4", "rsum", "b4", 8), scale("sc4", "b4", "s4", 8), relu("r4", "s4", "r4"),
        Node("fc", "linear", ("r4",), ("fc",), {"in_features": 8 * 6 * 6, "out_features": 5}),
        bn("bnfc", "fc", "bfc", 5), relu("rfc", "bfc", "out"),
    ]
    return _randomise(GraphNet(nodes, ["data"], ["out"], {"data": [1, 3, 6, 6]}))


def fire(k1: int = 1) -> GraphNet:
    """SqueezeNet's Fire module: 1x1 squeeze, 1x1 (or ``k1``) and 3x3 expands, concatenated."""
    nodes = [
        conv("squeeze", "data", "sq@", 4, 3, k=1, pad=0), relu("sq_relu", "sq@", "sq"),
        conv("e1", "sq", "e1@", 3, 5, k=k1, pad=(k1 - 1) // 2), relu("e1_relu", "e1@", "e1"),
        conv("e3", "sq", "e3@", 3, 6), relu("e3_relu", "e3@", "e3"),
        Node("concat", "concat", ("e1", "e3"), ("fire",)),
        Node("pool", "caffe.pool", ("fire",), ("pool",), {"kernel": [2, 2], "stride": [2, 2]}),
    ]
    return _randomise(GraphNet(nodes, ["data"], ["pool"], {"data": [1, 4, 7, 7]}))


def assert_close(fused: dict[str, Any], plain: dict[str, Any]) -> None:
    """Every value within 1e-5 of the largest magnitude of the layer-by-layer value."""
    assert fused.keys() == plain.keys()
    for k, ref in plain.items():
        scale_ = float(ref.abs().max()) or 1.0
        err = float((fused[k] - ref).abs().max())
        assert err <= 1e-5 * scale_, (k, err, scale_)


def both(net: GraphNet, x: torch.Tensor, wanted: list[str]) -> tuple[dict, dict]:
    with torch.no_grad():
        return net.run({"data": x}, wanted), net.run({"data": x}, wanted, fuse=False)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_fused_plan_folds_bn_scale_and_relu(layout: str) -> None:
    net = resnet_like()
    net.layout = layout
    x = torch.randn(3, 3, 6, 6)
    fused, plain = both(net, x, ["out"])
    assert_close(fused, plain)
    steps = net.plan(["out"]).describe()
    assert "conv: c1 + bn1 + sc1 + r1" in steps
    assert "conv: c2 + bn2 + r2" in steps
    assert "conv: c3 + bn3 + sc3" in steps
    assert "affine: bn4 + sc4 + r4" in steps
    assert "linear: fc + bnfc + rfc" in steps
    assert len(steps) == 7  # 18 layers
    assert net.plan(["out"]).overwrites == 3  # the sum into c3's output, its ReLU, bn4
    assert net.plan(["out"], fused=False).describe()[:2] == ["layer: c1", "layer: bn1"]


def test_requested_values_are_never_fused_away() -> None:
    net = resnet_like()
    wanted = ["b1", "r2", "s3", "sum", "out"]
    fused, plain = both(net, torch.randn(2, 3, 6, 6), wanted)
    assert_close(fused, plain)
    steps = net.plan(wanted).describe()
    assert "conv: c1 + bn1" in steps and "affine: sc1 + r1" in steps
    assert "conv: c3 + bn3 + sc3" in steps


def test_sibling_convolutions_of_one_kernel_size_merge_into_the_concatenation() -> None:
    net = fire(k1=3)
    x = torch.randn(2, 4, 7, 7)
    fused, plain = both(net, x, ["pool"])
    assert_close(fused, plain)
    assert net.plan(["pool"]).describe()[1] == \
        "conv: e1 + e1_relu + e3 + e3_relu + concat"
    fused, plain = both(net, x, ["e1", "pool"])  # a requested branch stays separate
    assert_close(fused, plain)
    assert "layer: concat" in net.plan(["e1", "pool"]).describe()


def test_siblings_of_different_kernel_sizes_stay_apart() -> None:
    """Zero-padding Fire's 1x1 expand to 3x3 would cost nine times its work."""
    net = fire()
    fused, plain = both(net, torch.randn(2, 4, 7, 7), ["pool"])
    assert_close(fused, plain)
    assert net.plan(["pool"]).describe()[1:4] == [
        "conv: e1 + e1_relu", "conv: e3 + e3_relu", "layer: concat"]


@settings(max_examples=30, deadline=None)
@given(k1=st.integers(1, 3), k2=st.integers(1, 3), p1=st.integers(0, 2),
       stride=st.integers(1, 2), size=st.integers(5, 9), seed=st.integers(0, 99))
def test_merged_convolution_equals_the_concatenation(k1, k2, p1, stride, size, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    # padding of the second kernel that keeps both output grids equal, when one exists
    twice = k2 - k1 + 2 * p1
    specs = [ConvSpec(torch.randn(2, 3, k, k, generator=g), torch.randn(2, generator=g),
                      (stride, stride), (p, p), (1, 1), 1, None)
             for k, p in [(k1, p1), (k2, max(twice // 2, 0))]]
    x = torch.randn(1, 3, size, size, generator=g)
    if min(s.weight.shape[2] for s in specs) > size:
        return
    outs = [torch.nn.functional.conv2d(x, s.weight, s.bias, s.stride, s.padding) for s in specs]
    merged = merge_convs(specs)
    if merged is None:
        assert twice % 2 or twice < 0 or outs[0].shape != outs[1].shape
        return
    got = merged.call()([x], [False])
    torch.testing.assert_close(got, torch.cat(outs, 1), rtol=1e-5, atol=1e-5)


def test_plan_never_changes_weights_and_follows_their_changes() -> None:
    net = resnet_like()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(2, 3, 6, 6)
    both(net, x, ["out"])
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k
    first = net.plan(["out"])
    with torch.no_grad():
        net.bn1.running_mean.add_(1.0)  # in place: the version counter moves
        net.sc3.weight.mul_(2.0)
    fused, plain = both(net, x, ["out"])
    assert_close(fused, plain)
    assert net.plan(["out"]) is not first
    net.load_state_dict(before)
    fused, plain = both(net, x, ["out"])
    assert_close(fused, plain)
    assert net.plan(["out"]) is net.plan(["out"])  # cached while nothing changes


def test_training_or_gradients_use_the_layer_by_layer_path() -> None:
    net = resnet_like()
    x = torch.randn(2, 3, 6, 6)
    out = net.run({"data": x}, ["out"])["out"]  # gradients on: no fusion, no in-place
    assert out.requires_grad
    out.sum().backward()
    assert net.c1.weight.grad is not None
    with pytest.raises(RuntimeError, match="under torch.no_grad"):
        net.plan(["out"])({"data": x})
    net.bn1.train()
    with torch.no_grad():
        net.run({"data": x}, ["out"])
        assert "conv: c1 + bn1 + sc1 + r1" not in net.plan(["out"]).describe()
        assert "layer: bn1" in net.plan(["out"]).describe()


def test_hooks_fire_on_layers_that_would_be_fused() -> None:
    net = resnet_like()
    seen: dict[str, torch.Tensor] = {}
    handle = net.bn3.register_forward_hook(lambda m, a, o: seen.update(bn3=o.clone()))
    x = torch.randn(2, 3, 6, 6)
    fused, plain = both(net, x, ["out"])
    assert_close(fused, plain)
    assert "bn3" in seen
    assert "layer: bn3" in net.plan(["out"]).describe()
    handle.remove()
    assert "conv: c3 + bn3 + sc3" in net.plan(["out"]).describe()


def test_frozen_batchnorm_still_folds_in_eval_mode() -> None:
    from repurpose.model_handler._freeze import freeze_modules

    net = resnet_like()
    freeze_modules([net.bn1])
    x = torch.randn(2, 3, 6, 6)
    fused, plain = both(net, x, ["out"])
    assert_close(fused, plain)
    assert "conv: c1 + bn1 + sc1 + r1" in net.plan(["out"]).describe()
    net.train()  # the frozen BN's hook puts it back in eval mode when it is called
    fused, plain = both(net, x, ["out"])
    assert_close(fused, plain)
    assert not net.bn1.training
    assert not [s for s in net.plan(["out"]).describe() if s.startswith("conv")]


def test_in_place_steps_leave_feeds_and_shared_values_alone() -> None:
    nodes = [
        relu("r0", "data", "r0"),  # reads the feed: must not overwrite it
        Node("split", "caffe.split", ("r0",), ("a", "b"), {"n": 2}),
        relu("ra", "a", "ra"),  # its input is shared with "b"
        Node("sum", "add", ("ra", "b"), ("sum",)),
        relu("rs", "sum", "rs"),  # may overwrite "sum"
        Node("sum2", "add", ("rs", "rs"), ("out",)),
    ]
    net = GraphNet(nodes, ["data"], ["out"]).eval()
    x = torch.randn(2, 3)
    keep = x.clone()
    with torch.no_grad():
        out = net.run({"data": x}, ["out", "b"])
    assert torch.equal(x, keep)
    r0 = x.clamp(min=0)
    torch.testing.assert_close(out["b"], r0)
    torch.testing.assert_close(out["out"], 2 * (2 * r0))
    assert net.plan(["out", "b"]).overwrites == 3  # sum (into ra), rs, sum2


def _chain(n: int) -> GraphNet:
    nodes = [conv(f"c{i}", f"v{i}", f"v{i + 1}", 2, 2) for i in range(n)]
    return _randomise(GraphNet(nodes, ["v0"], [f"v{n}"]))


def test_values_are_freed_after_their_last_reader() -> None:
    net = _chain(12)
    refs: dict[int, weakref.ref] = {}
    alive_at: dict[int, list[bool]] = {}

    def hook(i: int):
        def fn(_m, _a, out):
            alive_at[i] = [r() is not None for r in refs.values()]
            refs[i] = weakref.ref(out)
        return fn

    for i in range(12):
        net.get_submodule(f"c{i}").register_forward_hook(hook(i))
    with torch.no_grad():
        net.run({"v0": torch.randn(1, 2, 4, 4)}, ["v12"])
    # when layer i runs, only its input (the output of layer i - 1) is still held
    assert all(sum(alive) <= 1 for alive in alive_at.values()), alive_at
    plan = net.plan(["v12"])
    assert plan.peak_live == 1
    with torch.no_grad():
        net.run({"v0": torch.randn(1, 2, 4, 4)}, ["v3", "v12"])
    assert max(net.plan(["v3", "v12"]).live_counts) == 1


def test_extraction_stops_early_and_keeps_only_pooled_features() -> None:
    net = fire()
    h = ModelHandler(net)
    x = np.random.default_rng(0).standard_normal((5, 4, 7, 7)).astype(np.float32)
    feats = h.extract(x, ["sq_relu", "concat"], pooling="avg", batch_size=2, progress=False)
    with torch.no_grad():
        ref = net.run({"data": torch.from_numpy(x)}, ["sq", "fire"], fuse=False)
    np.testing.assert_allclose(feats["sq_relu"], ref["sq"].mean((2, 3)).numpy(), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(feats["concat"], ref["fire"].mean((2, 3)).numpy(), rtol=1e-5,
                               atol=1e-6)
    plan = net.plan(["sq", "fire"])
    assert "pool" not in [s.layers[-1] for s in plan.steps]  # stopped after the concat


def test_capture_sees_each_value_once_as_soon_as_it_exists() -> None:
    net = _chain(4)
    order: list[str] = []
    with torch.no_grad():
        out = net.run({"v0": torch.randn(2, 2, 4, 4)}, ["v1", "v4"],
                      capture=lambda name, v: order.append(name) or v.mean())
    assert order == ["v1", "v4"]
    assert out["v1"].dim() == 0
