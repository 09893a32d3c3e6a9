"""No silent wrong data: labels outside the declared classes, splits of different kinds, and
damaged cache files.

Every dataset here is a few rows the tests write (IDX files, CIFAR pickles, PNG images, an
``.npz``) or one of scikit-learn's bundled ones; downloads come from ``file://`` mirrors.
"""

from __future__ import annotations

import hashlib
import importlib
import pickle
import re
import tarfile
import warnings
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from crossdistill.data import (
    ArrayData,
    DataFormatError,
    DomainSplits,
    PrivilegedData,
    PrivilegedSplits,
    RemoteFile,
    write_idx,
)
from crossdistill.data import cifar as cifar_module
from crossdistill.data.sources import read_or_rebuild
from crossdistill.errors import CrossdistillError
from crossdistill.mappings import generated as generated_module
from crossdistill.mappings.vae import TranslatorSettings, VAETranslator
from crossdistill.registries import datasets, privileged_datasets

datasets_module = importlib.import_module("crossdistill.data.datasets")

IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def _write_idx_folder(
    folder: Path,
    train_labels: list[int] | None = None,
    test_labels: list[int] | None = None,
    train_size: tuple[int, int] = (4, 4),
    test_size: tuple[int, int] = (4, 4),
) -> Path:
    """The four MNIST-named IDX files in ``folder``: 12 Train and 6 Test random images."""
    train_labels = [row % 10 for row in range(12)] if train_labels is None else train_labels
    test_labels = [row % 10 for row in range(6)] if test_labels is None else test_labels
    rng = np.random.default_rng(0)
    arrays = (
        rng.integers(0, 256, (len(train_labels), *train_size), dtype=np.uint8),
        np.array(train_labels, np.uint8),
        rng.integers(0, 256, (len(test_labels), *test_size), dtype=np.uint8),
        np.array(test_labels, np.uint8),
    )
    for name, array in zip(IDX_NAMES, arrays, strict=True):
        write_idx(folder / name, array)
    return folder


def _parts(splits: DomainSplits) -> list[torch.Tensor]:
    return [t for part in (splits.big, splits.small, splits.test) for t in (part.x, part.y)]


def _assert_equal(a: DomainSplits, b: DomainSplits) -> None:
    assert all(torch.equal(u, v) for u, v in zip(_parts(a), _parts(b), strict=True))
    assert a.num_classes == b.num_classes


def _truncate(path: Path) -> None:
    """Keep the first half of ``path``'s bytes, as a crash or a full disk would."""
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])


# ---------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("name", "folder"), [("fashion_mnist", "fashion-mnist"), ("mnist", "mnist")]
)
def test_a_poisoned_train_label_names_the_file_the_split_and_the_row(
    tmp_path: Path, name: str, folder: str
) -> None:
    labels = [row % 10 for row in range(12)]
    labels[7] = 200
    root = _write_idx_folder(tmp_path / folder, train_labels=labels)
    expected = (
        f"{root / 'train-labels-idx1-ubyte.gz'}: Train label 200 at row 7 outside 0–9: "
        f"{name} has 10 classes"
    )
    with pytest.raises(DataFormatError, match=f"^{re.escape(expected)}$"):
        datasets.build(name, small=2, data_dir=tmp_path, download=False)


def test_poisoned_test_labels_are_counted(tmp_path: Path) -> None:
    root = _write_idx_folder(tmp_path / "fashion-mnist", test_labels=[0, 10, 2, 11, 12, 3])
    expected = (
        f"{root / 't10k-labels-idx1-ubyte.gz'}: Test label 10 at row 1 outside 0–9 "
        "(3 of 6 labels outside, also at rows 3, 4): fashion_mnist has 10 classes"
    )
    with pytest.raises(DataFormatError, match=f"^{re.escape(expected)}$"):
        datasets.build("fashion_mnist", small=2, data_dir=tmp_path, download=False)


def test_a_poisoned_mnist_10k_label_names_the_file(tmp_path: Path) -> None:
    root = tmp_path / "mnist-10k"
    write_idx(root / "images-idx3-ubyte.gz", np.zeros((6, 4, 4), np.uint8))
    write_idx(root / "labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 4, 255], np.uint8))
    expected = f"{root / 'labels-idx1-ubyte.gz'}: label 255 at row 5 outside 0–9"
    with pytest.raises(DataFormatError, match=re.escape(expected)):
        datasets.build("mnist_10k", small=2, test=2, data_dir=tmp_path, download=False)


def test_domain_splits_check_labels_against_declared_classes() -> None:
    x = torch.zeros(4, 1, 2, 2)
    good = ArrayData(x, torch.tensor([0, 1, 2, 9]))
    bad = ArrayData(x, torch.tensor([0, 10, 2, -1]))
    with pytest.raises(DataFormatError) as caught:
        DomainSplits(big=good, small=bad, test=good, num_classes=10)
    assert str(caught.value) == (
        "Small label 10 at row 1 outside 0–9 (2 of 4 labels outside, also at rows 3): "
        "the dataset has 10 classes"
    )
    assert isinstance(caught.value, CrossdistillError) and isinstance(caught.value, ValueError)
    float_labels = ArrayData(x, torch.tensor([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(DataFormatError, match=re.escape("Big labels: expected integer class")):
        DomainSplits(big=float_labels, small=float_labels, test=float_labels, num_classes=10)
    # Undeclared (None): no range check, as for regression targets.
    assert DomainSplits(big=good, small=bad, test=good).num_classes is None


@pytest.mark.parametrize("num_classes", [0, -3, True, 2.0, "10"])
def test_num_classes_must_be_a_positive_integer(num_classes: Any) -> None:
    data = ArrayData(torch.zeros(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="num_classes must be a positive integer or None"):
        DomainSplits(big=data, small=data, test=data, num_classes=num_classes)


# ---------------------------------------------------------------- shapes


def test_a_test_split_of_other_image_size_names_both_files(tmp_path: Path) -> None:
    root = _write_idx_folder(tmp_path / "mnist", test_size=(5, 5))
    expected = (
        f"{root / 't10k-images-idx3-ubyte.gz'}: Test images are 5×5, expected 4×4 as in Train "
        f"({root / 'train-images-idx3-ubyte.gz'})"
    )
    with pytest.raises(DataFormatError, match=f"^{re.escape(expected)}$"):
        datasets.build("mnist", small=2, data_dir=tmp_path, download=False)


@pytest.mark.parametrize(
    ("test", "message"),
    [
        (
            ArrayData(torch.zeros(3, 3, 4, 4), torch.zeros(3, dtype=torch.long)),
            "Test inputs are float32 (N, 3, 4, 4), expected float32 (N, 1, 4, 4) as in Big",
        ),
        (
            ArrayData(torch.zeros(3, 1, 4, 4, dtype=torch.float64), torch.zeros(3).long()),
            "Test inputs are float64 (N, 1, 4, 4), expected float32 (N, 1, 4, 4) as in Big",
        ),
        (
            ArrayData(torch.zeros(3, 1, 4, 4), torch.zeros(3)),
            "Test targets are float32 (N,), expected int64 (N,) as in Big",
        ),
        (
            ArrayData(torch.zeros(3, 1, 4, 4), torch.zeros(3, 2, dtype=torch.long)),
            "Test targets are int64 (N, 2), expected int64 (N,) as in Big",
        ),
    ],
    ids=["shape", "dtype", "target-dtype", "target-shape"],
)
def test_splits_must_hold_the_same_kind_of_data(test: ArrayData, message: str) -> None:
    train = ArrayData(torch.zeros(5, 1, 4, 4), torch.zeros(5, dtype=torch.long))
    with pytest.raises(DataFormatError, match=f"^{re.escape(message)}$"):
        DomainSplits(big=train, small=train, test=test)


def test_privileged_splits_are_checked() -> None:
    y = torch.tensor([0, 1, 1])
    train = PrivilegedData(torch.zeros(3, 4), torch.zeros(3, 2), y)
    assert PrivilegedSplits(train=train, test=train, num_classes=2).num_classes == 2
    other = PrivilegedData(torch.zeros(3, 4), torch.zeros(3, 5), y)
    with pytest.raises(
        DataFormatError,
        match=re.escape(
            "Test privileged inputs x_star are float32 (N, 5), expected float32 (N, 2) as in Train"
        ),
    ):
        PrivilegedSplits(train=train, test=other)
    three = PrivilegedData(torch.zeros(3, 4), torch.zeros(3, 2), torch.tensor([0, 2, 1]))
    with pytest.raises(
        DataFormatError, match=re.escape("Test label 2 at row 1 outside 0–1: the problem has 2")
    ):
        PrivilegedSplits(train=train, test=three, num_classes=2)


# ---------------------------------------------------------------- damaged files


def _idx_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mirror_name: str = "mirror"
) -> Path:
    """Fashion-MNIST's four files, tiny, on a ``file://`` mirror the loader downloads from."""
    mirror = _write_idx_folder(tmp_path / mirror_name)
    md5s = tuple(hashlib.md5((mirror / name).read_bytes()).hexdigest() for name in IDX_NAMES)
    monkeypatch.setattr(datasets_module, "_FASHION_MNIST_MD5", md5s)
    monkeypatch.setattr(datasets_module, "_FASHION_MNIST_MIRRORS", (mirror.as_uri() + "/",))
    return mirror


@pytest.mark.parametrize("name", IDX_NAMES)
def test_a_truncated_download_is_downloaded_again(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _idx_mirror(tmp_path, monkeypatch)
    spec = {"name": "fashion_mnist", "small": 3, "seed": 1, "data_dir": tmp_path / "void"}
    first = datasets.build(spec)
    cached = isolated_env / "fashion-mnist" / name
    good = cached.read_bytes()
    _truncate(cached)
    with pytest.warns(UserWarning, match=f"{re.escape(str(cached))}: unreadable") as caught:
        _assert_equal(first, datasets.build(spec))
    assert len(caught) == 1 and cached.read_bytes() == good


def test_a_damaged_file_is_not_rebuilt_without_download(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With download=False a damaged cache copy is an error naming it, and is kept."""
    _idx_mirror(tmp_path, monkeypatch)
    datasets.build("fashion_mnist", small=3)
    cached = isolated_env / "fashion-mnist" / "t10k-images-idx3-ubyte.gz"
    _truncate(cached)
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(cached))}: corrupt gzip"):
        datasets.build("fashion_mnist", small=3, download=False)
    assert cached.is_file()


def test_a_damaged_user_file_is_an_error_naming_it(tmp_path: Path) -> None:
    root = _write_idx_folder(tmp_path / "mnist")
    _truncate(root / "train-labels-idx1-ubyte.gz")
    with pytest.raises(DataFormatError, match=re.escape(f"{root / 'train-labels-idx1-ubyte.gz'}:")):
        datasets.build("mnist", small=2, data_dir=tmp_path, download=False)
    assert (root / "train-labels-idx1-ubyte.gz").is_file()


def _cifar_folder(parent: Path, rows: int = 2) -> Path:
    """``parent/cifar-10-batches-py``: six batches of ``rows`` random images."""
    root = parent / "cifar-10-batches-py"
    root.mkdir(parents=True)
    names = (*(f"data_batch_{number}" for number in range(1, 6)), "test_batch")
    for number, name in enumerate(names):
        data = np.random.default_rng(number).integers(0, 256, (rows, 3072), dtype=np.uint8)
        batch = {"data": data, "labels": [(number + row) % 10 for row in range(rows)]}
        (root / name).write_bytes(pickle.dumps(batch, protocol=2))
    return root


def test_a_truncated_batch_of_an_unpacked_archive_is_unpacked_again(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = _cifar_folder(tmp_path / "source")
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    archive = mirror / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(source, arcname=source.name)
    file = RemoteFile(archive.name, hashlib.md5(archive.read_bytes()).hexdigest())
    official = cifar_module._ARCHIVE
    monkeypatch.setattr(
        cifar_module, "_ARCHIVE", replace(official, file=file, mirrors=(mirror.as_uri() + "/",))
    )
    first = datasets.build("cifar10", small=2, data_dir=tmp_path / "void")
    batch = isolated_env / "cifar-10-batches-py" / "data_batch_2"
    _truncate(batch)
    with pytest.warns(UserWarning, match=f"{re.escape(str(batch))}: unreadable"):
        _assert_equal(first, datasets.build("cifar10", small=2, data_dir=tmp_path / "void"))
    assert batch.read_bytes() == (source / "data_batch_2").read_bytes()


def test_a_truncated_decoded_image_cache_is_decoded_again(
    tmp_path: Path, isolated_env: Path
) -> None:
    _image_folder(tmp_path / "imagenette2-160", classes=2)
    spec = {"name": "imagenette", "small": 1, "size": 4, "data_dir": tmp_path, "download": False}
    first = datasets.build(spec)
    train_cache = next((isolated_env / "imagenette").glob("train-*.pt"))
    _truncate(train_cache)
    with pytest.warns(UserWarning, match=f"{re.escape(str(train_cache))}: unreadable") as caught:
        _assert_equal(first, datasets.build(spec))
    assert len(caught) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rebuilt cache is sound
        _assert_equal(first, datasets.build(spec))


def test_a_truncated_generated_file_is_generated_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.manual_seed(0)
    translator = VAETranslator(TranslatorSettings(latent_dim=2, hidden=8)).eval()
    clothing = ArrayData(torch.rand(10, 1, 28, 28), torch.arange(10))
    built: list[int] = []

    def build_translator(*args: object, **kwargs: object) -> VAETranslator:
        built.append(1)
        return translator

    monkeypatch.setattr(generated_module, "build_translator", build_translator)
    monkeypatch.setattr(generated_module, "student_clothing", lambda *args: clothing)
    spec = {"name": "generated_mnist", "small": 2, "train": 12, "test": 6, "folder": tmp_path}
    first = datasets.build(spec)
    assert built == [1] and first.num_classes == 10
    labels = tmp_path / "t10k-labels-idx1-ubyte.gz"
    _truncate(labels)
    with pytest.warns(UserWarning, match=f"{re.escape(str(labels))}: unreadable"):
        _assert_equal(first, datasets.build(spec))
    assert built == [1, 1]


def test_read_or_rebuild_rebuilds_once_and_names_what_stays_damaged(tmp_path: Path) -> None:
    path = tmp_path / "entry.pt"
    calls: list[str] = []

    def rebuild(content: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            calls.append("rebuild")
            content()

        return run

    def good() -> None:
        torch.save(torch.arange(3), path)

    def bad() -> None:
        path.write_bytes(b"PK\x03\x04 not a whole zip")

    def read(p: Path) -> torch.Tensor:
        return torch.load(p, weights_only=True)

    # Missing: built silently. Present and sound: read, not rebuilt.
    assert read_or_rebuild(path, read, rebuild(good)).tolist() == [0, 1, 2]
    assert read_or_rebuild(path, read, rebuild(good)).tolist() == [0, 1, 2]
    assert calls == ["rebuild"]
    # Damaged and rebuilt soundly.
    _truncate(path)
    with pytest.warns(UserWarning, match=re.escape(f"{path}: unreadable")):
        assert read_or_rebuild(path, read, rebuild(good)).tolist() == [0, 1, 2]
    # Damaged, and the rebuild does not help: an error naming the file, not a loop.
    _truncate(path)
    with (
        pytest.warns(UserWarning),
        pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: unreadable: "),
    ):
        read_or_rebuild(path, read, rebuild(bad))
    # Not the library's (no rebuild): an error naming the file; the file is kept.
    with pytest.raises(DataFormatError, match=f"^{re.escape(str(path))}: unreadable: "):
        read_or_rebuild(path, read)
    assert path.read_bytes() == b"PK\x03\x04 not a whole zip"
    with pytest.raises(FileNotFoundError):
        read_or_rebuild(tmp_path / "absent.pt", read)


# ---------------------------------------------------------------- every loader declares


def _image_folder(root: Path, classes: int = 10) -> Path:
    """``root/{train,val}/c<k>/``: one tiny PNG per split and class."""
    for split in ("train", "val"):
        for label in range(classes):
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True)
            Image.new("RGB", (6, 5), (20 * label, 100, 30)).save(folder / "0.png")
    return root


def _cifar10(data_dir: Path) -> dict[str, Any]:
    _cifar_folder(data_dir)
    return {"small": 2}


def _idx(folder: str) -> Callable[[Path], dict[str, Any]]:
    def write(data_dir: Path) -> dict[str, Any]:
        _write_idx_folder(data_dir / folder)
        return {"small": 2}

    return write


def _generated_mnist(data_dir: Path) -> dict[str, Any]:
    return {"small": 2, "folder": _write_idx_folder(data_dir / "generated"), "train": 12}


def _imagenette(data_dir: Path) -> dict[str, Any]:
    _image_folder(data_dir / "imagenette2-160")
    return {"small": 2, "size": 4}


def _mnist_10k(data_dir: Path) -> dict[str, Any]:
    write_idx(data_dir / "mnist-10k" / "images-idx3-ubyte.gz", np.zeros((12, 4, 4), np.uint8))
    labels = (np.arange(12) % 10).astype(np.uint8)
    write_idx(data_dir / "mnist-10k" / "labels-idx1-ubyte.gz", labels)
    return {"small": 2, "test": 2}


def _office31(data_dir: Path) -> dict[str, Any]:
    features = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
    (data_dir / "office31").mkdir()
    np.savez(data_dir / "office31" / "amazon.npz", x=features, y=np.arange(20) % 5)
    return {"domain": "amazon", "small": 5}


def _spec(**options: Any) -> Callable[[Path], dict[str, Any]]:
    return lambda data_dir: options


_DATASETS: dict[str, tuple[int | None, Callable[[Path], dict[str, Any]]]] = {
    "cifar10": (10, _cifar10),
    "diabetes": (None, _spec(small=10)),
    "digits": (10, _spec(small=10)),
    "fashion_mnist": (10, _idx("fashion-mnist")),
    "generated_mnist": (10, _generated_mnist),
    "imagenette": (10, _imagenette),
    "mnist": (10, _idx("mnist")),
    "mnist_10k": (10, _mnist_10k),
    "office31": (31, _office31),
    "synthetic_regression": (None, _spec(small=5, size=30, test=10)),
}
"""Every registered dataset: its declared classes (None: regression) and a function that writes
its tiny files into a ``data_dir`` and returns the rest of its spec."""

_PRIVILEGED: dict[str, tuple[int | None, dict[str, Any]]] = {
    "lopez_paz_synthetic": (2, {"setting": "clean_labels", "train": 20, "test": 10}),
    "regular_view": (10, {"dataset": "digits", "view": "identity", "train": 20}),
}


def test_every_registered_dataset_is_listed_here() -> None:
    """A new loader must say here how many classes it declares (test modules register their
    own, named test_*)."""

    def builtin(names: list[str]) -> list[str]:
        return [name for name in names if not name.startswith("test_")]

    assert sorted(_DATASETS) == builtin(datasets.names())
    assert sorted(_PRIVILEGED) == builtin(privileged_datasets.names())


@pytest.mark.parametrize("name", sorted(_DATASETS))
def test_every_classification_dataset_declares_its_classes(tmp_path: Path, name: str) -> None:
    expected, write = _DATASETS[name]
    options = write(tmp_path)
    splits = datasets.build({"name": name, "data_dir": tmp_path, "download": False, **options})
    assert splits.num_classes == expected
    if expected is None:
        assert splits.small.y.is_floating_point()
    else:
        assert int(max(part.y.max() for part in (splits.big, splits.small, splits.test))) < expected


@pytest.mark.parametrize("name", sorted(_PRIVILEGED))
def test_every_privileged_dataset_declares_its_classes(name: str) -> None:
    expected, spec = _PRIVILEGED[name]
    splits = privileged_datasets.build({"name": name, **spec}, seed=0)
    assert splits.num_classes == expected
