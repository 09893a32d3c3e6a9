"""The privileged kind (generalized distillation, Lopez-Paz et al., 2016): teachers on x*, students
on x, per problem and repetition seed."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib.pyplot as plt
import torch
from torch import nn

from ..data import PrivilegedData, PrivilegedSplits
from ..data.arrays import random_indices
from ..figures import save_figure
from ..files import file_name
from ..methods import Method, Supervised, teacher_column, teachers_read
from ..models import check_outputs, count_parameters
from ..registries import kinds, models, privileged_datasets
from ..training import TeacherCache, evaluate
from .config import ArmConfig, ConfigError, StudentConfig
from .driver import ExperimentKind, Rows, arm_method, arm_reads, choose, field
from .outputs import markdown_table, summarize
from .teachers import train_seeds

TABLE_METRICS = (
    "accuracy",
    "cross_entropy",
    "lam",
    "temperature",
    "parameters",
    "teacher_parameters",
)

Run = tuple[str, tuple[float, float], int]
"""A student's run: its arm, (λ, T) and repetition (the index of its seed)."""

BEST_ON_TEST = "@best_on_test"
"""Suffix of the rows that take the (λ, T) with the best mean Test accuracy from the curves:
the protocol of Lopez-Paz et al.'s published MNIST figures, shown for comparison only."""


@kinds.register("privileged")
class PrivilegedKind(ExperimentKind):
    """A `PrivilegedConfig`: one unit per problem, all its repetition seeds inside.

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

    def units(self) -> list[str]:
        return list(self.config.problems)

    def run_unit(self, unit: str) -> Rows:
        """Problem ``unit``: every repetition seed's data, teachers and students, the seeds'
        runs of each teacher trained together and those of every student (each arm, (λ, T) and
        seed) by one `train_seeds` call for the selection and one for the final runs."""
        seeds = self.config.seeds
        data = [
            self.first[unit]
            if seed == seeds[0]
            else privileged_datasets.build(self.config.problems[unit], seed=seed)
            for seed in seeds
        ]
        per_seed = self._repetitions(
            [d.train for d in data], [d.test for d in data], self.classes[unit], unit
        )
        return {
            name: [
                {"problem": unit, "seed": seed, **row}
                for seed, rows in zip(seeds, per_seed, strict=True)
                for row in rows[name]
            ]
            for name in self.outputs
        }

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        table = self._table(rows["results"], rows["curves"])
        return table, self._write_outputs(table, rows["curves"])

    # -- the repetitions of one problem ---------------------------------------------------------
    def _repetitions(
        self,
        trains: list[PrivilegedData],
        tests: list[PrivilegedData],
        num_classes: int,
        problem: str,
    ) -> list[Rows]:
        """Every repetition of ``problem`` (``trains[k]``, ``tests[k]`` those of seed k):
        per seed, its ``results``, ``selection`` and ``curves`` rows. Every swept arm's
        (λ, T) × seed of the selection trains by one `_students` call, and the curves' and
        final runs of every arm by another."""
        seeds = list(self.config.seeds)
        count = len(seeds)
        rows: list[Rows] = [{"results": [], "selection": [], "curves": []} for _ in seeds]
        chosen = {name: [arm.settings()[0]] * count for name, arm in self.config.arms.items()}
        swept = {name: arm for name, arm in self.config.arms.items() if len(arm.settings()) > 1}
        sweep = [
            (name, setting, k)
            for name, arm in swept.items()
            for setting in arm.settings()
            for k in range(count)
        ]
        if swept:  # one validation split and one selection teacher per seed serve every arm
            parts = []
            for train, seed in zip(trains, seeds, strict=True):
                n_valid = max(1, round(self.config.validation * len(train)))
                valid_idx, fit_idx = random_indices(len(train), n_valid, seed)
                parts.append((train.subset(fit_idx), train.subset(valid_idx)))
            fit_parts = [fit_part for fit_part, _ in parts]
            selectors = self._teachers(fit_parts, num_classes, swept, f"{problem} (selection)")
            students = self._students(sweep, fit_parts, selectors, num_classes, problem)
            scores = {
                run: evaluate(student, parts[run[2]][1].regular, "classification")
                for run, student in zip(sweep, students, strict=True)
            }
            for name, arm in swept.items():
                for k in range(count):
                    chosen[name][k], records = choose(
                        arm.settings(),
                        lambda s, name=name, k=k: [scores[name, s, k]],
                        self.config.selection,
                    )
                    rows[k]["selection"] += [
                        {
                            "arm": name,
                            "lam": r["setting"][0],
                            "temperature": r["setting"][1],
                            **{key: v for key, v in r.items() if key != "setting"},
                        }
                        for r in records
                    ]
        teachers = self._teachers(trains, num_classes, self.config.arms, problem)
        for name, per_seed in teachers.items():
            for k, (teacher, _) in enumerate(per_seed):
                rows[k]["results"].append(
                    {
                        "arm": name,
                        "lam": "",
                        "temperature": "",
                        **evaluate(teacher, tests[k].privileged, "classification"),
                        "teacher_parameters": count_parameters(teacher),
                    }
                )
        curves = sweep if self.config.curves else []
        finals = [(name, chosen[name][k], k) for name in self.config.arms for k in range(count)]
        runs = list(dict.fromkeys([*curves, *finals]))  # a curve's run is a final run too
        students = self._students(runs, trains, teachers, num_classes, problem)
        trained = {
            run: self._scores(student, tests[run[2]])
            for run, student in zip(runs, students, strict=True)
        }
        for name, (lam, temperature), k in curves:
            rows[k]["curves"].append(
                {
                    "arm": name,
                    "lam": lam,
                    "temperature": temperature,
                    **trained[name, (lam, temperature), k],
                }
            )
        for name in self.config.arms:
            for k in range(count):
                lam, temperature = chosen[name][k]
                rows[k]["results"].append(
                    {
                        "arm": name,
                        "lam": lam,
                        "temperature": temperature,
                        **trained[name, chosen[name][k], k],
                    }
                )
        return rows

    def _method(self, arm: ArmConfig, student: nn.Module, lam: float, temperature: float) -> Method:
        teacher = self.config.teacher_of(arm)
        return arm_method(arm, teacher, student, lam, temperature, "classification")

    def _students(
        self,
        runs: list[Run],
        trains: list[PrivilegedData],
        teachers: dict[str, list[tuple[nn.Module, TeacherCache]]],
        num_classes: int,
        problem: str,
    ) -> list[nn.Module]:
        """Per run ``(arm, (λ, T), k)``, a student with seed k's initial weights and batch order
        trained on ``trains[k]``'s regular inputs by ``arm``'s method at (λ, T), each teacher
        column it reads being seed k's teacher's outputs on x*: every run by one `train_seeds`
        call (one stack; runs unlike the first, such as λ = 1 among λ < 1, in further stacks)."""
        seeds = self.config.seeds
        students = [
            self._model(self.config.student, trains[0].x, num_classes, seeds[k]) for _, _, k in runs
        ]
        methods = [
            self._method(self.config.arms[arm], student, *setting)
            for (arm, setting, _), student in zip(runs, students, strict=True)
        ]
        columns = {k: trains[k].regular.columns() for k in dict.fromkeys(k for *_, k in runs)}
        sets = []
        for method, (_, _, k) in zip(methods, runs, strict=True):
            for name in teachers_read(method.columns):
                if teacher_column(name) not in columns[k]:
                    teacher, cache = teachers[name][k]
                    columns[k][teacher_column(name)] = cache.outputs(
                        teacher,
                        None,
                        trains[k].x_star,
                        name=f"teacher {name!r} of {problem} seed {seeds[k]}",
                    )
            sets.append({column: columns[k][column] for column in method.columns})
        train_seeds(
            methods,
            sets,
            [seeds[k] for _, _, k in runs],
            self.config.student.train,
            batched=self.config.batched,
            checkpoints=None,
            names=[
                f"student of arm {arm!r} at λ={lam:g}, T={temperature:g}, {problem} seed {seeds[k]}"
                for arm, (lam, temperature), k in runs
            ],
        )
        return students

    @staticmethod
    def _scores(student: nn.Module, test: PrivilegedData) -> dict:
        """Test metrics on the regular inputs, and the student's parameter count."""
        return {
            **evaluate(student, test.regular, "classification"),
            "parameters": count_parameters(student),
        }

    def _teachers(
        self, trains: list[PrivilegedData], num_classes: int, arms, problem: str
    ) -> dict[str, list[tuple[nn.Module, TeacherCache]]]:
        """Every teacher the ``arms`` read, per seed trained on ``trains[k]``'s privileged
        inputs x*, each with a cache of its outputs."""
        read = set().union(*(self.reads[arm] for arm in arms))
        seeds = list(self.config.seeds)
        teachers = {}
        for name in [name for name in self.config.teachers if name in read]:
            spec = self.config.teachers[name]
            models_ = [self._model(spec, trains[0].x_star, num_classes, seed) for seed in seeds]
            train_seeds(
                [Supervised(model) for model in models_],
                [train.privileged.columns() for train in trains],
                seeds,
                spec.train,
                batched=self.config.batched,
                checkpoints=None,
                names=[f"teacher {name!r} of {problem} seed {seed}" for seed in seeds],
            )
            teachers[name] = [(model.eval(), TeacherCache()) for model in models_]
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
                        self.out / "figures" / f"{file_name(problem)}_{file_name(arm)}.png",
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
