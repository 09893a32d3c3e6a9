"""The growth kind (SPEC §1.5, anti-distillation): a teacher trained on D1 grown into a bigger
student on D2, one unit per initialisation (arm), every seed inside it."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from statistics import mean

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from ..data import ArrayData
from ..data.arrays import random_indices
from ..figures import save_figure
from ..files import file_name
from ..losses import robust_loss
from ..mappings import mappings
from ..methods import GrowthObjective, Supervised
from ..models import check_outputs, count_parameters, models
from ..models.growth import grow, placed
from ..training import evaluate, fit, predict
from .config import ConfigError, DataConfig, GrowthArmConfig, GrowthConfig
from .driver import ExperimentKind, Rows, field, kinds, splits_tensors, target_size
from .report import markdown_table, plot_curves, summarize, write_csv
from .teachers import load_teacher, prepare_teacher, training

TASK = "classification"

ROBUST_ROWS = 1024
"""Test rows per slice of the robust loss (each slice is ``robust_samples`` times as many)."""


@kinds.register("growth")
class GrowthKind(ExperimentKind):
    """A `GrowthConfig`: the teacher trained (or loaded) once on D1's Big, then per arm and seed
    a student grown from it, optionally minimised by the growth objective on D1*, and trained on
    D2's Small.

    The directory holds ``config.yaml``, ``inputs.json``, ``teacher.csv`` (the teacher's
    per-epoch metrics on D1's Test), ``metrics.csv`` (per arm, seed and epoch: training losses,
    D2 Test accuracy and cross-entropy, ``epoch_seconds`` of training), ``results.csv``
    (``arm, seed, metric, value``), ``table.csv`` / ``table.md``, ``figures/`` (accuracy and
    cross-entropy against epoch; accuracy against corruption), ``units/`` and ``checkpoints/``.
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
            student = self._student(0)
            check_outputs(student, self.d2.small.x[:1], self.classes, "the model")
            try:
                grow(self.teacher, student, "zero")
            except (ValueError, TypeError, RuntimeError) as error:
                raise ValueError(f"{error} (the teacher is field 'teacher.model')") from None
        seed = config.seeds[0]
        for name, arm in config.arms.items():
            with field(f"arms.{name}"):  # as `run_unit` grows it: the arm's own settings
                student = self._student(seed)
                slots = grow(
                    self.teacher,
                    student,
                    arm.extension,
                    theta=arm.theta,
                    noise=arm.noise,
                    seed=seed,
                )
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
        """Arm ``unit``: every seed's student grown, optionally minimised by the objective on
        D1*, trained on D2's Small and scored on D2's Test."""
        arm, test, stem = self.config.arms[unit], self.d2.test, file_name(unit)
        metrics, results, probabilities = [], [], []
        for seed in self.config.seeds:
            student = self._student(seed)
            slots = grow(
                self.teacher, student, arm.extension, theta=arm.theta, noise=arm.noise, seed=seed
            )
            objective_seconds = None
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
                objective_seconds = time.perf_counter() - start
            history = fit(
                Supervised(student),
                self.d2.small,
                seed=seed,
                validate=_timed(lambda model: evaluate(model, test, TASK)),
                checkpoint=self.out / "checkpoints" / f"{stem}-seed{seed}.pt",
                progress=self.progress,
                name=f"student of arm {unit!r}, seed {seed}",
                **training(self.config.student.train),
            )
            metrics += [{"arm": unit, "seed": seed, **row} for row in history]
            final = {
                "accuracy": history[-1]["accuracy"],
                "cross_entropy": history[-1]["cross_entropy"],
                "robust_loss": self._robust(student, test, seed),
            }
            if objective_seconds is not None:  # minimising φ on D1*, before training on D2
                final["objective_seconds"] = objective_seconds
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
            "parameters": count_parameters(self._student(0)),
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
        for (arm, metric), found in _time_to_baseline(
            rows["metrics"], self.config.baseline
        ).items():
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
            f"{len(self.config.seeds)} seeds; `epochs_to_{self.config.baseline}` / "
            f"`seconds_to_{self.config.baseline}`: training epochs and seconds to reach the "
            f"`{self.config.baseline}` arm's final mean accuracy (over the seeds that reached it, "
            f"`reached_{self.config.baseline}` the fraction that did)."
        )
        return table, markdown_table(table, caption)

    def _build(self, spec, example: Tensor, num_outputs: int, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(spec, in_shape=tuple(example.shape[1:]), num_outputs=num_outputs)
        return model.to(self.config.device)

    def _student(self, seed: int) -> nn.Module:
        return self._build(self.config.student.model, self.d2.small.x[:1], self.classes, seed)

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
        """L3^δ of SPEC §1.5 on D2's Test: the mean loss under input noise of radius ``delta``
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


def _timed(validate):
    """``validate`` with ``epoch_seconds`` added: the wall time of the epoch's training (from
    the previous call's end, validation itself excluded)."""
    clock = {"since": time.perf_counter()}

    def timed(model: nn.Module) -> dict[str, float]:
        seconds = time.perf_counter() - clock["since"]
        scores = validate(model)
        clock["since"] = time.perf_counter()
        return {**scores, "epoch_seconds": seconds}

    return timed


def _time_to_baseline(metrics: list[dict], baseline: str) -> dict[tuple[str, str], list[float]]:
    """Per arm, the epochs and training seconds each seed takes to reach the baseline arm's
    final mean Test accuracy (seeds that never reach it are left out), and the fraction that
    reach it."""
    runs: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in metrics:
        runs[row["arm"], str(row["seed"])].append(row)
    finals = [rows[-1] for (arm, _), rows in runs.items() if arm == baseline]
    target = mean(float(r["accuracy"]) for r in finals)
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (arm, _), rows in runs.items():
        seconds, reached = 0.0, None
        for row in rows:
            seconds += float(row["epoch_seconds"])
            if float(row["accuracy"]) >= target:
                reached = (float(row["epoch"]), seconds)
                break
        found[arm, f"reached_{baseline}"].append(float(reached is not None))
        if reached is not None:
            found[arm, f"epochs_to_{baseline}"].append(reached[0])
            found[arm, f"seconds_to_{baseline}"].append(reached[1])
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
