"""Writing files so that a crash never leaves a partial one behind, and reading back files the
library wrote itself (a damaged one is rebuilt, not fatal)."""

from __future__ import annotations

import json
import os
import pickle
import string
import uuid
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import torch.distributed

T = TypeVar("T")

UNREADABLE = (
    OSError,
    EOFError,
    RuntimeError,
    ValueError,
    KeyError,
    TypeError,
    pickle.UnpicklingError,
    zipfile.BadZipFile,
    json.JSONDecodeError,
)
"""What reading a truncated or damaged file raises (``torch.load``, ``json``, ``pickle``); a
file that ``torch.load(..., weights_only=True)`` refuses (it would run code) raises
``pickle.UnpicklingError`` and counts as damaged."""

_KEPT = frozenset(string.ascii_letters + string.digits + "_.=,-")
"""Characters that `file_name` keeps as they are (but a leading ``.``)."""


def file_name(name: str) -> str:
    """``name`` (an arm, teacher, unit or problem name from a config) as one path component.

    Letters, digits and ``_ . = , -`` stay as they are, so a plain name is its own file name
    (``no_teacher`` stays ``no_teacher``, ``lam=0.5`` stays ``lam=0.5``); every other character,
    ``%`` included, becomes ``%XX`` for each byte of its UTF-8 encoding (upper-case hex), and so
    does a leading ``.``. The result holds no ``/`` and never starts with ``.`` (``..`` and
    ``.hidden`` stay inside their folder), and two different names never give the same file
    name, on a case-sensitive file system.

    >>> file_name("no teacher"), file_name("a/b"), file_name(".."), file_name("100%")
    ('no%20teacher', 'a%2Fb', '%2E.', '100%25')

    Raises:
        ValueError: ``name`` is empty.
    """
    if not name:
        raise ValueError("a name used in a file name must not be empty")
    return "".join(
        char if char in _KEPT and not (index == 0 and char == ".") else _escaped(char)
        for index, char in enumerate(name)
    )


def _escaped(char: str) -> str:
    return "".join(f"%{byte:02X}" for byte in char.encode("utf-8", "surrogatepass"))


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside ``path``; on success it replaces ``path`` in one step.

    >>> with atomic_path("table.csv") as tmp:
    ...     tmp.write_text("arm,metric\\n")
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main_process() -> bool:
    """Whether this process writes run outputs: True alone, and in a distributed run (see
    `crossdistill.training.distributed`) for its first process (rank 0) only."""
    dist = torch.distributed
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def write_if_changed(path: str | Path, content: str | bytes) -> None:
    """Write ``content`` to ``path`` atomically, unless the file already holds exactly that (a
    rerun of a finished run thus writes nothing, and works in a read-only directory). Only the
    `main_process` writes."""
    path = Path(path)
    if not main_process():
        return
    data = content.encode() if isinstance(content, str) else content
    if path.is_file() and path.read_bytes() == data:
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_rebuildable(path: str | Path, read: Callable[[Path], T]) -> T | None:
    """``read(path)`` for a file the library wrote itself (a checkpoint, a cache entry, a
    finished unit), or None when it is missing or damaged: a damaged file is deleted with a
    warning naming it, and the caller rebuilds what it held."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        return read(path)
    except PermissionError:  # not damage: the file is fine, this process may not read it
        raise
    except UNREADABLE as error:
        first = (str(error).strip().splitlines() or [type(error).__name__])[0]
        warnings.warn(f"{path}: unreadable ({first}); rebuilding it", stacklevel=2)
        path.unlink(missing_ok=True)
        return None
