"""The growth kind (anti-distillation, Petrushina et al.): a teacher trained on D1 grown into a
bigger student on D2, one unit per initialisation (arm), every seed inside it."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from statistics import mean
from typing import Literal

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from ..data import ArrayData
from ..data.arrays import random_indices
from ..figures import save_figure
from ..files import file_name
from ..losses import robust_loss
from ..methods import GrowthObjective, Supervised
from ..models import Slots, active_new_units, check_outputs, count_parameters
from ..models.growth import grow, placed
from ..registries import kinds, mappings, models
from ..training import evaluate, fit, predict
from .config import ConfigError, DataConfig, GrowthArmConfig, GrowthConfig
from .driver import ExperimentKind, Rows, field, splits_tensors, target_size
from .outputs import markdown_table, plot_curves, summarize, write_csv
from .teachers import load_teacher, prepare_teacher, train_seeds, training

TASK = "classification"

ROBUST_ROWS = 1024
"""Test rows per slice of the robust loss (each slice is ``robust_samples`` times as many)."""

GRADMAX_ROWS = 256
"""Rows of D2's Small (a seeded random choice, all of Small when it has fewer) on whose loss
the ``gradmax`` extension grows."""

TARGET = 0.99
"""The fraction of the best arm's final mean Test accuracy that ``epochs_to_best`` and
``seconds_to_best`` race to."""


@kinds.register("growth")
class GrowthKind(ExperimentKind):
    """A `GrowthConfig`: the teacher trained (or loaded) once on D1's Big, then per arm and seed
    the arm's model (the student's architecture, or the teacher's) grown from it, optionally
    minimised by the growth objective on D1*, and trained on D2's Small.

    The directory holds ``config.yaml``, ``inputs.json``, ``teacher.csv`` (the teacher's
    per-epoch metrics on D1's Test), ``metrics.csv`` (per arm, seed and epoch: training losses,
    D2 Test accuracy and cross-entropy, ``epoch_seconds``: the seed's share of the epoch's
    training time, the arm's stack of seeds training together, see `fit_many`), ``results.csv``
    (``arm, seed, metric, value``: per seed the last epoch's ``accuracy`` and
    ``cross_entropy``, ``accuracy_epoch1``, ``accuracy_epoch5`` (when the student trains at
    least 5 epochs), ``accuracy_auc`` (the mean Test accuracy over epochs 1..E),
    ``robust_loss``, ``active_new_units`` (when the arm's model has new units),
    ``objective_seconds`` and the corruption metrics; per arm ``prediction_variance``,
    ``parameters`` and ``teacher_parameters``), ``table.csv`` / ``table.md`` (the results'
    mean ± std, and per arm ``epochs_to_best``, ``seconds_to_best`` and ``reached_best``:
    see `_time_to`), ``figures/`` (accuracy and cross-entropy against epoch; accuracy against
    corruption), ``units/`` and ``checkpoints/``.
    """

    outputs = ("metrics", "results")

    def check(self) -> None:
        config: GrowthConfig = self.config
        if config.teacher.torchscript is not None:
            raise ConfigError(
                f"field 'teacher.torchscript': {config.teacher.torchscript}: a TorchScript "
                "teacher cannot be grown (grow copies its weights layer by layer into the "
                "student's Linear, Conv2d, BatchNorm2d and LSTM modules, which TorchScript "
                "hides); give teacher.model and teacher.checkpoint (its state dict) instead"
            )
        with field("teacher.data"):
            d1 = config.teacher.data.load()
            self.teacher_classes = target_size(d1, TASK)
        self.record("teacher.data", *splits_tensors(d1))
        self.d2 = d1
        if config.student.data is not None:
            with field("student.data"):
                self.d2 = config.student.data.load()
            self.record("student.data", *splits_tensors(self.d2))
        with field("student.data" if config.student.data else "teacher.data"):
            self.classes = target_size(self.d2, TASK)
            if self.classes < self.teacher_classes:
                raise ConfigError(
                    f"the student's data has {self.classes} classes, fewer than the teacher's "
                    f"{self.teacher_classes}: a grown model keeps the teacher's classes"
                )
        if config.student.data is not None:
            _check_class_order(
                config.teacher.data, config.student.data, self.teacher_classes, self.classes
            )
        with field("teacher.transform"):
            transform = mappings.build(config.teacher.transform)
            self.teacher_big = d1.big.map_x(transform)
            self.teacher_test = d1.test.map_x(transform)
        self.record("teacher.transform", transform)
        student_shape = tuple(self.d2.small.x.shape[1:])
        with field("input_map"):
            self.psi = mappings.build(config.input_map)
            with torch.no_grad():
                mapped = tuple(self.psi(self.teacher_test.x[:1]).shape[1:])
            if mapped != student_shape:
                raise ConfigError(
                    f"ψ maps the teacher's inputs {tuple(self.teacher_test.x.shape[1:])} to "
                    f"{mapped}; the student's are {student_shape}"
                )
        self.record("input_map", self.psi)
        example = self.teacher_test.x[:1]
        if config.teacher.trained_here:
            with field("teacher.model"):
                self.teacher = self._build(config.teacher.model, example, self.teacher_classes, 0)
                check_outputs(self.teacher, example, self.teacher_classes, "the model")
        else:
            with field("teacher"):
                self.teacher = load_teacher(
                    "teacher",
                    config.teacher,
                    self.teacher_test,
                    self.teacher_classes,
                    config.device,
                    at="teacher",
                )
            self.record("teacher", self.teacher)
        with field("student.model"):
            student = self._model("student", 0)
            check_outputs(student, self.d2.small.x[:1], self.classes, "the model")
            try:
                grow(self.teacher, student, "zero")
            except (ValueError, TypeError, RuntimeError) as error:
                raise ValueError(f"{error} (the teacher is field 'teacher.model')") from None
        seed = config.seeds[0]
        for name, arm in config.arms.items():
            with field(f"arms.{name}"):  # as `run_unit` grows it: the arm's own settings
                student, slots = self._grown(arm, seed)
            if arm.objective is not None:
                with field(f"arms.{name}.objective"):
                    self._objective(arm, student, slots)
        if config.corruption and self.d2.test.x.ndim != 4:
            raise ConfigError(
                "field 'corruption': corrupting pixels needs images (N, C, H, W); the student's "
                f"inputs are {tuple(self.d2.test.x.shape)}"
            )

    def setup(self) -> None:
        self.teacher, history = prepare_teacher(
            self.config.teacher,
            self.teacher,
            self.teacher_big,
            self.teacher_test,
            TASK,
            self.teacher_classes,
            checkpoint=self.out / "checkpoints" / "teacher.pt",
            device=self.config.device,
            progress=self.progress,
            name="teacher",
        )
        write_csv(history, self.out / "teacher.csv")

    def units(self) -> list[str]:
        return list(self.config.arms)

    def run_unit(self, unit: str) -> Rows:
        """Arm ``unit``: every seed's model grown and optionally minimised by the objective on
        D1*, then all of them trained together on D2's Small (`train_seeds`: one stack where
        the model stacks) and scored on D2's Test."""
        arm, test, stem = self.config.arms[unit], self.d2.test, file_name(unit)
        seeds = self.config.seeds
        students, start_states, objective_seconds = [], [], {}
        for seed in seeds:
            student, slots = self._grown(arm, seed)
            start_states.append({k: v.detach().clone() for k, v in student.state_dict().items()})
            if arm.objective is not None:
                start = time.perf_counter()
                rows = random_indices(
                    len(self.teacher_big), min(arm.objective.rows, len(self.teacher_big)), seed
                )[0]
                d1_star = self.teacher_big.subset(rows).map_x(self.psi)
                fit(
                    self._objective(arm, student, slots),
                    d1_star,
                    seed=seed,
                    checkpoint=self.out / "checkpoints" / "objective" / f"{stem}-seed{seed}.pt",
                    progress=self.progress,
                    name=f"growth objective of arm {unit!r}, seed {seed}",
                    **training(arm.objective.train),
                )
                objective_seconds[seed] = time.perf_counter() - start
            students.append(student)
        histories = train_seeds(
            [Supervised(student) for student in students],
            self.d2.small.columns(),
            seeds,
            self.config.student.train,
            batched=True,
            checkpoints=self.out / "checkpoints" / stem,
            names=[f"student of arm {unit!r}, seed {seed}" for seed in seeds],
            score=test,
            task=TASK,
            timed=True,
            progress=self.progress,
        )
        metrics, results, probabilities = [], [], []
        for seed, student, start_state, history in zip(
            seeds, students, start_states, histories, strict=True
        ):
            metrics += [{"arm": unit, "seed": seed, **row} for row in history]
            final = {
                "accuracy": history[-1]["accuracy"],
                "cross_entropy": history[-1]["cross_entropy"],
                "robust_loss": self._robust(student, test, seed),
                **_curve(history),
            }
            active = active_new_units(self.teacher, start_state, student)
            if active is not None:  # None: the arm's model has the teacher's width
                final["active_new_units"] = active
            if seed in objective_seconds:  # minimising φ on D1*, before training on D2
                final["objective_seconds"] = objective_seconds[seed]
            for fraction in self.config.corruption:
                corrupt = mappings.build(
                    {"name": "corrupt_pixels", "fraction": fraction, "seed": seed}
                )
                scores = evaluate(student, test.map_x(corrupt), TASK)
                final[f"accuracy@{fraction:g}"] = scores["accuracy"]
                final[f"cross_entropy@{fraction:g}"] = scores["cross_entropy"]
            results += [
                {"arm": unit, "seed": seed, "metric": m, "value": v} for m, v in final.items()
            ]
            probabilities.append(predict(student, test.x).softmax(1))
        arm_level = {
            "prediction_variance": torch.stack(probabilities).var(0, unbiased=False).mean().item()
            if len(probabilities) > 1
            else 0.0,
            "parameters": count_parameters(self._model(arm.model, 0)),
            "teacher_parameters": count_parameters(self.teacher),
        }
        results += [
            {"arm": unit, "seed": "", "metric": m, "value": v} for m, v in arm_level.items()
        ]
        return {"metrics": metrics, "results": results}

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for row in rows["results"]:
            values[row["arm"], row["metric"]].append(float(row["value"]))
        runs = _runs(rows["metrics"])
        best, best_accuracy = _best_arm(runs)
        for (arm, metric), found in _time_to(runs, TARGET * best_accuracy).items():
            values[arm, metric] = found
        table = summarize(values)
        for metric in ("accuracy", "cross_entropy"):
            plot_curves(
                rows["metrics"], metric, self.out / "figures" / f"{metric}.png", self.config.name
            )
        if self.config.corruption:
            _plot_corruption(
                table,
                self.config.corruption,
                self.out / "figures" / "corruption.png",
                self.config.name,
            )
        d1, d2 = self.config.teacher.data, self.config.student.data or self.config.teacher.data
        caption = (
            f"**{self.config.name}**: teacher on D1 = {d1.name} (Big, {len(self.teacher_big):,} "
            f"rows), student on D2 = {d2.name} (Small, {len(self.d2.small):,} rows); last-epoch "
            f"metrics on D2's Test ({len(self.d2.test):,} rows), mean ± std over "
            f"{len(self.config.seeds)} seeds; `accuracy_epoch1` / `accuracy_epoch5`: Test "
            "accuracy after epochs 1 and 5; `accuracy_auc`: the area under the accuracy-epoch "
            "curve divided by the epochs E (the mean Test accuracy over epochs 1..E); "
            "`active_new_units`: the fraction of the new hidden units whose incoming or outgoing "
            "weights moved between growth and the end of training (absent for the arms of the "
            "teacher's width); `epochs_to_best` / `seconds_to_best`: training epochs and seconds "
            f"to first reach {100 * TARGET:g} % of the best arm's final mean accuracy — best arm "
            f"`{best}` ({best_accuracy:.4f}): {100 * TARGET:g} % is "
            f"{TARGET * best_accuracy:.4f} — over the seeds that reached it (`reached_best`: "
            "the fraction that did)."
        )
        return table, markdown_table(table, caption)

    def _build(self, spec, example: Tensor, num_outputs: int, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(spec, in_shape=tuple(example.shape[1:]), num_outputs=num_outputs)
        return model.to(self.config.device)

    def _model(self, which: Literal["student", "teacher"], seed: int) -> nn.Module:
        """A fresh network of the student's or the teacher's spec at the student's input shape
        and number of classes, initialised with ``seed``."""
        spec = self.config.teacher.model if which == "teacher" else self.config.student.model
        return self._build(spec, self.d2.small.x[:1], self.classes, seed)

    def _grown(self, arm: GrowthArmConfig, seed: int) -> tuple[nn.Module, Slots]:
        """The arm's model for ``seed`` with the teacher grown into it by the arm's extension,
        and the teacher tensors' slots in it."""
        model = self._model(arm.model, seed)
        batch = self._gradmax_batch(seed) if arm.extension == "gradmax" else None
        slots = grow(
            self.teacher,
            model,
            arm.extension,
            theta=arm.theta,
            noise=arm.noise,
            exact=arm.exact,
            seed=seed,
            batch=batch,
        )
        return model, slots

    def _gradmax_batch(self, seed: int) -> tuple[Tensor, Tensor]:
        """`GRADMAX_ROWS` rows of D2's Small drawn with ``seed``: inputs ``(N, ...)`` and int
        labels ``(N,)`` on the config's device."""
        small = self.d2.small
        rows = random_indices(len(small), min(GRADMAX_ROWS, len(small)), seed)[0]
        part = small.subset(rows)
        return part.x.to(self.config.device), part.y.to(self.config.device)

    def _objective(self, arm: GrowthArmConfig, student: nn.Module, slots) -> GrowthObjective:
        objective = arm.objective
        # the anchor's u: the teacher as growth placed it (0 at the start of a function-
        # preserving growth, net2net's divided weights included); scratch placed nothing
        grown = arm.extension != "scratch"
        return GrowthObjective(
            student,
            teacher_state=placed(student, slots) if grown else self.teacher.state_dict(),
            slots=slots,
            weights=tuple(objective.lam),
            delta=objective.delta,
            robust_samples=objective.robust_samples,
            hessian_samples=objective.hessian_samples,
            task=TASK,
        )

    def _robust(self, student: nn.Module, test: ArrayData, seed: int) -> float:
        """The robust loss L3^δ on D2's Test: the mean loss under input noise of radius ``delta``
        (a uniform box), in slices of `ROBUST_ROWS` rows."""
        generator = torch.Generator().manual_seed(seed)
        was_training = student.training
        student.eval()
        total = 0.0
        with torch.no_grad():
            for start in range(0, len(test), ROBUST_ROWS):
                part = test.subset(torch.arange(start, min(start + ROBUST_ROWS, len(test))))
                loss = robust_loss(
                    student,
                    part.x.to(self.config.device),
                    part.y.to(self.config.device),
                    self.config.delta,
                    self.config.robust_samples,
                    TASK,
                    generator=generator,
                )
                total += float(loss) * len(part)
        student.train(was_training)
        return total / len(test)


def _check_class_order(
    teacher: DataConfig, student: DataConfig, teacher_classes: int, student_classes: int
) -> None:
    """Raise `ConfigError` (field ``student.data.classes``) unless the student's first outputs
    are the teacher's classes in the teacher's order: `crossdistill.models.grow` keeps teacher
    class k at output k and adds the new classes after them.

    On one dataset (the same ``name``) a side's output k is class ``classes[k]`` when it gives
    ``classes`` (relabelled 0, 1, … in that order), else the dataset's label k; so the
    student's list (``classes``, else 0 … c−1) must start with the teacher's. The labels of two
    different datasets do not name the same things and are not compared (only counted).
    """
    if teacher.name != student.name:
        return
    ours = list(range(teacher_classes)) if teacher.classes is None else list(teacher.classes)
    theirs = list(range(student_classes)) if student.classes is None else list(student.classes)
    if theirs[: len(ours)] == ours:
        return

    def given(side: str, data: DataConfig, classes: list[int]) -> str:
        if data.classes is not None:
            return f"{classes} (field '{side}.data.classes')"
        labels = f"[0, 1, …, {len(classes) - 1}]" if len(classes) > 3 else str(classes)
        return f"{labels} (the dataset's own labels: field '{side}.data' gives no classes)"

    raise ConfigError(
        f"field 'student.data.classes': a grown student keeps the teacher's class k at output "
        f"k, so on one dataset ({teacher.name!r}) the student's classes must start with the "
        f"teacher's, in the same order: expected {given('teacher', teacher, ours)} first, "
        f"found {given('student', student, theirs)}"
    )


def _curve(history: list[dict]) -> dict[str, float]:
    """Of one run's per-epoch rows (``accuracy`` on D2's Test after each of epochs 1..E): the
    accuracy after epoch 1, after epoch 5 (when E ≥ 5), and ``accuracy_auc``, the area under
    the accuracy-epoch curve divided by E (the mean accuracy over the E epochs)."""
    accuracies = [float(row["accuracy"]) for row in history]
    curve = {"accuracy_epoch1": accuracies[0]}
    if len(accuracies) >= 5:
        curve["accuracy_epoch5"] = accuracies[4]
    curve["accuracy_auc"] = mean(accuracies)
    return curve


def _runs(metrics: list[dict]) -> dict[tuple[str, str], list[dict]]:
    """The rows of ``metrics.csv`` by (arm, seed), in epoch order."""
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in metrics:
        runs[row["arm"], str(row["seed"])].append(row)
    return runs


def _best_arm(runs: dict[tuple[str, str], list[dict]]) -> tuple[str, float]:
    """The arm of the highest mean last-epoch Test accuracy over its seeds (the first in config
    order on a tie), and that mean (a fraction in [0, 1])."""
    finals: dict[str, list[float]] = defaultdict(list)
    for (arm, _), rows in runs.items():
        finals[arm].append(float(rows[-1]["accuracy"]))
    means = {arm: mean(found) for arm, found in finals.items()}
    best = max(means, key=means.__getitem__)
    return best, means[best]


def _time_to(
    runs: dict[tuple[str, str], list[dict]], target: float
) -> dict[tuple[str, str], list[float]]:
    """Per arm, the epochs (``epochs_to_best``) and training seconds (``seconds_to_best``, the
    sum of ``epoch_seconds``) each seed takes to first reach Test accuracy ``target`` (seeds
    that never reach it are left out), and the fraction of seeds that reach it
    (``reached_best``)."""
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (arm, _), rows in runs.items():
        seconds, reached = 0.0, None
        for row in rows:
            seconds += float(row["epoch_seconds"])
            if float(row["accuracy"]) >= target:
                reached = (float(row["epoch"]), seconds)
                break
        found[arm, "reached_best"].append(float(reached is not None))
        if reached is not None:
            found[arm, "epochs_to_best"].append(reached[0])
            found[arm, "seconds_to_best"].append(reached[1])
    return found


def _plot_corruption(table: list[dict], fractions: list[float], path: Path, title: str) -> None:
    """Mean Test accuracy (± std) against the fraction of corrupted pixels, one line per arm."""
    cells = {(row["arm"], row["metric"]): row for row in table}
    arms = list(dict.fromkeys(row["arm"] for row in table))
    figure, axes = plt.subplots(figsize=(6, 4))
    for arm in arms:
        points = [
            (f, cells[arm, f"accuracy@{f:g}"])
            for f in fractions
            if (arm, f"accuracy@{f:g}") in cells
        ]
        xs = [100 * f for f, _ in points]
        means = [float(c["mean"]) for _, c in points]
        spreads = [float(c["std"]) for _, c in points]
        axes.errorbar(xs, means, yerr=spreads, marker=".", capsize=3, label=arm)
    axes.set_xlabel("corrupted pixels (%)")
    axes.set_ylabel("test accuracy")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
