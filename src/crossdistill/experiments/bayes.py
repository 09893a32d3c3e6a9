"""The bayes kind (Bayesian distillation, Grabovoy and Strijov, 2021): a teacher's Laplace
posterior, restricted to the units of narrower students, as their prior; every arm × width ×
seed on Small, scored on Test with the calibration error."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from ..data import ArrayData
from ..data.arrays import random_indices
from ..figures import save_figure
from ..files import atomic_path, file_name, read_rebuildable
from ..methods import (
    GaussianPosterior,
    MeanField,
    Method,
    PriorMAP,
    VariationalDistillation,
    fisher_diagonal,
    kept_units,
    laplace_posterior,
    teacher_column,
)
from ..models import check_outputs, count_parameters, placed, unit_slots
from ..registries import Spec, kinds, mappings, models
from ..training import (
    ECE_BINS,
    Reliability,
    TeacherCache,
    evaluate,
    metrics,
    predict,
    reliability,
)
from .config import BayesArmConfig, BayesConfig, ConfigError
from .driver import ExperimentKind, Rows, choose, field, splits_tensors, target_size
from .outputs import markdown_table, summarize, write_csv
from .teachers import load_teacher, prepare_teacher, train_seeds

SELECTION_SEED = 0
"""Seed of the split of Small into a validation part and the rest."""

TEACHER = "teacher"
"""The name of the config's one teacher (its column, checkpoint and table rows)."""

Setting = tuple[float, float, float]
"""(λ, T, τ): the soft term's weight and temperature, the prior precision."""


@kinds.register("bayes")
class BayesKind(ExperimentKind):
    """A `BayesConfig`: one unit per arm and width (``<arm>@<width>``), its settings chosen on
    validation, then every seed trained on all of Small and scored on Test.

    The directory holds ``config.yaml``, ``metrics.csv`` (per unit, seed and epoch),
    ``selection.csv``, ``results.csv`` (``arm, seed, metric, value``: accuracy, cross-entropy
    and ``ece`` per seed; the chosen settings, parameter counts and the teacher's f∘φ scores
    per unit), ``reliability.csv`` (per unit, seed and confidence bin: ``count``,
    ``confidence``, ``accuracy``), ``teacher.csv``, ``table.csv``, ``table.md``,
    ``figures/reliability.png`` (one panel per width), ``figures/accuracy.png`` (test
    accuracy against width), ``units/`` and ``checkpoints/`` (the teacher, its curvature
    ``curvature.pt`` and every student)."""

    outputs = ("metrics", "selection", "results", "reliability")

    config: BayesConfig

    def check(self) -> None:
        config = self.config
        with field("data"):
            self.splits = config.data.load()
            self.num_outputs = target_size(self.splits, "classification")
        self.record("data", *splits_tensors(self.splits))
        swept = [a for a in config.arms.values() if len(a.bayes_settings()) > 1]
        if swept and config.validation >= len(self.splits.small):
            raise ConfigError(
                f"field 'validation': the part of Small that chooses the settings must leave "
                f"rows to train on: expected fewer than {len(self.splits.small)}, found "
                f"{config.validation}"
            )
        spec = config.teacher
        with field("teacher.transform"):
            transform = mappings.build(spec.transform)
            self.teacher_big = self.splits.big.map_x(transform)
            self.teacher_test = self.splits.test.map_x(transform)
        example = self.teacher_test.x[:1]
        with field("teacher"):
            if spec.trained_here:
                self.teacher = None
                shape = models.build(
                    spec.model, in_shape=tuple(example.shape[1:]), num_outputs=self.num_outputs
                )
                check_outputs(shape, example, self.num_outputs, "the model")
            else:
                self.teacher = load_teacher(
                    TEACHER, spec, self.teacher_test, self.num_outputs, config.device, at="teacher"
                )
                shape = self.teacher
                self.record("teacher", self.teacher)
        with field("mapping"):
            self.phi = mappings.build(config.mapping)
            with torch.no_grad():
                seen = self.phi(self.splits.small.x[:1])
            check_outputs(shape, seen, self.num_outputs, "the teacher (field 'teacher')")
        self.record("mapping", self.phi)
        self.specs = {}
        for width in config.widths:
            with field("widths"):
                self.specs[width] = narrowed(spec.model, width)
                student = self._build(self.specs[width])
                check_outputs(student, self.splits.small.x[:1], self.num_outputs, "a student")
                unit_slots(student, shape)

    def setup(self) -> None:
        self.teacher, history = prepare_teacher(
            self.config.teacher,
            self.teacher,
            self.teacher_big,
            self.teacher_test,
            "classification",
            self.num_outputs,
            checkpoint=self.out / "checkpoints" / "teachers" / f"{TEACHER}.pt",
            device=self.config.device,
            progress=self.progress,
            name="teacher",
        )
        write_csv([{"teacher": TEACHER, **row} for row in history], self.out / "teacher.csv")
        self.curvature = self._curvature()
        self.cache = TeacherCache(self.out / "cache")
        self._posteriors: dict[float, GaussianPosterior] = {}
        self._kept: dict[tuple[float, str, float], dict[str, Tensor]] = {}

    def units(self) -> list[str]:
        return [unit_name(arm, width) for width in self.config.widths for arm in self.config.arms]

    def run_unit(self, unit: str) -> Rows:
        """``<arm>@<width>``: its settings chosen on validation (when swept), then every seed
        trained on all of Small and scored on Test, with the calibration error."""
        name, width = split_unit(unit, self.config)
        arm, small, config = self.config.arms[name], self.splits.small, self.config
        columns = {"x": small.x, "y": small.y}
        if any(lam < 1 for lam, _, _ in arm.bayes_settings()):
            outputs = self.cache.outputs(self.teacher, self.phi, small.x, name="teacher")
            columns[teacher_column(TEACHER)] = outputs
        setting, selection = self._choose(unit, arm, width, columns)
        methods = [self._method(arm, width, setting, seed, len(small)) for seed in config.seeds]
        histories = train_seeds(
            methods,
            {column: columns[column] for column in methods[0].columns},
            config.seeds,
            config.train,
            batched=True,
            checkpoints=self.out / "checkpoints" / file_name(unit),
            names=[f"student {unit!r}, seed {seed}" for seed in config.seeds],
            progress=self.progress,
        )
        lam, temperature, tau = setting
        rows, results, bins = [], [], []
        for seed, method, history in zip(config.seeds, methods, histories, strict=True):
            rows += [{"arm": unit, "seed": seed, **h} for h in history]
            output = predict(method, self.splits.test.x)
            table = reliability(output, self.splits.test.y)
            scores = {**metrics(output, self.splits.test.y, "classification"), "ece": table.error}
            results += [
                {"arm": unit, "seed": seed, "metric": m, "value": v} for m, v in scores.items()
            ]
            bins += reliability_rows(unit, seed, table)
        teacher_out = self.cache.outputs(self.teacher, self.phi, self.splits.test.x, name="teacher")
        teacher_table = reliability(teacher_out, self.splits.test.y)
        arm_level = {
            "lam": lam,
            "temperature": temperature,
            "parameters": count_parameters(methods[0].network),
            "teacher_parameters": count_parameters(self.teacher),
            **{
                f"teacher_{m}": v
                for m, v in metrics(teacher_out, self.splits.test.y, "classification").items()
            },
            "teacher_ece": teacher_table.error,
            "prior_precision": tau,
        }
        results += [
            {"arm": unit, "seed": "", "metric": m, "value": v} for m, v in arm_level.items()
        ]
        return {"metrics": rows, "selection": selection, "results": results, "reliability": bins}

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for row in rows["results"]:
            values[row["arm"], row["metric"]].append(row["value"])
        table = summarize(values)
        figures = self.out / "figures"
        plot_reliability(rows["reliability"], self.config, figures / "reliability.png")
        plot_widths(values, self.config, figures / "accuracy.png")
        caption = (
            f"**{self.config.name}**: final-epoch test metrics of students keeping a fraction "
            f"of the teacher's width (arm@fraction), mean ± std over {len(self.config.seeds)} "
            f"seeds; ECE over {ECE_BINS} confidence bins; λ, T and the prior precision τ "
            "chosen on validation when swept."
        )
        return table, markdown_table(table, caption)

    def _build(self, spec: Spec) -> nn.Module:
        return models.build(
            spec, in_shape=tuple(self.splits.small.x.shape[1:]), num_outputs=self.num_outputs
        ).to(self.config.device)

    def _curvature(self) -> dict[str, Tensor]:
        """The teacher's `fisher_diagonal` over its own training rows, computed once and kept in
        ``checkpoints/curvature.pt`` (read back only when it fits the teacher)."""
        path = self.out / "checkpoints" / "curvature.pt"
        shapes = {n: p.shape for n, p in self.teacher.named_parameters()}

        def read(file: Path) -> dict[str, Tensor]:
            found = torch.load(file, weights_only=True)
            if not isinstance(found, dict) or {n: t.shape for n, t in found.items()} != shapes:
                raise ValueError("not the curvature of this teacher's parameters")
            return found

        kept = read_rebuildable(path, read)
        if kept is not None:
            return kept
        curvature = fisher_diagonal(
            self.teacher, self.teacher_big, curvature=self.config.curvature, batch_size=128
        )
        with atomic_path(path) as temporary:
            torch.save(curvature, temporary)
        return curvature

    def _method(
        self, arm: BayesArmConfig, width: float, setting: Setting, seed: int, rows: int
    ) -> Method:
        """The arm's method around a fresh student of ``width`` (weights seeded by ``seed``)
        at ``setting``, for ``rows`` training rows."""
        lam, temperature, tau = setting
        torch.manual_seed(seed)
        net = self._build(self.specs[width])
        if arm.prior == "teacher" or arm.start == "teacher":
            if tau not in self._posteriors:
                self._posteriors[tau] = laplace_posterior(self.teacher, self.curvature, tau)
            posterior, key = self._posteriors[tau], (width, arm.rule, tau)
            if key not in self._kept:
                self._kept[key] = kept_units(posterior, self.teacher, net, arm.rule, seed=0)
            slots = unit_slots(net, self.teacher, self._kept[key])
            if arm.start == "teacher":
                net.load_state_dict(placed(self.teacher, slots))
        if arm.prior == "teacher":
            prior = posterior.restrict({k: s for k, s in slots.items() if k in posterior.mean})
        else:
            prior = GaussianPosterior.isotropic(net, 1.0 / tau)
        settings = {"lam": lam, "temperature": temperature, "teacher": TEACHER}
        if arm.method == "map":
            return PriorMAP(net, prior, rows, **settings)
        student = MeanField(net, std=self.config.initial_std, samples=self.config.samples)
        return VariationalDistillation(student, prior, rows, **settings)

    def _choose(
        self, unit: str, arm: BayesArmConfig, width: float, columns: dict[str, Tensor]
    ) -> tuple[Setting, list[dict]]:
        """The arm's (λ, T, τ) with the lowest mean validation cross-entropy over the seeds,
        each setting trained on Small without its validation rows; and the selection rows."""
        settings = arm.bayes_settings()
        if len(settings) == 1:
            return settings[0], []
        seeds = self.config.seeds
        valid_idx, train_idx = random_indices(
            len(self.splits.small), self.config.validation, SELECTION_SEED
        )
        train = {column: values[train_idx] for column, values in columns.items()}
        valid = ArrayData(columns["x"][valid_idx], columns["y"][valid_idx])
        runs = [(setting, seed) for setting in settings for seed in seeds]
        methods = [self._method(arm, width, s, seed, len(train_idx)) for s, seed in runs]
        train_seeds(
            methods,
            {column: train[column] for column in methods[0].columns},
            [seed for _, seed in runs],
            self.config.train,
            batched=True,
            checkpoints=self.out / "checkpoints" / "selection" / file_name(unit),
            names=[
                f"student {unit!r} at λ={s[0]:g}, T={s[1]:g}, τ={s[2]:g}, seed {seed} "
                "(choosing on validation)"
                for s, seed in runs
            ],
            progress=self.progress,
        )
        trained = dict(zip(runs, methods, strict=True))

        def scores(setting: Setting) -> list[dict[str, float]]:
            return [
                {"seed": seed, **evaluate(trained[setting, seed], valid, "classification")}
                for seed in seeds
            ]

        chosen, records = choose(settings, scores, "cross_entropy")
        selection = [
            {
                "arm": unit,
                "lam": r["setting"][0],
                "temperature": r["setting"][1],
                "prior_precision": r["setting"][2],
                **{k: v for k, v in r.items() if k != "setting"},
            }
            for r in records
        ]
        return chosen, selection


def narrowed(spec: Spec, fraction: float) -> Spec:
    """``spec`` with each entry of its ``hidden`` and ``channels`` settings times ``fraction``,
    rounded (at least 1): the spec of a student keeping that fraction of the model's width.

    Raises:
        ValueError: a spec that sets neither ``hidden`` nor ``channels``.
    """
    found = dict(spec) if isinstance(spec, dict) else {"name": spec}
    widths = [key for key in ("hidden", "channels") if key in found]
    if not widths:
        raise ValueError(
            f"the teacher's model spec {spec!r} sets no `hidden` or `channels` to narrow"
        )
    for key in widths:
        value = found[key]
        scaled = [max(1, round(v * fraction)) for v in _as_sequence(value)]
        found[key] = scaled if isinstance(value, list) else scaled[0]
    return found


def _as_sequence(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def unit_name(arm: str, width: float) -> str:
    """The unit (and table row) of arm ``arm`` at ``width``: ``<arm>@<width>``."""
    return f"{arm}@{width:g}"


def split_unit(unit: str, config: BayesConfig) -> tuple[str, float]:
    """The arm and width of unit ``unit`` (see `unit_name`)."""
    for width in config.widths:
        for arm in config.arms:
            if unit_name(arm, width) == unit:
                return arm, width
    raise KeyError(unit)


def reliability_rows(unit: str, seed: int, table: Reliability) -> list[dict]:
    """``reliability.csv`` rows of one seed's `crossdistill.training.Reliability`."""
    return [
        {
            "arm": unit,
            "seed": seed,
            "bin": b,
            "count": int(table.count[b]),
            "confidence": float(table.confidence[b]),
            "accuracy": float(table.accuracy[b]),
        }
        for b in range(len(table.count))
    ]


def plot_reliability(rows: Sequence[dict], config: BayesConfig, path: Path) -> None:
    """One panel per width: each arm's accuracy against confidence over the non-empty bins,
    pooled over seeds (count-weighted), with the diagonal of perfect calibration."""
    pooled: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0]))
    for row in rows:
        cell = pooled[row["arm"]][int(row["bin"])]
        count = float(row["count"])
        cell[0] += count
        cell[1] += count * float(row["confidence"])
        cell[2] += count * float(row["accuracy"])
    widths = config.widths
    figure, axes = plt.subplots(1, len(widths), figsize=(4 * len(widths), 4), squeeze=False)
    for ax, width in zip(axes[0], widths, strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for arm in config.arms:
            cells = [c for _, c in sorted(pooled[unit_name(arm, width)].items()) if c[0]]
            ax.plot(
                [c[1] / c[0] for c in cells],
                [c[2] / c[0] for c in cells],
                marker="o",
                markersize=3,
                label=arm,
            )
        ax.set_title(f"width × {width:g}")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    figure.suptitle(config.name)
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)


def plot_widths(
    values: dict[tuple[str, str], list[float]], config: BayesConfig, path: Path
) -> None:
    """Each arm's test accuracy (mean ± std over seeds) against the student's width fraction,
    with the teacher's f∘φ accuracy as a dashed line."""
    figure, ax = plt.subplots(figsize=(6, 4))
    widths = sorted(config.widths)
    for arm in config.arms:
        cells = [values[unit_name(arm, w), "accuracy"] for w in widths]
        means = [sum(c) / len(c) for c in cells]
        spreads = [torch.tensor(c).std().item() if len(c) > 1 else 0.0 for c in cells]
        ax.errorbar(widths, means, spreads, marker="o", capsize=3, label=arm)
    teacher = values.get((unit_name(next(iter(config.arms)), widths[0]), "teacher_accuracy"))
    if teacher:
        ax.axhline(teacher[0], color="grey", linestyle="--", label="teacher f∘φ")
    ax.set_xscale("log", base=2)
    ax.set_xticks(widths, [f"{w:g}" for w in widths])
    ax.minorticks_off()
    ax.set_xlabel("student width / teacher width")
    ax.set_ylabel("test accuracy")
    ax.set_title(config.name)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    figure.tight_layout()
    save_figure(figure, path)
    plt.close(figure)
