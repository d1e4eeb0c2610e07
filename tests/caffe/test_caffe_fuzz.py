"""Fuzz: mutated prototxt and caffemodel files give a result or one of our errors, fast."""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path
from typing import Any

import pytest
from caffe_writer import NetWriter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import repurpose.caffe as rc
from repurpose._exceptions import ModelFormatError, RepurposeError
from repurpose.graph import GraphNet

_DIR = Path(tempfile.mkdtemp(prefix="caffe_fuzz_"))


def _files() -> tuple[bytes, bytes]:
    w = NetWriter((1, 2, 7, 7))
    w.layer("conv", "Convolution", ["data"], ["conv"], [(3, 2, 3, 3), (3,)],
            convolution_param={"num_output": 3, "kernel_size": [3], "pad": [1]})
    w.layer("relu", "ReLU", ["conv"], ["conv"])
    w.layer("pool", "Pooling", ["conv"], ["pool"],
            pooling_param={"pool": "MAX", "kernel_size": 3, "stride": 2})
    w.layer("bn", "BatchNorm", ["pool"], ["pool"], [(3,), [1.0, 2.0, 3.0], [1.0]])
    w.layer("fc", "InnerProduct", ["pool"], ["fc"], [(4, 48), (4,)],
            inner_product_param={"num_output": 4})
    proto, model = w.write(_DIR / "orig")
    return proto.read_bytes(), model.read_bytes()


PROTO, MODEL = _files()
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


def mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


LAYERS = ["conv", "relu", "pool", "bn", "fc"]


def _load(proto: bytes, model: bytes) -> Any:
    """The loaded net, or the RepurposeError it raised (anything else fails the test)."""
    p, m = _DIR / "case.prototxt", _DIR / "case.caffemodel"
    p.write_bytes(proto)
    m.write_bytes(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            net = rc.load_net(p, m)
        except RepurposeError as err:
            assert str(err).strip(), "an error must say what is wrong"
            return err
    assert isinstance(net, GraphNet) and net.layer_names, "a loaded net must have layers"
    return net


edits = st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=4)
cuts = st.one_of(st.none(), st.integers(0, len(MODEL)))


@SETTINGS
@given(edits=edits, cut=cuts)
def test_mutated_caffemodel(edits: list[tuple[int, int]], cut: int | None) -> None:
    result = _load(PROTO, mutate(MODEL, edits, cut))
    if isinstance(result, GraphNet):  # weights that still parse fit the same layers
        assert result.layer_names == LAYERS


text_edits = st.lists(st.tuples(st.integers(0, 1 << 16),
                                st.sampled_from(b'0123456789-:{}" abcxyz\n')), max_size=3)


@SETTINGS
@given(edits=text_edits, cut=st.one_of(st.none(), st.integers(0, len(PROTO))))
def test_mutated_prototxt(edits: list[tuple[int, int]], cut: int | None) -> None:
    result = _load(mutate(PROTO, edits, cut), MODEL)
    if isinstance(result, GraphNet):
        assert set(result.layer_names) <= set(LAYERS) | {"data"}


@pytest.mark.parametrize("cut", range(0, len(MODEL), max(1, len(MODEL) // 40)))
def test_every_truncation_is_a_clear_error(cut: int) -> None:
    result = _load(PROTO, MODEL[:cut])
    assert isinstance(result, ModelFormatError)
    assert "case.caffemodel" in str(result)  # names the bad file
