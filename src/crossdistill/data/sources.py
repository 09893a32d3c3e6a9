"""Where dataset files come from: a local folder, the user's cache, or an official mirror.

A dataset is a folder of named files. :func:`locate` finds a folder that holds all of them, looking
in this order:

1. ``data_dir/<folder>`` when a ``data_dir`` is passed;
2. ``$CROSSDISTILL_DATA/<folder>`` when that variable is set;
3. ``cache_dir()/<folder>``.

Files found locally are read as they are. Otherwise the missing files are downloaded from the
dataset's mirrors into the cache, each checked against its published md5 and written through a
temporary file, so that the cache never holds a partial or unverified file.

Every file the data layer reads goes through :func:`read_or_rebuild`: a damaged file that the
library made itself (a download in the cache, an unpacked archive, a decoded-image cache, a
generated dataset) is deleted with a warning and made again; any other damaged file raises
`DataFormatError` naming it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from http.client import HTTPException
from pathlib import Path
from typing import TypeVar

from ..errors import CrossdistillError
from ..files import UNREADABLE, atomic_path, read_rebuildable
from .idx import DataFormatError

T = TypeVar("T")

_log = logging.getLogger(__name__)

_CHUNK = 1 << 20
"""Bytes read from a download at a time."""

_TIMEOUT_S = 60.0
"""Seconds a mirror may stay silent before the next one is tried."""


class ChecksumError(DataFormatError):
    """A downloaded file's md5 differs from the published one."""


class DatasetNotFoundError(CrossdistillError, FileNotFoundError):
    """A dataset's files are in none of the places a loader looks and cannot be downloaded; the
    message lists every place looked in and why nothing was downloaded. A `FileNotFoundError`
    that is also the project's error, so a config's driver names the dataset's field."""


@dataclass(frozen=True)
class RemoteFile:
    """A file of a dataset as published: its name on the mirrors and its md5 (32 hex digits)."""

    name: str
    md5: str


def cache_dir() -> Path:
    """The folder downloads go to.

    ``$CROSSDISTILL_CACHE`` if set, else ``$XDG_CACHE_HOME/crossdistill``, else
    ``~/.cache/crossdistill``. The folder may not exist yet.
    """
    if explicit := os.environ.get("CROSSDISTILL_CACHE"):
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(xdg).expanduser() / "crossdistill"


def locate(
    folder: str,
    files: Sequence[RemoteFile],
    mirrors: Sequence[str],
    data_dir: str | Path | None = None,
    download: bool = True,
) -> Path:
    """The directory holding every file of a dataset, downloading them into the cache if needed.

    Args:
        folder: the dataset's folder name, e.g. ``"mnist"``.
        files: the files the folder must hold.
        mirrors: base URLs, each ending in ``/``, tried in order; a file's URL is mirror + name.
            Empty when the dataset has no official download.
        data_dir: a folder holding ``folder``, looked in first.
        download: whether to download missing files into ``cache_dir() / folder``.

    Returns:
        The first of ``data_dir/folder``, ``$CROSSDISTILL_DATA/folder``, ``cache_dir()/folder``
        that holds all ``files`` (local files are not checksummed), else the cache folder after
        downloading the files it lacks.

    Raises:
        ChecksumError: a downloaded file's md5 is not the published one (nothing is kept).
        DatasetNotFoundError: (a FileNotFoundError) the files are nowhere and cannot be
            downloaded; the message lists every place looked in and how to point the loader at
            a local copy.
    """
    places = search_places(folder, data_dir)
    for place, _ in places:
        if not _missing(place, files):
            return place
    cache = cache_dir() / folder
    if not download:
        reason = "download=False, so nothing was downloaded"
    elif not mirrors:
        reason = f"{folder!r} has no official download"
    else:
        failures: list[str] = []
        for file in _missing(cache, files):
            failures = _fetch(file, mirrors, cache)
            if failures:
                break
        if not failures:
            return cache
        reason = "downloading failed:\n" + "\n".join(f"  {failure}" for failure in failures)
    looked = "\n".join(
        f"  {place} ({origin}): missing {', '.join(f.name for f in _missing(place, files))}"
        for place, origin in places
    )
    unset = "" if os.environ.get("CROSSDISTILL_DATA") else "  ($CROSSDISTILL_DATA is not set)\n"
    raise DatasetNotFoundError(
        f"cannot find dataset folder {folder!r}; looked in:\n{looked}\n{unset}{reason}.\n"
        f"Put the files in <dir>/{folder}/ and set CROSSDISTILL_DATA=<dir>, or pass data_dir=<dir>."
    )


def read_or_rebuild(
    path: str | Path, read: Callable[[Path], T], rebuild: Callable[[], object] | None = None
) -> T:
    """``read(path)``, with one rule for a missing, truncated or corrupt file.

    Args:
        path: the file.
        read: reads it, raising on a damaged file (`DataFormatError`, or what ``torch.load``,
            ``pickle`` or ``zipfile`` raise: ``PytorchStreamReader failed``, `EOFError`, ...).
        rebuild: given when the library made ``path`` itself, and remakes it there. A missing
            file is then made (no warning: a first build); a damaged one is deleted with one
            warning naming it (`crossdistill.files.read_rebuildable`), made again, and read
            again. None for a file read as it is (a user's file, a file found in ``data_dir``
            or ``$CROSSDISTILL_DATA``).

    Raises:
        DataFormatError: ``path`` cannot be read, and cannot be made again (or was, and still
            cannot be read); the message names ``path``.
        FileNotFoundError: ``path`` does not exist and there is no ``rebuild``.
    """
    path = Path(path)
    if rebuild is not None:
        value = read_rebuildable(path, read)
        if value is not None:
            return value
        rebuild()
    try:
        return read(path)
    except (DataFormatError, FileNotFoundError, PermissionError, IsADirectoryError):
        raise
    except UNREADABLE as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DataFormatError(f"{path}: unreadable: {first}") from error


def redownload(
    root: Path,
    folder: str,
    files: Sequence[RemoteFile],
    mirrors: Sequence[str],
    data_dir: str | Path | None = None,
    download: bool = True,
) -> Callable[[], object] | None:
    """How to make a file of ``root`` (what :func:`locate` found) again, for
    :func:`read_or_rebuild`: when ``root`` is the cache's copy of a dataset that has mirrors and
    ``download`` is allowed, a call of :func:`locate` that downloads the files missing there (the
    damaged one, deleted); else None, and the files are read as they are."""
    if not (download and mirrors and Path(root) == cache_dir() / folder):
        return None
    return partial(locate, folder, files, mirrors, data_dir, download)


def search_places(folder: str, data_dir: str | Path | None) -> list[tuple[Path, str]]:
    """The folders :func:`locate` looks in, in order, each with where it comes from.

    Raises:
        ValueError: ``folder`` is not a name or relative path (e.g. ``None``, a YAML ``null``).
    """
    if not isinstance(folder, str | os.PathLike) or not str(folder):
        raise ValueError(
            f"folder: expected a folder name or a relative path, found {folder!r} (leave "
            "folder out for the dataset's own)"
        )
    places = []
    if data_dir is not None:
        places.append((Path(data_dir).expanduser() / folder, "data_dir"))
    if root := os.environ.get("CROSSDISTILL_DATA"):
        places.append((Path(root).expanduser() / folder, "$CROSSDISTILL_DATA"))
    places.append((cache_dir() / folder, "cache"))
    return places


def _missing(place: Path, files: Sequence[RemoteFile]) -> list[RemoteFile]:
    """The ``files`` that ``place`` does not hold."""
    return [file for file in files if not (place / file.name).is_file()]


def _fetch(file: RemoteFile, mirrors: Sequence[str], folder: Path) -> list[str]:
    """Download ``file`` into ``folder`` from the first mirror that serves it.

    Returns one line per mirror that failed when all of them did, else an empty list.
    """
    failures = []
    for mirror in mirrors:
        url = mirror + file.name
        try:
            _download(url, folder / file.name, file.md5)
        except (OSError, HTTPException) as error:
            failures.append(f"{url}: {error}")
        else:
            return []
    return failures


def _download(url: str, path: Path, md5: str) -> None:
    """Copy ``url`` to ``path`` if its md5 is ``md5``; otherwise leave ``path`` untouched."""
    _log.info("downloading %s", url)
    digest = hashlib.md5(usedforsecurity=False)
    with (
        urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response,
        atomic_path(path) as temporary,
        temporary.open("wb") as file,
    ):
        for chunk in iter(partial(response.read, _CHUNK), b""):
            digest.update(chunk)
            file.write(chunk)
        if digest.hexdigest() != md5:
            raise ChecksumError(
                f"{path.name} downloaded from {url} has md5 {digest.hexdigest()}, "
                f"expected {md5}; the file was not kept"
            )
