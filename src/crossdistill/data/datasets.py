"""Datasets by name, each split into the Big / Small / Test parts of a domain.

A domain's training data Train is split at random (seeded) into a small part Small, the data the
student sees, and the rest Big (Train = Big ∪ Small, disjoint). Test is the official test set when
the dataset has one, else a seeded random part taken out before Train is split.

Every loader takes the same keyword arguments ``small`` (the size of Small), ``seed``, ``data_dir``
and ``download`` (the last two are those of :func:`~crossdistill.data.sources.locate`; loaders of
data bundled with scikit-learn accept and ignore them), so a config names one by a string, as in
``datasets.build({"name": "mnist", "small": 1000}, seed=0)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_diabetes, load_digits

from ..registry import Registry
from .arrays import ArrayData, random_split
from .idx import DataFormatError, read_idx
from .sources import RemoteFile, locate

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


@dataclass(frozen=True)
class DomainSplits:
    """The three disjoint parts of one domain's data.

    Attributes:
        big: the larger part of Train (e.g. for a teacher).
        small: the seeded random ``small`` rows of Train (e.g. for a student).
        test: held-out data, never used for training or model selection.
    """

    big: ArrayData
    small: ArrayData
    test: ArrayData

    @property
    def train(self) -> ArrayData:
        """Train = Big ∪ Small, as one dataset (Big's rows first)."""
        return ArrayData(
            torch.cat([self.big.x, self.small.x]), torch.cat([self.big.y, self.small.y])
        )


datasets: Registry[DomainSplits] = Registry("dataset")
"""Loaders by name: ``datasets.build("fashion_mnist", small=1000, seed=0)``."""


def load_idx_pair(images_path: str | Path, labels_path: str | Path) -> ArrayData:
    """Images and labels from two IDX files, as MNIST publishes them.

    Args:
        images_path: uint8 pixels ``(N, H, W)``.
        labels_path: integer labels ``(N,)``.

    Returns:
        x float32 ``(N, 1, H, W)`` in [0, 1] (pixel / 255) and y int64 ``(N,)``.

    Raises:
        DataFormatError: a file is malformed, holds the wrong shape or dtype, or the two files
            hold different numbers of samples.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
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


def split_train(train: ArrayData, test: ArrayData, small: int, seed: int) -> DomainSplits:
    """Split ``train`` into a seeded random Small of ``small`` rows and Big, the rest."""
    if not 0 < small < len(train):
        raise ValueError(
            f"small must be between 1 and {len(train) - 1} (Train size - 1), got {small}"
        )
    small_part, big_part = random_split(train, small, seed)
    return DomainSplits(big=big_part, small=small_part, test=test)


def split_held_out(data: ArrayData, test: int, small: int, seed: int) -> DomainSplits:
    """Take a seeded random Test of ``test`` rows out of ``data``, then split the rest."""
    if not 0 < test < len(data):
        raise ValueError(f"test must be between 1 and {len(data) - 1}, got {test}")
    test_part, train = random_split(data, test, seed)
    return split_train(train, test_part, small, seed)


def _official_idx(
    folder: str,
    md5s: tuple[str, ...],
    mirrors: tuple[str, ...],
    small: int,
    seed: int,
    data_dir: str | Path | None,
    download: bool,
) -> DomainSplits:
    """Load the four files of an MNIST-like dataset: Train splits into Big / Small."""
    files = [RemoteFile(name, md5) for name, md5 in zip(OFFICIAL_IDX_NAMES, md5s, strict=True)]
    root = locate(folder, files, mirrors, data_dir, download)
    train_images, train_labels, test_images, test_labels = (
        root / name for name in OFFICIAL_IDX_NAMES
    )
    train = load_idx_pair(train_images, train_labels)
    return split_train(train, load_idx_pair(test_images, test_labels), small, seed)


@datasets.register("fashion_mnist")
def fashion_mnist(
    *, small: int, seed: int = 0, data_dir: str | Path | None = None, download: bool = True
) -> DomainSplits:
    """Fashion-MNIST: 28×28 grey clothes in 10 classes; Train 60 000, Test the official 10 000."""
    return _official_idx(
        "fashion-mnist", _FASHION_MNIST_MD5, _FASHION_MNIST_MIRRORS, small, seed, data_dir, download
    )


@datasets.register("mnist")
def mnist(
    *, small: int, seed: int = 0, data_dir: str | Path | None = None, download: bool = True
) -> DomainSplits:
    """MNIST: 28×28 grey handwritten digits; Train 60 000, Test the official 10 000."""
    return _official_idx("mnist", _MNIST_MD5, _MNIST_MIRRORS, small, seed, data_dir, download)


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
    root = locate("mnist-10k", _MNIST_10K_FILES, (), data_dir, download)
    images, labels = (root / file.name for file in _MNIST_10K_FILES)
    return split_held_out(load_idx_pair(images, labels), test, small, seed)


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
    return split_held_out(ArrayData(x, torch.from_numpy(bunch.target).long()), test, small, seed)


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
