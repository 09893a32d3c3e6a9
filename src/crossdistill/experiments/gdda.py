"""The GDDA kind (Ao, 2016, "Distilling"): teachers' soft labels on a target domain with one
labelled row per class, the GDDA-SVM's learned λ against the brute-force grid."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from ..data import DomainSplits
from ..figures import save_figure
from ..files import file_name
from ..methods import GDDAClassifier
from ..methods.gdda import simplex_grid
from ..models import check_outputs, count_parameters
from ..registries import kinds, mappings, models
from ..training import TeacherCache, evaluate
from .config import ConfigError
from .driver import ExperimentKind, Rows, field, splits_tensors, target_size
from .outputs import markdown_table, summarize, write_csv
from .teachers import load_teacher, train_teacher

STUDENT_ALONE = "student_alone"
"""Arm of the LS-SVM fitted on the labelled target rows only (no teacher)."""

TABLE_METRICS = (
    "accuracy",
    "accuracy_grid",
    "loo_loss",
    "loo_loss_grid",
    "lambda_0",
    "lambda_0_grid",
    "seconds",
    "seconds_grid",
    "teacher_accuracy",
)
"""Per arm and repetition: Test accuracy, LOO loss, true labels' weight λ₀ and fit time, with λ
learned by gradient and (``_grid``) chosen by LOO loss on the grid; the teachers' own accuracy."""


def labelled_rows(y: Tensor, per_class: int, seed: int) -> Tensor:
    """``per_class`` seeded random row indices of every class in ``y`` (N,), sorted."""
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for label in y.unique():
        rows = (y == label).nonzero()[:, 0]
        if len(rows) < per_class:
            raise ValueError(f"class {int(label)} has {len(rows)} rows, fewer than {per_class}")
        chosen.append(rows[torch.randperm(len(rows), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


@kinds.register("gdda")
class GDDAKind(ExperimentKind):
    """A `GDDAConfig`: its teachers trained (or loaded) once, then one unit per repetition.

    The directory holds ``config.yaml``, ``teachers.csv`` (each teacher's accuracy on its own
    Test and on the target's Test), ``results.csv`` (per repetition and arm, the
    `TABLE_METRICS` and the learned λ), ``curves.csv`` (Test accuracy and LOO loss at every grid
    λ), ``table.csv`` / ``table.md`` (mean ± std over repetitions), ``figures/<arm>.png``,
    ``units/`` and ``checkpoints/`` (the trained teachers).
    """

    outputs = ("curves", "results")

    def check(self) -> None:
        with field("target"):
            target = self.config.target.load()
            self.num_classes = target_size(target, "classification")
        self.record("target", *splits_tensors(target))
        self.pool, self.test = target.train, target.test
        with field("labelled_per_class"):
            labelled_rows(self.pool.y, self.config.labelled_per_class, 0)
        with field("features"):
            features = mappings.build(self.config.features)
            self.pool_x, self.test_x = (_flat(features, data.x) for data in (self.pool, self.test))
        self.record("features", features)
        used = dict.fromkeys(m for members in self.config.arms.values() for m in members)
        decoded: dict[str, DomainSplits] = {}  # teachers sharing a dataset decode it once
        self.teacher_data, self.teachers, self.phis = {}, {}, {}
        for name in used:
            spec = self.config.teachers[name]
            key = spec.data.model_dump_json()
            with field(f"teachers.{name}.data"):
                if key not in decoded:
                    decoded[key] = spec.data.load()
                found = target_size(decoded[key], "classification")
                if found != self.num_classes:
                    raise ConfigError(f"it has {found} classes, the target {self.num_classes}")
            self.record(f"teachers.{name}.data", *splits_tensors(decoded[key]))
            with field(f"teachers.{name}.transform"):
                transform = mappings.build(spec.transform)
                big = decoded[key].big.map_x(transform) if spec.trained_here else None
                self.teacher_data[name] = (big, decoded[key].test.map_x(transform))
            with field(f"teachers.{name}.mapping"):
                self.phis[name] = mappings.build(spec.mapping)
                with torch.no_grad():
                    seen = self.phis[name](self.pool.x[:1])
            self.record(f"teachers.{name}.mapping", self.phis[name])
            own = self.teacher_data[name][1].x[:1]
            if spec.trained_here:
                with field(f"teachers.{name}.model"):
                    teacher = models.build(
                        spec.model, in_shape=tuple(own.shape[1:]), num_outputs=self.num_classes
                    )
                    check_outputs(teacher, own, self.num_classes, "the model")
            else:
                with field(f"teachers.{name}"):
                    teacher = load_teacher(
                        name, spec, self.teacher_data[name][1], self.num_classes, self.config.device
                    )
                self.teachers[name] = teacher
                self.record(f"teachers.{name}", teacher)
            with field(f"teachers.{name}.mapping"):
                check_outputs(teacher, seen, self.num_classes, f"teacher {name!r} on the target")

    def setup(self) -> None:
        """Each used teacher trained once (or loaded): its probabilities on the pool and on
        Test, ``(L, N)`` and ``(T, N)``; ``teachers.csv`` records its accuracies."""
        cache, self.probas, records = TeacherCache(), {}, []
        for name, (big, own_test) in self.teacher_data.items():
            spec = self.config.teachers[name]
            if name not in self.teachers:
                self.teachers[name], _ = train_teacher(
                    spec,
                    big,
                    None,
                    "classification",
                    self.num_classes,
                    checkpoint=self.out / "checkpoints" / "teachers" / f"{file_name(name)}.pt",
                    device=self.config.device,
                    progress=self.progress,
                    name=f"teacher {name!r}",
                )
            teacher, phi = self.teachers[name], self.phis[name]
            pool_p, test_p = (
                cache.outputs(teacher, phi, data.x, name=f"teacher {name!r}")
                .softmax(1)
                .double()
                .numpy()
                for data in (self.pool, self.test)
            )
            self.probas[name] = (pool_p, test_p)
            records.append(
                {
                    "teacher": name,
                    "parameters": count_parameters(teacher),
                    "source_test_accuracy": evaluate(teacher, own_test, "classification")[
                        "accuracy"
                    ],
                    "target_test_accuracy": float(np.mean(test_p.argmax(1) == self.test.y.numpy())),
                }
            )
        write_csv(records, self.out / "teachers.csv")

    def units(self) -> list[str]:
        return [f"seed_{seed}" for seed in self.config.seeds]  # units/seed_<s>.json

    def run_unit(self, unit: str) -> Rows:
        """One repetition: ``labelled_per_class`` labelled pool rows, every arm's fits."""
        seed = int(unit.removeprefix("seed_"))
        y_pool, y_test = self.pool.y.numpy(), self.test.y.numpy()
        labelled = labelled_rows(self.pool.y, self.config.labelled_per_class, seed).numpy()
        unlabelled = np.ones(len(y_pool), dtype=bool)
        unlabelled[labelled] = False
        alone = self._classifier().fit(self.pool_x[labelled], y_pool[labelled])
        results = [{"arm": STUDENT_ALONE, "accuracy": alone.score(self.test_x, y_test)}]
        curves = []
        for arm, members in self.config.arms.items():
            teachers_pool = np.stack([self.probas[m][0] for m in members], axis=1)
            teachers_test = np.stack([self.probas[m][1] for m in members], axis=1)
            result, curve = self._arm(
                self.pool_x, y_pool, unlabelled, teachers_pool, self.test_x, y_test, teachers_test
            )
            results.append({"arm": arm, **result})
            curves += [{"arm": arm, **point} for point in curve]
        return {
            "curves": [{"seed": seed, **row} for row in curves],
            "results": [{"seed": seed, **row} for row in results],
        }

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        table = self._table(rows["results"])
        return table, self._write_outputs(table, rows["curves"], rows["results"])

    def _classifier(self, **settings) -> GDDAClassifier:
        """The configured classifier over every target class (a class may have no labelled row:
        the teachers teach it), fed the teachers' probabilities."""
        fixed = {"classes": range(self.num_classes), "teacher_outputs": "probabilities"}
        return GDDAClassifier(**{**self.config.classifier, **fixed, **settings})

    def _arm(
        self,
        pool_x: np.ndarray,
        y_pool: np.ndarray,
        unlabelled: np.ndarray,
        teachers_pool: np.ndarray,
        test_x: np.ndarray,
        y_test: np.ndarray,
        teachers_test: np.ndarray,
    ) -> tuple[dict, list[dict]]:
        """One arm of one repetition: learned λ, brute-force λ, every grid point, the teachers.
        The pool's labels ``y_pool`` (L,) are read where ``unlabelled`` (L,) is False only."""
        data = {"teacher_probas": teachers_pool, "unlabelled": unlabelled}
        fits = {}
        for suffix, search in (("", "gradient"), ("_grid", "grid")):
            start = time.perf_counter()
            model = self._classifier(lambda_search=search).fit(pool_x, y_pool, **data)
            fits[suffix] = (model, time.perf_counter() - start)
        result: dict = {}
        for suffix, (model, seconds) in fits.items():
            result |= {
                f"accuracy{suffix}": model.score(test_x, y_test),
                f"loo_loss{suffix}": model.loo_loss_,
                f"lambda_0{suffix}": model.lambda_[0],
                f"seconds{suffix}": seconds,
            }
        result["lambda"] = " ".join(f"{w:.4f}" for w in fits[""][0].lambda_)
        result["teacher_accuracy"] = float(
            np.mean(teachers_test.mean(axis=1).argmax(axis=1) == y_test)
        )
        curve = []
        for lam in simplex_grid(teachers_pool.shape[1] + 1, self.config.grid_steps):
            model = self._classifier(lambda_search=lam).fit(pool_x, y_pool, **data)
            curve.append(
                {
                    "lambda": " ".join(f"{w:g}" for w in lam),
                    "lambda_0": lam[0],
                    "loo_loss": model.loo_loss_,
                    "accuracy": model.score(test_x, y_test),
                }
            )
        return result, curve

    def _table(self, results: list[dict]) -> list[dict]:
        seeds = {str(s) for s in self.config.seeds}
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for row in results:
            if str(row["seed"]) not in seeds:
                continue
            for metric in TABLE_METRICS:
                if row.get(metric, "") != "":
                    values[row["arm"], metric].append(float(row[metric]))
        return summarize(values)

    def _write_outputs(self, table: list[dict], curves: list[dict], results: list[dict]) -> str:
        """Draw the figures; return the Markdown table."""
        caption = (
            f"**{self.config.name}**: target Test accuracy, mean ± std over "
            f"{len(self.config.seeds)} repetitions ({self.config.labelled_per_class} labelled "
            "target row per class); λ learned by gradient, or `_grid`: the brute-force grid "
            "point with the lowest LOO loss; λ₀ is the true labels' weight."
        )
        alone = mean(float(r["accuracy"]) for r in results if r["arm"] == STUDENT_ALONE)
        for arm in self.config.arms:
            _plot_arm(
                [r for r in curves if r["arm"] == arm],
                [r for r in results if r["arm"] == arm],
                alone,
                self.out / "figures" / f"{file_name(arm)}.png",
                f"{self.config.name} / {arm} ({', '.join(self.config.arms[arm])})",
            )
        return markdown_table(table, caption)


def _flat(features: nn.Module, x: Tensor) -> np.ndarray:
    """``features(x)`` flattened to ``(N, d)`` float64."""
    with torch.no_grad():
        return features(x).reshape(len(x), -1).double().numpy()


def _plot_arm(
    curves: list[dict], results: list[dict], alone: float, path: Path, title: str
) -> None:
    """Mean Test accuracy against λ₀ over the grid (every grid point faint; the line takes, per
    λ₀, the point with the lowest mean LOO loss), the learned λ and the brute-force choice as
    markers, the teachers alone and the student alone as horizontal lines."""
    points: dict[str, list[dict]] = defaultdict(list)
    for row in curves:
        points[row["lambda"]].append(row)
    grid = [
        (
            float(rows[0]["lambda_0"]),
            mean(float(r["accuracy"]) for r in rows),
            mean(float(r["loo_loss"]) for r in rows),
        )
        for rows in points.values()
    ]
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.scatter(
        [g[0] for g in grid],
        [g[1] for g in grid],
        s=6,
        alpha=0.25,
        color="grey",
        label="grid λ (mean)",
    )
    best: dict[float, tuple[float, float]] = {}
    for lam0, accuracy, loss in grid:
        if lam0 not in best or loss < best[lam0][1]:
            best[lam0] = (accuracy, loss)
    xs = sorted(best)
    axes.plot(xs, [best[x][0] for x in xs], color="tab:blue", label="LOO-best grid λ per λ₀")

    def marker(metric: str) -> tuple[float, float]:
        return (
            mean(float(r[f"lambda_0{metric}"]) for r in results),
            mean(float(r[f"accuracy{metric}"]) for r in results),
        )

    axes.plot(
        *marker(""), marker="*", markersize=14, color="tab:red", linestyle="", label="learned λ"
    )
    axes.plot(
        *marker("_grid"),
        marker="s",
        markersize=8,
        color="tab:green",
        linestyle="",
        label="brute force (LOO)",
    )
    teacher = mean(float(r["teacher_accuracy"]) for r in results)
    axes.axhline(teacher, color="black", linestyle="--", label="teachers alone")
    axes.axhline(alone, color="black", linestyle=":", label="student alone")
    axes.set_xlabel("λ₀ (weight of the true labels)")
    axes.set_ylabel("target test accuracy")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=7)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
