"""Run a GDDA config (SPEC §1.6): source teachers' soft labels on a target domain with one
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
from tqdm.auto import tqdm

from ..data import ArrayData, DomainSplits
from ..files import atomic_path
from ..mappings import mappings
from ..mappings.figures import save_figure
from ..methods import GDDAClassifier, distill
from ..methods.gdda import UNLABELLED, simplex_grid
from ..models import count_parameters, models
from ..training import evaluate, predict
from .config import GDDAConfig, SourceConfig, dump_config
from .report import claim_directory, markdown_table, read_csv, summarize, write_csv

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


class GDDAExperiment:
    """A `GDDAConfig` bound to its run directory.

    The directory holds ``config.yaml``, ``teachers.csv`` (each source teacher's accuracy on
    its own Test and on the target's Test), ``results.csv`` (per repetition and arm, the
    `TABLE_METRICS` and the learned λ), ``curves.csv`` (Test accuracy and LOO loss at every grid
    λ), ``table.csv`` / ``table.md`` (mean ± std over repetitions), ``figures/<arm>.png`` and
    ``checkpoints/`` (the trained teachers). A rerun skips finished repetitions.
    """

    def __init__(self, config: GDDAConfig, out: str | Path, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out)
        self.progress = progress

    def run(self) -> list[dict]:
        """Run every unfinished repetition, write all outputs and return the table rows."""
        target = self.config.target.load()  # a missing or corrupt file fails before any output
        claim_directory(self.out, dump_config(self.config))
        pool, test = target.train, target.test
        features = mappings.build(self.config.features)
        pool_x, test_x = (_flat(features, data.x) for data in (pool, test))
        num_classes = pool.num_classes
        probas = self._teachers(pool, test, num_classes)
        files = {name: self.out / f"{name}.csv" for name in ("results", "curves")}
        rows = {name: read_csv(path) if path.exists() else [] for name, path in files.items()}
        done = {int(row["seed"]) for row in rows["results"]}
        y_pool, y_test = pool.y.numpy(), test.y.numpy()
        for seed in tqdm(
            self.config.seeds, desc=self.config.name, disable=None if self.progress else True
        ):
            if seed in done:
                continue
            labelled = labelled_rows(pool.y, self.config.labelled_per_class, seed).numpy()
            y_semi = np.full_like(y_pool, UNLABELLED)
            y_semi[labelled] = y_pool[labelled]
            alone = self._classifier().fit(pool_x[labelled], y_pool[labelled])
            new = {
                "results": [{"arm": STUDENT_ALONE, "accuracy": alone.score(test_x, y_test)}],
                "curves": [],
            }
            for arm, members in self.config.arms.items():
                teachers_pool = np.stack([probas[m][0] for m in members], axis=1)
                teachers_test = np.stack([probas[m][1] for m in members], axis=1)
                result, curve = self._arm(
                    pool_x, y_semi, teachers_pool, test_x, y_test, teachers_test
                )
                new["results"].append({"arm": arm, **result})
                new["curves"] += [{"arm": arm, **point} for point in curve]
            for name in ("curves", "results"):  # results last: it marks the repetition done
                rows[name] += [{"seed": seed, **row} for row in new[name]]
                write_csv(rows[name], files[name])
        table = self._table(rows["results"])
        self._write_outputs(table, rows["curves"], rows["results"])
        return table

    def _classifier(self, **settings) -> GDDAClassifier:
        return GDDAClassifier(**{**self.config.classifier, **settings})

    def _arm(
        self,
        pool_x: np.ndarray,
        y_semi: np.ndarray,
        teachers_pool: np.ndarray,
        test_x: np.ndarray,
        y_test: np.ndarray,
        teachers_test: np.ndarray,
    ) -> tuple[dict, list[dict]]:
        """One arm of one repetition: learned λ, brute-force λ, every grid point, the teachers."""
        fits = {}
        for suffix, search in (("", "gradient"), ("_grid", "grid")):
            start = time.perf_counter()
            model = self._classifier(lambda_search=search).fit(pool_x, y_semi, teachers_pool)
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
            model = self._classifier(lambda_search=lam).fit(pool_x, y_semi, teachers_pool)
            curve.append(
                {
                    "lambda": " ".join(f"{w:g}" for w in lam),
                    "lambda_0": lam[0],
                    "loo_loss": model.loo_loss_,
                    "accuracy": model.score(test_x, y_test),
                }
            )
        return result, curve

    def _teachers(
        self, pool: ArrayData, test: ArrayData, num_classes: int
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each used source's teacher, trained once: its probabilities on the pool and on Test,
        ``(L, N)`` and ``(T, N)``; ``teachers.csv`` records its accuracies."""
        used = dict.fromkeys(m for members in self.config.arms.values() for m in members)
        probas, records = {}, []
        loaded: dict[str, DomainSplits] = {}  # sources sharing a dataset decode it once
        for name in used:
            source = self.config.sources[name]
            key = source.data.model_dump_json()
            if key not in loaded:
                loaded[key] = source.data.load()
            splits = loaded[key]
            transform = mappings.build(source.transform)
            teacher = self._train_teacher(name, source, splits.big.map_x(transform), num_classes)
            phi = mappings.build(source.mapping)
            outputs = [
                predict(teacher, phi(data.x)).softmax(1).double().numpy() for data in (pool, test)
            ]
            probas[name] = (outputs[0], outputs[1])
            own = evaluate(teacher, splits.test.map_x(transform), "classification")
            records.append(
                {
                    "source": name,
                    "parameters": count_parameters(teacher),
                    "source_test_accuracy": own["accuracy"],
                    "target_test_accuracy": float(np.mean(outputs[1].argmax(1) == test.y.numpy())),
                }
            )
        write_csv(records, self.out / "teachers.csv")
        return probas

    def _train_teacher(
        self, name: str, source: SourceConfig, train: ArrayData, num_classes: int
    ) -> nn.Module:
        """The source's teacher trained on ``train`` (its transformed Big), or read back from
        its checkpoint."""
        torch.manual_seed(source.seed)
        teacher = models.build(
            source.model, in_shape=tuple(train.x.shape[1:]), num_outputs=num_classes
        ).to(self.config.device)
        distill(
            teacher,
            train,
            lam=1.0,
            seed=source.seed,
            checkpoint=self.out / "checkpoints" / f"{name}.pt",
            progress=f"teacher {name}" if self.progress else False,
            epochs=source.train.epochs,
            batch_size=source.train.batch_size,
            optimizer=source.train.optimizer,
        )
        return teacher.eval()

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

    def _write_outputs(self, table: list[dict], curves: list[dict], results: list[dict]) -> None:
        write_csv(table, self.out / "table.csv")
        caption = (
            f"**{self.config.name}**: target Test accuracy, mean ± std over "
            f"{len(self.config.seeds)} repetitions ({self.config.labelled_per_class} labelled "
            "target row per class); λ learned by gradient, or `_grid`: the brute-force grid "
            "point with the lowest LOO loss; λ₀ is the true labels' weight."
        )
        with atomic_path(self.out / "table.md") as tmp:
            tmp.write_text(markdown_table(table, caption))
        alone = mean(float(r["accuracy"]) for r in results if r["arm"] == STUDENT_ALONE)
        for arm in self.config.arms:
            _plot_arm(
                [r for r in curves if r["arm"] == arm],
                [r for r in results if r["arm"] == arm],
                alone,
                self.out / "figures" / f"{arm}.png",
                f"{self.config.name} / {arm} ({', '.join(self.config.arms[arm])})",
            )


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
