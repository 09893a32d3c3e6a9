"""IDX files, dataset sources (local folders, cache, checksummed downloads) and the named datasets.

Nothing here touches the network: downloads come from ``file://`` mirrors in temporary folders and
the real datasets are read from the project's shared data folder with ``download=False``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from crossdistill.data import (
    ArrayData,
    ChecksumError,
    DataFormatError,
    DomainSplits,
    RemoteFile,
    cache_dir,
    load_idx_pair,
    locate,
    read_idx,
    write_idx,
)
from crossdistill.registries import datasets


def _row_keys(*parts: ArrayData) -> list[bytes]:
    """Sorted digests of the (x, y) rows of ``parts``: equal lists mean equal multisets of rows."""
    return sorted(
        hashlib.blake2b(x.tobytes() + y.tobytes(), digest_size=16).digest()
        for part in parts
        for x, y in zip(part.x.reshape(len(part), -1).numpy(), part.y.numpy(), strict=True)
    )


def _real(name: str, data_root: Path, seed: int) -> DomainSplits:
    """Dataset ``name`` with Small of 1 000 rows, read from the real data, never downloaded."""
    return datasets.build(name, small=1000, seed=seed, data_dir=data_root, download=False)


def _assert_equal(a: DomainSplits, b: DomainSplits) -> None:
    for part_a, part_b in zip((a.big, a.small, a.test), (b.big, b.small, b.test), strict=True):
        assert torch.equal(part_a.x, part_b.x) and torch.equal(part_a.y, part_b.y)


def _idx_bytes(code: int, shape: tuple[int, ...], payload: bytes) -> bytes:
    return bytes([0, 0, code, len(shape)]) + np.asarray(shape, ">u4").tobytes() + payload


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("name", ["values.idx", "values.idx.gz"])
@pytest.mark.parametrize(
    "dtype", ["u1", "i1", "<i2", ">i2", "<i4", ">i4", "<f4", ">f4", "<f8", ">f8"]
)
def test_idx_round_trip(tmp_path: Path, name: str, dtype: str) -> None:
    array = (np.arange(2 * 3 * 5) * 7 - 40).reshape(2, 3, 5).astype(dtype)
    write_idx(tmp_path / name, array)
    back = read_idx(tmp_path / name)
    assert back.shape == (2, 3, 5) and back.dtype == np.dtype(dtype).newbyteorder("=")
    assert back.dtype.isnative and back.flags.writeable
    np.testing.assert_array_equal(back, array)
    assert os.listdir(tmp_path) == [name]  # no temporary file left behind


def test_idx_is_big_endian_with_the_documented_header(tmp_path: Path) -> None:
    write_idx(tmp_path / "a.idx", np.array([[1, 258]], dtype=np.int16))
    assert (tmp_path / "a.idx").read_bytes() == _idx_bytes(0x0B, (1, 2), b"\x00\x01\x01\x02")


def test_gzip_is_told_by_magic_bytes_not_by_name(tmp_path: Path) -> None:
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)
    write_idx(tmp_path / "zipped.gz", array)
    (tmp_path / "zipped.gz").rename(tmp_path / "zipped-without-suffix")
    write_idx(tmp_path / "plain", array)
    (tmp_path / "plain").rename(tmp_path / "plain.gz")
    np.testing.assert_array_equal(read_idx(tmp_path / "zipped-without-suffix"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "plain.gz"), array)


def test_write_idx_rejects_types_idx_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "a.idx", np.zeros(3, dtype=np.int64))
    assert not (tmp_path / "a.idx").exists()


_GOOD = _idx_bytes(0x08, (2, 3), bytes(range(6)))
_GOOD_GZ = gzip.compress(_GOOD, mtime=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(
            b"\x01\x00" + _GOOD[2:],
            "bad magic: expected 0x0000 then a type code.*found 0x01000802",
            id="nonzero-magic",
        ),
        pytest.param(b"\x00\x00\x07" + _GOOD[3:], "bad magic.*found 0x00000702", id="type-code"),
        pytest.param(gzip.compress(_GOOD_GZ), "bad magic.*found 0x1f8b0800", id="gzipped-twice"),
        pytest.param(b"\x00\x00", "bad magic.*found 0x0000$", id="two-bytes"),
        pytest.param(
            _GOOD[:10],
            "truncated header: 2 dimensions need 12 header bytes, found 10",
            id="truncated-header",
        ),
        pytest.param(
            _GOOD[:-1],
            "truncated: header says 2×3 uint8 = 6 bytes of data, found 5",
            id="truncated-payload",
        ),
        pytest.param(
            _GOOD + b"\x00",
            "extra bytes: header says 2×3 uint8 = 6 bytes of data, found 7",
            id="extra-bytes",
        ),
        pytest.param(
            b"\x00\x00\x08\x03" + _GOOD[4:],
            "truncated: header says 2×3×66051 uint8 = 396306 bytes of data, found 2",
            id="wrong-ndim",
        ),
        pytest.param(
            b"\x00\x00\x0c" + _GOOD[3:],
            "truncated: header says 2×3 int32 = 24 bytes of data, found 6",
            id="wrong-dtype",
        ),
        pytest.param(_GOOD_GZ[:-6], "corrupt gzip stream", id="gzip-truncated"),
        pytest.param(
            _GOOD_GZ[:-8] + b"\x00" * 4 + _GOOD_GZ[-4:], "corrupt gzip stream: CRC", id="gzip-crc"
        ),
        pytest.param(
            _GOOD_GZ[:10] + b"\xff" * 8 + _GOOD_GZ[18:], "corrupt gzip stream", id="gzip-garbage"
        ),
    ],
)
def test_corrupt_idx_names_the_file_and_the_fault(
    tmp_path: Path, content: bytes, message: str
) -> None:
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: {message}"):
        read_idx(path)


def test_load_idx_pair_scales_images_and_checks_counts(tmp_path: Path) -> None:
    images = np.array([[[0, 255], [51, 102]]] * 3, dtype=np.uint8)
    write_idx(tmp_path / "images.gz", images)
    write_idx(tmp_path / "labels.gz", np.array([2, 0, 9], dtype=np.uint8))
    write_idx(tmp_path / "four-labels.gz", np.array([2, 0, 9, 1], dtype=np.uint8))
    data = load_idx_pair(tmp_path / "images.gz", tmp_path / "labels.gz")
    assert data.x.shape == (3, 1, 2, 2) and data.x.dtype == torch.float32
    torch.testing.assert_close(data.x[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert data.y.dtype == torch.int64 and data.y.tolist() == [2, 0, 9]
    expected = f"{tmp_path / 'images.gz'} holds 3 images but {tmp_path / 'four-labels.gz'} holds 4"
    with pytest.raises(DataFormatError, match=re.escape(expected)):
        load_idx_pair(tmp_path / "images.gz", tmp_path / "four-labels.gz")
    with pytest.raises(
        DataFormatError, match=re.escape(f"{tmp_path / 'labels.gz'}: expected uint8")
    ):
        load_idx_pair(tmp_path / "labels.gz", tmp_path / "labels.gz")


# ---------------------------------------------------------------- sources

_FILES = (RemoteFile("a.gz", hashlib.md5(b"alpha").hexdigest()), RemoteFile("b.gz", "0" * 32))


def _holding(root: Path, names: tuple[str, ...] = ("a.gz", "b.gz")) -> Path:
    """``root/ds`` holding the named files (with content unrelated to their md5s)."""
    for name in names:
        (root / "ds").mkdir(parents=True, exist_ok=True)
        (root / "ds" / name).write_bytes(b"local copy")
    return root


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("CROSSDISTILL_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "crossdistill"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "crossdistill"


def test_locate_search_order(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    given, env = _holding(tmp_path / "given"), _holding(tmp_path / "env")
    _holding(isolated_env)
    monkeypatch.setenv("CROSSDISTILL_DATA", str(env))
    assert locate("ds", _FILES, [], data_dir=given, download=False) == given / "ds"
    assert locate("ds", _FILES, [], data_dir=str(tmp_path / "void")) == env / "ds"
    _holding(tmp_path / "partial", ("a.gz",))
    assert locate("ds", _FILES, [], data_dir=tmp_path / "partial") == env / "ds"
    monkeypatch.delenv("CROSSDISTILL_DATA")
    assert locate("ds", _FILES, [], data_dir=tmp_path / "partial") == isolated_env / "ds"


def test_locate_downloads_into_the_cache_from_the_first_working_mirror(
    tmp_path: Path, isolated_env: Path
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.gz").write_bytes(b"alpha")
    files = _FILES[:1]
    mirrors = [(tmp_path / "down").as_uri() + "/", mirror.as_uri() + "/"]
    assert locate("ds", files, mirrors, data_dir=tmp_path / "void") == isolated_env / "ds"
    assert os.listdir(isolated_env / "ds") == ["a.gz"]
    assert (isolated_env / "ds" / "a.gz").read_bytes() == b"alpha"


def test_locate_keeps_no_download_with_a_wrong_checksum(tmp_path: Path, isolated_env: Path) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "a.gz").write_bytes(b"alpha, altered")
    found = hashlib.md5(b"alpha, altered").hexdigest()
    message = f"a.gz downloaded from .* has md5 {found}, expected {_FILES[0].md5}"
    with pytest.raises(ChecksumError, match=message):
        locate("ds", _FILES[:1], [mirror.as_uri() + "/"])
    assert not (isolated_env / "ds").exists() or os.listdir(isolated_env / "ds") == []


def test_locate_names_every_place_it_looked_in(tmp_path: Path, isolated_env: Path) -> None:
    _holding(tmp_path / "partial", ("a.gz",))
    with pytest.raises(FileNotFoundError) as caught:
        locate("ds", _FILES, ["file:///nowhere/"], data_dir=tmp_path / "partial", download=False)
    message = str(caught.value)
    assert f"{tmp_path / 'partial' / 'ds'} (data_dir): missing b.gz" in message
    assert f"{isolated_env / 'ds'} (cache): missing a.gz, b.gz" in message
    assert "$CROSSDISTILL_DATA is not set" in message and "download=False" in message
    assert "set CROSSDISTILL_DATA=<dir>, or pass data_dir=<dir>" in message


def test_locate_reports_failed_mirrors(tmp_path: Path) -> None:
    mirror = (tmp_path / "empty").as_uri() + "/"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"downloading failed:\n  {mirror}a.gz: ")
    ):
        locate("ds", _FILES, [mirror])


# ---------------------------------------------------------------- datasets


def test_registered_names() -> None:
    assert {"diabetes", "digits", "fashion_mnist", "mnist", "mnist_10k"} <= set(datasets.names())


@pytest.mark.parametrize(
    ("name", "folder"), [("fashion_mnist", "fashion-mnist"), ("mnist", "mnist")]
)
def test_official_splits(data_root: Path, name: str, folder: str) -> None:
    """Small = 1 000 random Train rows, Big the other 59 000, Test the official test files.

    Big and Small partition Train by index: their sizes add up to 60 000 and together they hold
    exactly Train's rows, duplicates included, so no row of Train is in both.
    """
    splits = _real(name, data_root, seed=0)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (59_000, 1000, 10_000)
    assert splits.big.x.shape[1:] == (1, 28, 28) and splits.small.x.dtype == torch.float32
    assert splits.big.y.dtype == torch.int64 and splits.small.y.unique().tolist() == list(range(10))
    assert float(splits.big.x.min()) == 0.0 and float(splits.big.x.max()) == 1.0
    root = data_root / folder
    train = load_idx_pair(root / "train-images-idx3-ubyte.gz", root / "train-labels-idx1-ubyte.gz")
    test = load_idx_pair(root / "t10k-images-idx3-ubyte.gz", root / "t10k-labels-idx1-ubyte.gz")
    assert _row_keys(splits.train) == _row_keys(train)
    assert torch.equal(splits.test.x, test.x) and torch.equal(splits.test.y, test.y)

    _assert_equal(splits, _real(name, data_root, seed=0))
    other = _real(name, data_root, seed=1)
    assert not torch.equal(other.small.x, splits.small.x)
    assert torch.equal(other.test.x, splits.test.x)


def test_mnist_10k_splits(data_root: Path) -> None:
    splits = _real("mnist_10k", data_root, seed=0)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (8000, 1000, 1000)
    root = data_root / "mnist-10k"
    everything = load_idx_pair(root / "images-idx3-ubyte.gz", root / "labels-idx1-ubyte.gz")
    assert _row_keys(splits.big, splits.small, splits.test) == _row_keys(everything)
    _assert_equal(splits, _real("mnist_10k", data_root, seed=0))
    other = _real("mnist_10k", data_root, seed=1)
    assert not torch.equal(other.test.x, splits.test.x)
    assert not torch.equal(other.small.x, splits.small.x)


def test_mnist_10k_has_no_download(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="'mnist-10k' has no official download"):
        datasets.build("mnist_10k", small=1000, data_dir=tmp_path)


def test_digits() -> None:
    splits = datasets.build("digits", small=100, seed=3)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (1300, 100, 397)
    assert splits.big.x.shape[1:] == (1, 8, 8) and splits.big.x.dtype == torch.float32
    assert splits.test.y.dtype == torch.int64 and splits.train.num_classes == 10
    x = torch.cat([splits.big.x, splits.small.x, splits.test.x])
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal((x * 16).round(), x * 16)  # grey levels 0..16
    _assert_equal(splits, datasets.build("digits", small=100, seed=3))
    assert not torch.equal(datasets.build("digits", small=100, seed=4).test.x, splits.test.x)


def test_diabetes() -> None:
    splits = datasets.build("diabetes", small=50, seed=0, test=42)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (350, 50, 42)
    assert splits.big.x.shape[1:] == (10,) and splits.big.x.dtype == torch.float32
    assert splits.small.y.shape == (50,) and splits.small.y.dtype == torch.float32
    y = torch.cat([splits.big.y, splits.small.y, splits.test.y])
    assert float(y.min()) == 25 and float(y.max()) == 346  # the progression score's range
    assert float(torch.cat([splits.big.x, splits.test.x]).abs().max()) < 0.25


@pytest.mark.parametrize("spec", [{"small": 0}, {"small": 1400}, {"small": 10, "test": 1797}])
def test_split_sizes_are_checked(spec: dict[str, int]) -> None:
    with pytest.raises(ValueError, match="small must be|test must be"):
        datasets.build({"name": "digits", **spec})
