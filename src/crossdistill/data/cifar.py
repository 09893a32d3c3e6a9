"""CIFAR-10 in its official python-pickle batches: 32×32 colour images in 10 classes.

A batch is a pickled dict with ``data``, uint8 ``(N, 3072)``, each row an image's red, green and
blue planes of 32×32 pixels in row-major order, and ``labels``, a list of ``N`` class indices.
Train is ``data_batch_1`` … ``data_batch_5`` (50 000 images officially), Test ``test_batch``
(10 000). Only builtins and numpy arrays are unpickled, never other code.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import numpy as np
import torch

from ..registries import datasets
from .archives import RemoteArchive, locate_unpacked, unpack_again
from .arrays import ArrayData
from .checks import check_labels
from .datasets import DomainSplits, split_train
from .idx import DataFormatError
from .sources import RemoteFile, read_or_rebuild

_ARCHIVE = RemoteArchive(
    RemoteFile("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"),
    root="cifar-10-batches-py",
    mirrors=("https://www.cs.toronto.edu/~kriz/",),
)
_TRAIN = tuple(f"data_batch_{number}" for number in range(1, 6))
_TEST = "test_batch"
CIFAR10_FOLDER, CIFAR10_FILES = _ARCHIVE.root, (*_TRAIN, _TEST)
"""The official archive's folder, and its batch files: Train's five, then Test."""
_SHAPE = (3, 32, 32)
_PIXELS = 3 * 32 * 32
_CLASSES = 10


class _BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and builtins and refuses every other global."""

    _ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("_codecs", "encode"),  # bytes in pickles written by Python 3 with protocol 2
        }
    )

    def find_class(self, module: str, name: str) -> object:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"global {module}.{name} has no place in a CIFAR batch")
        return super().find_class(module, name)


def read_cifar_batch(path: str | Path) -> ArrayData:
    """One CIFAR-10 batch file.

    Returns:
        x float32 ``(N, 3, 32, 32)`` in [0, 1] (pixel / 255, RGB) and y int64 ``(N,)`` in 0..9.

    Raises:
        DataFormatError: the file is not a readable pickle (truncated, corrupt, or holding other
            objects than a batch), or its ``data`` or ``labels`` is missing or malformed; the
            message names ``path`` and the key.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    content = path.read_bytes()
    try:
        batch = _BatchUnpickler(io.BytesIO(content), encoding="latin1").load()
    # A corrupt pickle can raise almost any exception (see the pickle docs); all mean the same.
    except Exception as error:
        raise DataFormatError(f"{path}: not a readable CIFAR batch pickle: {error!r}") from error
    if not isinstance(batch, dict):
        raise DataFormatError(f"{path}: expected a dict, found {type(batch).__name__}")
    for key in ("data", "labels"):
        if key not in batch:
            raise DataFormatError(f"{path}: no key {key!r}; found keys {sorted(map(str, batch))}")
    data, labels = batch["data"], np.asarray(batch["labels"])
    if not (
        isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape[1:] == (_PIXELS,)
    ):
        raise DataFormatError(
            f"{path}: key 'data': expected uint8 (N, {_PIXELS}), found {_describe(data)}"
        )
    if labels.shape != (len(data),) or (len(data) and labels.dtype.kind not in "iu"):
        raise DataFormatError(
            f"{path}: key 'labels': expected {len(data)} integer labels, found {_describe(labels)}"
        )
    y = torch.from_numpy(labels.astype(np.int64))
    check_labels(y, _CLASSES, f"{path}: key 'labels':", "CIFAR-10")
    x = torch.from_numpy(data.reshape(-1, *_SHAPE)).float().div_(255)
    return ArrayData(x, y)


def _describe(value: object) -> str:
    """An array's dtype and shape, or another value's type."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}"
    return type(value).__name__


@datasets.register("cifar10")
def cifar10(
    *,
    small: int,
    seed: int = 0,
    folder: str = _ARCHIVE.root,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainSplits:
    """CIFAR-10: Train the five training batches, Test the official test batch.

    ``folder`` (default ``"cifar-10-batches-py"``, the official archive's folder; a relative path
    such as ``"cifar10-subset/cifar-10-batches-py"`` also works) holds the six batch files and
    is read as it is when found in ``data_dir``, ``$CROSSDISTILL_DATA`` or the cache. Otherwise the
    official ``cifar-10-python.tar.gz`` is downloaded, checked against its md5 and unpacked into
    the cache (only for the official folder name); a damaged batch there is unpacked again.
    """
    required = CIFAR10_FILES
    root = locate_unpacked(folder, required, _ARCHIVE, data_dir, download)
    rebuild = unpack_again(root, required, _ARCHIVE, data_dir, download)

    def read(name: str) -> ArrayData:
        return read_or_rebuild(root / name, read_cifar_batch, rebuild)

    parts = [read(name) for name in _TRAIN]
    train = ArrayData(torch.cat([part.x for part in parts]), torch.cat([part.y for part in parts]))
    return split_train(train, read(_TEST), small, seed, _CLASSES)
