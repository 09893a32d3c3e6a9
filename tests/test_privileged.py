"""Generalized distillation: privileged data, distilling from x*, and the experiment runner."""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from torch import nn

from crossdistill.data import PrivilegedData
from crossdistill.data.privileged import SYNTHETIC_SETTINGS
from crossdistill.experiments import run_experiment, teachers
from crossdistill.experiments.config import ConfigError, load_config
from crossdistill.experiments.outputs import read_csv, write_csv
from crossdistill.mappings import resize
from crossdistill.methods import distill
from crossdistill.registries import privileged_datasets
from crossdistill.training import evaluate


def test_privileged_data_checks_rows_and_slices() -> None:
    data = PrivilegedData(torch.zeros(5, 2), torch.ones(5, 3), torch.arange(5))
    part = data.subset(torch.tensor([1, 3]))
    assert len(part) == 2 and part.x_star.shape == (2, 3) and part.y.tolist() == [1, 3]
    assert part.regular.x.shape == (2, 2) and part.privileged.x.shape == (2, 3)
    with pytest.raises(ValueError, match="differ in length"):
        PrivilegedData(torch.zeros(5, 2), torch.ones(4, 3), torch.arange(5))


@pytest.mark.parametrize(
    ("setting", "star_features"),
    [
        ("clean_labels", 1),
        ("clean_features", 50),
        ("relevant_features", 3),
        ("sample_relevant_features", 3),
    ],
)
def test_synthetic_settings_shapes_and_seeding(setting, star_features) -> None:
    spec = {"name": "lopez_paz_synthetic", "setting": setting}
    a, b = (privileged_datasets.build(spec, seed=3) for _ in range(2))
    c = privileged_datasets.build(spec, seed=4)
    assert a.train.x.shape == (200, 50) and a.test.x.shape == (1000, 50)
    assert a.train.x_star.shape == (200, star_features)
    assert set(a.train.y.unique().tolist()) == {0, 1}
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.x, c.train.x)
    # standardised with Train's statistics
    torch.testing.assert_close(a.train.x.mean(0), torch.zeros(50), atol=1e-5, rtol=0)


def _fit_accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
    model = LogisticRegression(C=100.0, max_iter=2000).fit(x.numpy(), y.numpy())
    return model.score(x.numpy(), y.numpy())


def test_synthetic_labels_follow_the_privileged_inputs() -> None:
    """Where the label is a linear rule of x*, a linear model on x* separates Train exactly;
    with clean labels as x*, the labels are x* plus unit noise, so x* predicts them well."""
    for setting in ("clean_features", "relevant_features", "sample_relevant_features"):
        data = privileged_datasets.build(
            {"name": "lopez_paz_synthetic", "setting": setting}, seed=0
        )
        assert _fit_accuracy(data.train.x_star, data.train.y) == 1.0, setting
    noisy = privileged_datasets.build(
        {"name": "lopez_paz_synthetic", "setting": "clean_labels", "train": 2000}, seed=0
    )
    assert 0.8 < _fit_accuracy(noisy.train.x_star, noisy.train.y) < 0.99
    # sample-dependent relevance: on x a linear student cannot find the rule
    hidden = privileged_datasets.build(
        {"name": "lopez_paz_synthetic", "setting": "sample_relevant_features", "train": 2000},
        seed=0,
    )
    assert _fit_accuracy(hidden.train.x, hidden.train.y) < 0.75


def test_synthetic_setting_is_checked() -> None:
    with pytest.raises(ValueError, match="setting must be one of"):
        privileged_datasets.build({"name": "lopez_paz_synthetic", "setting": "clean"}, seed=0)
    assert len(SYNTHETIC_SETTINGS) == 4


def test_regular_view_maps_the_privileged_inputs() -> None:
    spec = {
        "name": "regular_view",
        "dataset": {"name": "digits", "test": 100},
        "view": {"name": "resize", "size": 4, "antialias": True},
        "train": 60,
    }
    data = privileged_datasets.build(spec, seed=1)
    assert data.train.x_star.shape == (60, 1, 8, 8) and data.train.x.shape == (60, 1, 4, 4)
    assert data.test.x.shape == (100, 1, 4, 4)
    torch.testing.assert_close(data.train.x, resize(data.train.x_star, (4, 4), antialias=True))
    # a low-pass downscale keeps the mean grey level; plain bilinear sampling does not
    assert abs(data.train.x.mean() - data.train.x_star.mean()) < 0.01
    assert not torch.allclose(data.train.x, resize(data.train.x_star, (4, 4)))
    other = privileged_datasets.build(spec, seed=2)
    assert not torch.equal(data.train.y, other.train.y)


def test_distill_feeds_the_teacher_its_privileged_inputs() -> None:
    """The teacher takes 3 features the student never sees; the student has 5."""
    data = privileged_datasets.build(
        {"name": "lopez_paz_synthetic", "setting": "relevant_features", "features": 5}, seed=0
    )
    torch.manual_seed(0)
    teacher = nn.Linear(3, 2)
    quick = {"epochs": 60, "batch_size": 50, "optimizer": {"name": "adam", "lr": 0.05}}
    distill(teacher, data.train.privileged, lam=1.0, **quick)
    student = nn.Linear(5, 2)
    history = distill(
        student,
        data.train.regular,
        teacher=teacher.eval(),
        privileged=data.train.x_star,
        lam=0.0,
        **quick,
    )
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert evaluate(student, data.test.regular, "classification")["accuracy"] > 0.8
    with pytest.raises(ValueError, match="not both"):
        distill(
            student,
            data.train.regular,
            teacher=teacher,
            mapping=nn.Identity(),
            privileged=data.train.x_star,
            lam=0.5,
            epochs=1,
        )


TINY = """
kind: privileged
name: tiny_gd
problems:
  relevant: {name: lopez_paz_synthetic, setting: relevant_features, train: 60, test: 200}
teachers:
  teacher: &linear
    model: {name: mlp, hidden: []}
    train: {epochs: 15, batch_size: 20, optimizer: {name: adam, lr: 0.05}}
student: *linear
arms:
  student_alone: {lam: 1.0}
  generalized: {lam: [0.0, 0.5], temperature: [1, 4]}
seeds: [0, 1]
validation: 0.25
curves: true
"""


def test_privileged_experiment_end_to_end_and_resume(tmp_path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    config = load_config(path)
    out = tmp_path / "run"
    table = run_experiment(config, out, progress=False)
    results = read_csv(out / "results.csv")
    assert [(r["seed"], r["arm"]) for r in results] == [
        (s, a) for s in ("0", "1") for a in ("teacher", "student_alone", "generalized")
    ]
    # the chosen (λ, T) is the lowest validation cross-entropy of its repetition
    selection = read_csv(out / "selection.csv")
    for seed in ("0", "1"):
        scores = [r for r in selection if r["seed"] == seed]
        assert len(scores) == 4
        best = min(scores, key=lambda r: float(r["cross_entropy"]))
        chosen = next(r for r in results if r["seed"] == seed and r["arm"] == "generalized")
        assert (chosen["lam"], chosen["temperature"]) == (best["lam"], best["temperature"])
        # the chosen arm's Test score is the curve's entry for that setting (same training)
        curve = next(
            r
            for r in read_csv(out / "curves.csv")
            if r["seed"] == seed
            and (r["lam"], r["temperature"]) == (best["lam"], best["temperature"])
        )
        assert curve["accuracy"] == chosen["accuracy"]
    assert len(read_csv(out / "curves.csv")) == 8
    cells = {(r["arm"], r["metric"]): r for r in table}
    assert cells["teacher", "accuracy"]["n"] == 2 and cells["teacher", "accuracy"]["mean"] > 0.8
    assert ("generalized@best_on_test", "accuracy") in cells
    assert {r["problem"] for r in read_csv(out / "table.csv")} == {"relevant"}
    assert (out / "figures" / "accuracy.png").exists() and (
        out / "figures" / "relevant_generalized.png"
    ).exists()
    assert "tiny_gd / relevant" in (out / "table.md").read_text()

    # a lost repetition is redone, the finished one is not retrained, and numbers repeat
    kept = [r for r in results if r["seed"] == "0"]
    write_csv(kept, out / "results.csv")
    run_experiment(config, out, progress=False)
    again = read_csv(out / "results.csv")
    assert again == results


def test_a_problems_whole_sweep_trains_as_one_stack_as_one_by_one(tmp_path, monkeypatch) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("lam: [0.0, 0.5]", "lam: [0.0, 0.5, 1.0]"))
    config = load_config(path)
    stacked = []

    def recorded(methods, *args, **kwargs):
        stacked.append(len(methods))
        return fit_many(methods, *args, **kwargs)

    fit_many = teachers.fit_many
    monkeypatch.setattr(teachers, "fit_many", recorded)
    run_experiment(config, tmp_path / "batched", progress=False)
    # selection teachers, the selection's 3 × 2 (λ, T) × 2 seeds (λ = 1 reads no teacher: a
    # second stack), the teachers, and the curves with the final runs (student_alone, at λ = 1,
    # joins the sweep's λ = 1)
    assert stacked == [2, 8, 4, 2, 8, 6]
    run_experiment(
        config.model_copy(update={"batched": False}), tmp_path / "single", progress=False
    )
    assert stacked == [2, 8, 4, 2, 8, 6]  # nothing more was stacked
    for name in ("table", "results", "selection", "curves"):
        many, one = (read_csv(tmp_path / run / f"{name}.csv") for run in ("batched", "single"))
        assert len(many) == len(one) > 0, name
        for a, b in zip(many, one, strict=True):
            numbers = [k for k in a if k in ("mean", "std", "accuracy", "cross_entropy")]
            assert {k: v for k, v in a.items() if k not in numbers} == {
                k: v for k, v in b.items() if k not in numbers
            }, name  # the same chosen λ, T, rows and counts
            assert [float(a[k]) for k in numbers if a[k]] == pytest.approx(
                [float(b[k]) for k in numbers if b[k]], abs=1e-6
            ), name


def test_privileged_config_errors(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(TINY.replace("{lam: 1.0}", "{lam: 1.0, mapping: {name: resize, size: 4}}"))
    with pytest.raises(ConfigError, match="arms.*mapping"):
        load_config(path)
    path.write_text(TINY.replace("setting: relevant_features", "settin: relevant_features"))
    with pytest.raises(ConfigError, match="problems.relevant.*no setting 'settin'"):
        load_config(path)
    path.write_text(TINY.replace("kind: privileged", "kind: privilege"))
    with pytest.raises(ConfigError, match="field 'kind'.*privilege"):
        load_config(path)


def test_selection_by_accuracy_takes_the_best_validation_accuracy(tmp_path) -> None:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY.replace("curves: true", "curves: false\nselection: accuracy"))
    out = tmp_path / "run"
    run_experiment(load_config(path), out, progress=False)
    results, selection = read_csv(out / "results.csv"), read_csv(out / "selection.csv")
    assert not (out / "curves.csv").exists()
    for seed in ("0", "1"):
        scores = [r for r in selection if r["seed"] == seed]
        best = min(scores, key=lambda r: (-float(r["accuracy"]), float(r["cross_entropy"])))
        chosen = next(r for r in results if r["seed"] == seed and r["arm"] == "generalized")
        assert (chosen["lam"], chosen["temperature"]) == (best["lam"], best["temperature"])


def test_missing_data_fails_before_any_output(tmp_path) -> None:
    path = tmp_path / "mnist.yaml"
    path.write_text(
        TINY.replace(
            "relevant: {name: lopez_paz_synthetic, setting: relevant_features, train: 60, "
            "test: 200}",
            "digits: {name: regular_view, dataset: {name: mnist, download: false}, "
            f"view: {{name: resize, size: 7}}, train: 60, data_dir: {tmp_path / 'nowhere'}}}",
        )
    )
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="field 'problems.digits': cannot find dataset folder"):
        run_experiment(load_config(path), out, progress=False)
    assert not out.exists()
