"""Office-31 precomputed features: the three file formats, their errors, and the named loader.

Nothing here touches the network: every feature file is a tiny synthetic one the tests write.
"""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse
import torch

from crossdistill.data import (
    OFFICE31_DOMAINS,
    ArrayData,
    DataFormatError,
    DomainSplits,
    read_feature_file,
)
from crossdistill.registries import datasets

ROWS, DIM = 20, 6


def _features(rows: int = ROWS, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, dim)).astype(np.float32)


def _labels(rows: int = ROWS) -> np.ndarray:
    """Class indices 0..4, each appearing; 0-based."""
    return np.arange(rows) % 5


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray, header: bool = True) -> Path:
    lines = [",".join([*(f"f{j}" for j in range(x.shape[1])), "label"])] if header else []
    lines += [
        ",".join([*map(repr, row.tolist()), str(label)]) for row, label in zip(x, y, strict=True)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _write(path: Path, x: np.ndarray, y: np.ndarray) -> Path:
    """``x`` and 0-based ``y`` in ``path``'s format (in a .mat, 1-based labels in a column)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".mat":
        scipy.io.savemat(path, {"fts": x.astype(np.float64), "labels": (y + 1.0)[:, None]})
    elif path.suffix == ".npz":
        np.savez(path, x=x, y=y)
    else:
        _write_csv(path, x, y)
    return path


def _message(path: Path, *parts: str) -> str:
    """A regex matching a message that names ``path`` and then each of ``parts``, in order."""
    return ".*".join([re.escape(str(path)), *map(re.escape, parts)])


def _assert_equal(a: DomainSplits, b: DomainSplits) -> None:
    for part_a, part_b in zip((a.big, a.small, a.test), (b.big, b.small, b.test), strict=True):
        assert torch.equal(part_a.x, part_b.x) and torch.equal(part_a.y, part_b.y)


def _rows(*parts: ArrayData) -> list[tuple[float, ...]]:
    """The rows (features then label) of ``parts``, sorted: equal lists mean equal row multisets."""
    return sorted(
        (*x.tolist(), float(y)) for part in parts for x, y in zip(part.x, part.y, strict=True)
    )


# ---------------------------------------------------------------- reading one file


@pytest.mark.parametrize("name", ["amazon.mat", "amazon.npz", "amazon.csv"])
def test_reads_each_format(tmp_path: Path, name: str) -> None:
    x, y = _features(), _labels()
    data = read_feature_file(_write(tmp_path / name, x, y))
    assert data.x.shape == (ROWS, DIM) and data.x.dtype == torch.float32
    assert data.y.shape == (ROWS,) and data.y.dtype == torch.int64
    assert data.x.is_contiguous()
    assert torch.equal(data.x, torch.from_numpy(x))
    assert torch.equal(data.y, torch.from_numpy(y))  # .mat labels 1..5 shifted to 0..4


@pytest.mark.parametrize("shape", ["row", "column", "vector"])
@pytest.mark.parametrize("dtype", [np.float64, np.uint8, np.int32])
def test_mat_labels_any_vector_shape_and_dtype(tmp_path: Path, shape: str, dtype: type) -> None:
    labels = (_labels() + 1).astype(dtype)
    labels = {"row": labels[None, :], "column": labels[:, None], "vector": labels}[shape]
    scipy.io.savemat(tmp_path / "d.mat", {"feas": _features(), "gnd": labels}, oned_as="row")
    assert torch.equal(read_feature_file(tmp_path / "d.mat").y, torch.from_numpy(_labels()))


def test_mat_labels_from_zero_are_kept(tmp_path: Path) -> None:
    scipy.io.savemat(tmp_path / "d.mat", {"X": _features(), "Y": _labels()[:, None] + 0.0})
    assert torch.equal(read_feature_file(tmp_path / "d.mat").y, torch.from_numpy(_labels()))


def test_npz_and_csv_labels_are_never_shifted(tmp_path: Path) -> None:
    x, y = _features(), _labels() + 1
    np.savez(tmp_path / "d.npz", features=x, labels=y)
    _write_csv(tmp_path / "d.csv", x, y, header=False)
    for name in ("d.npz", "d.csv"):
        assert torch.equal(read_feature_file(tmp_path / name).y, torch.from_numpy(y))


@pytest.mark.parametrize(
    ("features", "labels"), [("fts", "labels"), ("feas", "label"), ("features", "y"), ("x", "gnd")]
)
def test_mat_keys(tmp_path: Path, features: str, labels: str) -> None:
    scipy.io.savemat(tmp_path / "d.mat", {features: _features(), labels: _labels() + 1})
    data = read_feature_file(tmp_path / "d.mat")
    assert torch.equal(data.x, torch.from_numpy(_features()))
    assert torch.equal(data.y, torch.from_numpy(_labels()))


def test_mat_sparse_features_are_made_dense(tmp_path: Path) -> None:
    x = _features()
    x[x < 0.5] = 0
    scipy.io.savemat(tmp_path / "d.mat", {"fts": scipy.sparse.csc_matrix(x), "labels": _labels()})
    assert torch.equal(read_feature_file(tmp_path / "d.mat").x, torch.from_numpy(x))


def test_csv_without_header_and_with_blank_lines(tmp_path: Path) -> None:
    x, y = _features(), _labels()
    path = _write_csv(tmp_path / "d.csv", x, y, header=False)
    path.write_text(path.read_text() + "\n\n")
    data = read_feature_file(path)
    assert torch.equal(data.x, torch.from_numpy(x)) and torch.equal(data.y, torch.from_numpy(y))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_feature_file(tmp_path / "absent.npz")


# ---------------------------------------------------------------- malformed files


def _bad_mat(path: Path, **fields: object) -> None:
    scipy.io.savemat(path, {"fts": _features(), "labels": _labels(), **fields})


def _bad_npz(path: Path, **fields: object) -> None:
    np.savez(path, **{"x": _features(), "y": _labels(), **fields})


def _mat_v73(path: Path) -> None:
    """A file with the header MATLAB writes for -v7.3 (HDF5), which scipy refuses to read."""
    header = b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + struct.pack("<H", 0x0200) + b"IM"
    path.write_bytes(header + bytes(64))


def _csv(path: Path, text: str) -> None:
    path.write_text(text)


BAD_FILES = {
    "unknown suffix": ("d.txt", lambda p: p.write_text("1,2,0\n"), ["unknown suffix '.txt'"]),
    "no feature key": (
        "d.mat",
        lambda p: scipy.io.savemat(p, {"data": _features(), "labels": _labels()}),
        ["no feature key", "'fts'", "found keys ['data', 'labels']"],
    ),
    "no label key": (
        "d.npz",
        lambda p: np.savez(p, x=_features(), target=_labels()),
        ["no label key", "'y', 'labels'", "found keys ['target', 'x']"],
    ),
    "3-D features": (
        "d.npz",
        lambda p: _bad_npz(p, x=np.zeros((ROWS, 2, 3), np.float32)),
        ["key 'x'", "expected 2-D real features (N, d)", f"float32 ({ROWS}, 2, 3)"],
    ),
    "text features": (
        "d.npz",
        lambda p: _bad_npz(p, x=np.full((ROWS, 2), "a")),
        ["key 'x'", "expected 2-D real features", "<U1"],
    ),
    "rows mismatch": (
        "d.mat",
        lambda p: _bad_mat(p, labels=_labels(ROWS - 1)),
        ["key 'fts' holds 20 rows (20, 6)", "key 'labels' holds 19 labels", "one label per row"],
    ),
    "transposed": (
        "d.npz",
        lambda p: _bad_npz(p, x=_features(DIM, ROWS)),
        ["holds 6 rows (6, 20)", "holds 20 labels", "stored transposed, (d, N)?"],
    ),
    "labels not a vector": (
        "d.npz",
        lambda p: _bad_npz(p, y=np.zeros((ROWS, 2), np.int64)),
        ["key 'y'", "expected labels (N,), (N, 1) or (1, N)", f"int64 ({ROWS}, 2)"],
    ),
    "fractional labels": (
        "d.mat",
        lambda p: _bad_mat(p, labels=_labels() + 0.5),
        ["key 'labels'", "expected integer labels", "float64 values such as 0.5"],
    ),
    "NaN label": (
        "d.csv",
        lambda p: _csv(p, "a,label\n1,0\n2,nan\n"),
        ["the last column (2)", "expected integer labels", "nan"],
    ),
    "text labels": (
        "d.npz",
        lambda p: _bad_npz(p, y=np.array(["cat"] * ROWS)),
        ["key 'y'", "expected integer labels", "<U3 values such as 'cat'"],
    ),
    "negative labels": (
        "d.npz",
        lambda p: _bad_npz(p, y=_labels() - 1),
        ["key 'y'", "expected class indices from 0, found -1..3"],
    ),
    "NaN features": (
        "d.npz",
        lambda p: _bad_npz(p, x=np.where(np.arange(ROWS)[:, None] % 7 == 3, np.nan, _features())),
        [
            "key 'x'",
            "expected finite float32 values",
            "found 18 NaN or infinite in 3 rows: 3, 10, 17 (counted from 0)",
        ],
    ),
    "infinite features": (
        "d.csv",
        lambda p: _csv(p, "1.0,2.0,0\n1e300,inf,1\n"),
        ["columns 1..2", "expected finite float32 values", "found 2 NaN or infinite in 1 rows"],
    ),
    "no rows": (
        "d.npz",
        lambda p: _bad_npz(p, x=np.zeros((0, 3), np.float32), y=np.zeros(0, np.int64)),
        ["key 'x'", "expected at least one row, found (0, 3)"],
    ),
    "corrupt .mat": ("d.mat", lambda p: p.write_bytes(b"garbage" * 30), ["not a readable MATLAB"]),
    "MATLAB v7.3": ("d.mat", _mat_v73, ["MATLAB v7.3 (HDF5)", "convert it to .npz"]),
    "corrupt .npz": ("d.npz", lambda p: p.write_bytes(b"PK\x03\x04junk"), ["not a readable .npz"]),
    "an .npy file": (
        "d.npz",
        lambda p: p.write_bytes(_npy_bytes(_features())),
        ["expected an .npz archive of named arrays", "found one float32 (20, 6) array"],
    ),
    "csv text in a row": (
        "d.csv",
        lambda p: _csv(p, "a,b,label\n1,2,0\n3,x,1\n"),
        ["expected a table of numbers", "found 'x' on line 3, column 2"],
    ),
    "csv ragged": (
        "d.csv",
        lambda p: _csv(p, "1,2,0\n3,4,1\n5,1\n"),
        ["expected a table of numbers", "found 2 fields on line 3, 3 on line 1"],
    ),
    "csv one column": ("d.csv", lambda p: _csv(p, "1\n2\n"), ["at least 2 columns", "found 1"]),
    "csv header only": ("d.csv", lambda p: _csv(p, "a,label\n"), ["one line of numbers", "none"]),
}


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("case", BAD_FILES)
def test_malformed_file_names_the_file_and_the_fault(tmp_path: Path, case: str) -> None:
    name, write, parts = BAD_FILES[case]
    path = tmp_path / name
    write(path)
    with pytest.raises(DataFormatError, match=_message(path, *parts)):
        read_feature_file(path)


# ---------------------------------------------------------------- the registered loader


def test_registered() -> None:
    assert "office31" in datasets.names()
    assert OFFICE31_DOMAINS == ("amazon", "dslr", "webcam")


def test_build_splits_a_domain(tmp_path: Path) -> None:
    x, y = _features(), _labels()
    _write(tmp_path / "office31" / "dslr.mat", x, y)
    spec = {"name": "office31", "domain": "dslr", "data_dir": tmp_path, "small": 5}
    splits = datasets.build(spec)
    assert (len(splits.big), len(splits.small), len(splits.test)) == (9, 5, 6)  # 30 % of 20 = 6
    for part in (splits.big, splits.small, splits.test):
        assert part.x.shape[1:] == (DIM,) and part.x.dtype == torch.float32
        assert part.y.dtype == torch.int64
    assert _all_rows(splits) == _rows(ArrayData(torch.from_numpy(x), torch.from_numpy(y)))
    _assert_equal(splits, datasets.build(spec))
    other = datasets.build(spec, seed=1)
    assert not torch.equal(other.test.x, splits.test.x)
    assert not torch.equal(other.small.x, splits.small.x)
    assert len(datasets.build({**spec, "test": 0.5}).test) == 10


@pytest.mark.parametrize(
    "name", ["webcam.npz", "webcam.csv", "webcam_fc7.mat", "webcam_fc7.csv", "webcam_decaf.npz"]
)
def test_every_accepted_file_name(tmp_path: Path, name: str) -> None:
    _write(tmp_path / "office31" / name, _features(), _labels())
    splits = datasets.build("office31", domain="webcam", small=5, data_dir=tmp_path)
    assert len(splits.train) + len(splits.test) == ROWS


def test_places_in_order(
    tmp_path: Path, isolated_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``data_dir`` first, then ``$CROSSDISTILL_DATA``, then the cache; in folder ``folder``."""
    cached = _write(isolated_env / "features" / "amazon.npz", _features(seed=1), _labels())
    build = {"name": "office31", "domain": "amazon", "folder": "features", "small": 5}
    assert _all_rows(datasets.build(build)) == _rows(read_feature_file(cached))
    monkeypatch.setenv("CROSSDISTILL_DATA", str(tmp_path / "env"))
    in_env = _write(tmp_path / "env" / "features" / "amazon_fc7.csv", _features(seed=2), _labels())
    assert _all_rows(datasets.build(build)) == _rows(read_feature_file(in_env))
    given = _write(tmp_path / "given" / "features" / "amazon.mat", _features(seed=3), _labels())
    splits = datasets.build({**build, "data_dir": tmp_path / "given"})
    assert _all_rows(splits) == _rows(read_feature_file(given))


def _all_rows(splits: DomainSplits) -> list[tuple[float, ...]]:
    return _rows(splits.big, splits.small, splits.test)


@pytest.mark.parametrize("download", [True, False])
def test_missing_folder_lists_every_place(
    tmp_path: Path, isolated_env: Path, download: bool
) -> None:
    (tmp_path / "office31").mkdir()
    (tmp_path / "office31" / "Amazon.MAT").write_bytes(b"")
    with pytest.raises(FileNotFoundError) as raised:
        datasets.build("office31", domain="amazon", data_dir=tmp_path, download=download)
    message = str(raised.value)
    assert f"{tmp_path / 'office31'} (data_dir): none of the accepted names; holds Amazon.MAT" in (
        message
    )
    assert f"{isolated_env / 'office31'} (cache): no such folder" in message
    assert "$CROSSDISTILL_DATA is not set" in message
    assert "Office-31 features have no download" in message
    names = "amazon.mat, amazon.npz, amazon.csv, amazon_fc7.mat, amazon_fc7.npz, amazon_fc7.csv, "
    assert names + "amazon_decaf.mat, amazon_decaf.npz, amazon_decaf.csv" in message
    assert "in <dir>/office31/, then set CROSSDISTILL_DATA=<dir> or pass data_dir=<dir>" in message


def test_missing_folder_names_crossdistill_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CROSSDISTILL_DATA", str(tmp_path / "env"))
    with pytest.raises(FileNotFoundError, match=r"env/office31 \(\$CROSSDISTILL_DATA\)"):
        datasets.build("office31", domain="dslr")


def test_two_files_of_a_domain_are_refused(tmp_path: Path) -> None:
    for name in ("dslr.mat", "dslr_fc7.npz"):
        _write(tmp_path / "office31" / name, _features(), _labels())
    with pytest.raises(
        ValueError, match="holds 2 feature files of domain 'dslr': dslr.mat, dslr_fc7"
    ):
        datasets.build("office31", domain="dslr", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"domain": "caltech"}, "unknown Office-31 domain 'caltech'; expected one of amazon, dslr"),
        ({"domain": "dslr", "test": 1.0}, "test must be a fraction strictly between 0 and 1"),
        ({"domain": "dslr", "test": 0.01}, "test=0.01 of the 20 rows of .* gives 0 Test rows"),
        ({"domain": "dslr", "small": 14}, "small must be between 1 and 13"),
    ],
)
def test_bad_settings(tmp_path: Path, spec: dict[str, object], message: str) -> None:
    _write(tmp_path / "office31" / "dslr.npz", _features(), _labels())
    with pytest.raises(ValueError, match=message):
        datasets.build({"name": "office31", "data_dir": tmp_path, **spec})


def test_labels_beyond_office31_classes(tmp_path: Path) -> None:
    path = _write(tmp_path / "office31" / "amazon.npz", _features(), _labels() + 27)
    with pytest.raises(
        DataFormatError,
        match=_message(path, "label 31 at row 4 outside 0–30", ": office31 has 31 classes"),
    ):
        datasets.build("office31", domain="amazon", data_dir=tmp_path, small=5)
