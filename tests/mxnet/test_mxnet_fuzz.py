"""Mutated .params and symbol files raise our own errors: never a crash or a huge allocation."""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mx_helpers import FIXTURES

import repurpose as rp
from repurpose.graph import GraphNet
from repurpose.mxnet._params import read_params_bytes

PARAMS = (FIXTURES / "params_v2.params").read_bytes()
LEGACY = (FIXTURES / "params_legacy.params").read_bytes()
SYMBOL = json.loads((FIXTURES / "inception-symbol.json").read_text())
WEIGHTS = rp.mxnet.load_params(FIXTURES / "inception-0000.params")
FUZZ = settings(max_examples=150, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        buf[pos % len(buf)] = value
    return bytes(buf[:cut] if cut is not None else buf)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), max_size=6),
       cut=st.none() | st.integers(0, len(PARAMS)), legacy=st.booleans(),
       word=st.none() | st.tuples(st.integers(0, 10**6), st.sampled_from(
           [2**31 - 1, 2**32 - 1, 2**63, 2**64 - 1, 0xF993FACA, 0xF993FAC8, 7, 12, 1])))
def test_mutated_params(edits, cut, legacy, word) -> None:
    data = bytearray(_mutate(LEGACY if legacy else PARAMS, edits, cut))
    if word is not None and len(data) >= 8:  # forge a size field
        pos = word[0] % (len(data) - 7)
        data[pos:pos + 8] = struct.pack("<Q", word[1] % 2**64)
    try:
        arrays = read_params_bytes(bytes(data))
    except rp.RepurposeError as err:
        assert str(err).strip(), "an error must say what is wrong"
        return
    assert sum(a.nbytes for a in arrays.values()) <= len(data) * 4  # bf16 widens 2x at most


_VALUES = st.sampled_from(["(-1, 3)", "None", "abc", "1e309", "0", "(0, 0)", "(3, 3, 3)",
                           "True", "-5", "99999999999", "(1,)", "full", "same", "lp", ""])


@FUZZ
@given(node=st.integers(0, 10**4), key=st.sampled_from(
           ["kernel", "pad", "stride", "num_filter", "pool_type", "pooling_convention",
            "fix_gamma", "eps", "dim", "num_hidden", "act_type", "global_pool", "no_bias"]),
       value=_VALUES, drop=st.booleans(), rewire=st.none() | st.tuples(
           st.integers(0, 10**4), st.integers(-2, 10**4), st.integers(0, 3)),
       op=st.none() | st.sampled_from(["Pooling", "Convolution", "Concat", "Nope", "null"]))
def test_mutated_symbol(node, key, value, drop, rewire, op) -> None:
    doc = json.loads(json.dumps(SYMBOL))
    target = doc["nodes"][node % len(doc["nodes"])]
    attrs = target.setdefault("attrs", {})
    if drop:
        attrs.pop(key, None)
    else:
        attrs[key] = value
    if rewire is not None:
        victim = doc["nodes"][rewire[0] % len(doc["nodes"])]
        if victim["inputs"]:
            victim["inputs"][0] = [rewire[1], rewire[2], 0]
    if op is not None:
        target["op"] = op
    try:
        net = rp.mxnet.load_net(doc, WEIGHTS)
    except rp.RepurposeError as err:
        assert str(err).strip(), "an error must say what is wrong"
        return
    assert isinstance(net, GraphNet) and net.layer_names
    assert set(net.layer_names) <= {n["name"] for n in doc["nodes"]}


@FUZZ
@given(text=st.text(max_size=200) | st.binary(max_size=200).map(
    lambda b: json.dumps(SYMBOL)[:50] + b.decode("latin-1")))
def test_garbage_json_text(text) -> None:
    with pytest.raises(rp.RepurposeError, match=r"\S"):
        rp.mxnet.load_net("{" + text)
