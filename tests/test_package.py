"""The package around the code: ``--version`` and ``python -m crossdistill``, a closed pipe that
ends the command quietly, ``--help``, ``--version`` and ``list`` answering without importing torch
or scikit-learn, the license and the citation file agreeing with the installed metadata."""

from __future__ import annotations

import importlib
import os
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

import crossdistill
from crossdistill.builtin import first_sentence
from crossdistill.cli import CLOSED_PIPE_STATUS
from crossdistill.experiments import builtin_configs, load_config
from crossdistill.registries import mappings, methods, models

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, "-m", "crossdistill"]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=300)


def test_version_is_the_installed_metadata() -> None:
    done = _run("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"crossdistill {version('crossdistill')}\n"
    assert crossdistill.__version__ == version("crossdistill")


def test_python_m_crossdistill_help_exits_0() -> None:
    done = _run("--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: crossdistill ")
    assert "list" in done.stdout and "--version" in done.stdout


def test_a_reader_that_closes_after_one_line_leaves_no_traceback() -> None:
    # like `crossdistill list | head -1`; the child may or may not have written everything
    # before the close, so both endings are fine as long as nothing is said on stderr
    child = subprocess.Popen(
        [*COMMAND, "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    first = child.stdout.readline()
    child.stdout.close()
    stderr = child.stderr.read()
    status = child.wait(timeout=300)
    assert first.split()[0] == min(builtin_configs())
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr
    assert stderr == ""
    assert status in (0, CLOSED_PIPE_STATUS)


def test_a_reader_closed_before_any_output_ends_the_command_quietly() -> None:
    # deterministic: the read end is closed before the child starts, so its first write fails
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [*COMMAND, "list"], stdout=write, stderr=subprocess.PIPE, text=True, timeout=300
        )
    finally:
        os.close(write)
    assert done.stderr == ""
    assert done.returncode == CLOSED_PIPE_STATUS


def test_license_is_mit() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License")
    assert "Copyright (c) 2026 The crossdistill authors" in text


def test_citation_version_is_the_installed_metadata() -> None:
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0"
    assert citation["title"] == "crossdistill"
    assert citation["license"] == "MIT"
    assert citation["authors"] == [{"name": "The crossdistill authors"}]
    assert citation["version"] == version("crossdistill")


HEAVY = ("torch", "sklearn")


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["list"]])
def test_help_version_and_list_import_neither_torch_nor_sklearn(argv) -> None:
    program = (
        "import sys\n"
        "from crossdistill.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"  # argparse's exit after --help and --version
        "    pass\n"
        f"print(sorted(set({HEAVY!r}) & set(sys.modules)), file=sys.stderr)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "[]\n"
    assert done.stdout


def test_help_starts_in_a_small_multiple_of_a_bare_python() -> None:
    def median_seconds(*args: str) -> float:
        seconds = []
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run([sys.executable, *args], capture_output=True, check=True, timeout=300)
            seconds.append(time.perf_counter() - start)
        return statistics.median(seconds)

    bare = median_seconds("-c", "pass")
    help_ = median_seconds("-m", "crossdistill", "--help")
    # measured on 2 loaded CPU cores: bare ≈ 18 ms, --help ≈ 115 ms (6.5x); importing torch
    # alone takes ≈ 130x a bare python there, scikit-learn ≈ 90x, so 25x only fails when one of
    # them (or something as heavy) is imported again
    assert help_ < 25 * bare, f"--help took {help_:.3f} s, a bare python {bare:.3f} s"


def test_list_shows_each_builtin_config_with_the_first_sentence_of_its_description() -> None:
    done = _run("list")
    assert done.returncode == 0, done.stderr
    expected = []
    for name, path in sorted(builtin_configs().items()):
        expected.append(f"{name:26s} {first_sentence(load_config(path).description)}")
    assert done.stdout.splitlines() == expected
    assert len(expected) >= 20 and all(line.split(maxsplit=1)[1] for line in expected)


def _modules() -> list[str]:
    """Every module of the installed package by its dotted name, found on disk."""
    root = Path(crossdistill.__file__).parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_imports_by_its_dotted_name_and_exports_what_its_all_names() -> None:
    modules = _modules()
    assert {"crossdistill.mappings.vae", "crossdistill.methods.gdda"} <= set(modules)
    for name in modules:
        module = importlib.import_module(name)
        assert module.__name__ == name
        for public in getattr(module, "__all__", []):
            assert getattr(module, public) is not None, f"{name}.{public}"


def _python(code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter; it must exit 0."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done


def test_subpackages_are_the_modules_and_registries_live_apart() -> None:
    done = _python(
        "import crossdistill.mappings.vae as v, crossdistill.methods.gdda as g; "
        "import crossdistill.models as m; import types; "
        "assert isinstance(m, types.ModuleType), m; print(m.__name__)"
    )
    assert done.stdout == "crossdistill.models\n"
    for name, registry in [("models", models), ("mappings", mappings), ("methods", methods)]:
        assert getattr(crossdistill, name) is importlib.import_module(f"crossdistill.{name}")
        assert not hasattr(getattr(crossdistill, name), name), f"crossdistill.{name}.{name}"
        assert registry.names()


def test_a_registry_fills_itself_on_first_read_without_importing_at_creation() -> None:
    _python(
        "import sys; from crossdistill.registries import models, datasets; "
        "assert 'torch' not in sys.modules; "
        "assert 'mlp' in models.names() and 'generated_mnist' in datasets.names(); "
        "assert 'torch' in sys.modules"
    )


def test_public_names_are_imported_on_first_use() -> None:
    assert set(crossdistill.__all__) <= set(dir(crossdistill))
    assert all(getattr(crossdistill, name) is not None for name in crossdistill.__all__)
    from crossdistill import fit
    from crossdistill.training import fit as training_fit

    assert fit is training_fit is crossdistill.fit
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        crossdistill.nothing  # noqa: B018
