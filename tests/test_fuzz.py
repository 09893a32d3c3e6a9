"""Property-based: any mutation of a built-in config either validates or is refused with the
project's own error, naming the mutated field (or a field above it) by its dotted path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossdistill.experiments import ConfigError, builtin_configs, kinds, load_config

CONFIGS = {name: yaml.safe_load(path.read_text()) for name, path in builtin_configs().items()}

CHECKED = ("digits", "gd_synthetic", "regression_diabetes", "regression_synthetic")
"""Configs on embedded or generated data, cheap enough to run their kind's whole pre-run check
(data, models, mappings, methods) for every example."""

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(
            st.sampled_from(["name", "lr", "hidden", "x", "small"]), inner, max_size=3
        )
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key path into ``node`` (dict keys and list indices), parents before children."""
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, child in node.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += _paths(child, (*prefix, index))
    return found


def _mutate(config: dict, path: tuple, value: Any, delete: bool) -> dict:
    mutated = json.loads(json.dumps(config))  # a deep copy that unties YAML's aliases (&train)
    node = mutated
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return mutated


@st.composite
def mutations(draw, names: tuple[str, ...]) -> tuple[dict, tuple]:
    name = draw(st.sampled_from(names))
    path = draw(st.sampled_from(_paths(CONFIGS[name])))
    delete = draw(st.booleans()) if draw(st.integers(0, 4)) == 0 else False
    return _mutate(CONFIGS[name], path, draw(VALUES), delete), path


def _validate(tmp_path: Path, config: dict, path: tuple, check: bool) -> None:
    file = tmp_path / "mutated.yaml"
    file.write_text(yaml.safe_dump(config))
    try:
        loaded = load_config(file)
        if check:
            kinds.build(loaded.kind, config=loaded, out=tmp_path / "never", progress=False).check()
    except ConfigError as error:
        if path == ("kind",):  # another kind is another schema: any of its fields may be named
            return
        dotted = [".".join(str(p) for p in path[:n]) for n in range(len(path), 0, -1)]
        assert any(f"'{field}" in str(error) for field in dotted), (path, str(error))
    assert not (tmp_path / "never").exists()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_builtin_config_validates(name) -> None:
    load_config(builtin_configs()[name])


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutation=mutations(tuple(sorted(CONFIGS))))
def test_a_mutated_config_validates_or_names_the_field(tmp_path, mutation) -> None:
    _validate(tmp_path, *mutation, check=False)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutation=mutations(CHECKED))
def test_a_mutated_config_passes_its_whole_check_or_names_the_field(tmp_path, mutation) -> None:
    _validate(tmp_path, *mutation, check=True)
