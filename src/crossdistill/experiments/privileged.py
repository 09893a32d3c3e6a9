"""The privileged kind (SPEC §1.6, generalized distillation): teachers on x*, students on x,
per problem and repetition seed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib.pyplot as plt
import torch
from torch import nn

from ..data import PrivilegedData, PrivilegedSplits, privileged_datasets
from ..data.arrays import random_indices
from ..figures import save_figure
from ..methods import Method, Supervised, teacher_column, teachers_read
from ..models import check_outputs, count_parameters, models
from ..training import TeacherCache, evaluate, fit
from .config import ArmConfig, ConfigError, StudentConfig
from .driver import ExperimentKind, Rows, arm_method, arm_reads, choose, field, kinds
from .report import markdown_table, summarize
from .teachers import training

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


@kinds.register("privileged")
class PrivilegedKind(ExperimentKind):
    """A `PrivilegedConfig`: one unit per (problem, repetition seed).

    The directory holds ``config.yaml``, ``results.csv`` (``problem, seed, arm, lam,
    temperature, accuracy, cross_entropy``, Test metrics of the last epoch; each teacher's rows
    are under its own name, scored on x*), ``selection.csv`` (validation scores of swept λ, T),
    ``curves.csv`` (with ``curves``: Test scores of every swept arm's λ, T), ``table.csv``
    (``problem, arm, metric, mean, std, n``), ``table.md``, ``figures/`` and ``units/``.
    """

    outputs = ("selection", "curves", "results")

    def check(self) -> None:
        """Every problem's data for the first seed is built, and every model checked on it."""
        first_seed = self.config.seeds[0]
        self.first, self.classes = {}, {}
        for problem, spec in self.config.problems.items():
            with field(f"problems.{problem}"):
                data = privileged_datasets.build(spec, seed=first_seed)
                self.classes[problem] = _num_classes(data)
            self.first[problem] = data
            parts = (data.train, data.test)
            self.record(f"problems.{problem}", *(t for d in parts for t in (d.x, d.x_star, d.y)))
            n_valid = round(self.config.validation * len(data.train))
            if not 0 < n_valid < len(data.train):
                raise ConfigError(
                    f"field 'validation': {self.config.validation} of problem {problem!r}'s "
                    f"{len(data.train)} training rows is {n_valid} rows; it must leave at least "
                    "one row on each side of the split"
                )
            example = data.train.subset(torch.arange(1))
            with field("student.model"):
                student = self._model(self.config.student, example.x, self.classes[problem], 0)
                check_outputs(student, example.x, self.classes[problem], "the model")
            for name, spec_ in self.config.teachers.items():
                with field(f"teachers.{name}.model"):
                    teacher = self._model(spec_, example.x_star, self.classes[problem], 0)
                    check_outputs(teacher, example.x_star, self.classes[problem], "the model")
        self.reads = {}
        for name, arm in self.config.arms.items():
            with field(f"arms.{name}.method"):
                reads = arm_reads(name, arm, self.config.teachers, student, "classification")
            self.reads[name] = set(reads)
        self._units = {
            f"{problem} seed {seed}": (problem, seed)
            for problem in self.config.problems
            for seed in self.config.seeds
        }

    def units(self) -> list[str]:
        return list(self._units)

    def run_unit(self, unit: str) -> Rows:
        problem, seed = self._units[unit]
        data = (
            self.first[problem]
            if seed == self.config.seeds[0]
            else privileged_datasets.build(self.config.problems[problem], seed=seed)
        )
        rows = self._repetition(data.train, data.test, seed, self.classes[problem], unit)
        return {
            name: [{"problem": problem, "seed": seed, **row} for row in new]
            for name, new in rows.items()
        }

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        table = self._table(rows["results"], rows["curves"])
        return table, self._write_outputs(table, rows["curves"])

    # -- one repetition -------------------------------------------------------------------------
    def _repetition(
        self, train: PrivilegedData, test: PrivilegedData, seed: int, num_classes: int, unit: str
    ) -> Rows:
        """One repetition ``unit`` (its name in messages) of ``num_classes`` classes."""
        chosen = {name: arm.settings()[0] for name, arm in self.config.arms.items()}
        swept = {name: arm for name, arm in self.config.arms.items() if len(arm.settings()) > 1}
        selection: list[dict] = []
        if swept:  # one validation split and one selection teacher each serve every swept arm
            n_valid = max(1, round(self.config.validation * len(train)))
            valid_idx, fit_idx = random_indices(len(train), n_valid, seed)
            fit_part, valid = train.subset(fit_idx), train.subset(valid_idx)
            selectors = self._teachers(fit_part, seed, num_classes, swept, f"{unit} (selection)")
            for name, arm in swept.items():
                chosen[name], records = choose(
                    arm.settings(),
                    lambda setting, name=name: [
                        evaluate(
                            self._student(
                                fit_part,
                                selectors,
                                name,
                                *setting,
                                seed,
                                num_classes,
                                f"{unit} (selection)",
                            ),
                            valid.regular,
                            "classification",
                        )
                    ],
                    self.config.selection,
                )
                selection += [
                    {
                        "arm": name,
                        "lam": r["setting"][0],
                        "temperature": r["setting"][1],
                        **{k: v for k, v in r.items() if k != "setting"},
                    }
                    for r in records
                ]
        teachers = self._teachers(train, seed, num_classes, self.config.arms, unit)
        results = [
            {
                "arm": name,
                "lam": "",
                "temperature": "",
                **evaluate(teacher, test.privileged, "classification"),
                "teacher_parameters": count_parameters(teacher),
            }
            for name, (teacher, _) in teachers.items()
        ]
        curves: list[dict] = []
        trained: dict[tuple[str, float, float], dict] = {}
        if self.config.curves:
            for name, arm in swept.items():
                for lam, temperature in arm.settings():
                    student = self._student(
                        train, teachers, name, lam, temperature, seed, num_classes, unit
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
        for name in self.config.arms:
            lam, temperature = chosen[name]
            scores = trained.get((name, lam, temperature)) or self._scores(
                self._student(train, teachers, name, lam, temperature, seed, num_classes, unit),
                test,
            )
            results.append({"arm": name, "lam": lam, "temperature": temperature, **scores})
        return {"results": results, "selection": selection, "curves": curves}

    def _method(self, arm: ArmConfig, student: nn.Module, lam: float, temperature: float) -> Method:
        teacher = self.config.teacher_of(arm)
        return arm_method(arm, teacher, student, lam, temperature, "classification")

    def _student(
        self,
        train: PrivilegedData,
        teachers: dict[str, tuple[nn.Module, TeacherCache]],
        arm: str,
        lam: float,
        temperature: float,
        seed: int,
        num_classes: int,
        unit: str,
    ) -> nn.Module:
        """A student trained on ``train``'s regular inputs by ``arm``'s method at (λ, T), each
        teacher column it reads being that teacher's outputs on x* (``unit`` names the
        repetition in messages)."""
        student = self._model(self.config.student, train.x, num_classes, seed)
        method = self._method(self.config.arms[arm], student, lam, temperature)
        columns = train.regular.columns()
        for name in teachers_read(method.columns):
            teacher, cache = teachers[name]
            columns[teacher_column(name)] = cache.outputs(
                teacher, None, train.x_star, name=f"teacher {name!r} of {unit}"
            )
        fit(
            method,
            {column: columns[column] for column in method.columns},
            seed=seed,
            name=f"student of arm {arm!r} at λ={lam:g}, T={temperature:g}, {unit}",
            **training(self.config.student.train),
        )
        return student

    @staticmethod
    def _scores(student: nn.Module, test: PrivilegedData) -> dict:
        """Test metrics on the regular inputs, and the student's parameter count."""
        return {
            **evaluate(student, test.regular, "classification"),
            "parameters": count_parameters(student),
        }

    def _teachers(
        self, train: PrivilegedData, seed: int, num_classes: int, arms, unit: str
    ) -> dict[str, tuple[nn.Module, TeacherCache]]:
        """Every teacher the ``arms`` read, trained on ``train``'s privileged inputs x*, each
        with a cache of its outputs (``unit`` names the repetition in messages)."""
        read = set().union(*(self.reads[arm] for arm in arms))
        used = [name for name in self.config.teachers if name in read]
        teachers = {}
        for name in used:
            teacher = self._model(self.config.teachers[name], train.x_star, num_classes, seed)
            fit(
                Supervised(teacher),
                train.privileged,
                seed=seed,
                name=f"teacher {name!r} of {unit}",
                **training(self.config.teachers[name].train),
            )
            teachers[name] = (teacher.eval(), TeacherCache())
        return teachers

    def _model(
        self, spec: StudentConfig, x: torch.Tensor, num_classes: int, seed: int
    ) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(spec.model, in_shape=tuple(x.shape[1:]), num_outputs=num_classes)
        return model.to(self.config.device)

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

    def _write_outputs(self, table: list[dict], curves: list[dict]) -> str:
        """Draw the figures; return the Markdown tables, one per problem."""
        parts = []
        for problem in self.config.problems:
            rows = [row for row in table if row["problem"] == problem]
            caption = (
                f"**{self.config.name} / {problem}**: last-epoch Test metrics, mean ± std over "
                f"{len(self.config.seeds)} repetitions; λ, T chosen on validation when swept "
                f"(except `{BEST_ON_TEST}`); the teacher is scored on x*."
            )
            parts.append(markdown_table(rows, caption))
        _plot_accuracy(table, self.out / "figures" / "accuracy.png", self.config.name)
        for problem in self.config.problems:
            lines = {
                row["arm"]: row["mean"]
                for row in table
                if row["problem"] == problem
                and row["metric"] == "accuracy"
                and (row["arm"] in self.config.teachers or self._no_teacher(row["arm"]))
            }
            for arm in self.config.arms:
                rows = [r for r in curves if (r["problem"], r["arm"]) == (problem, arm)]
                if rows:
                    _plot_curves(
                        rows,
                        lines,
                        set(self.config.teachers),
                        self.out / "figures" / f"{problem}_{arm}.png",
                        f"{self.config.name} / {problem} / {arm}",
                    )
        return "\n".join(parts)

    def _no_teacher(self, arm: str) -> bool:
        """Whether ``arm`` is an arm whose method reads no teacher at any of its (λ, T)."""
        return arm in self.config.arms and not self.reads[arm]


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


def _plot_curves(
    curves: list[dict], lines: dict[str, float], dashed: set[str], path: Path, title: str
) -> None:
    """Mean Test accuracy against the soft labels' weight 1 − λ, one line per T, with ``lines``
    (label → accuracy: the teachers, dashed, and the students alone) drawn across (Lopez-Paz
    et al.'s Fig. 1)."""
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
        style = "--" if label in dashed else ":"
        axes.axhline(value, color="black", linestyle=style, label=label)
    axes.set_xlabel("imitation weight 1 − λ (soft labels)")
    axes.set_ylabel("test accuracy")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def _num_classes(data: PrivilegedSplits) -> int:
    """The problem's classes: declared by its builder, else the largest label + 1."""
    declared = getattr(data, "num_classes", None)
    return declared or int(torch.cat([data.train.y, data.test.y]).max()) + 1
