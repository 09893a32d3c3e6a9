"""Fixtures shared by the test modules."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True)
if os.environ.get("CI"):  # CI replays the same examples every run; locally they are new ones
    settings.load_profile("ci")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The shared real data (``$CROSSDISTILL_TEST_DATA``, else ``shared/data`` beside the repo).

    Skips when the folder is missing on a developer's machine; in CI (``$CI`` set) it must exist.
    """
    default = Path(__file__).resolve().parents[2] / "shared" / "data"
    root = Path(os.environ.get("CROSSDISTILL_TEST_DATA", default))
    if not root.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data folder {root} is missing in CI")
        pytest.skip(f"real data folder {root} is missing")
    return root


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, empty cache and no ``$CROSSDISTILL_DATA``, whatever the caller's environment."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(cache))
    monkeypatch.delenv("CROSSDISTILL_DATA", raising=False)
    return cache
