"""Reader (and a small writer) for MXNet ``.params`` files, with numpy only.

Layout (little-endian), as written by ``mx.nd.save``::

    uint64 0x112, uint64 0, uint64 N, N x NDArray record, uint64 M, M x (uint64 len, bytes)

An NDArray record starts with a uint32 magic: ``0xF993FAC9`` (V2: storage type, shape,
context, dtype, data), ``0xF993FACA`` (V3: the same with numpy shape semantics),
``0xF993FAC8`` (V1: shape, context, dtype, data) or anything else (legacy: the uint32 is
the number of dims, followed by uint32 dims, context, dtype, data).

Every size read from the file is checked against the bytes that remain before anything
is allocated, so a forged header raises :class:`ModelFormatError` instead of exhausting
memory.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from repurpose._exceptions import ModelFormatError, UnsupportedLayerError

__all__ = ["load_params", "read_params_bytes", "save_params", "DTYPE_CODES", "split_prefixes"]

LIST_MAGIC = 0x112
V1_MAGIC = 0xF993FAC8
V2_MAGIC = 0xF993FAC9
V3_MAGIC = 0xF993FACA
_MAX_NDIM = 32

#: mshadow type flags. bfloat16 (12) is read and widened to float32.
DTYPE_CODES: dict[int, str] = {
    0: "<f4", 1: "<f8", 2: "<f2", 3: "u1", 4: "<i4", 5: "i1", 6: "<i8", 7: "?",
    8: "<i2", 9: "<u2", 10: "<u4", 11: "<u8", 12: "bfloat16",
}
_STYPES = {1: "row_sparse", 2: "csr"}


class _Reader:
    """A bounds-checked cursor over a byte buffer."""

    def __init__(self, buf: np.ndarray, source: str) -> None:
        self.buf = buf
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> ModelFormatError:
        return ModelFormatError(f"{self.source}: {what} (at byte {self.pos}); "
                                "the file is truncated or not an MXNet .params file")

    def take(self, n: int, what: str) -> int:
        if n < 0 or n > len(self.buf) - self.pos:
            raise self.fail(f"{what} needs {n} bytes but only {len(self.buf) - self.pos} remain")
        start = self.pos
        self.pos += n
        return start

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        size = struct.calcsize(fmt)
        start = self.take(size, what)
        return struct.unpack_from(fmt, self.buf.data, start)

    def u64(self, what: str) -> int:
        return self.unpack("<Q", what)[0]

    def i32(self, what: str) -> int:
        return self.unpack("<i", what)[0]

    def shape(self, what: str, legacy_ndim: int | None = None) -> tuple[int, ...] | None:
        """Read a TShape; ``None`` means MXNet's "unknown" shape (ndim -1)."""
        if legacy_ndim is None:
            ndim = self.i32(f"{what} ndim")
            fmt = "<{}q"
        else:
            ndim = legacy_ndim
            fmt = "<{}I"
        if ndim < 0:
            return None
        if ndim > _MAX_NDIM:
            raise self.fail(f"{what} has {ndim} dims (at most {_MAX_NDIM} are accepted)")
        dims = self.unpack(fmt.format(ndim), f"{what} dims")
        if any(d < 0 for d in dims):
            raise self.fail(f"{what} has negative dims {dims}")
        if int(np.prod([max(d, 1) for d in dims], dtype=object)) > 2**48:
            raise self.fail(f"{what} {dims} is implausibly large")
        return tuple(int(d) for d in dims)

    def array(self, shape: tuple[int, ...], dtype_code: int, name: str) -> np.ndarray:
        if dtype_code not in DTYPE_CODES:
            raise self.fail(f"array #{name} has unknown dtype code {dtype_code}; known codes: "
                            + ", ".join(f"{k} ({v})" for k, v in DTYPE_CODES.items()))
        code = DTYPE_CODES[dtype_code]
        raw = np.dtype("<u2") if code == "bfloat16" else np.dtype(code)
        count = int(np.prod(shape, dtype=object)) if shape else 1
        start = self.take(count * raw.itemsize, f"data of array #{name} {shape}")
        if start % raw.itemsize:  # unaligned: copy (rare, only after odd-sized arrays)
            data = np.frombuffer(self.buf[start:start + count * raw.itemsize].tobytes(), raw)
        else:
            data = np.frombuffer(self.buf, raw, count, start)
        if code == "bfloat16":
            data = (data.astype(np.uint32) << 16).view(np.float32)
        return data.reshape(shape)


def _read_record(r: _Reader, index: int) -> np.ndarray:
    name = str(index)
    (magic,) = r.unpack("<I", f"magic of array #{name}")
    if magic in (V2_MAGIC, V3_MAGIC):
        stype = r.i32(f"storage type of array #{name}")
        if stype != 0:
            kind = _STYPES.get(stype, f"code {stype}")
            raise UnsupportedLayerError(
                f"{r.source}: array #{name} uses sparse storage ({kind}); only dense arrays are "
                "supported. Convert it to dense in MXNet (arr.tostype('default')) and save again."
            )
        shape = r.shape(f"shape of array #{name}")
        if shape is None or (magic == V2_MAGIC and (len(shape) == 0 or 0 in shape)):
            return np.zeros((0,), np.float32)  # an empty NDArray
    else:
        shape = r.shape(f"shape of array #{name}", None if magic == V1_MAGIC else magic)
        if not shape:
            return np.zeros((0,), np.float32)
    r.take(8, f"context of array #{name}")
    dtype_code = r.i32(f"dtype of array #{name}")
    return r.array(shape, dtype_code, name)


def read_params_bytes(buf: bytes | bytearray | np.ndarray, source: str = "<bytes>",
                      ) -> dict[str, np.ndarray]:
    """Parse the bytes of a ``.params`` file (see :func:`load_params`)."""
    data = np.frombuffer(buf, np.uint8) if not isinstance(buf, np.ndarray) else buf
    r = _Reader(data, source)
    if len(data) < 8 or r.u64("list magic") != LIST_MAGIC:
        raise ModelFormatError(
            f"{source}: not an MXNet .params file (the first 8 bytes should be the list "
            f"magic 0x112, got {bytes(data[:8]).hex() or 'nothing'})"
        )
    r.u64("reserved field")
    count = r.u64("array count")
    if count > (len(data) - r.pos) // 4:
        raise r.fail(f"the header announces {count} arrays, more than the file can hold")
    arrays = [_read_record(r, i) for i in range(count)]
    n_names = r.u64("name count")
    if n_names not in (0, count):
        raise r.fail(f"{n_names} names for {count} arrays")
    names = []
    for i in range(n_names):
        length = r.u64(f"length of name #{i}")
        start = r.take(length, f"name #{i}")
        try:
            names.append(bytes(data[start:start + length]).decode("utf-8"))
        except UnicodeDecodeError as err:
            raise r.fail(f"name #{i} is not UTF-8") from err
    if r.pos != len(data):
        raise r.fail(f"{len(data) - r.pos} unexpected bytes after the last name")
    if not names:
        names = [str(i) for i in range(count)]
    if len(set(names)) != len(names):
        raise ModelFormatError(f"{source}: duplicate array names")
    return dict(zip(names, arrays))


def load_params(path: str | Path, strip_prefixes: bool = False) -> dict[str, np.ndarray]:
    """Read an MXNet ``.params`` file into numpy arrays, without mxnet.

    Parameters
    ----------
    path : str or Path
        A file written by ``mx.nd.save``, ``save_checkpoint``, ``HybridBlock.export`` or
        gluon's ``save_parameters``.
    strip_prefixes : bool
        Remove the ``arg:`` / ``aux:`` prefixes of checkpoint keys.

    Returns
    -------
    dict of str to ndarray
        Arrays in file order, keyed by their stored names (``"arg:conv0_weight"``); an
        unnamed list is keyed ``"0"``, ``"1"``, ... . All dtypes are read; bfloat16 is
        widened to float32. Arrays are views of one buffer read in a single call.

    Raises
    ------
    ModelFormatError
        If the file is truncated, has a wrong magic number, an unknown dtype code, or sizes
        that exceed the file.
    UnsupportedLayerError
        If an array uses sparse storage.

    Examples
    --------
    >>> import numpy as np, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "m-0000.params")
    >>> save_params(path, {"arg:w": np.ones((2, 3), np.float32)})
    >>> load_params(path, strip_prefixes=True)["w"].shape
    (2, 3)
    """
    path = Path(path)
    with open(path, "rb") as f:
        size = f.seek(0, 2)
        f.seek(0)
        buf = np.empty(size, np.uint8)
        if f.readinto(buf.data) != size:
            raise ModelFormatError(f"{path}: could not read the whole file")
    params = read_params_bytes(buf, str(path))
    return split_prefixes(params, str(path)) if strip_prefixes else params


def split_prefixes(params: Mapping[str, np.ndarray], source: str = "params",
                   ) -> dict[str, np.ndarray]:
    """Drop ``arg:`` / ``aux:`` prefixes, refusing names that would then collide."""
    out: dict[str, np.ndarray] = {}
    for key, value in params.items():
        name = key[4:] if key.startswith(("arg:", "aux:")) else key
        if name in out:
            raise ModelFormatError(f"{source}: {name!r} is stored twice (as arg: and aux:)")
        out[name] = value
    return out


_CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items() if v != "bfloat16"}


def save_params(path: str | Path, params: Mapping[str, np.ndarray], version: str = "v2") -> None:
    """Write arrays as an MXNet ``.params`` file (used by tests, fixtures and benchmarks).

    Parameters
    ----------
    path : str or Path
        Destination file.
    params : mapping of str to ndarray
        Names (with ``arg:`` / ``aux:`` prefixes for checkpoints) to arrays.
    version : {"v1", "v2", "v3", "legacy"}
        The NDArray record form to write.
    """
    parts = [struct.pack("<QQQ", LIST_MAGIC, 0, len(params))]
    for arr in params.values():
        parts.append(_record(np.asarray(arr), version))
    parts.append(struct.pack("<Q", len(params)))
    for name in params:
        raw = name.encode("utf-8")
        parts.append(struct.pack("<Q", len(raw)) + raw)
    Path(path).write_bytes(b"".join(parts))


def _record(arr: np.ndarray, version: str) -> bytes:
    dtype = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
    code = _CODE_OF.get(np.dtype(dtype))
    if code is None:
        raise ValueError(f"dtype {arr.dtype} has no MXNet type code")
    shape = struct.pack("<i", arr.ndim) + struct.pack(f"<{arr.ndim}q", *arr.shape)
    tail = struct.pack("<iii", 1, 0, code) + np.ascontiguousarray(arr, dtype.str).tobytes()
    if version == "v2":
        return struct.pack("<Ii", V2_MAGIC, 0) + shape + tail
    if version == "v3":
        return struct.pack("<Ii", V3_MAGIC, 0) + shape + tail
    if version == "v1":
        return struct.pack("<I", V1_MAGIC) + shape + tail
    if version == "legacy":
        return struct.pack(f"<I{arr.ndim}I", arr.ndim, *arr.shape) + tail
    raise ValueError(f"version {version!r} is not one of v1, v2, v3, legacy")
