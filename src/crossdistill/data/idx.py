"""IDX files, the format of MNIST and Fashion-MNIST, raw or gzipped.

An IDX file is two zero bytes, a type code, the number of dimensions ``ndim``, ``ndim`` big-endian
uint32 sizes, then the values in C order, big-endian.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from ..errors import CrossdistillError
from ..files import atomic_path

_GZIP_MAGIC = b"\x1f\x8b"

_TYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code → the big-endian dtype of the values."""

_TYPE_NAMES = ", ".join(f"0x{code:02x} {dtype.name}" for code, dtype in _TYPES.items())


class DataFormatError(CrossdistillError, ValueError):
    """Data are not what they should be: a file in the wrong format, truncated or corrupt, a
    label outside the declared classes, or splits of one domain holding different kinds of
    inputs. The message names the file or the split, what was expected and what was found."""


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file, gzipped or not (told by its first bytes, not by its name).

    Returns:
        A new writable array in native byte order, with the shape and dtype (uint8, int8, int16,
        int32, float32 or float64) the header gives.

    Raises:
        DataFormatError: the gzip stream is corrupt, the header is malformed, or the data is not
            exactly as long as the header says; the message names ``path``.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    content = path.read_bytes()
    if content[:2] == _GZIP_MAGIC:
        try:
            content = gzip.decompress(content)
        except (gzip.BadGzipFile, EOFError, zlib.error) as error:
            raise DataFormatError(f"{path}: corrupt gzip stream: {error}") from error
    if len(content) < 4 or content[:2] != b"\0\0" or content[2] not in _TYPES:
        raise DataFormatError(
            f"{path}: bad magic: expected 0x0000 then a type code ({_TYPE_NAMES}), "
            f"found 0x{content[:4].hex()}"
        )
    dtype, ndim = _TYPES[content[2]], content[3]
    offset = 4 + 4 * ndim
    if len(content) < offset:
        raise DataFormatError(
            f"{path}: truncated header: {ndim} dimensions need {offset} header bytes, "
            f"found {len(content)}"
        )
    shape = tuple(int(size) for size in np.frombuffer(content, ">u4", ndim, 4))
    expected, found = math.prod(shape) * dtype.itemsize, len(content) - offset
    if found != expected:
        fault = "truncated" if found < expected else "extra bytes"
        raise DataFormatError(
            f"{path}: {fault}: header says {'×'.join(map(str, shape))} {dtype.name} = "
            f"{expected} bytes of data, found {found}"
        )
    values = np.frombuffer(content, dtype, math.prod(shape), offset).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped when ``path`` ends in ``.gz``.

    The file appears whole or not at all (written to a temporary file, then renamed).

    Args:
        path: the file to write; its folder is created if needed.
        array: any shape with at most 255 dimensions, each below 2**32; dtype uint8, int8, int16,
            int32, float32 or float64.

    Raises:
        ValueError: the dtype or shape cannot be stored in IDX.
    """
    array = np.asarray(array)
    big_endian = array.dtype.newbyteorder(">")
    codes = [code for code, dtype in _TYPES.items() if dtype == big_endian]
    if not codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}; expected one of {_TYPE_NAMES}")
    if array.ndim > 255 or any(size >= 2**32 for size in array.shape):
        raise ValueError(f"IDX cannot store shape {array.shape}: at most 255 sizes below 2**32")
    header = bytes([0, 0, codes[0], array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    content = header + array.astype(big_endian, copy=False).tobytes()
    if Path(path).name.endswith(".gz"):
        content = gzip.compress(content, mtime=0)
    with atomic_path(path) as temporary:
        temporary.write_bytes(content)
