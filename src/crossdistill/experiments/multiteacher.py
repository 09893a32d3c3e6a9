"""The multi-teacher kind (Sedova et al., 2022, "Knowledge distillation using a representation
of the sample in a shared latent space of models"): teachers with incomplete views of the
data, then per arm a student on Small taught by their merged soft labels and, optionally, their
shared latent."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import matplotlib.pyplot as plt
import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor, nn

from ..data import ArrayData
from ..data.arrays import random_indices
from ..figures import save_figure
from ..files import file_name
from ..methods import (
    LatentAlignment,
    LatentAutoencoder,
    MultiTeacherDistillation,
    PrincipalComponents,
    confidence_weights,
    feature_column,
    merge_soft_labels,
)
from ..models import check_outputs, count_parameters
from ..registries import kinds, mappings, models
from ..training import TeacherCache, TeacherRun, evaluate, fit, metrics
from ..training.hooks import capture
from .config import (
    ConfigError,
    MultiTeacherArmConfig,
    MultiTeacherConfig,
    MultiTeacherTeacherConfig,
    keep_classes,
)
from .distillation import SELECTION_SEED
from .driver import ExperimentKind, Rows, choose, field, splits_tensors, target_size
from .outputs import METRIC_LABELS, markdown_table, plot_curves, summarize, write_csv
from .teachers import load_teacher, prepare_teacher, train_seeds, training

TASK = "classification"

LATENTS = ("reconstruction", "triplet")
"""The arms' ``latent`` values that train a shared latent."""

LATENT_POINTS = 2000
"""Test rows (seeded random) drawn in a latent figure."""


class Setting(NamedTuple):
    """One candidate of an arm: the teachers it reads, λ, T, the weight γ of the hint or
    latent term, and the triplet margin and weight of its latent (0 where unused)."""

    group: tuple[str, ...]
    lam: float
    temperature: float
    latent_weight: float = 0.0
    margin: float = 0.0
    triplet_weight: float = 0.0


@dataclass
class _View:
    """A teacher's view of the data: its classes (indices into the full label space), its
    transform φ, its training rows (φ applied, labels relabelled; None for a loaded teacher)
    and its Test rows of its classes (likewise)."""

    classes: Tensor
    transform: nn.Module
    big: ArrayData | None
    test: ArrayData


@kinds.register("multiteacher")
class MultiTeacherKind(ExperimentKind):
    """A `MultiTeacherConfig`: every teacher trained (or loaded) on its view of Big, each run
    once over the student's Small and once over Test (with its hidden layer hooked); then per
    arm the teachers (or the single one) and (λ, T) chosen on validation, and every seed's
    student trained on Small and scored on Test.

    The directory holds ``config.yaml``, ``inputs.json``, ``teacher.csv`` (each teacher's
    per-epoch metrics on its own Test view), ``metrics.csv`` (per arm, seed and epoch),
    ``selection.csv`` (validation scores), ``choices.csv`` (each arm's teachers, λ and T),
    ``results.csv``, ``latent.csv`` (2-D coordinates of the shared latent and of the student's
    projection on Test, first seed), ``table.csv`` / ``table.md``, ``figures/``, ``cache/``
    (the teachers' passes), ``units/`` and ``checkpoints/``.
    """

    outputs = ("metrics", "selection", "choices", "results", "latent")

    def check(self) -> None:
        config: MultiTeacherConfig = self.config
        with field("data"):
            self.splits = config.data.load()
            self.num_classes = target_size(self.splits, TASK)
        self.record("data", *splits_tensors(self.splits))
        small = self.splits.small
        chosen = [a for a in config.arms.values() if len(self._settings(a)) > 1]
        if chosen and config.validation >= len(small):
            raise ConfigError(
                f"field 'validation': the part of Small that chooses λ, T and teachers must "
                f"leave rows to train on: expected fewer than {len(small)} (the size of Small), "
                f"found {config.validation}"
            )
        self.views: dict[str, _View] = {}
        self.teachers: dict[str, nn.Module] = {}
        for name, spec in config.teachers.items():
            at = f"teachers.{name}"
            self.views[name] = self._view(at, spec)
            with field(f"{at}.model" if spec.trained_here else at):
                self.teachers[name] = self._teacher(name, spec)
            with field(f"{at}.layer"):
                self._layer_size(self.teachers[name], spec.layer, self.views[name].test.x[:1])
            with field(f"{at}.transform"), torch.no_grad():
                seen = self.views[name].transform(small.x[:1])
                check_outputs(
                    self.teachers[name], seen, len(self.views[name].classes), "the teacher"
                )
            self.record(f"{at}.transform", self.views[name].transform)
        rows = config.latent.rows
        if rows is not None and any(a.latent in LATENTS for a in config.arms.values()):
            with field("latent.rows"):
                if rows > len(self.splits.big):
                    raise ValueError(
                        f"expected at most the {len(self.splits.big):,} rows of Big, found {rows:,}"
                    )
        with field("student.model"):
            student = self._student(0)
            check_outputs(student, small.x[:1], self.num_classes, "the model")
        with field("student.layer"):
            self.hidden_size = self._layer_size(student, config.student.layer, small.x[:1])

    def setup(self) -> None:
        records = []
        for name, spec in self.config.teachers.items():
            view = self.views[name]
            self.teachers[name], history = prepare_teacher(
                spec,
                self.teachers[name],
                view.big,
                view.test,
                TASK,
                len(view.classes),
                checkpoint=self.out / "checkpoints" / "teachers" / f"{file_name(name)}.pt",
                device=self.config.device,
                progress=self.progress,
                name=f"teacher {name!r}",
            )
            records += [{"teacher": name, **row} for row in history]
        write_csv(records, self.out / "teacher.csv")
        self.cache = TeacherCache(self.out / "cache")

    def units(self) -> list[str]:
        return list(self.config.arms)

    def run_unit(self, unit: str) -> Rows:
        """Arm ``unit``: the teachers' passes over Small, its (teachers, λ, T) chosen on
        validation, then every seed trained on all of Small and scored on Test."""
        arm, small, test = self.config.arms[unit], self.splits.small, self.splits.test
        settings = self._settings(arm)
        runs = {t: self._pass(t, small.x) for t in {t for s in settings for t in s[0]}}
        trainer = _ArmTrainer(self, unit, arm, runs)
        selection: list[dict] = []
        setting = settings[0]
        if len(settings) > 1:
            valid_idx, train_idx = random_indices(
                len(small), self.config.validation, SELECTION_SEED
            )
            valid = small.subset(valid_idx)

            parts = [settings] if self.config.batched else [[s] for s in settings]
            trained: dict[Setting, list[MultiTeacherDistillation]] = {}
            for part in parts:
                students = [methods for methods, _ in trainer.train(part, train_idx, final=False)]
                trained |= dict(zip(part, students, strict=True))

            def scores(setting: Setting) -> list[dict[str, float]]:
                methods = trained[setting]
                return [
                    {"seed": seed, **evaluate(method, valid, TASK)}
                    for seed, method in zip(self.config.seeds, methods, strict=True)
                ]

            setting, records = choose(settings, scores, "cross_entropy")
            selection = [{"arm": unit, **_describe(r.pop("setting")), **r} for r in records]
        everything = torch.arange(len(small))
        rows, results, latent = [], [], []
        [(methods, histories)] = trainer.train([setting], everything, final=True)
        for seed, method, history in zip(self.config.seeds, methods, histories, strict=True):
            rows += [{"arm": unit, "seed": seed, **h} for h in history]
            results += [
                {"arm": unit, "seed": seed, "metric": m, "value": history[-1][m]}
                for m in ("accuracy", "cross_entropy")
            ]
            if arm.latent != "none":
                probe = trainer.probe(
                    setting, seed, {t: self._pass(t, test.x) for t in setting.group}
                )
                results.append(
                    {"arm": unit, "seed": seed, "metric": "probe_accuracy", "value": probe}
                )
            if arm.latent in LATENTS and not latent:
                latent = self._latent_points(unit, trainer, setting, seed, method, test)
        arm_level = {
            "lam": setting.lam,
            "temperature": setting.temperature,
            "parameters": count_parameters(self._student(0)),
        }
        if arm.latent != "none":
            arm_level["latent_weight"] = setting.latent_weight
        if arm.latent == "triplet":
            arm_level |= {"margin": setting.margin, "triplet_weight": setting.triplet_weight}
        if setting.lam < 1 or arm.latent != "none":
            arm_level["teacher_parameters"] = sum(
                count_parameters(self.teachers[t]) for t in setting.group
            )
        results += [
            {"arm": unit, "seed": "", "metric": m, "value": v} for m, v in arm_level.items()
        ]
        choices = [{"arm": unit, **_describe(setting), "candidates": len(settings)}]
        return {
            "metrics": rows,
            "selection": selection,
            "choices": choices,
            "results": results,
            "latent": latent,
        }

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for row in rows["results"]:
            values[row["arm"], row["metric"]].append(float(row["value"]))
        baseline = self.config.baseline
        if baseline is not None:
            values |= _paired(rows["results"], baseline, "accuracy")
        test = self.splits.test
        for name, view in self.views.items():
            outputs = self._pass(name, test.x).outputs
            rows_of = _rows_of(test.y, view.classes)
            scores = metrics(outputs[rows_of], view.test.y, TASK)
            values[f"teacher {name}", "teacher_accuracy"].append(scores["accuracy"])
            values[f"teacher {name}", "teacher_cross_entropy"].append(scores["cross_entropy"])
            values[f"teacher {name}", "teacher_parameters"].append(
                float(count_parameters(self.teachers[name]))
            )
        table = summarize(values)
        figures = self.out / "figures"
        for metric in ("accuracy", "cross_entropy"):
            plot_curves(rows["metrics"], metric, figures / f"{metric}.png", self.config.name)
        points: dict[str, list[dict]] = defaultdict(list)
        for row in rows["latent"]:
            points[row["arm"]].append(row)
        for arm, found in points.items():
            _plot_latent(
                found, figures / f"latent_{file_name(arm)}.png", f"{self.config.name}: {arm}"
            )
        return table, markdown_table(table, self._caption(rows["choices"]))

    def _caption(self, choices: list[dict]) -> str:
        config, splits = self.config, self.splits
        views = []
        for name, spec in config.teachers.items():
            parts = [spec.model["name"] if isinstance(spec.model, dict) else str(spec.model)]
            if spec.classes is not None:
                parts.append(f"classes {spec.classes}")
            if spec.rows is not None:
                parts.append(f"{spec.rows:,} rows of Big")
            if spec.transform != "identity":
                parts.append(f"φ = {spec.transform}")
            views.append(f"`{name}` ({', '.join(parts)})")
        chosen = "; ".join(
            f"{c['arm']}: {c['teachers'] or 'none'}, λ={float(c['lam']):g}, "
            f"T={float(c['temperature']):g}"
            + "".join(
                f", {METRIC_LABELS[key]}={float(c[key]):g}"
                for key in ("latent_weight", "margin", "triplet_weight")
                if float(c.get(key) or 0) > 0
            )
            + f" (of {c['candidates']})"
            for c in choices
        )
        return (
            f"**{config.name}**: data {config.data.loader_spec()}; teachers {', '.join(views)} "
            f"trained on their view of Big ({len(splits.big):,} rows); student on Small "
            f"({len(splits.small):,} rows), last-epoch metrics on Test ({len(splits.test):,} "
            f"rows), mean ± std over {len(config.seeds)} seeds; teachers' rows: each on its own "
            f"view of Test. Chosen on validation ({config.validation} rows of Small; of N: the "
            f"arm's number of candidates): {chosen}."
            + (
                f" `accuracy − {config.baseline}`: the difference paired by seed."
                if config.baseline is not None
                else ""
            )
            + (
                " Linear probe: logistic regression on what the student's hidden layer matches "
                "(the shared latent, or the teachers' reduced hidden layers) of Small, scored on "
                "Test."
                if any(a.latent != "none" for a in config.arms.values())
                else ""
            )
        )

    def _settings(self, arm: MultiTeacherArmConfig) -> list[Setting]:
        """The arm's candidates: a single teacher each for ``best_one``, no teacher when nothing
        of them is used, times its (λ, T) and latent settings."""
        uses = any(lam < 1 for lam, _ in arm.settings()) or arm.latent != "none"
        teachers = self.config.teachers_of(arm)
        if not uses:
            groups: list[tuple[str, ...]] = [()]
        elif arm.teachers == "best_one":
            groups = [(t,) for t in teachers]
        else:
            groups = [tuple(teachers)]
        return [
            Setting(g, lam, t, *latent)
            for g in groups
            for lam, t in arm.settings()
            for latent in arm.latent_settings(self.config.latent)
        ]

    def _view(self, at: str, spec: MultiTeacherTeacherConfig) -> _View:
        """The view of teacher field ``at``: its classes, rows and transform of the data."""
        classes = spec.classes if spec.classes is not None else list(range(self.num_classes))
        with field(f"{at}.classes"):
            outside = [c for c in classes if c >= self.num_classes]
            if outside:
                raise ValueError(
                    f"{outside[0]} is not a class of the data (0–{self.num_classes - 1})"
                )
            splits = self.splits if spec.classes is None else keep_classes(self.splits, classes)
        big = splits.big
        if spec.rows is not None:
            with field(f"{at}.rows"):
                if spec.rows > len(big):
                    raise ValueError(
                        f"expected at most the {len(big):,} rows of its Big, found {spec.rows:,}"
                    )
            big = big.subset(random_indices(len(big), spec.rows, spec.seed)[0])
        with field(f"{at}.transform"):
            transform = mappings.build(spec.transform)
            test = splits.test.map_x(transform)
            big = big.map_x(transform) if spec.trained_here else None
        return _View(torch.tensor(classes), transform, big, test)

    def _teacher(self, name: str, spec: MultiTeacherTeacherConfig) -> nn.Module:
        """The teacher's model: built (untrained, until `setup`) or loaded from its file."""
        view = self.views[name]
        if spec.trained_here:
            torch.manual_seed(spec.seed)
            model = models.build(
                spec.model, in_shape=tuple(view.test.x.shape[1:]), num_outputs=len(view.classes)
            ).to(self.config.device)
            check_outputs(model, view.test.x[:1], len(view.classes), "the model")
            return model
        model = load_teacher(name, spec, view.test, len(view.classes), self.config.device)
        self.record(f"teachers.{name}", model)
        return model

    def _layer_size(self, model: nn.Module, layer: str, example: Tensor) -> int:
        """The flattened size of ``model``'s submodule ``layer``'s output on one row."""
        was_training = model.training
        model.eval()
        with torch.no_grad(), capture(model, [layer]) as recorded:
            model(example.to(self.config.device))
        model.train(was_training)
        return recorded[layer][0][0].numel()

    def _pass(self, name: str, x: Tensor) -> TeacherRun:
        """Teacher ``name`` over ``x`` (through its φ) with its layer hooked, from the cache."""
        spec = self.config.teachers[name]
        return self.cache.run(
            self.teachers[name],
            self.views[name].transform,
            x,
            [spec.layer],
            name=f"teacher {name!r}",
        )

    def latent_rows(self) -> ArrayData:
        """The config's ``latent.rows`` seeded random rows of Big, that the shared latent is
        trained on."""
        latent, big = self.config.latent, self.splits.big
        return big.subset(random_indices(len(big), latent.rows, latent.seed)[0])

    def _student(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return models.build(
            self.config.student.model,
            in_shape=tuple(self.splits.small.x.shape[1:]),
            num_outputs=self.num_classes,
        ).to(self.config.device)

    def _latent_points(
        self,
        unit: str,
        trainer: _ArmTrainer,
        setting: Setting,
        seed: int,
        method: MultiTeacherDistillation,
        test: ArrayData,
    ) -> list[dict]:
        """The shared latent of the teachers' Test features and the student's projection of
        Test, both in the first two principal axes of the former, on `LATENT_POINTS` rows."""
        runs = {t: self._pass(t, test.x) for t in setting.group}
        shown = random_indices(len(test), min(LATENT_POINTS, len(test)), 0)[0]
        everything = torch.arange(len(self.splits.small))
        latent = trainer.targets(setting, everything, seed, runs)["latent"][shown]
        method.eval()
        student = method.project(test.x[shown].to(self.config.device)).cpu()
        centre = latent.mean(0)
        axes = torch.linalg.svd(latent - centre, full_matrices=False)[2][:2].T
        points = []
        for space, value in (("teachers", latent), ("student", student)):
            flat = (value - centre) @ axes
            points += [
                {"arm": unit, "space": space, "x": float(a), "y": float(b), "label": int(c)}
                for (a, b), c in zip(flat.tolist(), test.y[shown].tolist(), strict=True)
            ]
        return points


class _ArmTrainer:
    """Trains one arm's students: soft labels merged once per (teachers, T) over Small, the
    teachers' reduced hidden layers (hints) once per (teachers, rows), the shared latent once
    per (teachers, margin, triplet weight, seed, rows)."""

    def __init__(
        self,
        kind: MultiTeacherKind,
        unit: str,
        arm: MultiTeacherArmConfig,
        runs: dict[str, TeacherRun],
    ) -> None:
        self.kind, self.unit, self.arm, self.runs = kind, unit, arm, runs
        self._soft: dict[tuple, Tensor] = {}
        self._reducers: dict[tuple, dict[str, PrincipalComponents]] = {}
        self._latents: dict[tuple, LatentAutoencoder] = {}

    def train(
        self, settings: list[Setting], rows: Tensor, final: bool
    ) -> list[tuple[list[MultiTeacherDistillation], list[list[dict]]]]:
        """Every seed's student of each of ``settings`` trained on Small's ``rows`` by one
        `train_seeds` call (one stack when the config is ``batched``): per setting, its seeds'
        methods and histories; ``final``: the run on all of Small, scored on Test every epoch.
        """
        kind, small, config = self.kind, self.kind.splits.small, self.kind.config
        seeds = config.seeds
        plain = {"x": small.x[rows], "y": small.y[rows]}
        methods, sets = [], []
        for setting in settings:
            shared = dict(plain)
            if setting.lam < 1:
                shared["soft_labels"] = self.soft_labels(setting.group, setting.temperature)[rows]
            for seed in seeds:
                targets = self.targets(setting, rows, seed)
                methods.append(
                    MultiTeacherDistillation(
                        kind._student(seed),
                        lam=setting.lam,
                        temperature=setting.temperature,
                        latent_weight=setting.latent_weight if targets else 0.0,
                        layer=config.student.layer,
                        hidden_size=kind.hidden_size,
                        targets={name: value.shape[1] for name, value in targets.items()},
                    ).to(config.device)
                )
                sets.append(shared | targets)
        label = _label(settings[0], path=True) if len(settings) == 1 else "sweep"
        checkpoints = kind.out / "checkpoints"
        histories = train_seeds(
            methods,
            sets if len(settings) > 1 or self.arm.latent != "none" else sets[0],
            [seed for _ in settings for seed in seeds],
            config.student.train,
            batched=config.batched,
            checkpoints=checkpoints / file_name(self.unit)
            if final
            else checkpoints / "selection" / f"{file_name(self.unit)}-{label}",
            names=[
                f"student of arm {self.unit!r}, seed {seed}"
                + ("" if final else f" at {_label(setting)} (choosing on validation)")
                for setting in settings
                for seed in seeds
            ],
            score=kind.splits.test if final else None,
            task=TASK,
            progress=kind.progress,
        )
        count = len(seeds)
        return [
            (methods[k : k + count], histories[k : k + count])
            for k in range(0, len(methods), count)
        ]

    def soft_labels(self, group: tuple[str, ...], temperature: float) -> Tensor:
        """``(N, C)`` merged soft labels of ``group`` at ``temperature`` on all of Small."""
        key = (group, temperature)
        if key not in self._soft:
            kind = self.kind
            classes = [kind.views[t].classes for t in group]
            weights = None
            if self.arm.weighting == "confidence":
                plain = [self.runs[t].outputs.softmax(1) for t in group]
                weights = confidence_weights(plain, classes, kind.splits.small.y)
            softened = [(self.runs[t].outputs / temperature).softmax(1) for t in group]
            self._soft[key] = merge_soft_labels(softened, classes, kind.num_classes, weights)
        return self._soft[key]

    def targets(
        self,
        setting: Setting,
        rows: Tensor,
        seed: int,
        runs: dict[str, TeacherRun] | None = None,
    ) -> dict[str, Tensor]:
        """What the student's hidden layer matches, by batch column, as fitted on Small's
        ``rows`` (with ``seed``): each teacher's reduced hidden layer (``hints``), the shared
        latent standardised by its mean and std on those rows, or nothing. Of those rows, or,
        with ``runs``, of the teachers' passes ``runs`` (e.g. over Test)."""
        if self.arm.latent == "none":
            return {}
        small = {t: self._features(t, self.runs[t])[rows] for t in setting.group}
        features = small if runs is None else {t: self._features(t, runs[t]) for t in small}
        if self.arm.latent == "hints":
            reducers = self._hint_reducers(setting.group, rows)
            return {_hint(t): reducers[t](features[t]) for t in setting.group}
        autoencoder = self.autoencoder(setting, rows, seed)
        with torch.no_grad():
            reference = autoencoder(small).cpu()
            latent = reference if runs is None else autoencoder(features).cpu()
        return {"latent": (latent - reference.mean(0)) / reference.std().clamp_min(1e-12)}

    def probe(self, setting: Setting, seed: int, test_runs: dict[str, TeacherRun]) -> float:
        """Test accuracy of a logistic regression fitted on `targets` of all of Small: how much
        of the label the student's hint or latent carries."""
        small, test = self.kind.splits.small, self.kind.splits.test
        everything = torch.arange(len(small))
        fitted = torch.cat(list(self.targets(setting, everything, seed).values()), 1)
        scored = torch.cat(list(self.targets(setting, everything, seed, test_runs).values()), 1)
        model = LogisticRegression(max_iter=2000).fit(fitted.numpy(), small.y.numpy())
        return float(model.score(scored.numpy(), test.y.numpy()))

    def _features(self, teacher: str, run: TeacherRun) -> Tensor:
        """Teacher ``teacher``'s hooked layer in ``run``."""
        return run.features[self.kind.config.teachers[teacher].layer]

    def _hint_reducers(
        self, group: tuple[str, ...], rows: Tensor
    ) -> dict[str, PrincipalComponents]:
        """Per teacher, `PrincipalComponents` (the latent's ``reduce``) fitted on Small's
        ``rows``."""
        key = (group, tuple(rows.tolist()))
        if key not in self._reducers:
            reduce = self.kind.config.latent.reduce
            self._reducers[key] = {
                t: PrincipalComponents(self._features(t, self.runs[t])[rows], reduce) for t in group
            }
        return self._reducers[key]

    def autoencoder(self, setting: Setting, rows: Tensor, seed: int) -> LatentAutoencoder:
        """The autoencoder of ``setting``'s teachers, margin and triplet weight, trained
        (seeded by ``seed``) on the config's ``latent.rows`` rows of Big or, without them, on
        Small's ``rows``; in eval mode."""
        kind, config = self.kind, self.kind.config
        on_big = config.latent.rows is not None
        trained_on = "big" if on_big else tuple(rows.tolist())
        key = (setting.group, setting.margin, setting.triplet_weight, seed, trained_on)
        if key not in self._latents:
            group = setting.group
            layers = {t: config.teachers[t].layer for t in group}
            if on_big:
                big = kind.latent_rows()
                features = {t: self._features(t, kind._pass(t, big.x)) for t in group}
                labels, part = big.y, "big"
            else:
                features = {t: self._features(t, self.runs[t])[rows] for t in group}
                labels = kind.splits.small.y[rows]
                part = "all" if len(rows) == len(kind.splits.small) else "selection"
            torch.manual_seed(seed)
            autoencoder = LatentAutoencoder(
                features,
                config.latent.size,
                config.latent.reduce,
                config.latent.hidden,
                normalize=config.latent.normalize,
            ).to(config.device)
            triplet = self.arm.latent == "triplet"
            alignment = LatentAlignment(
                autoencoder,
                {t: feature_column(t, layers[t]) for t in group},
                margin=setting.margin,
                triplet_weight=setting.triplet_weight if triplet else 0.0,
                mining=config.latent.mining,
            )
            name = f"{file_name(self.unit)}-{_group(group, path=True)}-{part}-seed{seed}"
            if triplet:
                name += f"-margin{setting.margin:g}-triplet{setting.triplet_weight:g}"
            fit(
                alignment,
                {"y": labels} | {feature_column(t, layers[t]): features[t] for t in group},
                seed=seed,
                checkpoint=kind.out / "checkpoints" / "latent" / f"{name}.pt",
                progress=kind.progress,
                name=f"shared latent of arm {self.unit!r}, seed {seed}",
                **training(config.latent.train),
            )
            self._latents[key] = autoencoder.eval()
        return self._latents[key]


def _rows_of(labels: Tensor, classes: Tensor) -> Tensor:
    """The rows whose label is one of ``classes``."""
    return torch.isin(labels, classes).nonzero().squeeze(1)


def _hint(teacher: str) -> str:
    """The batch column of teacher ``teacher``'s hint target."""
    return f"hint {teacher}"


def _paired(results: list[dict], baseline: str, metric: str) -> dict[tuple[str, str], list[float]]:
    """Per arm other than ``baseline``, its ``metric`` minus the baseline's on each seed both
    ran, under the metric ``<metric> − <baseline>``."""
    by_seed: dict[str, dict[str, float]] = defaultdict(dict)
    for row in results:
        if row["metric"] == metric and row["seed"] != "":
            by_seed[row["arm"]][str(row["seed"])] = float(row["value"])
    reference = by_seed.get(baseline, {})
    return {
        (arm, f"{metric} − {baseline}"): [
            value - reference[s] for s, value in seeds.items() if s in reference
        ]
        for arm, seeds in by_seed.items()
        if arm != baseline
    }


def _describe(setting: Setting) -> dict:
    return {
        "teachers": "+".join(setting.group),
        "lam": setting.lam,
        "temperature": setting.temperature,
        "latent_weight": setting.latent_weight,
        "margin": setting.margin,
        "triplet_weight": setting.triplet_weight,
    }


def _label(setting: Setting, path: bool = False) -> str:
    """``<teachers>-lam<λ>-T<T>`` of ``setting`` (see `_group`), then ``-gamma<γ>``,
    ``-margin<m>`` and ``-triplet<w>`` where they are set."""
    label = f"{_group(setting.group, path)}-lam{setting.lam:g}-T{setting.temperature:g}"
    for name, value in (
        ("gamma", setting.latent_weight),
        ("margin", setting.margin),
        ("triplet", setting.triplet_weight),
    ):
        if value > 0:
            label += f"-{name}{value:g}"
    return label


def _group(group: tuple[str, ...], path: bool = False) -> str:
    """The teachers of ``group`` joined by ``+`` (``none`` for no teacher); with ``path``, each
    name as `crossdistill.files.file_name` writes it, for a file name."""
    return "+".join(map(file_name, group) if path else group) or "none"


def _plot_latent(points: list[dict], path: Path, title: str) -> None:
    """Two scatter panels, the teachers' shared latent and the student's projection, coloured
    by class."""
    figure, panels = plt.subplots(1, 2, figsize=(10, 4.5), sharex=True, sharey=True)
    for axes, space, heading in zip(
        panels,
        ("teachers", "student"),
        ("teachers' shared latent", "student's projection"),
        strict=True,
    ):
        shown = [p for p in points if p["space"] == space]
        scatter = axes.scatter(
            [float(p["x"]) for p in shown],
            [float(p["y"]) for p in shown],
            c=[int(p["label"]) for p in shown],
            cmap="tab10",
            s=4,
            vmin=-0.5,
            vmax=max(int(p["label"]) for p in points) + 0.5,
        )
        axes.set_title(heading)
        axes.set_xlabel("latent axis 1")
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("latent axis 2")
    figure.colorbar(scatter, ax=panels, label="class")
    figure.suptitle(title + " (Test, first seed)")
    save_figure(figure, path)
    plt.close(figure)
