"""Nothing in a run directory runs code, and a name from a config never reaches another name's
files: a pickle planted as any checkpoint or cache entry is refused and rebuilt, and every arm,
teacher or unit name becomes a file name of its own (`crossdistill.files.file_name`) inside the
run directory."""

from __future__ import annotations

import contextlib
import pickle
import string
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from hypothesis import example, given
from hypothesis import strategies as st

from crossdistill.cli import main
from crossdistill.experiments.outputs import read_csv
from crossdistill.files import file_name

DISTILLATION = """
name: planted_distillation
data: {name: digits, small: 120, seed: 0}
validation: 30
teachers:
  teacher:
    model: {name: mlp, hidden: [16]}
    train: {epochs: 1, batch_size: 64}
student:
  model: {name: mlp, hidden: [8]}
  train: {epochs: 2, batch_size: 32}
seeds: [0]
arms:
  no_teacher: {lam: 1.0}
  teacher: {lam: [0.3, 0.7], temperature: 2}
"""

GROWTH = """
kind: growth
name: planted_growth
teacher:
  data: {name: digits, small: 120, seed: 0}
  model: {name: mlp, hidden: [8]}
  train: {epochs: 1, batch_size: 64}
student:
  model: {name: mlp, hidden: [16]}
  train: {epochs: 1, batch_size: 32}
arms:
  scratch: {extension: scratch}
  objective:
    extension: zero
    objective: {lam: [0.4, 0.3, 0.2, 0.1], rows: 32, train: {epochs: 1, batch_size: 32}}
seeds: [0]
corruption: [0.0]
"""

MULTITEACHER = """
kind: multiteacher
name: planted_multiteacher
data: {name: digits, small: 120, seed: 0}
teachers:
  first:
    model: {name: mlp, hidden: [16]}
    train: {epochs: 1, batch_size: 64}
    classes: [0, 1, 2, 3, 4, 5, 6]
    layer: "2"
  last:
    model: {name: mlp, hidden: [12]}
    train: {epochs: 1, batch_size: 64}
    classes: [4, 5, 6, 7, 8, 9]
    layer: "2"
student:
  model: {name: mlp, hidden: [8]}
  layer: "2"
  train: {epochs: 1, batch_size: 32}
latent: {size: 4, reduce: 5, hidden: 8, train: {epochs: 1, batch_size: 64}}
validation: 30
seeds: [0]
arms:
  average: {lam: [0.3, 0.7], temperature: 2}
  latent: {lam: 0.5, temperature: 2, latent: triplet}
"""


class _Planted:
    """What an attacker plants: a pickle whose loading writes ``marker`` (any code could run)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return Path.write_text, (self.marker, "ran")


def _plant(path: Path, marker: Path, zipped: bool) -> None:
    """Replace ``path`` by a `_Planted` pickle: in ``torch.save``'s zip format, or bare."""
    if zipped:
        torch.save(_Planted(marker), path)
    else:
        path.write_bytes(pickle.dumps(_Planted(marker), protocol=2))


def _run(config: Path, out: Path) -> int:
    return main(["run", str(config), "--out", str(out), "--quiet"])


def _numbers(out: Path) -> list[dict[str, str]]:
    """The rows of ``out/table.csv`` but timings (a rerun's differ)."""
    return [row for row in read_csv(out / "table.csv") if "seconds" not in row["metric"]]


def test_a_planted_pickle_is_live_when_loaded_unsafely(tmp_path) -> None:
    """The planted files of the test below would run their code under ``weights_only=False``."""
    for zipped in (True, False):
        marker, path = tmp_path / f"ran-{zipped}", tmp_path / f"planted-{zipped}.pt"
        _plant(path, marker, zipped)
        with contextlib.suppress(RuntimeError):  # a bare pickle: "invalid magic number", after
            torch.load(path, weights_only=False)  # its code has run
        assert marker.read_text() == "ran"


@pytest.mark.parametrize(
    ("config", "has_cache"),
    [(DISTILLATION, True), (GROWTH, False), (MULTITEACHER, True)],
    ids=["distillation", "growth", "multiteacher"],
)
def test_planted_pickles_in_a_run_directory_never_run_and_are_rebuilt(
    tmp_path, capsys, config: str, has_cache: bool
) -> None:
    path, out, marker = tmp_path / "config.yaml", tmp_path / "run", tmp_path / "marker"
    path.write_text(config)
    assert _run(path, out) == 0
    table = _numbers(out)
    planted = sorted(out.rglob("*.pt"))
    assert any(p.is_relative_to(out / "checkpoints") for p in planted), planted
    if has_cache:
        assert any(p.is_relative_to(out / "cache") for p in planted), planted
    for k, file in enumerate(planted):
        _plant(file, marker, zipped=k % 2 == 0)
    for unit in (out / "units").iterdir():
        unit.unlink()  # every unit reruns, reading its checkpoints
    capsys.readouterr()
    with pytest.warns(UserWarning, match="unreadable") as warned:
        assert _run(path, out) == 0, capsys.readouterr().err
    assert not marker.exists()
    named = "\n".join(str(w.message) for w in warned)
    assert all(f"{file}: unreadable" in named for file in planted), named
    assert _numbers(out) == table  # rebuilt to the same numbers
    for file in planted:  # each one made again, and safe to read
        torch.load(file, weights_only=True)


def test_arm_and_teacher_names_that_a_file_name_cannot_hold_keep_their_own_files(
    tmp_path,
) -> None:
    arms = {
        "no teacher": "{lam: 1.0}",
        "no_teacher": "{lam: 0.5, temperature: 2}",
        "a/b": "{lam: 0.7, temperature: 2}",
        "..": "{lam: [0.3, 0.7], temperature: 2}",
        "../../../escaped": "{lam: 0.3, temperature: 4}",
    }
    config = (
        DISTILLATION.replace("  teacher:\n    model", "  ../../../teacher:\n    model")
        .replace("seeds: [0]", "seeds: [0, 1]")
        .split("arms:")[0]
    )
    config += "arms:\n" + "".join(f"  {name!r}: {arm}\n" for name, arm in arms.items())
    root = tmp_path / "deep" / "er"
    root.mkdir(parents=True)
    path, out = root / "config.yaml", root / "run"
    path.write_text(config)
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert _run(path, out) == 0
    outside = sorted(p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(out))
    assert [p for p in outside if not p.is_relative_to(tmp_path / "cache")] == before
    cells = {(row["arm"], row["metric"]): row for row in read_csv(out / "table.csv")}
    for arm in arms:
        assert cells[arm, "accuracy"]["n"] == "2", arm
    assert sorted(p.name for p in (out / "units").iterdir()) == sorted(
        f"{file_name(arm)}.json" for arm in arms
    )
    assert (out / "checkpoints" / "teachers" / "%2E.%2F..%2F..%2Fteacher.pt").is_file()
    assert all(p.parent.name != ".." for p in out.rglob("*"))


SAFE = string.ascii_letters + string.digits + "_.=,-"


@given(st.text(min_size=1))
@example("\ud800")  # a lone surrogate, which no UTF-8 text holds
@example("..")
@example("%41")
def test_file_name_is_one_path_component_that_spells_out_its_name(name: str) -> None:
    encoded = file_name(name)
    assert encoded and "/" not in encoded and not encoded.startswith(".")
    assert set(encoded) <= set(SAFE + "%0123456789ABCDEF")
    # decoding gives the name back, so two different names never share a file name
    assert unquote(encoded, errors="surrogatepass") == name


@given(st.lists(st.text(min_size=1), unique=True))
def test_file_names_of_different_names_differ(names: list[str]) -> None:
    assert len({file_name(name) for name in names}) == len(names)


@given(st.text(SAFE, min_size=1).filter(lambda name: not name.startswith(".")))
@example("no_teacher")
@example("lam=0.5,T=2")
def test_a_name_that_is_already_a_safe_file_name_is_kept(name: str) -> None:
    assert file_name(name) == name


def test_file_name_examples_and_an_empty_name() -> None:
    assert [file_name(n) for n in ("no teacher", "a/b", "..", ".x", "100%", "é")] == [
        "no%20teacher",
        "a%2Fb",
        "%2E.",
        "%2Ex",
        "100%25",
        "%C3%A9",
    ]
    with pytest.raises(ValueError, match="empty"):
        file_name("")
