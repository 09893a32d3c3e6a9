"""CIFAR-10 pickle batches and the Imagenette folder layout, read into Big / Small / Test.

Nothing here touches the network: CIFAR-10 is read from the project's real subset or from small
batches the tests write, Imagenette from a tiny folder of images written with Pillow, and the
downloads come from ``file://`` mirrors in temporary folders.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
from PIL import Image

from crossdistill.data import (
    ArrayData,
    ChecksumError,
    DataFormatError,
    DomainSplits,
    RemoteFile,
    read_cifar_batch,
)
from crossdistill.data import cifar as cifar_module
from crossdistill.data import imagenette as imagenette_module
from crossdistill.data.archives import unpack
from crossdistill.data.imagenette import decode_image
from crossdistill.registries import datasets

CIFAR_BATCHES = (*(f"data_batch_{number}" for number in range(1, 6)), "test_batch")
WNIDS = (
    "n01440764",
    "n02102040",
    "n02979186",
    "n03000684",
    "n03028079",
    "n03394916",
    "n03417042",
    "n03425413",
    "n03445777",
    "n03888605",
)
"""The ten Imagenette classes, in sorted order: the class index is the position here."""


def _rows(data: ArrayData) -> set[bytes]:
    """Each row of ``data`` (image and label) as bytes."""
    return {x.numpy().tobytes() + y.numpy().tobytes() for x, y in zip(data.x, data.y, strict=True)}


def _assert_equal(a: DomainSplits, b: DomainSplits) -> None:
    for part_a, part_b in zip((a.big, a.small, a.test), (b.big, b.small, b.test), strict=True):
        assert torch.equal(part_a.x, part_b.x) and torch.equal(part_a.y, part_b.y)


def _batch(**changes: object) -> dict[str, object]:
    """A valid CIFAR batch of 4 random images, labels 0..3, with ``changes`` applied."""
    data = np.random.default_rng(0).integers(0, 256, (4, 3072), dtype=np.uint8)
    return {"batch_label": "a test batch", "labels": [0, 1, 2, 3], "data": data, **changes}


def _write_cifar(parent: Path) -> Path:
    """``parent/cifar-10-batches-py`` with six batches of 4 images (Train 20, Test 4)."""
    root = parent / "cifar-10-batches-py"
    root.mkdir(parents=True)
    for number, name in enumerate(CIFAR_BATCHES):
        labels = [(number + row) % 10 for row in range(4)]
        data = np.random.default_rng(number).integers(0, 256, (4, 3072), dtype=np.uint8)
        (root / name).write_bytes(pickle.dumps(_batch(labels=labels, data=data), protocol=2))
    return root


def _colour(label: int) -> tuple[int, int, int]:
    """The flat RGB colour of every test image of class ``label``."""
    return 20 * label + 10, 200 - 15 * label, 128


def _write_imagenette(parent: Path, train: int = 3, val: int = 2) -> Path:
    """``parent/imagenette2-160/{train,val}/<wnid>/`` with flat images of odd sizes and modes.

    Image ``index`` of a class is an RGB JPEG (landscape), an RGBA PNG or an RGB JPEG (portrait).
    """
    root = parent / "imagenette2-160"
    for split, count in (("train", train), ("val", val)):
        for label, wnid in enumerate(WNIDS):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for index in range(count):
                shape = (37 + label, 23 + index) if index % 3 == 0 else (29, 41 + label)
                image = Image.new("RGB", shape, _colour(label))
                if index % 3 == 1:
                    image.convert("RGBA").save(folder / f"{wnid}_{index}.png")
                else:
                    image.save(folder / f"{wnid}_{index}.JPEG", quality=95)
    return root


def _tar(folder: Path, archive: Path) -> RemoteFile:
    """Pack ``folder`` into the gzipped tar ``archive`` as its one top folder."""
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return RemoteFile(archive.name, hashlib.md5(archive.read_bytes()).hexdigest())


def _subset(data_root: Path, seed: int = 0) -> DomainSplits:
    return datasets.build(
        {"name": "cifar10", "small": 1000, "seed": seed, "download": False},
        data_dir=data_root / "cifar10-subset",
    )


def test_registered_names() -> None:
    assert {"cifar10", "imagenette"} <= set(datasets.names())


# ---------------------------------------------------------------- CIFAR-10


def test_cifar10_subset_splits(data_root: Path) -> None:
    """Big and Small are disjoint, seeded, and hold exactly the five training batches' images."""
    splits = _subset(data_root)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (4085, 1000, 1017)
    assert splits.big.x.shape[1:] == (3, 32, 32) and splits.test.x.dtype == torch.float32
    assert splits.small.y.dtype == torch.int64 and splits.small.y.unique().tolist() == list(
        range(10)
    )
    x = torch.cat([splits.big.x, splits.small.x, splits.test.x])
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal((x * 255).round(), x * 255)

    root = data_root / "cifar10-subset" / "cifar-10-batches-py"
    train = set().union(*(_rows(read_cifar_batch(root / name)) for name in CIFAR_BATCHES[:5]))
    big, small = _rows(splits.big), _rows(splits.small)
    assert len(train) == 5085 and len(big) == 4085 and len(small) == 1000
    assert not big & small and big | small == train

    _assert_equal(splits, _subset(data_root))
    other = _subset(data_root, seed=1)
    assert not torch.equal(other.small.x, splits.small.x)
    assert torch.equal(other.test.x, splits.test.x)


def test_cifar10_pixels_match_the_raw_pickle(data_root: Path) -> None:
    """x[n, c, i, j] is byte c·1024 + 32·i + j of row n of ``data``, over 255."""
    with (data_root / "cifar10-subset" / "cifar-10-batches-py" / "test_batch").open("rb") as file:
        raw = pickle.load(file, encoding="latin1")
    test = _subset(data_root).test
    assert test.y.tolist() == raw["labels"]
    first = (test.x[0] * 255).round().to(torch.uint8)
    for channel, i, j in [(0, 0, 0), (1, 0, 0), (2, 0, 0), (0, 0, 1), (0, 1, 0), (2, 31, 30)]:
        assert first[channel, i, j] == raw["data"][0, channel * 1024 + 32 * i + j]
    assert first[:, 0, 0].tolist() == [158, 112, 49] and test.y[0] == 3  # the first test cat


def test_cifar10_folder_may_be_a_relative_path(
    data_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSDISTILL_DATA", str(data_root))
    splits = datasets.build(
        {"name": "cifar10", "small": 1000, "folder": "cifar10-subset/cifar-10-batches-py"}
    )
    _assert_equal(splits, _subset(data_root))


def test_cifar10_small_batches(tmp_path: Path) -> None:
    root = _write_cifar(tmp_path)
    splits = datasets.build("cifar10", small=5, seed=2, data_dir=tmp_path, download=False)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (15, 5, 4)
    with (root / "test_batch").open("rb") as file:
        raw = pickle.load(file)
    expected = torch.from_numpy(raw["data"]).float().div(255).reshape(4, 3, 32, 32)
    assert torch.equal(splits.test.x, expected)
    assert splits.test.y.tolist() == raw["labels"] == [5, 6, 7, 8]


_GOOD_BATCH = pickle.dumps(_batch())


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (_GOOD_BATCH[: len(_GOOD_BATCH) // 2], "not a readable CIFAR batch pickle"),
        (b"", "not a readable CIFAR batch pickle"),
        (b"\x00garbage", "not a readable CIFAR batch pickle"),
        (pickle.dumps([1, 2]), "expected a dict, found list"),
        (pickle.dumps({"data": _batch()["data"]}), "no key 'labels'; found keys ['data']"),
        (
            pickle.dumps(_batch(data=np.zeros((4, 3072), np.float32))),
            "key 'data': expected uint8 (N, 3072), found float32 (4, 3072)",
        ),
        (
            pickle.dumps(_batch(data=np.zeros((4, 32, 32, 3), np.uint8))),
            "key 'data': expected uint8 (N, 3072), found uint8 (4, 32, 32, 3)",
        ),
        (pickle.dumps(_batch(data=[0] * 3072)), "key 'data': expected uint8 (N, 3072), found list"),
        (
            pickle.dumps(_batch(labels=[0, 1, 2])),
            "key 'labels': expected 4 integer labels, found int64 (3,)",
        ),
        (
            pickle.dumps(_batch(labels=[0, 1, 2, 10])),
            "key 'labels': label 10 at row 3 outside 0–9: CIFAR-10 has 10 classes",
        ),
    ],
    ids=[
        "truncated",
        "empty",
        "garbage",
        "list",
        "no-labels",
        "float-data",
        "image-shaped-data",
        "list-data",
        "short-labels",
        "label-range",
    ],
)
def test_bad_cifar_batch_is_named(tmp_path: Path, content: bytes, message: str) -> None:
    root = _write_cifar(tmp_path)
    (root / "data_batch_3").write_bytes(content)
    with pytest.raises(DataFormatError, match=re.escape(f"{root / 'data_batch_3'}: {message}")):
        datasets.build("cifar10", small=5, data_dir=tmp_path, download=False)


class _Payload:
    """Pickles to a call of ``os.mkdir(path)``: code a CIFAR batch must never run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.mkdir, (str(self.path),)


def test_cifar_batch_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "created-by-the-pickle"
    batch = tmp_path / "data_batch_1"
    batch.write_bytes(pickle.dumps(_batch(labels=_Payload(marker))))
    with pytest.raises(DataFormatError, match=r"data_batch_1: .*posix\.mkdir has no place"):
        read_cifar_batch(batch)
    assert not marker.exists()


def test_cifar10_not_found(tmp_path: Path, isolated_env: Path) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        datasets.build("cifar10", small=5, data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert f"{tmp_path / 'cifar-10-batches-py'} (data_dir): missing data_batch_1" in message
    assert f"{isolated_env / 'cifar-10-batches-py'} (cache)" in message
    assert "download=False, so nothing was downloaded" in message
    with pytest.raises(FileNotFoundError, match="only the official folder 'cifar-10-batches-py'"):
        datasets.build("cifar10", small=5, folder="my-cifar", data_dir=tmp_path)


# ---------------------------------------------------------------- archives


@pytest.mark.parametrize(
    ("name", "module", "writer", "sizes"),
    [
        ("cifar10", cifar_module, _write_cifar, (15, 5, 4)),
        ("imagenette", imagenette_module, _write_imagenette, (25, 5, 20)),
    ],
)
def test_download_unpacks_the_official_archive_into_the_cache(
    tmp_path: Path,
    isolated_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    module: ModuleType,
    writer: Callable[[Path], Path],
    sizes: tuple[int, int, int],
) -> None:
    """The first working mirror gives the archive, unpacked once; later loads need no mirror."""
    official = module._ARCHIVE
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    file = _tar(writer(tmp_path / "source"), mirror / official.file.name)
    mirrors = ((tmp_path / "down").as_uri() + "/", mirror.as_uri() + "/")
    monkeypatch.setattr(module, "_ARCHIVE", replace(official, file=file, mirrors=mirrors))

    spec = {"name": name, "small": 5, "size": 24} if name == "imagenette" else name
    splits = datasets.build(spec, small=5, data_dir=tmp_path / "void")
    assert (len(splits.big), len(splits.small), len(splits.test)) == sizes
    assert (isolated_env / "archives" / file.name).is_file()
    assert (isolated_env / official.root).is_dir()
    assert not [entry for entry in os.listdir(isolated_env) if entry.startswith(".")]

    shutil.rmtree(mirror)
    _assert_equal(splits, datasets.build(spec, small=5, data_dir=tmp_path / "void"))


def test_download_with_a_wrong_checksum_unpacks_nothing(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    file = _tar(_write_cifar(tmp_path / "source"), mirror / "cifar-10-python.tar.gz")
    archive = replace(cifar_module._ARCHIVE, mirrors=(mirror.as_uri() + "/",))
    monkeypatch.setattr(cifar_module, "_ARCHIVE", archive)
    with pytest.raises(ChecksumError, match=f"has md5 {file.md5}, expected"):
        datasets.build("cifar10", small=5)
    assert not (isolated_env / "cifar-10-batches-py").exists()


def _unsafe_member(tar: tarfile.TarFile, kind: str) -> None:
    """Add to ``tar`` a member that would land outside the folder it is unpacked into."""
    member = tarfile.TarInfo("root/../../escaped" if kind == "dotdot" else "root/link")
    if kind == "dotdot":
        member.size = 4
        tar.addfile(member, io.BytesIO(b"evil"))
    else:
        member.type, member.linkname = tarfile.SYMTYPE, "../../escaped"
        tar.addfile(member)


@pytest.mark.parametrize("kind", ["dotdot", "symlink"])
def test_unpack_refuses_members_outside_the_folder(tmp_path: Path, kind: str) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(tarfile.TarInfo("root/a"))
        _unsafe_member(tar, kind)
    into = tmp_path / "deep" / "cache"
    with pytest.raises(DataFormatError, match=re.escape(f"{archive}: cannot unpack")):
        unpack(archive, "root", ["a"], into)
    assert not (tmp_path / "deep" / "escaped").exists() and os.listdir(into) == []


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"not an archive", "cannot unpack"), (None, "the archive lacks root/b")],
)
def test_unpack_names_a_bad_archive(tmp_path: Path, content: bytes | None, message: str) -> None:
    archive = tmp_path / "bad.tgz"
    if content is None:
        with tarfile.open(archive, "w:gz") as tar:
            tar.addfile(tarfile.TarInfo("root/a"))
    else:
        archive.write_bytes(content)
    with pytest.raises(DataFormatError, match=re.escape(f"{archive}: {message}")):
        unpack(archive, "root", ["a", "b"], tmp_path / "cache")
    assert os.listdir(tmp_path / "cache") == []


# ---------------------------------------------------------------- Imagenette


def test_imagenette_splits_and_labels(tmp_path: Path) -> None:
    """Labels follow the sorted WordNet ids; every image is scaled and cropped to 160×160."""
    _write_imagenette(tmp_path)
    splits = datasets.build("imagenette", small=5, seed=1, data_dir=tmp_path, download=False)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (25, 5, 20)
    assert splits.big.x.shape[1:] == (3, 160, 160) and splits.test.x.dtype == torch.float32
    assert splits.test.y.dtype == torch.int64
    assert splits.test.y.tolist() == [label for label in range(10) for _ in range(2)]
    assert sorted(splits.train.y.tolist()) == [label for label in range(10) for _ in range(3)]
    for part in (splits.big, splits.small, splits.test):
        colours = torch.tensor([_colour(label) for label in part.y.tolist()], dtype=torch.float32)
        assert torch.allclose(part.x.mean(dim=(2, 3)) * 255, colours, atol=3)
        assert float(part.x.min()) >= 0.0 and float(part.x.max()) <= 1.0
    _assert_equal(
        splits, datasets.build("imagenette", small=5, seed=1, data_dir=tmp_path, download=False)
    )


def test_imagenette_decodes_once(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Later loads read the decoded cache; a changed image decodes its split again, and so
    does a damaged cache file."""
    root = _write_imagenette(tmp_path)
    opened: list[Path] = []
    real_open = Image.open

    def counting_open(path: Path, *args: object, **kwargs: object) -> Image.Image:
        opened.append(Path(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(Image, "open", counting_open)
    spec = {"name": "imagenette", "small": 5, "size": 24, "data_dir": tmp_path, "download": False}
    first = datasets.build(spec)
    assert len(opened) == 50 and first.test.x.shape == (20, 3, 24, 24)
    caches = sorted((isolated_env / "imagenette").iterdir())
    assert [path.name.split("-")[:2] for path in caches] == [["train", "24px"], ["val", "24px"]]

    opened.clear()
    _assert_equal(first, datasets.build(spec))
    assert opened == []

    changed = root / "val" / WNIDS[4] / f"{WNIDS[4]}_1.png"
    Image.new("RGB", (50, 60), _colour(7)).save(changed)
    again = datasets.build(spec)
    assert len(opened) == 20 and changed in opened
    assert torch.allclose(
        again.test.x[9].mean(dim=(1, 2)) * 255,
        torch.tensor(_colour(7), dtype=torch.float32),
        atol=3,
    )

    opened.clear()
    for cache in (isolated_env / "imagenette").iterdir():
        cache.write_bytes(b"not a cache")
    with pytest.warns(UserWarning, match=r"imagenette/(train|val)-24px-.*\.pt: unreadable"):
        _assert_equal(again, datasets.build(spec))
    assert len(opened) == 50


def test_imagenette_class_folders_must_match(tmp_path: Path) -> None:
    root = _write_imagenette(tmp_path)
    shutil.rmtree(root / "val" / WNIDS[3])
    (root / "val" / "n09999999").mkdir()
    with pytest.raises(DataFormatError) as caught:
        datasets.build("imagenette", small=5, data_dir=tmp_path, download=False)
    message = str(caught.value)
    assert f"{root / 'train'} and {root / 'val'} hold different class folders" in message
    assert f"{root / 'train'}: {', '.join(WNIDS)}" in message
    val = sorted({*WNIDS, "n09999999"} - {WNIDS[3]})
    assert f"{root / 'val'}: {', '.join(val)}" in message


@pytest.mark.parametrize("fault", ["garbage", "truncated"])
def test_imagenette_names_an_unreadable_image(tmp_path: Path, fault: str) -> None:
    root = _write_imagenette(tmp_path)
    good = root / "train" / WNIDS[2] / f"{WNIDS[2]}_0.JPEG"
    bad = good.with_name("broken.JPEG")
    content = good.read_bytes()
    bad.write_bytes(b"not an image" if fault == "garbage" else content[: len(content) // 2])
    with pytest.raises(DataFormatError, match=re.escape(f"{bad}: not a readable image")):
        datasets.build("imagenette", small=5, data_dir=tmp_path, download=False)


def test_decode_image_takes_the_central_square_in_rgb(tmp_path: Path) -> None:
    """A 60×20 image of red, green and blue thirds keeps only its green middle third."""
    bands = np.zeros((20, 60, 3), np.uint8)
    for band in range(3):
        bands[:, 20 * band : 20 * (band + 1), band] = 255
    Image.fromarray(bands).save(tmp_path / "wide.png")
    Image.fromarray(bands.transpose(1, 0, 2)).convert("L").save(tmp_path / "tall.png")
    wide = decode_image(tmp_path / "wide.png", 10)
    assert wide.shape == (10, 10, 3) and wide.dtype == np.uint8
    assert (wide[:, 2:8] == [0, 255, 0]).all()
    tall = decode_image(tmp_path / "tall.png", 10)  # grey: the green middle third's luma
    assert (tall[2:8] == round(0.587 * 255)).all()
