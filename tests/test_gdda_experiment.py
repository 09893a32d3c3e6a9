"""GDDA experiments end to end: target rows labelled per class, teachers, learned λ vs the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crossdistill.experiments import run_experiment
from crossdistill.experiments.config import ConfigError, load_config
from crossdistill.experiments.gdda import STUDENT_ALONE, labelled_rows
from crossdistill.experiments.outputs import read_csv, write_csv


def test_labelled_rows_takes_per_class_rows_by_seed() -> None:
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 2])
    rows = labelled_rows(y, 2, seed=0)
    assert sorted(y[rows].tolist()) == [0, 0, 1, 1, 2, 2]
    assert torch.equal(rows, labelled_rows(y, 2, seed=0))
    assert any(not torch.equal(labelled_rows(y, 1, s), labelled_rows(y, 1, 0)) for s in range(5))
    with pytest.raises(ValueError, match="class 0 has 3 rows, fewer than 4"):
        labelled_rows(y, 4, seed=0)


TINY = """
kind: gdda
name: tiny_gdda
target: {name: digits, small: 10, test: 200}
teachers:
  plain: &plain
    data: {name: digits, small: 10, seed: 1}
    model: {name: mlp, hidden: [16]}
    train: {epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}
  inverted:
    <<: *plain
    transform: invert
arms:
  plain: [plain]
  both: [plain, inverted]
grid_steps: 2
seeds: [0, 1]
"""


def test_gdda_experiment_end_to_end_and_resume(tmp_path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    config = load_config(path)
    out = tmp_path / "run"
    table = run_experiment(config, out, progress=False)
    results = read_csv(out / "results.csv")
    assert [(r["seed"], r["arm"]) for r in results] == [
        (s, a) for s in ("0", "1") for a in (STUDENT_ALONE, "plain", "both")
    ]
    curves = read_csv(out / "curves.csv")
    # M = 2 sources + truth on a grid of step 1/2: 3 points (plain) and 6 points (both)
    assert len(curves) == 2 * (3 + 6)
    for row in results[1:]:
        if row["arm"] == STUDENT_ALONE:
            continue
        points = [c for c in curves if c["seed"] == row["seed"] and c["arm"] == row["arm"]]
        best = min(points, key=lambda c: float(c["loo_loss"]))
        # the brute-force choice is the grid point of lowest LOO loss, refitted at that λ
        assert float(row["loo_loss_grid"]) == pytest.approx(float(best["loo_loss"]), abs=1e-12)
        assert float(row["accuracy_grid"]) == pytest.approx(float(best["accuracy"]))
        assert float(row["lambda_0_grid"]) == pytest.approx(float(best["lambda_0"]))
        learned = np.array(row["lambda"].split(), dtype=float)
        assert learned.min() >= 0 and learned.sum() == pytest.approx(1, abs=1e-3)
    teachers = read_csv(out / "teachers.csv")
    assert [t["teacher"] for t in teachers] == ["plain", "inverted"]
    assert float(teachers[0]["target_test_accuracy"]) > 0.7  # same domain: a good teacher
    cells = {(r["arm"], r["metric"]): r for r in table}
    assert cells["plain", "accuracy"]["n"] == 2
    # a good teacher's soft labels on 1 390 rows beat 10 labelled rows alone
    assert cells["plain", "accuracy"]["mean"] > cells[STUDENT_ALONE, "accuracy"]["mean"] + 0.1
    for arm in ("plain", "both"):
        assert (out / "figures" / f"{arm}.png").exists()
    assert "tiny_gdda" in (out / "table.md").read_text()

    # a lost repetition is redone with the same numbers; teachers come from checkpoints
    write_csv(results[:3], out / "results.csv")
    run_experiment(config, out, progress=False)
    again = read_csv(out / "results.csv")
    for old, new in zip(results, again, strict=True):
        assert {k: v for k, v in old.items() if not k.startswith("seconds")} == {
            k: v for k, v in new.items() if not k.startswith("seconds")
        }


def test_gdda_config_errors(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("both: [plain, inverted]", "both: [plain, rotated]"))
    with pytest.raises(ConfigError, match=r"'arms.both': must list teachers of field 'teachers'"):
        load_config(path)
    path.write_text(TINY.replace("grid_steps: 2", "classifier: {c: 1}\ngrid_steps: 2"))
    with pytest.raises(ConfigError, match="field 'classifier.c': no such setting"):
        load_config(path)


def _write_office(folder: Path, classes: int = 5, rows: int = 120, dim: int = 12) -> None:
    """Three domains sharing class means, each shifted by its own offset (npz files)."""
    rng = np.random.default_rng(0)
    means = rng.normal(size=(classes, dim)) * 3
    for k, domain in enumerate(("amazon", "dslr", "webcam")):
        y = np.arange(rows) % classes
        x = means[y] + rng.normal(size=(rows, dim)) + 0.5 * k
        np.savez(folder / f"{domain}.npz", x=x.astype(np.float32), y=y)


def test_office_configs_run_on_synthetic_feature_files(tmp_path) -> None:
    (tmp_path / "office31").mkdir()
    _write_office(tmp_path / "office31")
    overrides = [
        f"target.data_dir={tmp_path}",
        "target.small=10",
        "seeds=[0]",
        "grid_steps=2",
    ]
    for source in ("dslr", "webcam"):
        overrides += [
            f"teachers.{source}.data.data_dir={tmp_path}",
            f"teachers.{source}.data.small=10",
            f"teachers.{source}.train.epochs=20",
            f"teachers.{source}.train.optimizer={{name: adam, lr: 0.05}}",
        ]
    config = load_config("office_dslr_webcam_amazon", overrides)
    table = run_experiment(config, tmp_path / "run", progress=False)
    cells = {(r["arm"], r["metric"]): r for r in table}
    for arm in ("dslr", "webcam", "dslr_webcam"):
        assert cells[arm, "teacher_accuracy"]["mean"] > 0.8  # shared class means transfer
        assert cells[arm, "accuracy"]["mean"] > cells[STUDENT_ALONE, "accuracy"]["mean"] - 0.05
    for name, source in (("office_dslr_amazon", "dslr"), ("office_webcam_amazon", "webcam")):
        own = [o for o in overrides if "teachers." not in o or f"teachers.{source}." in o]
        assert list(load_config(name, own).arms) == [source]


def test_a_gdda_teacher_can_come_from_the_users_file(tmp_path) -> None:
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(
        torch.nn.Flatten(), torch.nn.Linear(64, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)
    )
    file = tmp_path / "plain.pt"
    torch.save(teacher.state_dict(), file)
    path = tmp_path / "tiny.yaml"
    path.write_text(
        TINY.replace(
            "    train: {epochs: 3, batch_size: 64, optimizer: {name: adam, lr: 0.01}}\n"
            "  inverted:\n    <<: *plain\n    transform: invert\n",
            f"    checkpoint: {file}\n",
        ).replace("  both: [plain, inverted]\n", "")
    )
    out = tmp_path / "run"
    run_experiment(load_config(path), out, progress=False)
    assert not (out / "checkpoints").exists()  # nothing trained
    target = load_config(path).target.load().test
    with torch.no_grad():
        expected = (teacher(target.x).argmax(1) == target.y).float().mean().item()
    (row,) = read_csv(out / "teachers.csv")
    assert float(row["target_test_accuracy"]) == pytest.approx(expected)
