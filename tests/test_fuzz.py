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

from crossdistill.experiments import ConfigError, builtin_configs, load_config
from crossdistill.registries import kinds

EMBEDDED = {
    "growth_digits": """
kind: growth
name: growth_digits
teacher:
  data: {name: digits, small: 200, seed: 0, classes: [0, 1, 2]}
  model: {name: mlp, hidden: [8]}
  train: {epochs: 1, batch_size: 64, optimizer: {name: sgd, lr: 0.1, momentum: 0.9}}
student:
  data: {name: digits, small: 200, seed: 0}
  model: {name: mlp, hidden: [16]}
  train: {epochs: 1, batch_size: 32}
arms:
  scratch: {extension: scratch}
  zero: {extension: zero}
  uniform: {extension: uniform, theta: 0.05}
  net2net: {extension: net2net, noise: 0.01, exact: true}
  gradmax: {extension: gradmax}
  teacher_finetune: {model: teacher, extension: zero}
  objective:
    extension: zero
    objective: {lam: [0.4, 0.3, 0.2, 0.1], delta: 0.1, rows: 64, train: {epochs: 1}}
seeds: [0, 1]
delta: 0.1
robust_samples: 2
corruption: [0.0, 0.3]
""",
    "multiteacher_digits": """
kind: multiteacher
name: multiteacher_digits
data: {name: digits, small: 200, seed: 0}
teachers:
  first:
    model: {name: mlp, hidden: [16]}
    train: {epochs: 1, batch_size: 64}
    classes: [0, 1, 2, 3, 4, 5, 6]
    layer: "2"
  few:
    model: {name: mlp, hidden: [20]}
    train: {epochs: 1, batch_size: 64}
    rows: 300
    transform: {name: gaussian_noise, variance: 0.01, seed: 3}
    layer: "2"
student:
  model: {name: mlp, hidden: [16]}
  layer: "2"
  train: {epochs: 1, batch_size: 32}
latent: {size: 4, reduce: 5, hidden: 8, margin: 1.0, weight: 0.5, train: {epochs: 1}}
validation: 50
seeds: [0, 1]
arms:
  no_teacher: {lam: 1.0}
  single: {lam: 0.5, temperature: 2, teachers: best_one}
  both: {lam: [0.3, 0.7], temperature: [2, 4], teachers: [first, few], weighting: confidence}
  latent: {lam: 0.5, temperature: 2, latent: triplet}
""",
}
"""Growth and multi-teacher configs on the embedded digits, every field of their kind set."""

CONFIGS = {name: yaml.safe_load(path.read_text()) for name, path in builtin_configs().items()}
CONFIGS |= {name: yaml.safe_load(text) for name, text in EMBEDDED.items()}

CHECKED = ("digits", "gd_synthetic", "regression_diabetes", "regression_synthetic", *EMBEDDED)
"""Configs on embedded or generated data, cheap enough to run their kind's whole pre-run check
(data, models, mappings, methods) for every example."""

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**63, 10**400, 1e308, -1e308, 5e-324])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["", " ", "é", "名前", "🙂", "a/b", "..", "%", "1e-3", "<b>"]),
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


def _validate(tmp_path: Path, config: dict, path: tuple, check: bool) -> bool:
    """Whether ``config`` is refused (a `ConfigError` naming ``path`` or a field above it);
    nothing is written either way."""
    file = tmp_path / "mutated.yaml"
    file.write_text(yaml.safe_dump(config))
    try:
        loaded = load_config(file)
        if check:
            kinds.build(loaded.kind, config=loaded, out=tmp_path / "never", progress=False).check()
    except ConfigError as error:
        # another kind is another schema: any of its fields may be named
        dotted = [".".join(str(p) for p in path[:n]) for n in range(len(path), 0, -1)]
        assert path == ("kind",) or any(f"'{f}" in str(error) for f in dotted), (path, error)
        return True
    finally:
        assert not (tmp_path / "never").exists()
    return False


@pytest.mark.parametrize("name", sorted(builtin_configs()))
def test_every_builtin_config_validates(name) -> None:
    load_config(builtin_configs()[name])


def _numbers(config: dict) -> list[tuple]:
    """The paths of every number (int or float, not bool) in ``config``."""
    found = []
    for path in _paths(config):
        node = config
        for part in path:
            node = node[part]
        if isinstance(node, int | float) and not isinstance(node, bool):
            found.append(path)
    return found


NUMBERS = [(name, path) for name in sorted(CONFIGS) for path in _numbers(CONFIGS[name])]


@pytest.mark.parametrize(("name", "path"), NUMBERS, ids=[f"{n}:{p}" for n, p in NUMBERS])
def test_no_bool_is_taken_for_a_number(tmp_path, name, path) -> None:
    """Every number of every config, replaced by true or false, is refused naming its field."""
    for value in (True, False):
        mutated = _mutate(CONFIGS[name], path, value, delete=False)
        assert _validate(tmp_path, mutated, path, check=name in CHECKED), value


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutation=mutations(tuple(sorted(CONFIGS))))
def test_a_mutated_config_validates_or_names_the_field(tmp_path, mutation) -> None:
    _validate(tmp_path, *mutation, check=False)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(mutation=mutations(CHECKED))
def test_a_mutated_config_passes_its_whole_check_or_names_the_field(tmp_path, mutation) -> None:
    _validate(tmp_path, *mutation, check=True)
