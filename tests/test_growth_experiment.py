"""The growth kind end to end on the embedded digits: every initialisation, the objective, grown
classes and a grown input, the table's convergence and robustness metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossdistill.cli import main
from crossdistill.experiments import ConfigError, load_config, run_experiment
from crossdistill.experiments.report import read_csv

TINY = """
kind: growth
name: tiny_growth
teacher:
  data: {name: digits, small: 200, seed: 0}
  model: {name: mlp, hidden: [8]}
  train: {epochs: 3, batch_size: 64}
student:
  model: {name: mlp, hidden: [16]}
  train: {epochs: 4, batch_size: 32}
arms:
  scratch: {extension: scratch}
  zero: {extension: zero}
  uniform: {extension: uniform, theta: 0.05}
  net2net: {extension: net2net}
  objective:
    extension: zero
    objective: {lam: [0.4, 0.3, 0.2, 0.1], rows: 64, train: {epochs: 1, batch_size: 32}}
seeds: [0, 1]
corruption: [0.0, 0.3]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "growth.yaml"
    path.write_text(text)
    return path


def test_growth_runs_every_initialisation_and_reports_convergence(tmp_path) -> None:
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path, TINY)), out, progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    for arm in ("scratch", "zero", "uniform", "net2net", "objective"):
        for metric in ("accuracy", "cross_entropy", "robust_loss", "accuracy@0.3",
                       "prediction_variance", "reached_scratch", "parameters"):
            assert (arm, metric) in cells, (arm, metric)
        assert cells[arm, "parameters"]["mean"] == 64 * 16 + 16 + 16 * 10 + 10
        assert cells[arm, "teacher_parameters"]["mean"] == 64 * 8 + 8 + 8 * 10 + 10
        assert cells[arm, "prediction_variance"]["mean"] > 0
    assert cells["objective", "objective_seconds"]["mean"] > 0
    assert ("zero", "objective_seconds") not in cells
    # the scratch arm reaches its own final mean accuracy by its last epoch in at least one seed
    assert cells["scratch", "reached_scratch"]["mean"] > 0
    results = read_csv(out / "results.csv")
    by = {(r["arm"], r["seed"], r["metric"]): float(r["value"]) for r in results}
    for arm in ("scratch", "zero"):
        for seed in ("0", "1"):
            assert by[arm, seed, "accuracy@0"] == by[arm, seed, "accuracy"]  # 0 % = clean
    metrics = read_csv(out / "metrics.csv")
    objective = [r for r in metrics if r["arm"] == "objective"]
    assert len(objective) == 2 * 4 and all(float(r["epoch_seconds"]) > 0 for r in objective)
    assert (out / "figures" / "corruption.png").exists()
    assert (out / "figures" / "accuracy.png").exists()
    assert run_experiment(load_config(_write(tmp_path, TINY)), out, progress=False) == table


def test_growth_to_more_classes_and_a_bigger_input(tmp_path) -> None:
    config = (
        TINY.replace(
            "  data: {name: digits, small: 200, seed: 0}\n",
            "  data: {name: digits, small: 200, seed: 0, classes: [0, 1, 2, 3, 4]}\n"
            "  transform: {name: resize, size: 4}\n",
        )
        .replace(
            "student:\n",
            "student:\n  data: {name: digits, small: 200, seed: 0}\n",
        )
        .replace("corruption: [0.0, 0.3]", "input_map: {name: resize, size: 8}")
    )
    table = run_experiment(load_config(_write(tmp_path, config)), tmp_path / "run", progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    assert cells["zero", "teacher_parameters"]["mean"] == 16 * 8 + 8 + 8 * 5 + 5
    assert cells["zero", "parameters"]["mean"] == 64 * 16 + 16 + 16 * 10 + 10


def test_growth_config_errors_name_the_field(tmp_path, capsys) -> None:
    bad = TINY.replace("baseline", "x").replace("seeds: [0, 1]", "seeds: [0, 1]\nbaseline: nope")
    with pytest.raises(ConfigError, match="field 'baseline': names no arm"):
        load_config(_write(tmp_path, bad))
    bad = TINY.replace("lam: [0.4, 0.3, 0.2, 0.1]", "lam: [0.4, 0.3, 0.2, 0.2]")
    with pytest.raises(ConfigError, match="field 'arms.objective.objective.lam': must sum to 1"):
        load_config(_write(tmp_path, bad))
    smaller = TINY.replace("hidden: [16]", "hidden: [4]")
    out = tmp_path / "run"
    assert main(["run", str(_write(tmp_path, smaller)), "--out", str(out), "--quiet"]) == 2
    assert "field 'student.model'" in capsys.readouterr().err
    assert not out.exists()
    psi = TINY.replace("corruption: [0.0, 0.3]", "input_map: {name: resize, size: 4}")
    with pytest.raises(ConfigError, match="field 'input_map': ψ maps"):
        run_experiment(load_config(_write(tmp_path, psi)), out, progress=False)
