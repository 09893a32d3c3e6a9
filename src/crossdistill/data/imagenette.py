"""Imagenette: 10 easily told ImageNet classes, in the official folder layout.

``imagenette2-160/{train,val}/<wnid>/*.JPEG``: one folder per class, named by its WordNet id; the
class index is the id's place in sorted order. Train is ``train`` (9 469 images), Test ``val``
(3 925). Images are decoded once with Pillow and kept, as uint8, in a cache file under
``cache_dir()/imagenette`` whose name depends on the folder, the image size and every image
file's name, size and modification time, so that later loads read one file and decode nothing;
a damaged cache file is decoded again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from ..files import atomic_path
from ..registries import datasets
from .archives import RemoteArchive, locate_unpacked, unpack_again
from .arrays import ArrayData
from .datasets import DomainSplits, split_train
from .idx import DataFormatError
from .sources import RemoteFile, cache_dir, read_or_rebuild

_ARCHIVE = RemoteArchive(
    RemoteFile("imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412"),
    root="imagenette2-160",
    mirrors=("https://s3.amazonaws.com/fast-ai-imageclas/",),
)
_TRAIN, _TEST = "train", "val"
IMAGENETTE_FOLDER, IMAGENETTE_PARTS = _ARCHIVE.root, (_TRAIN, _TEST)
"""The official archive's folder and the two folders inside it that a run reads."""

_DECODER_VERSION = 1
"""Part of every decoded cache's name; bump it when :func:`decode_image` changes its output."""


@datasets.register("imagenette")
def imagenette(
    *,
    small: int,
    seed: int = 0,
    size: int = 160,
    folder: str = _ARCHIVE.root,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainSplits:
    """Imagenette as x float32 ``(N, 3, size, size)`` in [0, 1] (RGB) and y int64 ``(N,)``.

    ``folder`` (default ``"imagenette2-160"``, the official archive's folder; a relative path
    also works) holds ``train`` and ``val`` and is read as it is when found in ``data_dir``,
    ``$CROSSDISTILL_DATA`` or the cache. Otherwise the official ``imagenette2-160.tgz`` is
    downloaded, checked against its md5 and unpacked into the cache (only for the official
    folder name). Each image is scaled and cropped to ``size``×``size`` by :func:`decode_image`.
    The classes are the class folders (10 in the official folder).

    Raises:
        ValueError: ``size`` is below 1.
        DataFormatError: ``train`` and ``val`` hold different class folders, or an image cannot be
            decoded; the message names both lists or the file.
    """
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels, got {size}")
    required = (_TRAIN, _TEST)
    root = locate_unpacked(folder, required, _ARCHIVE, data_dir, download)
    rebuild = unpack_again(root, required, _ARCHIVE, data_dir, download)
    classes = class_folders(root / _TRAIN, root / _TEST)
    train = load_image_folder(root / _TRAIN, classes, size, rebuild)
    test = load_image_folder(root / _TEST, classes, size, rebuild)
    return split_train(train, test, small, seed, len(classes))


def class_folders(*splits: Path) -> list[str]:
    """The sorted class-folder names of ``splits``, which must all hold the same ones.

    Hidden entries (names starting with ``.``) and plain files are ignored.

    Raises:
        DataFormatError: a split holds no class folder, or two splits hold different ones; the
            message names both folders and lists both sets.
    """
    found = [sorted(entry.name for entry in _entries(split) if entry.is_dir()) for split in splits]
    first = found[0]
    if not first:
        raise DataFormatError(f"{splits[0]}: holds no class folders")
    for split, names in zip(splits[1:], found[1:], strict=True):
        if names != first:
            raise DataFormatError(
                f"{splits[0]} and {split} hold different class folders:\n"
                f"  {splits[0]}: {', '.join(first)}\n  {split}: {', '.join(names) or '(none)'}"
            )
    return first


def load_image_folder(
    split: Path,
    classes: Sequence[str],
    size: int,
    rebuild: Callable[[], object] | None = None,
) -> ArrayData:
    """Every image file in ``split/<class>/`` for each of ``classes``, decoded or from the cache.

    Every non-hidden file in a class folder is taken for an image. A damaged decoded-image cache
    file is decoded again (with a warning naming it).

    Args:
        split: the folder of one split.
        classes: the class folders' names, in label order.
        size: the side of the decoded square images, in pixels.
        rebuild: remakes a damaged image file, when the library unpacked ``split`` itself (see
            :func:`~crossdistill.data.sources.read_or_rebuild`); None to read images as they are.

    Returns:
        x float32 ``(N, 3, size, size)`` in [0, 1] and y int64 ``(N,)``, the index in
        ``classes`` of each image's folder; ordered by class, then by file name.

    Raises:
        DataFormatError: an image cannot be read; the message names it.
    """
    files = [
        (label, path)
        for label, name in enumerate(classes)
        for path in sorted(entry for entry in _entries(split / name) if entry.is_file())
    ]
    cache = _cache_path(split, files, size)

    def decode() -> None:
        decoded = np.empty((len(files), size, size, 3), np.uint8)
        for row, (_, path) in enumerate(files):
            decoded[row] = read_or_rebuild(path, partial(decode_image, size=size), rebuild)
        pixels = torch.from_numpy(decoded).permute(0, 3, 1, 2).contiguous()
        labels = torch.tensor([label for label, _ in files], dtype=torch.int64)
        with atomic_path(cache) as temporary:
            torch.save({"x": pixels, "y": labels}, temporary)

    read = partial(_read_decoded, rows=len(files), size=size)
    pixels, labels = read_or_rebuild(cache, read, decode)
    return ArrayData(pixels.float().div_(255), labels)


def _read_decoded(path: Path, rows: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The uint8 pixels ``(rows, 3, size, size)`` and int64 labels ``(rows,)`` of a decoded-image
    cache file; DataFormatError if it holds anything else."""
    saved = torch.load(path, weights_only=True)
    pixels, labels = (saved.get("x"), saved.get("y")) if isinstance(saved, dict) else (None, None)
    if not (
        isinstance(pixels, torch.Tensor)
        and pixels.dtype == torch.uint8
        and pixels.shape == (rows, 3, size, size)
        and isinstance(labels, torch.Tensor)
        and labels.dtype == torch.int64
        and labels.shape == (rows,)
    ):
        raise DataFormatError(
            f"{path}: expected uint8 pixels ({rows}, 3, {size}, {size}) and int64 labels ({rows},)"
        )
    return pixels, labels


def decode_image(path: Path, size: int) -> np.ndarray:
    """An image file as uint8 RGB ``(size, size, 3)``: its central square scaled to ``size``.

    This equals scaling the shorter side to ``size`` (bilinear) and cropping the centre.

    Raises:
        DataFormatError: Pillow cannot read the file; the message names it.
    """
    try:
        with Image.open(path) as image:
            fitted = ImageOps.fit(image.convert("RGB"), (size, size), Image.Resampling.BILINEAR)
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise DataFormatError(f"{path}: not a readable image: {error}") from error
    return np.asarray(fitted)


def _entries(folder: Path) -> list[Path]:
    """The non-hidden entries of ``folder``."""
    return [entry for entry in folder.iterdir() if not entry.name.startswith(".")]


def _cache_path(split: Path, files: Sequence[tuple[int, Path]], size: int) -> Path:
    """Where the labelled image ``files`` of ``split`` decoded at ``size`` are kept.

    The name changes with the folder, ``size``, any file's label, name, size or modification time.
    """
    digest = hashlib.sha256(f"{_DECODER_VERSION}\n{split.resolve()}\n{size}\n".encode())
    for label, path in files:
        stat = path.stat()
        entry = f"{label}\t{path.relative_to(split)}\t{stat.st_size}\t{stat.st_mtime_ns}\n"
        digest.update(entry.encode())
    return cache_dir() / "imagenette" / f"{split.name}-{size}px-{digest.hexdigest()[:20]}.pt"
