"""Property tests: pooling, convolution and padding arithmetic against onnxruntime."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402

from repurpose.onnx import load_net, verify  # noqa: E402
from tests.onnx.onnx_nets import GraphWriter  # noqa: E402


def _one_node_model(op: str, hw: int, channels: int, extra: list[str] | None = None,
                    writer: GraphWriter | None = None, **attrs: object):
    w = writer or GraphWriter(13)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", channels, hw, hw])
    w.node(op, ["x", *(extra or [])], "y", **attrs)
    return w.model([x], ["y"], rank=4)


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(["MaxPool", "AveragePool"]), k=st.integers(1, 4),
       s=st.integers(1, 3), pads=st.lists(st.integers(0, 1), min_size=4, max_size=4),
       ceil=st.booleans(), include=st.booleans(), hw=st.integers(5, 9))
@example(mode="MaxPool", k=2, s=2, pads=[0, 0, 0, 1], ceil=True, include=False, hw=6)
def test_pooling_matches_onnxruntime(mode, k, s, pads, ceil, include, hw) -> None:
    pads = [min(p, k - 1) for p in pads]  # ONNX requires pads smaller than the kernel
    attrs: dict[str, object] = {"kernel_shape": [k, k], "strides": [s, s], "pads": pads,
                                "ceil_mode": int(ceil)}
    if mode == "AveragePool":
        attrs["count_include_pad"] = int(include)
    report = verify(_one_node_model(mode, hw, 2, **attrs), batch_size=2)
    assert report.ok, report.format()


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 3), s=st.integers(1, 3), auto=st.sampled_from(
    ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"]), hw=st.integers(4, 9),
    pads=st.lists(st.integers(0, 2), min_size=4, max_size=4), group=st.sampled_from([1, 2]))
def test_conv_padding_matches_onnxruntime(k, s, auto, hw, pads, group) -> None:
    w = GraphWriter(13)
    weight = w.weight("w", 4, 4 // group, k, k)
    attrs: dict[str, object] = {"kernel_shape": [k, k], "strides": [s, s], "group": group,
                                "auto_pad": auto}
    if auto == "NOTSET":
        attrs["pads"] = pads
    model = _one_node_model("Conv", hw, 4, [weight], writer=w, **attrs)
    report = verify(model, batch_size=2)
    assert report.ok, report.format()
    assert len(load_net(model).layer_names) == 1


@settings(max_examples=12, deadline=None)
@given(pads=st.lists(st.integers(-1, 2), min_size=8, max_size=8),
       mode=st.sampled_from(["constant", "reflect", "edge"]), hw=st.integers(4, 6))
def test_pad_matches_onnxruntime(pads, mode, hw) -> None:
    if mode != "constant":
        # reflect/edge pad the spatial axes only, by non-negative amounts
        pads = [0, 0] + [max(p, 0) for p in pads[2:4]] + [0, 0] + [max(p, 0) for p in pads[6:]]
    w = GraphWriter(13)
    model = _one_node_model("Pad", hw, 2, [w.ints_input("pads", pads)], writer=w, mode=mode)
    report = verify(model, batch_size=2)
    assert report.ok, report.format()
    np.testing.assert_equal(report.rows[0].shape[2], hw + pads[2] + pads[6])


@settings(max_examples=20, deadline=None)
@given(k=st.integers(1, 4), s=st.integers(1, 3), hw=st.integers(2, 6),
       pads=st.lists(st.integers(0, 3), min_size=4, max_size=4),
       out_pad=st.integers(0, 2), group=st.sampled_from([1, 2]))
@example(k=3, s=2, hw=4, pads=[0, 0, 1, 1], out_pad=0, group=1)  # Keras padding="same"
def test_conv_transpose_padding_matches_onnxruntime(k, s, hw, pads, out_pad, group) -> None:
    out_pad = min(out_pad, s - 1)  # must be smaller than the stride
    full = s * (hw - 1) + out_pad + k  # the output before cropping by the pads
    pads = [min(p, k - 1) for p in pads]
    pads[2:] = [min(e, full - 1 - b) for b, e in zip(pads[:2], pads[2:])]  # keep >= 1
    w = GraphWriter(13)
    weight = w.weight("w", 4, 6 // group, k, k)
    model = _one_node_model("ConvTranspose", hw, 4, [weight], writer=w, kernel_shape=[k, k],
                            strides=[s, s], pads=pads, output_padding=[out_pad, out_pad],
                            group=group)
    report = verify(model, batch_size=2)
    assert report.ok, report.format()
    assert report.rows[0].shape == (2, 6, full - pads[0] - pads[2], full - pads[1] - pads[3])
