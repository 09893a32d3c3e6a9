"""Datasets published as one tar archive (``.tar.gz``, ``.tgz``) that unpacks to a single folder.

The unpacked folder is looked for where :func:`~crossdistill.data.sources.locate` looks for a
dataset folder (``data_dir``, ``$CROSSDISTILL_DATA``, the cache) and read as it is, without
checksums. When it is nowhere, ``locate`` finds the archive in a folder ``archives`` (in the same
places) or downloads it into ``cache_dir()/archives`` and checks its md5; the archive is then
unpacked into ``cache_dir()``. Unpacking is safe and atomic: tar's ``data`` filter refuses
members that would land outside the target (absolute paths are made relative; ``..``, links
leading out and device files are errors), and the folder appears whole or not at all. A damaged
archive in the cache is downloaded again, and a damaged file of a folder unpacked into the cache
is unpacked again (see :func:`unpack_again`).
"""

from __future__ import annotations

import gzip
import os
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .idx import DataFormatError
from .sources import (
    DatasetNotFoundError,
    RemoteFile,
    cache_dir,
    locate,
    read_or_rebuild,
    redownload,
    search_places,
)

ARCHIVES = "archives"
"""The folder, under each place :func:`locate` looks in, that holds dataset archives."""


@dataclass(frozen=True)
class RemoteArchive:
    """A dataset published as one archive.

    Attributes:
        file: the archive's name on the mirrors and its md5.
        root: the one folder the archive unpacks to, e.g. ``"cifar-10-batches-py"``.
        mirrors: base URLs, each ending in ``/``; the archive's URL is mirror + ``file.name``.
    """

    file: RemoteFile
    root: str
    mirrors: tuple[str, ...]


def locate_unpacked(
    folder: str,
    required: Sequence[str],
    archive: RemoteArchive,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> Path:
    """The dataset folder holding every path in ``required``, unpacking its archive if needed.

    Args:
        folder: the folder's name (or a relative path), e.g. ``"cifar-10-batches-py"``.
        required: files or folders, relative to ``folder``, that a complete copy holds.
        archive: the official archive; used only when ``folder`` is its ``root``, since the
            download gives the official data and nothing else.
        data_dir: a directory holding ``folder``, looked in first.
        download: whether a missing archive may be downloaded.

    Returns:
        The first of ``data_dir/folder``, ``$CROSSDISTILL_DATA/folder``, ``cache_dir()/folder``
        that holds all of ``required``, else ``cache_dir()/folder`` freshly unpacked.

    Raises:
        DatasetNotFoundError: (a FileNotFoundError) the folder is nowhere and cannot be had
            from the archive; the message lists every place looked in and why nothing was
            downloaded.
        ChecksumError: a downloaded archive's md5 is not the published one (nothing is kept).
        DataFormatError: the archive is corrupt, unsafe, or lacks ``required``.
    """
    places = search_places(folder, data_dir)
    for place, _ in places:
        if not _missing(place, required):
            return place
    if not download:
        reason = "download=False, so nothing was downloaded"
    elif folder != archive.root:
        reason = f"only the official folder {archive.root!r} can be downloaded"
    else:
        try:
            return _unpack_into_cache(required, archive, data_dir, download)
        except FileNotFoundError as error:
            reason = f"its archive could not be had either:\n{error}"
    looked = "\n".join(
        f"  {place} ({origin}): missing {', '.join(_missing(place, required))}"
        for place, origin in places
    )
    raise DatasetNotFoundError(
        f"cannot find dataset folder {folder!r}; looked in:\n{looked}\n{reason}.\n"
        f"Put the folder in <dir>/ and set CROSSDISTILL_DATA=<dir>, or pass data_dir=<dir>."
    )


def unpack_again(
    root: Path,
    required: Sequence[str],
    archive: RemoteArchive,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> Callable[[], object] | None:
    """How to make a file of ``root`` (what :func:`locate_unpacked` found) again, for
    :func:`~crossdistill.data.sources.read_or_rebuild`: when ``root`` is the cache's folder
    unpacked from ``archive``, a call that finds the archive (downloading it if allowed),
    deletes the folder and unpacks it again; else None, and the files are read as they are."""
    if Path(root) != cache_dir() / archive.root:
        return None

    def rebuild() -> Path:
        locate(ARCHIVES, [archive.file], archive.mirrors, data_dir, download)
        shutil.rmtree(root)
        return _unpack_into_cache(required, archive, data_dir, download)

    return rebuild


def _unpack_into_cache(
    required: Sequence[str],
    archive: RemoteArchive,
    data_dir: str | Path | None,
    download: bool,
) -> Path:
    """The archive found (or downloaded) by :func:`locate`, unpacked into the cache; a damaged
    archive that was downloaded into the cache is downloaded again."""
    files = [archive.file]
    found = locate(ARCHIVES, files, archive.mirrors, data_dir, download)
    target = cache_dir() / archive.root
    if target.exists():
        raise FileExistsError(
            f"{target} exists but lacks {', '.join(_missing(target, required))}; "
            f"remove it to unpack {found / archive.file.name} there"
        )
    return read_or_rebuild(
        found / archive.file.name,
        lambda path: unpack(path, archive.root, required, cache_dir()),
        redownload(found, ARCHIVES, files, archive.mirrors, data_dir, download),
    )


def unpack(path: str | Path, root: str, required: Sequence[str], into: str | Path) -> Path:
    """Unpack the folder ``root`` of the tar archive ``path`` to ``into/root``, atomically.

    The archive is unpacked into a temporary folder beside the target, checked to hold ``root``
    with every path in ``required``, and only then renamed into place.

    Returns:
        ``into/root``.

    Raises:
        DataFormatError: the archive is not a readable tar (gzipped or not), holds an unsafe
            member, or lacks ``root`` or one of ``required``; the message names ``path``.
        FileExistsError: ``into/root`` exists already (a partial copy made by hand).
    """
    path, target = Path(path), Path(into) / root
    if target.exists():
        raise FileExistsError(
            f"{target} exists but lacks {', '.join(_missing(target, required))}; "
            f"remove it to unpack {path} there"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{root}.", dir=target.parent) as staging:
        try:
            with tarfile.open(path) as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
            raise DataFormatError(f"{path}: cannot unpack: {error}") from error
        unpacked = Path(staging) / root
        if missing := _missing(unpacked, required):
            lacking = ", ".join(f"{root}/{name}" for name in missing)
            raise DataFormatError(f"{path}: the archive lacks {lacking}")
        os.replace(unpacked, target)
    return target


def _missing(place: Path, required: Sequence[str]) -> list[str]:
    """The paths in ``required`` that ``place`` does not hold."""
    return [name for name in required if not (place / name).exists()]
