"""Run a generalized-distillation config (SPEC §1.6): a teacher on x*, students on x, per seed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib.pyplot as plt
import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import PrivilegedData, privileged_datasets
from ..data.arrays import random_indices
from ..files import atomic_path
from ..mappings.figures import save_figure
from ..methods import distill
from ..models import count_parameters, models
from ..training import TeacherCache, evaluate
from .config import ArmConfig, PrivilegedConfig, StudentConfig, dump_config
from .report import claim_directory, markdown_table, read_csv, summarize, write_csv

TEACHER = "teacher"
"""Arm name of the teacher's own rows: trained and scored on the privileged inputs x*."""

TABLE_METRICS = (
    "accuracy",
    "cross_entropy",
    "lam",
    "temperature",
    "parameters",
    "teacher_parameters",
)

BEST_ON_TEST = "@best_on_test"
"""Suffix of the rows that take the (λ, T) with the best mean Test accuracy from the curves:
the protocol of Lopez-Paz et al.'s published MNIST figures, shown for comparison only."""


class PrivilegedExperiment:
    """A `PrivilegedConfig` bound to its run directory.

    The directory holds ``config.yaml``, ``results.csv`` (``problem, seed, arm, lam,
    temperature, accuracy, cross_entropy``, Test metrics of the last epoch), ``selection.csv``
    (validation scores of swept λ, T), ``curves.csv`` (with ``curves``: Test scores of every
    swept arm's λ, T), ``table.csv`` (``problem, arm, metric, mean, std, n``), ``table.md`` and
    ``figures/``. The unit of work is one (problem, seed); a rerun skips finished units.
    """

    def __init__(self, config: PrivilegedConfig, out: str | Path, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out)
        self.progress = progress

    def run(self) -> list[dict]:
        """Run every unfinished (problem, seed), write all outputs and return the table rows."""
        first_seed = self.config.seeds[0]
        # every problem's data is built once before any output: a missing file writes nothing
        first = {
            problem: privileged_datasets.build(spec, seed=first_seed)
            for problem, spec in self.config.problems.items()
        }
        claim_directory(self.out, dump_config(self.config))
        files = {name: self.out / f"{name}.csv" for name in ("results", "selection", "curves")}
        rows = {name: read_csv(path) if path.exists() else [] for name, path in files.items()}
        done = {(row["problem"], int(row["seed"])) for row in rows["results"]}
        bar = tqdm(
            total=len(self.config.problems) * len(self.config.seeds),
            desc=self.config.name,
            unit="repetition",
            disable=None if self.progress else True,
        )
        for problem, spec in self.config.problems.items():
            for seed in self.config.seeds:
                bar.update()
                if (problem, seed) in done:
                    continue
                data = (
                    first[problem]
                    if seed == first_seed
                    else privileged_datasets.build(spec, seed=seed)
                )
                unit = self._run_unit(data.train, data.test, seed)
                for name, new in unit.items():
                    rows[name] += [{"problem": problem, "seed": seed, **row} for row in new]
                for name, path in files.items():  # results last: it marks the unit done
                    if name != "results" and rows[name]:
                        write_csv(rows[name], path)
                write_csv(rows["results"], files["results"])
        bar.close()
        table = self._table(rows["results"], rows["curves"])
        self._write_outputs(table, rows["curves"])
        return table

    # -- one repetition -------------------------------------------------------------------------
    def _run_unit(self, train: PrivilegedData, test: PrivilegedData, seed: int) -> dict:
        num_classes = int(train.y.max()) + 1
        selection: list[dict] = []
        chosen = {name: arm.settings()[0] for name, arm in self.config.arms.items()}
        swept = {name: arm for name, arm in self.config.arms.items() if len(arm.settings()) > 1}
        if swept:  # one validation split and one selection teacher serve every swept arm
            n_valid = max(1, round(self.config.validation * len(train)))
            valid_idx, fit_idx = random_indices(len(train), n_valid, seed)
            fit_part, valid = train.subset(fit_idx), train.subset(valid_idx)
            selector = self._teacher(fit_part, seed, num_classes)
            selector_cache = TeacherCache()
            for name, arm in swept.items():
                chosen[name] = self._choose(
                    name,
                    arm,
                    fit_part,
                    valid,
                    selector,
                    selector_cache,
                    seed,
                    selection,
                    num_classes,
                )
        teacher = self._teacher(train, seed, num_classes)
        cache = TeacherCache()
        teacher_scores = evaluate(teacher, test.privileged, "classification")
        results = [
            {
                "arm": TEACHER,
                "lam": "",
                "temperature": "",
                **teacher_scores,
                "teacher_parameters": count_parameters(teacher),
            }
        ]
        curves: list[dict] = []
        trained: dict[tuple[str, float, float], dict] = {}
        if self.config.curves:
            for name, arm in self.config.arms.items():
                if len(arm.settings()) == 1:
                    continue
                for lam, temperature in arm.settings():
                    student = self._student(
                        train, teacher, cache, arm, lam, temperature, seed, num_classes
                    )
                    trained[name, lam, temperature] = self._scores(student, test)
                    curves.append(
                        {
                            "arm": name,
                            "lam": lam,
                            "temperature": temperature,
                            **trained[name, lam, temperature],
                        }
                    )
        for name, arm in self.config.arms.items():
            lam, temperature = chosen[name]
            scores = trained.get((name, lam, temperature)) or self._scores(
                self._student(train, teacher, cache, arm, lam, temperature, seed, num_classes),
                test,
            )
            results.append({"arm": name, "lam": lam, "temperature": temperature, **scores})
        return {"results": results, "selection": selection, "curves": curves}

    def _choose(
        self,
        name: str,
        arm: ArmConfig,
        fit_part: PrivilegedData,
        valid: PrivilegedData,
        teacher: nn.Module,
        cache: TeacherCache,
        seed: int,
        selection: list[dict],
        num_classes: int,
    ) -> tuple[float, float]:
        """The swept arm's (λ, T) with the best score on ``valid`` (``config.selection``;
        accuracy ties broken by cross-entropy), students and ``teacher`` trained on
        ``fit_part`` only."""
        scores = {}
        for lam, temperature in arm.settings():
            student = self._student(
                fit_part, teacher, cache, arm, lam, temperature, seed, num_classes
            )
            score = evaluate(student, valid.regular, "classification")
            selection.append({"arm": name, "lam": lam, "temperature": temperature, **score})
            scores[lam, temperature] = (
                (score["cross_entropy"],)
                if self.config.selection == "cross_entropy"
                else (-score["accuracy"], score["cross_entropy"])
            )
        return min(scores, key=scores.get)

    def _student(
        self,
        train: PrivilegedData,
        teacher: nn.Module,
        cache: TeacherCache,
        arm: ArmConfig,
        lam: float,
        temperature: float,
        seed: int,
        num_classes: int,
    ) -> nn.Module:
        """A student trained on ``train``'s regular inputs, with ``teacher``'s soft labels on
        x* at (λ, T) (none at λ = 1)."""
        student = self._model(self.config.student, train.x, num_classes, seed)
        distill(
            student,
            train.regular,
            teacher=teacher if lam < 1 else None,
            privileged=train.x_star if lam < 1 else None,
            lam=lam,
            temperature=temperature,
            t2_scale=arm.t2_scale,
            soften_student=arm.soften_student,
            cache=cache,
            seed=seed,
            **self._training(self.config.student),
        )
        return student

    @staticmethod
    def _scores(student: nn.Module, test: PrivilegedData) -> dict:
        """Test metrics on the regular inputs, and the student's parameter count."""
        return {
            **evaluate(student, test.regular, "classification"),
            "parameters": count_parameters(student),
        }

    def _teacher(self, train: PrivilegedData, seed: int, num_classes: int) -> nn.Module:
        teacher = self._model(self.config.teacher, train.x_star, num_classes, seed)
        distill(
            teacher, train.privileged, lam=1.0, seed=seed, **self._training(self.config.teacher)
        )
        return teacher.eval()

    def _model(
        self, spec: StudentConfig, x: torch.Tensor, num_classes: int, seed: int
    ) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(spec.model, in_shape=tuple(x.shape[1:]), num_outputs=num_classes)
        return model.to(self.config.device)

    @staticmethod
    def _training(spec: StudentConfig) -> dict:
        train = spec.train
        return {
            "epochs": train.epochs,
            "batch_size": train.batch_size,
            "optimizer": train.optimizer,
        }

    # -- outputs --------------------------------------------------------------------------------
    def _table(self, results: list[dict], curves: list[dict]) -> list[dict]:
        """``problem, arm, metric, mean, std, n`` over the seeds of the config."""
        seeds = {str(s) for s in self.config.seeds}
        table = []
        for problem in self.config.problems:
            values: dict[tuple[str, str], list[float]] = defaultdict(list)
            for row in results:
                if row["problem"] != problem or str(row["seed"]) not in seeds:
                    continue
                for metric in TABLE_METRICS:
                    if row.get(metric, "") != "":
                        values[row["arm"], metric].append(float(row[metric]))
            for arm in self.config.arms:
                best = _best_on_test(
                    [
                        r
                        for r in curves
                        if (r["problem"], r["arm"]) == (problem, arm) and str(r["seed"]) in seeds
                    ]
                )
                for (lam, temperature), rows in best.items():
                    label = f"{arm}{BEST_ON_TEST}"
                    values[label, "accuracy"] = [float(r["accuracy"]) for r in rows]
                    values[label, "lam"] = [lam] * len(rows)
                    values[label, "temperature"] = [temperature] * len(rows)
            table += [{"problem": problem, **row} for row in summarize(values)]
        return table

    def _write_outputs(self, table: list[dict], curves: list[dict]) -> None:
        write_csv(table, self.out / "table.csv")
        parts = []
        for problem in self.config.problems:
            rows = [row for row in table if row["problem"] == problem]
            caption = (
                f"**{self.config.name} / {problem}**: last-epoch Test metrics, mean ± std over "
                f"{len(self.config.seeds)} repetitions; λ, T chosen on validation when swept "
                f"(except `{BEST_ON_TEST}`); the teacher is scored on x*."
            )
            parts.append(markdown_table(rows, caption))
        with atomic_path(self.out / "table.md") as tmp:
            tmp.write_text("\n".join(parts))
        _plot_accuracy(table, self.out / "figures" / "accuracy.png", self.config.name)
        for problem in self.config.problems:
            lines = {
                row["arm"]: row["mean"]
                for row in table
                if row["problem"] == problem
                and row["metric"] == "accuracy"
                and (row["arm"] == TEACHER or self._no_teacher(row["arm"]))
            }
            for arm in self.config.arms:
                rows = [r for r in curves if (r["problem"], r["arm"]) == (problem, arm)]
                if rows:
                    _plot_curves(
                        rows,
                        lines,
                        self.out / "figures" / f"{problem}_{arm}.png",
                        f"{self.config.name} / {problem} / {arm}",
                    )

    def _no_teacher(self, arm: str) -> bool:
        return arm in self.config.arms and not self.config.arms[arm].uses_teacher


def _best_on_test(curves: list[dict]) -> dict[tuple[float, float], list[dict]]:
    """The (λ, T) of the curves with the best mean Test accuracy, and its rows (empty if none)."""
    groups: dict[tuple[float, float], list[dict]] = defaultdict(list)
    for row in curves:
        groups[float(row["lam"]), float(row["temperature"])].append(row)
    if not groups:
        return {}
    best = max(groups, key=lambda key: mean(float(r["accuracy"]) for r in groups[key]))
    return {best: groups[best]}


def _plot_accuracy(table: list[dict], path: Path, title: str) -> None:
    """Mean Test accuracy (± std) of every arm, grouped by problem."""
    cells = [row for row in table if row["metric"] == "accuracy"]
    problems = list(dict.fromkeys(row["problem"] for row in cells))
    arms = list(dict.fromkeys(row["arm"] for row in cells))
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(problems) * len(arms) / 2), 4))
    width = 0.8 / len(arms)
    for k, arm in enumerate(arms):
        found = {row["problem"]: row for row in cells if row["arm"] == arm}
        xs = [i + k * width for i, p in enumerate(problems) if p in found]
        axes.bar(
            xs,
            [found[p]["mean"] for p in problems if p in found],
            width,
            yerr=[found[p]["std"] for p in problems if p in found],
            label=arm,
            capsize=3,
        )
    axes.set_xticks([i + width * (len(arms) - 1) / 2 for i in range(len(problems))], problems)
    axes.set_ylabel("test accuracy")
    axes.set_title(title)
    axes.legend(fontsize=8)
    axes.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def _plot_curves(curves: list[dict], lines: dict[str, float], path: Path, title: str) -> None:
    """Mean Test accuracy against the soft labels' weight 1 − λ, one line per T, with ``lines``
    (label → accuracy: the teacher, the student alone) drawn across (Lopez-Paz et al.'s Fig. 1)."""
    by_t: dict[float, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in curves:
        by_t[float(row["temperature"])][1 - float(row["lam"])].append(float(row["accuracy"]))
    figure, axes = plt.subplots(figsize=(6, 4))
    for temperature, points in sorted(by_t.items()):
        weights = sorted(points)
        axes.plot(
            weights, [mean(points[w]) for w in weights], marker=".", label=f"T={temperature:g}"
        )
    for label, value in lines.items():
        style = "--" if label == TEACHER else ":"
        axes.axhline(value, color="black", linestyle=style, label=label)
    axes.set_xlabel("imitation weight 1 − λ (soft labels)")
    axes.set_ylabel("test accuracy")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
