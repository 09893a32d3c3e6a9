"""Office-31 as precomputed deep features: one feature matrix and its labels per domain.

Office-31 (Saenko et al., 2010) holds 4 110 photos of 31 kinds of office objects in three domains:
``amazon`` (2 817 product photos from amazon.com), ``dslr`` (498) and ``webcam`` (795). Domain
adaptation work reads features computed once per photo by a network, e.g. AlexNet's FC7 layer or
DeCAF (4 096 values each). No official, checksummed copy of such features can be downloaded, so the
user puts one file per domain into a folder (``office31`` by default) in one of the places
:func:`~crossdistill.data.sources.locate` looks in: ``data_dir``, ``$CROSSDISTILL_DATA``, the
cache. A domain's file is named ``<domain>``, ``<domain>_fc7`` or ``<domain>_decaf``, then
``.mat``, ``.npz`` or ``.csv``; :func:`read_feature_file` describes the three formats.
"""

from __future__ import annotations

import os
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import scipy.io
import scipy.sparse
import torch

from ..registries import datasets
from .arrays import ArrayData
from .checks import check_labels
from .datasets import DomainSplits, split_held_out
from .idx import DataFormatError
from .sources import DatasetNotFoundError, read_or_rebuild, search_places

OFFICE31_DOMAINS = ("amazon", "dslr", "webcam")
"""The three Office-31 domains: amazon.com product photos, DSLR photos and webcam photos."""

_CLASSES = 31
_STEMS = ("{domain}", "{domain}_fc7", "{domain}_decaf")
_SUFFIXES = (".mat", ".npz", ".csv")

_MAT_FEATURES = ("fts", "feas", "features", "X", "x")
_MAT_LABELS = ("labels", "label", "y", "Y", "gnd")
_NPZ_FEATURES = ("x", "features")
_NPZ_LABELS = ("y", "labels")
"""The keys a file's features and labels may have, the first present taken."""

_SHOWN = 10
"""How many file names or row numbers an error message lists at most."""

_Field = tuple[object, str]
"""A value read from a file and where it was, e.g. ``"key 'fts'"``, for error messages."""


def read_feature_file(path: str | Path) -> ArrayData:
    """One domain's features and class labels from a ``.mat``, ``.npz`` or ``.csv`` file.

    - ``.mat`` (MATLAB up to v7, read with :func:`scipy.io.loadmat`): the features, dense or
      sparse, under the first of the keys ``fts``, ``feas``, ``features``, ``X``, ``x``; the labels
      under the first of ``labels``, ``label``, ``y``, ``Y``, ``gnd``. Labels whose smallest value
      is 1 are MATLAB's 1-based class numbers and are shifted down by one; labels whose smallest
      value is 0 are kept as they are.
    - ``.npz`` (numpy): features under ``x`` or ``features``, labels under ``y`` or ``labels``.
      Never shifted.
    - ``.csv``: one comma-separated line per sample, the features then the label in the last
      column, below an optional header line (a first line with a field that is not a number).
      Never shifted.

    Labels may be a vector ``(N,)``, a column ``(N, 1)`` or a row ``(1, N)``, and stored as
    floats when every value is a whole number.

    Returns:
        x float32 ``(N, d)`` and y int64 ``(N,)``, class indices from 0, in the file's row order.

    Raises:
        DataFormatError: the suffix is none of the three; the file cannot be read; a key is missing
            (the message lists the keys found); the features are not a 2-D real matrix with at
            least one row, or hold NaN or infinite values; the labels are not one integer per
            feature row, or are negative. The message names ``path``, the key or column, what was
            expected and what was found.
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".mat":
        (features, at_features), (labels, at_labels) = _read_mat(path)
    elif suffix == ".npz":
        (features, at_features), (labels, at_labels) = _read_npz(path)
    elif suffix == ".csv":
        (features, at_features), (labels, at_labels) = _read_csv(path)
    else:
        raise DataFormatError(
            f"{path}: unknown suffix {path.suffix!r}; expected one of {', '.join(_SUFFIXES)}"
        )
    x = _features(path, features, at_features)
    y = _labels(path, labels, at_labels)
    if len(y) != len(x):
        hint = "; are the features stored transposed, (d, N)?" if x.shape[1] == len(y) else ""
        raise DataFormatError(
            f"{path}: {at_features} holds {len(x)} rows {tuple(x.shape)} but {at_labels} holds "
            f"{len(y)} labels; expected one label per row{hint}"
        )
    if suffix == ".mat" and y.min() == 1:
        y -= 1  # MATLAB's 1-based class numbers
    if y.min() < 0:
        raise DataFormatError(
            f"{path}: {at_labels}: expected class indices from 0, found {y.min()}..{y.max()}"
        )
    return ArrayData(torch.from_numpy(x), torch.from_numpy(y))


@datasets.register("office31")
def office31(
    *,
    domain: str,
    small: int = 31,
    seed: int = 0,
    test: float = 0.3,
    folder: str = "office31",
    data_dir: str | Path | None = None,
    download: bool = True,
) -> DomainSplits:
    """One Office-31 domain's precomputed features, split into Big / Small / Test.

    x float32 ``(N, d)`` (d = 4 096 for AlexNet FC7 or DeCAF features), y int64 ``(N,)`` in
    0..30. Test is a seeded random ``round(test * N)`` rows (30 % by default); Small is a seeded
    random ``small`` rows of the rest (31 by default, as many as there are classes, though drawn
    at random, not one per class) and Big the others.

    The file is ``<domain>.mat``, ``.npz`` or ``.csv``, or the same with ``<domain>_fc7`` or
    ``<domain>_decaf``, in ``folder`` (a name or relative path) under ``data_dir``,
    ``$CROSSDISTILL_DATA`` or the cache, looked in in that order; it is read with
    :func:`read_feature_file`. Nothing is ever downloaded: ``download`` is taken, like every
    loader's, and ignored.

    Raises:
        ValueError: ``domain`` is not one of amazon, dslr, webcam; ``test`` is not a fraction
            strictly between 0 and 1; the sizes leave Big, Small or Test empty; or the first folder
            holding a file of the domain holds several.
        DatasetNotFoundError: (a FileNotFoundError) no place holds a file of the domain; the
            message lists every place looked in and the accepted file names.
        DataFormatError: the file is malformed (see :func:`read_feature_file`) or a label goes
            beyond 30 (the message names the file, the label and its row).
    """
    if domain not in OFFICE31_DOMAINS:
        raise ValueError(
            f"unknown Office-31 domain {domain!r}; expected one of {', '.join(OFFICE31_DOMAINS)}"
        )
    if not 0 < test < 1:
        raise ValueError(f"test must be a fraction strictly between 0 and 1, got {test}")
    path = _feature_file(domain, folder, data_dir)
    data = read_or_rebuild(path, read_feature_file)
    check_labels(data.y, _CLASSES, f"{path}:", "office31")
    held_out = round(test * len(data))
    if not 0 < held_out < len(data):
        raise ValueError(
            f"test={test} of the {len(data)} rows of {path} gives {held_out} Test rows; "
            f"expected 1..{len(data) - 1}"
        )
    return split_held_out(data, held_out, small, seed, _CLASSES)


def feature_file_names(domain: str) -> list[str]:
    """The file names an Office-31 domain's features may have, in the order they are listed in
    messages."""
    return [stem.format(domain=domain) + suffix for stem in _STEMS for suffix in _SUFFIXES]


def _feature_file(domain: str, folder: str, data_dir: str | Path | None) -> Path:
    """The one feature file of ``domain`` in the first place that holds any."""
    names = feature_file_names(domain)
    places = search_places(folder, data_dir)
    looked = []
    for place, origin in places:
        found = [place / name for name in names if (place / name).is_file()]
        if len(found) == 1:
            return found[0]
        if found:
            raise ValueError(
                f"{place} holds {len(found)} feature files of domain {domain!r}: "
                f"{', '.join(path.name for path in found)}; keep one, or move the others away"
            )
        looked.append(f"  {place} ({origin}): {_contents(place)}")
    unset = "" if os.environ.get("CROSSDISTILL_DATA") else "  ($CROSSDISTILL_DATA is not set)\n"
    raise DatasetNotFoundError(
        f"cannot find Office-31 features of domain {domain!r} in folder {folder!r}; looked in:\n"
        + "\n".join(looked)
        + f"\n{unset}Office-31 features have no download; put them there yourself: one of "
        f"{', '.join(names)} in <dir>/{folder}/, then set CROSSDISTILL_DATA=<dir> or pass "
        "data_dir=<dir>."
    )


def _contents(place: Path) -> str:
    """What a folder searched in vain holds, for an error message."""
    if not place.is_dir():
        return "no such folder"
    names = sorted(entry.name for entry in place.iterdir() if not entry.name.startswith("."))
    if not names:
        return "empty folder"
    more = f", … ({len(names) - _SHOWN} more)" if len(names) > _SHOWN else ""
    return f"none of the accepted names; holds {', '.join(names[:_SHOWN])}{more}"


def _read_mat(path: Path) -> tuple[_Field, _Field]:
    """The features and labels of a MATLAB file."""
    with path.open("rb") as file:
        try:
            content = scipy.io.loadmat(file)
        except NotImplementedError as error:  # scipy's answer to v7.3 files
            raise DataFormatError(
                f"{path}: a MATLAB v7.3 (HDF5) file, which scipy cannot read; "
                "save it with save(..., '-v7') or convert it to .npz"
            ) from error
        # A corrupt file can raise almost any exception (IndexError, MatReadError, ...).
        except Exception as error:
            raise DataFormatError(f"{path}: not a readable MATLAB file: {error!r}") from error
    fields = {key: value for key, value in content.items() if not key.startswith("__")}
    return _pick(path, fields, _MAT_FEATURES, "feature"), _pick(path, fields, _MAT_LABELS, "label")


def _read_npz(path: Path) -> tuple[_Field, _Field]:
    """The features and labels of a numpy ``.npz`` archive (no pickled objects)."""
    with path.open("rb") as file:
        try:
            loaded = np.load(file, allow_pickle=False)
            if isinstance(loaded, np.lib.npyio.NpzFile):
                with loaded:
                    fields = {key: loaded[key] for key in loaded.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise DataFormatError(f"{path}: not a readable .npz archive: {error!r}") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DataFormatError(
            f"{path}: expected an .npz archive of named arrays, found one "
            f"{_describe(loaded)} array (an .npy file)"
        )
    return _pick(path, fields, _NPZ_FEATURES, "feature"), _pick(path, fields, _NPZ_LABELS, "label")


def _read_csv(path: Path) -> tuple[_Field, _Field]:
    """The feature columns and the last column of a CSV table of numbers."""
    with path.open(encoding="utf-8-sig") as file:
        header = not _numbers(file.readline())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(
                path, delimiter=",", skiprows=int(header), ndmin=2, encoding="utf-8-sig"
            )
    except ValueError as error:
        raise DataFormatError(
            f"{path}: expected a table of numbers, {_bad_line(path, header) or error}"
        ) from error
    if not len(table):
        raise DataFormatError(f"{path}: expected one line of numbers per sample, found none")
    if table.shape[1] < 2:
        raise DataFormatError(
            f"{path}: expected at least 2 columns (features, then the label), "
            f"found {table.shape[1]}"
        )
    columns = f"columns 1..{table.shape[1] - 1}"
    return (table[:, :-1], columns), (table[:, -1], f"the last column ({table.shape[1]})")


def _numbers(line: str) -> bool:
    """Whether every comma-separated field of ``line`` is a number."""
    try:
        [float(field) for field in line.split(",")]
    except ValueError:
        return False
    return True


def _bad_line(path: Path, header: bool) -> str | None:
    """The first line of a CSV file with a field that is not a number or a wrong field count."""
    width = None
    with path.open(encoding="utf-8-sig") as file:
        for number, line in enumerate(file, 1):
            if (number == 1 and header) or not line.strip() or line.lstrip().startswith("#"):
                continue
            fields = line.split("#")[0].split(",")
            width = width or (number, len(fields))
            if len(fields) != width[1]:
                return f"found {len(fields)} fields on line {number}, {width[1]} on line {width[0]}"
            for column, field in enumerate(fields, 1):
                if not _numbers(field):
                    return f"found {field.strip()!r} on line {number}, column {column}"
    return None


def _pick(path: Path, fields: dict[str, object], keys: tuple[str, ...], what: str) -> _Field:
    """The value under the first of ``keys`` found in ``fields``."""
    for key in keys:
        if key in fields:
            return fields[key], f"key {key!r}"
    raise DataFormatError(
        f"{path}: no {what} key (one of {', '.join(map(repr, keys))}); found keys {sorted(fields)}"
    )


def _features(path: Path, value: object, where: str) -> np.ndarray:
    """``value`` as a C-ordered float32 ``(N, d)`` array of finite numbers, N ≥ 1."""
    if scipy.sparse.issparse(value):
        value = value.toarray()
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind not in "iuf":
        raise DataFormatError(
            f"{path}: {where}: expected 2-D real features (N, d), found {_describe(value)}"
        )
    if not len(value):
        raise DataFormatError(f"{path}: {where}: expected at least one row, found {value.shape}")
    with np.errstate(over="ignore"):
        x = np.ascontiguousarray(value, dtype=np.float32)
    bad = ~np.isfinite(x)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        raise DataFormatError(
            f"{path}: {where}: expected finite float32 values, found {int(bad.sum())} NaN or "
            f"infinite in {len(rows)} rows: {', '.join(map(str, rows[:_SHOWN]))}"
            f"{', …' if len(rows) > _SHOWN else ''} (counted from 0)"
        )
    return x


def _labels(path: Path, value: object, where: str) -> np.ndarray:
    """``value``, a vector or a one-row or one-column matrix of whole numbers, as int64 ``(N,)``."""
    if isinstance(value, np.ndarray) and value.ndim == 2 and 1 in value.shape:
        value = value.reshape(-1)
    if not isinstance(value, np.ndarray) or value.ndim != 1:
        raise DataFormatError(
            f"{path}: {where}: expected labels (N,), (N, 1) or (1, N), found {_describe(value)}"
        )
    if value.dtype.kind in "iu":
        return value.astype(np.int64)
    if value.dtype.kind == "f":
        whole = np.isfinite(value) & (value == np.round(value))
        if whole.all():
            return value.astype(np.int64)
        example = value[~whole][0].item()
    else:
        example = value[0].item() if len(value) else None
    raise DataFormatError(
        f"{path}: {where}: expected integer labels, found {value.dtype} values such as {example!r}"
    )


def _describe(value: object) -> str:
    """An array's dtype and shape, or another value's type."""
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {value.shape}"
    return type(value).__name__
