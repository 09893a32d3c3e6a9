"""The `gdda_multisource` kind: the Test-best weights λ* are exact (the decision values are
linear in λ and no point of a fine grid does better), the generated data have the reliabilities
they are built with, and a tiny run writes its table and resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from crossdistill.experiments import ConfigError, load_config, run_experiment
from crossdistill.experiments.multisource import (
    TEST_METRICS,
    WEIGHT_METRICS,
    GaussianClasses,
    GDDAMultiSourceKind,
    best_weights,
    cross_entropy,
    noisy_labels,
    reliabilities,
    teacher_soft_labels,
)
from crossdistill.experiments.outputs import read_csv
from crossdistill.methods import GDDAClassifier
from crossdistill.methods.gdda import simplex_grid


def _problem(teachers: int, seed: int, label_noise: float = 0.3) -> tuple[np.ndarray, ...]:
    """3 classes in 4 dimensions: 8 labelled rows per class with ``teachers`` teachers' soft
    labels, and 300 Test rows."""
    rng = np.random.default_rng(seed)
    classes = GaussianClasses.draw(3, 4, 1.0, rng)
    y = np.repeat(np.arange(3), 8)
    x = classes.sample(y, rng)
    soft = teacher_soft_labels(classes.posterior(x), reliabilities(0.9, 0.3, teachers), 0.3, rng)
    y_test = np.arange(300) % 3
    return x, noisy_labels(y, label_noise, 3, rng), soft, classes.sample(y_test, rng), y_test


def _classifier(lam) -> GDDAClassifier:
    return GDDAClassifier(C=1.0, lambda_search=lam, classes=range(3))


@pytest.mark.parametrize("teachers", [1, 2])
def test_decision_values_are_linear_in_lambda_and_lambda_star_beats_a_fine_grid(teachers) -> None:
    x, y, soft, x_test, y_test = _problem(teachers, seed=1, label_noise=0.0)
    sources = teachers + 1
    decisions = np.stack(
        [
            _classifier(vertex).fit(x, y, teacher_probas=soft)._decision_values(x_test)
            for vertex in np.eye(sources)
        ]
    )
    rng = np.random.default_rng(1)
    for lam in rng.dirichlet(np.ones(sources), size=3):
        fitted = _classifier(lam).fit(x, y, teacher_probas=soft).predict_proba(x_test)
        linear = np.exp(np.tensordot(lam, decisions, 1))
        np.testing.assert_allclose(fitted, linear / linear.sum(1, keepdims=True), atol=1e-6)
    star = best_weights(decisions, y_test)
    assert star.min() >= 0 and abs(star.sum() - 1) < 1e-12
    assert np.sort(star)[-2] > 0.2  # inside an edge of the simplex, not at a vertex
    best = _no_grid_point_is_better(star, decisions, y_test)
    at_star = _classifier(star).fit(x, y, teacher_probas=soft)._decision_values(x_test)
    assert cross_entropy(at_star, y_test) == pytest.approx(best, abs=1e-9)


def _no_grid_point_is_better(star: np.ndarray, decisions: np.ndarray, labels: np.ndarray) -> float:
    """The cross-entropy at ``star`` (K,), checked against every point of a fine simplex grid."""
    best = cross_entropy(np.tensordot(star, decisions, 1), labels)
    grid = simplex_grid(len(star), 200 if len(star) == 2 else 60)
    on_grid = [cross_entropy(np.tensordot(lam, decisions, 1), labels) for lam in grid]
    assert min(on_grid) >= best - 1e-6
    return best


def test_best_weights_inside_the_simplex_beat_a_fine_grid() -> None:
    """Three sources of large, noisy scores, where the best mixture keeps all three."""
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    decisions = np.stack(
        [
            3 * np.eye(3)[labels] * rng.random((300, 1)) + 2 * rng.normal(size=(300, 3))
            for _ in "abc"
        ]
    )
    star = best_weights(decisions, labels)
    assert star.min() > 0.2
    _no_grid_point_is_better(star, decisions, labels)


def test_the_posterior_and_the_sources_are_what_they_are_built_from() -> None:
    rng = np.random.default_rng(0)
    classes = GaussianClasses.draw(4, 3, 2.0, rng)
    x = classes.sample(np.arange(4), rng)
    # Bayes' rule on the unit-covariance densities, equal priors
    density = np.exp(-0.5 * ((x[:, None, :] - classes.means[None]) ** 2).sum(-1))
    np.testing.assert_allclose(classes.posterior(x), density / density.sum(1, keepdims=True))
    posterior = classes.posterior(classes.sample(np.repeat(np.arange(4), 50), rng))
    soft = teacher_soft_labels(posterior, np.array([1.0, 0.5, 0.0]), 0.3, rng)
    np.testing.assert_array_equal(soft[:, 0], posterior)  # r = 1: the true posterior
    np.testing.assert_allclose(soft.sum(-1), 1.0)
    assert not np.allclose(soft[:, 2], posterior, atol=0.1)  # r = 0: Dirichlet noise alone
    half = soft[:, 1] - 0.5 * posterior  # r = 0.5: half the posterior, half a noise vector
    assert half.min() >= 0 and np.allclose(half.sum(-1), 0.5)
    np.testing.assert_array_equal(reliabilities(0.9, 0.1, 1), [0.9])
    np.testing.assert_allclose(reliabilities(0.9, 0.1, 5), [0.9, 0.7, 0.5, 0.3, 0.1])
    labels = np.arange(1000) % 4
    np.testing.assert_array_equal(noisy_labels(labels, 0.0, 4, rng), labels)
    changed = np.mean(noisy_labels(labels, 0.4, 4, rng) != labels)
    assert abs(changed - 0.4 * 3 / 4) < 0.05  # a replacement may draw the same class


def test_the_generator_is_seeded() -> None:
    first, again, other = (_problem(2, seed) for seed in (3, 3, 4))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


TINY = """kind: gdda_multisource
name: tiny_multisource
classes: 3
dimensions: 4
separation: 1.0
teachers: [1, 2]
labelled_per_class: [5]
test_rows: 150
grid_up_to: 1
seeds: [0, 1]
"""


def _write(folder: Path, text: str) -> Path:
    path = folder / "config.yaml"
    path.write_text(text)
    return path


def test_a_tiny_run_writes_its_table_and_a_rerun_computes_nothing(tmp_path, monkeypatch) -> None:
    config = load_config(_write(tmp_path, TINY))
    out = tmp_path / "run"
    table = run_experiment(config, out, progress=False)
    cells = {(row["arm"], row["metric"]): row for row in table}
    assert {arm for arm, _ in cells} == {"M=1, n=5", "M=2, n=5"}
    assert {m for _, m in cells} == set(WEIGHT_METRICS) | set(TEST_METRICS)
    assert ("M=2, n=5", "distance_grid") not in cells  # the grid only for M ≤ grid_up_to
    assert all(row["n"] == 2 for row in table)
    results = read_csv(out / "results.csv")
    assert [(r["seed"], r["teachers"]) for r in results] == [
        ("0", "1"),
        ("0", "2"),
        ("1", "1"),
        ("1", "2"),
    ]
    for row in results:
        learned, star = (np.array(row[k].split(), dtype=float) for k in ("lambda", "lambda_star"))
        assert len(learned) == int(row["teachers"]) + 1
        assert float(row["distance"]) == pytest.approx(np.abs(learned - star).sum(), abs=1e-3)
        assert 0 <= float(row["distance"]) <= 2
        assert float(row["cross_entropy_star"]) <= float(row["cross_entropy"]) + 1e-9
        assert float(row["cross_entropy_star"]) <= float(row["cross_entropy_labels"]) + 1e-9
    markdown = (out / "table.md").read_text()
    assert markdown.count("| M=1, n=5 |") == 2 and "‖λ̂ − λ*‖₁" in markdown
    assert (out / "figures" / "distance.png").read_bytes().startswith(b"\x89PNG")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def refuse(self, unit):
        raise AssertionError(f"{unit} ran again")

    monkeypatch.setattr(GDDAMultiSourceKind, "run_unit", refuse)
    assert run_experiment(config, out, progress=False) == table
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("reliability=[1.5, 0.1]", "reliability.0"),
        ("reliability=[0.9]", "reliability"),
        ("teachers=[]", "teachers"),
        ("teachers=[2, 2]", "teachers"),
        ("labelled_per_class=[0]", "labelled_per_class.0"),
        ("label_noise=-0.1", "label_noise"),
        ("concentration=0", "concentration"),
        ("separation=true", "separation"),
        ("classifier={lambda_search: grid}", "classifier.lambda_search"),
        ("classifier={C: -1}", "classifier"),
    ],
)
def test_a_wrong_setting_is_refused_naming_its_field(tmp_path, override, field) -> None:
    with pytest.raises(ConfigError, match=f"field '{field}'"):
        load_config(_write(tmp_path, TINY), [override])
