"""Datasets by name, each split into the Big / Small / Test parts of a domain.

A domain's training data Train is split at random (seeded) into a small part Small, the data the
student sees, and the rest Big (Train = Big ∪ Small, disjoint). Test is the official test set when
the dataset has one, else a seeded random part taken out before Train is split.

Every loader takes the same keyword arguments ``small`` (the size of Small), ``seed``, ``data_dir``
and ``download`` (the last two are those of :func:`~crossdistill.data.sources.locate`; loaders of
data bundled with scikit-learn accept and ignore them), so a config names one by a string, as in
``datasets.build({"name": "mnist", "small": 1000}, seed=0)``.

A classification loader declares its classes (``splits.num_classes``, e.g. 10 for MNIST); every
label is then checked to lie in ``0..num_classes - 1``, in the file it comes from where there is
one, so a stray label never silently widens a model. A regression loader declares None.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from sklearn.datasets import load_diabetes, load_digits

from ..registries import Spec, datasets
from .arrays import ArrayData, random_split
from .checks import check_alike, check_labels, check_num_classes
from .idx import DataFormatError, read_idx
from .sources import RemoteFile, locate, read_or_rebuild, redownload

OFFICIAL_IDX_NAMES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
"""The four files of MNIST and of Fashion-MNIST: Train images and labels, Test images and labels."""

_MNIST_MD5 = (
    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "d53e105ee54ea40749a09fcbcd1e9432",
    "9fb629c4189551a2d022fa330f9573f3",
    "ec29112dd5afa0611ce80d1b7f02629c",
)
_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
_FASHION_MNIST_MD5 = (
    "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "25c81989df183df01b3e8a0aad5dffbe",
    "bef4ecab320f06d8554ea6380940ec79",
    "bb300cfdad3c16e7a12a480ee83cd310",
)
_FASHION_MNIST_MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)

_MNIST_10K_FILES = (
    RemoteFile("images-idx3-ubyte.gz", "9e6d94a765a6bd7f79f7d47b465a6b56"),
    RemoteFile("labels-idx1-ubyte.gz", "6f78b1b36f038b3555ae9f7f2b0f10d6"),
)
"""The 10 000-image MNIST sample (md5s of the copy this project was given; it has no mirror)."""

_DIGIT_CLASSES = 10

IDX_FOLDERS = {"fashion_mnist": "fashion-mnist", "mnist": "mnist", "mnist_10k": "mnist-10k"}
"""The folder each IDX dataset is read from (under ``$CROSSDISTILL_DATA`` or the cache)."""

MNIST_10K_NAMES = tuple(file.name for file in _MNIST_10K_FILES)
"""The files of the 10 000-image MNIST sample."""
"""The classes of MNIST, Fashion-MNIST and scikit-learn's digits."""


@dataclass(frozen=True)
class DomainSplits:
    """The three disjoint parts of one domain's data.

    Attributes:
        big: the larger part of Train (e.g. for a teacher).
        small: the seeded random ``small`` rows of Train (e.g. for a student).
        test: held-out data, never used for training or model selection.
        num_classes: the classes of a classification dataset, as its loader declares them; None
            for regression data, or classification data that declares none (a caller then
            infers max label + 1 over the three parts).

    Raises:
        DataFormatError: the parts' inputs differ in dtype or in shape after the first
            dimension, or their targets do; or ``num_classes`` is given and a label is not an
            integer in ``[0, num_classes)``. The message names the part (``Big``, ``Small``,
            ``Test``), what was expected and what was found.
        ValueError: ``num_classes`` is neither None nor a positive integer.
    """

    big: ArrayData
    small: ArrayData
    test: ArrayData
    num_classes: int | None = None

    def __post_init__(self) -> None:
        parts = {"Big": self.big, "Small": self.small, "Test": self.test}
        check_alike("inputs", {name: part.x for name, part in parts.items()})
        check_alike("targets", {name: part.y for name, part in parts.items()})
        check_num_classes(self.num_classes, "DomainSplits")
        if self.num_classes is not None:
            for name, part in parts.items():
                check_labels(part.y, self.num_classes, name, "the dataset")

    @property
    def train(self) -> ArrayData:
        """Train = Big ∪ Small, as one dataset (Big's rows first)."""
        return ArrayData(
            torch.cat([self.big.x, self.small.x]), torch.cat([self.big.y, self.small.y])
        )


DatasetSetting = Annotated[Spec, datasets]
"""A component's setting that is the spec of a dataset (checked with the component's spec)."""


def load_idx_pair(
    images_path: str | Path,
    labels_path: str | Path,
    rebuild: Callable[[], object] | None = None,
) -> ArrayData:
    """Images and labels from two IDX files, as MNIST publishes them.

    Args:
        images_path: uint8 pixels ``(N, H, W)``.
        labels_path: integer labels ``(N,)``.
        rebuild: remakes a damaged file, when the library made both (see
            :func:`~crossdistill.data.sources.read_or_rebuild`); None to read them as they are.

    Returns:
        x float32 ``(N, 1, H, W)`` in [0, 1] (pixel / 255) and y int64 ``(N,)``.

    Raises:
        DataFormatError: a file is malformed, holds the wrong shape or dtype, or the two files
            hold different numbers of samples.
    """
    images = read_or_rebuild(images_path, read_idx, rebuild)
    labels = read_or_rebuild(labels_path, read_idx, rebuild)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataFormatError(
            f"{images_path}: expected uint8 images (N, H, W), found {images.dtype} {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise DataFormatError(
            f"{labels_path}: expected integer labels (N,), found {labels.dtype} {labels.shape}"
        )
    if len(images) != len(labels):
        raise DataFormatError(
            f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels"
        )
    x = torch.from_numpy(images).unsqueeze(1).float().div_(255)
    return ArrayData(x, torch.from_numpy(labels).long())


def load_official_idx(
    root: Path, num_classes: int, owner: str, rebuild: Callable[[], object] | None = None
) -> tuple[ArrayData, ArrayData]:
    """Train and Test from the four files :data:`OFFICIAL_IDX_NAMES` in ``root``.

    Args:
        root: the folder holding the four files.
        num_classes: the dataset's classes; every label must lie in ``[0, num_classes)``.
        owner: the dataset's name, for messages.
        rebuild: see :func:`load_idx_pair`.

    Raises:
        DataFormatError: a file is malformed (see :func:`load_idx_pair`), a label file holds a
            label outside the classes (the message names the file, the split, the label and its
            row), or Test's images differ in size from Train's (the message names both files).
    """
    images, labels, test_images, test_labels = (root / name for name in OFFICIAL_IDX_NAMES)
    train = load_idx_pair(images, labels, rebuild)
    test = load_idx_pair(test_images, test_labels, rebuild)
    check_labels(train.y, num_classes, f"{labels}: Train", owner)
    check_labels(test.y, num_classes, f"{test_labels}: Test", owner)
    if test.x.shape[1:] != train.x.shape[1:]:
        size, expected = ("×".join(map(str, part.x.shape[2:])) for part in (test, train))
        raise DataFormatError(
            f"{test_images}: Test images are {size}, expected {expected} as in Train ({images})"
        )
    return train, test


def split_train(
    train: ArrayData, test: ArrayData, small: int, seed: int, num_classes: int | None = None
) -> DomainSplits:
    """Split ``train`` into a seeded random Small of ``small`` rows and Big, the rest.

    ``num_classes`` is the dataset's declared classes (None for regression data).
    """
    if not 0 < small < len(train):
        raise ValueError(
            f"small must be between 1 and {len(train) - 1} (Train size - 1), got {small}"
        )
    small_part, big_part = random_split(train, small, seed)
    return DomainSplits(big=big_part, small=small_part, test=test, num_classes=num_classes)


def split_held_out(
    data: ArrayData, test: int, small: int, seed: int, num_classes: int | None = None
) -> DomainSplits:
    """Take a seeded random Test of ``test`` rows out of ``data``, then split the rest."""
    if not 0 < test < len(data):
        raise ValueError(f"test must be between 1 and {len(data) - 1}, got {test}")
    test_part, train = random_split(data, test, seed)
    return split_train(train, test_part, small, seed, num_classes)


def _official_idx(
    name: str,
    folder: str,
    md5s: tuple[str, ...],
    mirrors: tuple[str, ...],
    small: int,
    seed: int,
    data_dir: str | Path | None,
    download: bool,
) -> DomainSplits:
    """Load the four files of an MNIST-like dataset of 10 classes: Train splits into Big /
    Small. A damaged file that was downloaded into the cache is downloaded again."""
    files = [RemoteFile(file, md5) for file, md5 in zip(OFFICIAL_IDX_NAMES, md5s, strict=True)]
    root = locate(folder, files, mirrors, data_dir, download)
    rebuild = redownload(root, folder, files, mirrors, data_dir, download)
    train, test = load_official_idx(root, _DIGIT_CLASSES, name, rebuild)
    return split_train(train, test, small, seed, _DIGIT_CLASSES)


@datasets.register("fashion_mnist")
def fashion_mnist(
    *, small: int, seed: int = 0, data_dir: str | Path | None = None, download: bool = True
) -> DomainSplits:
    """Fashion-MNIST: 28×28 grey clothes in 10 classes; Train 60 000, Test the official 10 000."""
    return _official_idx(
        "fashion_mnist",
        IDX_FOLDERS["fashion_mnist"],
        _FASHION_MNIST_MD5,
        _FASHION_MNIST_MIRRORS,
        small,
        seed,
        data_dir,
        download,
    )


@datasets.register("mnist")
def mnist(
    *, small: int, seed: int = 0, data_dir: str | Path | None = None, download: bool = True
) -> DomainSplits:
    """MNIST: 28×28 grey handwritten digits; Train 60 000, Test the official 10 000."""
    return _official_idx(
        "mnist", IDX_FOLDERS["mnist"], _MNIST_MD5, _MNIST_MIRRORS, small, seed, data_dir, download
    )


@datasets.register("mnist_10k")
def mnist_10k(
    *,
    small: int,
    seed: int = 0,
    test: int = 1000,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainSplits:
    """A 10 000-image MNIST sample (folder ``mnist-10k``, no official download).

    Test is a seeded random ``test`` rows (default 1 000), Train the other 9 000.
    """
    root = locate(IDX_FOLDERS["mnist_10k"], _MNIST_10K_FILES, (), data_dir, download)
    images, labels = (root / file.name for file in _MNIST_10K_FILES)
    data = load_idx_pair(images, labels)
    check_labels(data.y, _DIGIT_CLASSES, f"{labels}:", "mnist_10k")
    return split_held_out(data, test, small, seed, _DIGIT_CLASSES)


@datasets.register("digits")
def digits(
    *,
    small: int,
    seed: int = 0,
    test: int = 397,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainSplits:
    """scikit-learn's 1 797 8×8 digits, x ``(N, 1, 8, 8)`` in [0, 1] (grey level / 16).

    Test is a seeded random ``test`` rows (default 397), Train the other 1 400.
    """
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().div_(16).unsqueeze(1)
    data = ArrayData(x, torch.from_numpy(bunch.target).long())
    return split_held_out(data, test, small, seed, _DIGIT_CLASSES)


@datasets.register("diabetes")
def diabetes(
    *,
    small: int,
    seed: int = 0,
    test: int = 100,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainSplits:
    """scikit-learn's diabetes regression data, 442 patients.

    x float32 ``(N, 10)``, the ten baseline variables as scikit-learn scales them; y float32
    ``(N,)``, a measure of disease progression one year later.

    Test is a seeded random ``test`` rows (default 100), Train the other 342.
    """
    bunch = load_diabetes()
    data = ArrayData(torch.from_numpy(bunch.data).float(), torch.from_numpy(bunch.target).float())
    return split_held_out(data, test, small, seed)
