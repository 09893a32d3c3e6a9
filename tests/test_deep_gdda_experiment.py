"""The deep GDDA kind end to end on scikit-learn's digits: a φ per teacher, timed arms, learned
weights in the results and the figures."""

from __future__ import annotations

import pytest
import yaml

from crossdistill.experiments import ConfigError, run_experiment
from crossdistill.experiments.config import load_config
from crossdistill.experiments.outputs import read_csv

CONFIG = {
    "kind": "deep_gdda",
    "name": "tiny_deep_gdda",
    "data": {"name": "digits", "small": 120, "seed": 0},
    "validation": 40,
    "teachers": {
        "plain": {"model": {"name": "mlp", "hidden": [32]}, "train": {"epochs": 2}},
        # a teacher on 4x4 images: the run fails unless its own φ shrinks the student's 8x8
        "small": {
            "transform": {"name": "resize", "size": 4},
            "mapping": {"name": "resize", "size": 4},
            "model": {"name": "mlp", "hidden": [16]},
            "train": {"epochs": 2},
        },
    },
    "student": {"model": {"name": "mlp", "hidden": [16]}, "train": {"epochs": 3}},
    "seeds": [0, 1],
    "arms": {
        "no_teacher": {},
        "grid_kd": {"teacher": "plain", "lam": [0.3, 0.7], "temperature": 2},
        "learned": {"method": {"name": "gdda_distillation", "teachers": ["plain", "small"]}},
        "learned_frozen": {
            "method": {
                "name": "gdda_distillation",
                "teachers": ["plain", "small"],
                "freeze_after": 1,
            }
        },
    },
    "svm_arms": {"svm": ["plain", "small"]},
}


def _config(tmp_path, changes=None):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, **(changes or {})}))
    return load_config(path)


def test_arms_are_timed_and_learned_weights_reported(tmp_path):
    out = tmp_path / "run"
    table = run_experiment(_config(tmp_path), out, progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    assert cells["grid_kd", "runs"]["mean"] == 2 * (2 + 1)  # seeds × (settings + final)
    assert cells["learned", "runs"]["mean"] == 2
    assert cells["grid_kd", "selection_seconds"]["mean"] > 0
    assert cells["learned", "selection_seconds"]["mean"] == 0
    for arm in ("no_teacher", "grid_kd", "learned"):  # the Test scoring is left out of training
        assert 0 < cells[arm, "training_seconds"]["mean"] < cells[arm, "seconds"]["mean"]
    weights = [cells["learned", f"lambda_{s}"]["mean"] for s in ("labels", "plain", "small")]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5) and min(weights) >= 0
    assert ("learned", "lam") not in cells and ("grid_kd", "lam") in cells
    metrics = read_csv(out / "metrics.csv")
    frozen = [r for r in metrics if r["arm"] == "learned_frozen" and r["seed"] == "0"]
    assert [float(r["refit_seconds"]) > 0 for r in frozen] == [True, False, False]
    assert len({r["lambda_plain"] for r in frozen}) == 1
    assert (out / "figures" / "weights-learned.png").is_file()
    svm = [cells["svm", f"lambda_{s}"]["mean"] for s in ("labels", "plain", "small")]
    assert sum(svm) == pytest.approx(1.0, abs=1e-9) and cells["svm", "accuracy"]["mean"] > 0.3
    assert cells["svm", "parameters"]["mean"] == (64 + 1) * 10  # an LS-SVM per class
    assert cells["svm", "runs"]["mean"] == 1
    plain = cells["grid_kd", "teacher_parameters"]["mean"]
    assert plain == 64 * 32 + 32 + 32 * 10 + 10
    both = plain + 16 * 16 + 16 + 16 * 10 + 10  # the arm's teachers together
    assert cells["learned", "teacher_parameters"]["mean"] == both
    assert cells["svm", "teacher_parameters"]["mean"] == both
    assert "`training seconds` the same without the Test" in (out / "table.md").read_text()
    assert run_experiment(_config(tmp_path), out, progress=False) == table  # resumed, unchanged


def test_an_arm_mapping_is_refused(tmp_path):
    arms = {"learned": {"mapping": "invert", "method": {"name": "gdda_distillation"}}}
    with pytest.raises(ConfigError, match="arms.learned.mapping.*each teacher brings its own"):
        _config(tmp_path, {"arms": arms})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"svm_arms": {"svm": ["nobody"]}}, "svm_arms.svm.*must list teachers"),
        ({"svm_arms": {"learned": ["plain"]}}, "svm_arms.learned.*also the name of an arm"),
        ({"classifier": {"lambda_search": "grid"}}, "classifier.lambda_search.*no such setting"),
    ],
)
def test_svm_arms_are_checked(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, changes)


def test_a_bad_method_setting_is_named_before_anything_is_written(tmp_path):
    arms = {"learned": {"method": {"name": "gdda_distillation", "refit_every": 0}}}
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="arms.learned.method.*refit_every"):
        run_experiment(_config(tmp_path, {"arms": arms}), out, progress=False)
    assert not out.exists()
