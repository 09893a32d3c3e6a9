"""The growth kind end to end on the embedded digits: every initialisation, the objective, the
teacher-width controls, grown classes and a grown input, the table's convergence, robustness
and active-unit metrics."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossdistill.cli import main
from crossdistill.experiments import ConfigError, load_config, run_experiment
from crossdistill.experiments.growth import TARGET
from crossdistill.experiments.outputs import read_csv

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


EVERY_ARM = """
kind: growth
name: every_arm
teacher:
  data: {name: digits, small: 200, seed: 0}
  model: {name: mlp, hidden: [8], activation: tanh}
  train: {epochs: 5, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
student:
  model: {name: mlp, hidden: [16], activation: tanh}
  train: {epochs: 5, batch_size: 32, optimizer: {name: adam, lr: 0.01}}
arms:
  zero: {extension: zero}
  zero_out: {extension: zero_out}
  gradmax: {extension: gradmax}
  net2net: {extension: net2net}
  net2net_exact: {extension: net2net, exact: true}
  teacher_finetune: {model: teacher, extension: zero}
  scratch_teacher_width: {model: teacher, extension: scratch}
seeds: [0]
"""
"""Every new extension and the teacher-width controls, long enough for ``accuracy_epoch5``; tanh
units (a ReLU teacher's dead units would stay dead in their net2net copies), one seed (so the
best arm's seed reaches 99 % of its mean)."""

TEACHER_PARAMETERS = 64 * 8 + 8 + 8 * 10 + 10
STUDENT_PARAMETERS = 64 * 16 + 16 + 16 * 10 + 10


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "growth.yaml"
    path.write_text(text)
    return path


def test_growth_runs_every_initialisation_and_reports_convergence(tmp_path) -> None:
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path, TINY)), out, progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    for arm in ("scratch", "zero", "uniform", "net2net", "objective"):
        for metric in (
            "accuracy",
            "cross_entropy",
            "robust_loss",
            "accuracy@0.3",
            "prediction_variance",
            "reached_best",
            "accuracy_epoch1",
            "accuracy_auc",
            "parameters",
        ):
            assert (arm, metric) in cells, (arm, metric)
        assert (arm, "accuracy_epoch5") not in cells  # the student trains 4 epochs
        assert cells[arm, "parameters"]["mean"] == STUDENT_PARAMETERS
        assert cells[arm, "teacher_parameters"]["mean"] == TEACHER_PARAMETERS
        assert cells[arm, "prediction_variance"]["mean"] > 0
    assert cells["objective", "objective_seconds"]["mean"] > 0
    assert ("zero", "objective_seconds") not in cells
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


def test_new_extensions_and_teacher_width_controls_report_every_metric(tmp_path) -> None:
    out = tmp_path / "run"
    table = run_experiment(load_config(_write(tmp_path, EVERY_ARM)), out, progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    arms = list(dict.fromkeys(row["arm"] for row in table))
    assert arms == [
        "zero",
        "zero_out",
        "gradmax",
        "net2net",
        "net2net_exact",
        "teacher_finetune",
        "scratch_teacher_width",
    ]
    for arm in arms:
        for metric in (
            "accuracy",
            "accuracy_epoch1",
            "accuracy_epoch5",
            "accuracy_auc",
            "reached_best",
        ):
            assert (arm, metric) in cells, (arm, metric)
    for arm in ("teacher_finetune", "scratch_teacher_width"):
        assert cells[arm, "parameters"]["mean"] == TEACHER_PARAMETERS
        assert (arm, "active_new_units") not in cells  # the teacher's width: no new units
    assert cells["zero", "parameters"]["mean"] == STUDENT_PARAMETERS
    assert cells["zero", "active_new_units"]["mean"] == 0  # zero's new units never train
    for arm in ("zero_out", "gradmax", "net2net"):
        assert cells[arm, "active_new_units"]["mean"] > 0.9, arm

    # convergence: each number consistent with the per-epoch Test accuracies it summarises
    metrics = read_csv(out / "metrics.csv")
    results = {
        (r["arm"], r["seed"], r["metric"]): float(r["value"]) for r in read_csv(out / "results.csv")
    }
    for (arm, seed, metric), value in results.items():
        if metric != "accuracy_auc":
            continue
        curve = [float(r["accuracy"]) for r in metrics if (r["arm"], r["seed"]) == (arm, seed)]
        assert len(curve) == 5
        assert value == pytest.approx(sum(curve) / 5, abs=1e-12)
        assert value <= max(curve)
        assert results[arm, seed, "accuracy_epoch1"] == curve[0]
        assert results[arm, seed, "accuracy_epoch5"] == curve[4] == results[arm, seed, "accuracy"]
    best = max(arms, key=lambda arm: cells[arm, "accuracy"]["mean"])
    assert cells[best, "reached_best"]["mean"] == 1
    for arm in arms:  # the times are over the seeds that reached the target: none, none given
        reached = cells[arm, "reached_best"]["mean"]
        assert 0 <= reached <= 1
        assert (
            ((arm, "epochs_to_best") in cells)
            == ((arm, "seconds_to_best") in cells)
            == (reached > 0)
        )
        if reached:
            assert 1 <= cells[arm, "epochs_to_best"]["mean"] <= 5
            assert cells[arm, "seconds_to_best"]["mean"] > 0
    target = TARGET * cells[best, "accuracy"]["mean"]
    caption = (out / "table.md").read_text().splitlines()[0]
    assert f"best arm `{best}` ({cells[best, 'accuracy']['mean']:.4f}): 99 % is {target:.4f}" in (
        caption
    )


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
        .replace("arms:\n", "arms:\n  teacher_finetune: {model: teacher, extension: zero}\n")
    )
    table = run_experiment(load_config(_write(tmp_path, config)), tmp_path / "run", progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    assert cells["zero", "teacher_parameters"]["mean"] == 16 * 8 + 8 + 8 * 5 + 5
    assert cells["zero", "parameters"]["mean"] == STUDENT_PARAMETERS
    # the teacher's width at the student's 64 inputs and 10 classes
    assert cells["teacher_finetune", "parameters"]["mean"] == TEACHER_PARAMETERS
    # zero's new hidden units never train (see grow), so the grown student trains as the
    # teacher fine-tuned at its own width, ψ's new input features and the new classes included
    for metric in ("accuracy", "cross_entropy", "accuracy_auc"):
        finetune, zero = cells["teacher_finetune", metric]["mean"], cells["zero", metric]["mean"]
        assert finetune == pytest.approx(zero, rel=1e-5), metric


def test_growth_config_errors_name_the_field(tmp_path, capsys) -> None:
    bad = TINY.replace("seeds: [0, 1]", "seeds: [0, 1]\nbaseline: scratch")
    with pytest.raises(ConfigError, match="field 'baseline': Extra inputs are not permitted"):
        load_config(_write(tmp_path, bad))
    bad = TINY.replace("zero: {extension: zero}", "zero: {extension: zero, exact: true}")
    with pytest.raises(ConfigError, match="field 'arms.zero.exact': only extension net2net"):
        load_config(_write(tmp_path, bad))
    bad = TINY.replace("net2net: {extension: net2net}", "net2net: {extension: net2net, exact: 1}")
    with pytest.raises(ConfigError, match="field 'arms.net2net.exact'"):
        load_config(_write(tmp_path, bad))
    bad = TINY.replace("scratch: {extension: scratch}", "scratch: {model: big}")
    with pytest.raises(ConfigError, match="field 'arms.scratch.model'"):
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
