"""Config validation: unknown or ill-typed fields are errors that name the file and the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossdistill.experiments.config import ConfigError, builtin_configs, load_config

GOOD = """\
name: tiny
data: {name: digits, small: 100}
validation: 20
teachers:
  teacher:
    model: {name: mlp, hidden: [32]}
    train: {epochs: 2}
student:
  model: {name: mlp, hidden: [8]}
  train: {epochs: 2}
arms:
  no_teacher: {lam: 1.0}
  teacher: {lam: [0.3, 0.7], temperature: 2}
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return path


def test_a_good_config_loads_with_defaults(tmp_path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    assert config.seeds == [0, 1, 2]
    assert config.arms["teacher"].settings() == [(0.3, 2), (0.7, 2)]
    assert config.arms["teacher"].method == "distillation"
    assert config.teacher_of(config.arms["no_teacher"]) == "teacher"


@pytest.mark.parametrize(
    ("old", "new", "field", "found"),
    [
        ("validation: 20", "validation: 20\nepoch: 3", "epoch", "3"),
        (
            "train: {epochs: 2}\nstudent",
            "train: {epochs: ten}\nstudent",
            "teachers.teacher.train.epochs",
            "ten",
        ),
        ("lam: 1.0", "lam: 1.5", "arms.no_teacher", "1.5"),
        ("hidden: [8]", "hidden: [8], width: 3", "student.model", "width"),
        ("name: digits", "name: digitz", "data", "digitz"),
    ],
)
def test_bad_fields_are_named(tmp_path, old, new, field, found) -> None:
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert str(path) in message
    assert f"'{field}" in message
    assert found in message


def test_missing_field_is_named(tmp_path) -> None:
    path = _write(tmp_path, GOOD.replace("name: tiny\n", ""))
    with pytest.raises(ConfigError, match=r"field 'name': Field required"):
        load_config(path)


def test_overrides(tmp_path) -> None:
    path = _write(tmp_path, GOOD)
    config = load_config(path, ["seeds=[4,5]", "student.train.epochs=7", "data.big_size=50"])
    assert config.seeds == [4, 5]
    assert config.student.train.epochs == 7
    assert config.data.big_size == 50
    with pytest.raises(ConfigError, match="expected key=value"):
        load_config(path, ["seeds"])
    with pytest.raises(ConfigError, match="'studnet'"):
        load_config(path, ["studnet.train.epochs=3"])


def test_unknown_experiment_and_bad_yaml(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no experiment 'nope'.*digits"):
        load_config("nope")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "name: [unclosed"))


def test_every_builtin_config_is_valid() -> None:
    configs = builtin_configs()
    assert {"digits", "fmnist_identity", "fmnist_noise", "fmnist_dilation"} <= set(configs)
    for name in configs:
        assert load_config(name).name == name
