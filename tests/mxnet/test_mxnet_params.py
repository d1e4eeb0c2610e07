"""The .params reader: record versions, dtypes, prefixes and bad files."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from mx_helpers import FIXTURES

import repurpose as rp
from repurpose.mxnet._params import V2_MAGIC, read_params_bytes, save_params


def _expected() -> dict[str, np.ndarray]:
    with np.load(FIXTURES / "params_expected.npz", allow_pickle=False) as data:
        return {k.replace("__", ":"): data[k] for k in data.files}


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "legacy"])
def test_hand_written_versions_match_what_mxnet_read(version: str) -> None:
    # these files were read back by mx.nd.load in tools/make_mxnet_fixtures.py
    expected = _expected()
    got = rp.mxnet.load_params(FIXTURES / f"params_{version}.params")
    assert list(got) == list(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        np.testing.assert_array_equal(got[key], value, err_msg=key)


def test_every_dtype_is_covered_by_the_fixtures() -> None:
    dtypes = {v.dtype.name for v in _expected().values()}
    assert {"float32", "float64", "float16", "uint8", "int32", "int8", "int64", "bool"} <= dtypes


def test_files_written_by_mxnet() -> None:
    v2 = rp.mxnet.load_params(FIXTURES / "params_mxnet_v2.params")
    assert list(v2) == list(_expected())
    v3 = rp.mxnet.load_params(FIXTURES / "params_mxnet_v3.params")
    assert v3["arg:scalar"].shape == () and float(v3["arg:scalar"]) == 2.5
    np.testing.assert_array_equal(v3["arg:w"], _expected()["noprefix_4d"])
    unnamed = rp.mxnet.load_params(FIXTURES / "params_unnamed.params")
    np.testing.assert_array_equal(unnamed["0"], [1.0, 2.0])


def test_checkpoint_prefixes_can_be_stripped() -> None:
    got = rp.mxnet.load_params(FIXTURES / "resnet-0000.params", strip_prefixes=True)
    assert "conv0_weight" in got and "bn_data_moving_mean" in got
    assert not any(k.startswith(("arg:", "aux:")) for k in got)


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "legacy"])
def test_writer_round_trip(tmp_path, version: str) -> None:
    arrays = {"arg:a": np.arange(6, dtype=np.int16).reshape(2, 3),
              "aux:b": np.linspace(0, 1, 7).astype(np.float64), "c": np.ones(3, np.uint64)}
    save_params(tmp_path / "x.params", arrays, version=version)
    got = rp.mxnet.load_params(tmp_path / "x.params")
    for key, value in arrays.items():
        assert got[key].dtype == value.dtype
        np.testing.assert_array_equal(got[key], value)


def _header(n: int = 1) -> bytes:
    return struct.pack("<QQQ", 0x112, 0, n)


def _v2_record(shape: tuple[int, ...], code: int, data: bytes) -> bytes:
    dims = struct.pack("<i", len(shape)) + struct.pack(f"<{len(shape)}q", *shape)
    return struct.pack("<Ii", V2_MAGIC, 0) + dims + struct.pack("<iii", 1, 0, code) + data


def _names(*names: str) -> bytes:
    return struct.pack("<Q", len(names)) + b"".join(
        struct.pack("<Q", len(n)) + n.encode() for n in names)


def test_bfloat16_is_widened_to_float32() -> None:
    values = np.array([1.5, -2.0, 0.15625], np.float32)
    raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    got = read_params_bytes(_header() + _v2_record((3,), 12, raw) + _names("w"))
    np.testing.assert_array_equal(got["w"], values)


def test_empty_ndarray_records() -> None:
    got = read_params_bytes(_header() + struct.pack("<Iii", V2_MAGIC, 0, 0) + _names("e"))
    assert got["e"].size == 0


@pytest.mark.parametrize("data, match", [
    (b"", "not an MXNet .params file"),
    (b"\x00" * 64, "not an MXNet .params file"),
    (struct.pack("<QQ", 0x112, 0), "array count needs 8 bytes"),
    (_header(10**15), "announces 1000000000000000 arrays"),
    (_header() + _v2_record((2, 3), 0, b"\x00" * 8), "data of array #0"),
    (_header() + _v2_record((2**40, 2**20), 0, b""), "implausibly large"),
    (_header() + _v2_record((2**20, 2**20), 0, b""), "data of array #0"),
    (_header() + _v2_record((2,), 99, b"\x00" * 8) + _names("w"), "unknown dtype code 99"),
    (_header() + struct.pack("<Iii", V2_MAGIC, 0, 1000), "1000 dims"),
    (_header() + struct.pack("<Iii", V2_MAGIC, 0, 2) + struct.pack("<qq", 2, -5), "negative"),
    (_header() + _v2_record((2,), 0, b"\x00" * 8) + struct.pack("<QQ", 1, 10**12),
     "name #0 needs"),
    (_header() + _v2_record((2,), 0, b"\x00" * 8) + _names("w") + b"junk", "unexpected bytes"),
    (_header(2) + _v2_record((2,), 0, b"\x00" * 8) * 2 + _names("w", "w"), "duplicate"),
    (_header() + _v2_record((2,), 0, b"\x00" * 8) + _names("a", "b"), "2 names for 1 arrays"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_files_raise_model_format_error(data: bytes, match: str) -> None:
    with pytest.raises(rp.ModelFormatError, match=match):
        read_params_bytes(data)


def test_truncated_fixture_at_every_length_is_an_error() -> None:
    data = (FIXTURES / "params_v2.params").read_bytes()
    for cut in range(0, len(data) - 1, 7):
        with pytest.raises(rp.ModelFormatError):
            read_params_bytes(data[:cut])


def test_sparse_storage_is_refused_clearly() -> None:
    record = struct.pack("<Iii", V2_MAGIC, 2, 1) + struct.pack("<q", 4)
    with pytest.raises(rp.UnsupportedLayerError, match="sparse storage \\(csr\\)"):
        read_params_bytes(_header() + record + b"\x00" * 64)


def test_missing_file_and_prefix_collision(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        rp.mxnet.load_params(tmp_path / "nope.params")
    save_params(tmp_path / "c.params", {"arg:w": np.ones(1), "aux:w": np.ones(1)})
    with pytest.raises(rp.ModelFormatError, match="stored twice"):
        rp.mxnet.load_params(tmp_path / "c.params", strip_prefixes=True)
