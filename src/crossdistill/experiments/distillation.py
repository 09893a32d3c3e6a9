"""The distillation kind (Hinton et al., 2015; on multi-domain data, Orlov and Grabovoy): teachers
by name, then every arm × seed on Small."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from statistics import mean, stdev

import matplotlib.pyplot as plt
import torch
from torch import Tensor, nn

from ..data import ArrayData
from ..data.arrays import LABELLED, random_indices, with_unlabelled
from ..data.datasets import DomainSplits
from ..data.views import Views
from ..figures import save_figure
from ..files import file_name
from ..methods import Method, feature_column, teacher_column, teacher_views
from ..methods.consistent import INDEX, views_column
from ..models import check_outputs, count_parameters
from ..registries import Spec, kinds, mappings, models
from ..training import TeacherCache, TeacherRun, evaluate, metrics
from .config import ArmConfig, ConfigError, DataConfig, ExperimentConfig
from .driver import (
    ExperimentKind,
    Rows,
    arm_method,
    arm_reads,
    choose,
    field,
    splits_tensors,
    target_size,
)
from .outputs import METRIC_LABELS, markdown_table, plot_curves, summarize, write_csv
from .teachers import load_teacher, prepare_teacher, train_seeds

JITTER_EPOCHS = 10
"""Epochs at the end of a run over which the test loss's spread (``*_jitter``) is measured."""

SELECTION_SEED = 0
"""Seed of the split of Small into a validation part and the rest (used to choose λ and T)."""

UNLABELLED_SEED = 0
"""Seed of the draw of the unlabelled rows from Big (field ``unlabelled``)."""


@kinds.register("distillation")
class DistillationKind(ExperimentKind):
    """An `ExperimentConfig`: one unit per arm (its λ, T chosen on validation, then every seed).

    The directory holds ``config.yaml``, ``metrics.csv`` (one row per arm, seed and epoch),
    ``selection.csv`` (validation scores of swept λ, T), ``results.csv`` (``arm, seed, metric,
    value``: the values the table summarises), ``teacher.csv`` (each teacher's per-epoch Test
    metrics on its own domain), ``table.csv`` (``arm,metric,mean,std,n`` of final-epoch values
    over seeds), ``table.md``, ``figures/*.png``, ``units/`` and ``checkpoints/`` (every
    finished model; a rerun resumes from them).
    """

    outputs = ("metrics", "selection", "results")

    def __init__(self, config: ExperimentConfig, out, progress: bool = True) -> None:
        super().__init__(config, out, progress)
        self._mappings: dict[str, nn.Module] = {}
        self.task = config.task
        self.test_metrics = (
            ["accuracy", "cross_entropy"] if self.task == "classification" else ["mse"]
        )
        self._outputs = "classes" if self.task == "classification" else "target columns"

    def check(self) -> None:
        with field("data"):
            self.splits = self._load(self.config.data)
            self.num_outputs = target_size(self.splits, self.task)
        self.record("data", *splits_tensors(self.splits))
        swept = [arm for arm in self.config.arms.values() if len(arm.settings()) > 1]
        if swept and self.config.validation >= len(self.splits.small):
            raise ConfigError(
                f"field 'validation': the part of Small that chooses λ and T must leave rows "
                f"to train on: expected fewer than {len(self.splits.small)} (the size of Small, "
                f"field 'data.small'), found {self.config.validation}"
            )
        self.teacher_data, self.teachers, models_ = {}, {}, {}
        for name, spec in self.config.teachers.items():
            source = self.splits
            if spec.data is not None:
                with field(f"teachers.{name}.data"):
                    source = self._load(spec.data)
                    found = target_size(source, self.task)
                    if found != self.num_outputs:
                        raise ConfigError(
                            f"its targets have {found} {self._outputs}, the student's data "
                            f"{self.num_outputs}"
                        )
                self.record(f"teachers.{name}.data", *splits_tensors(source))
            with field(f"teachers.{name}.transform"):
                transform = self._mapping(spec.transform)
                big = source.big.map_x(transform) if spec.trained_here else None
                self.teacher_data[name] = (big, source.test.map_x(transform))
            example = self.teacher_data[name][1].x[:1]
            if spec.trained_here:
                with field(f"teachers.{name}.model"):
                    models_[name] = self._build(spec.model, example)
                    check_outputs(models_[name], example, self.num_outputs, "the model")
            else:
                with field(f"teachers.{name}"):
                    self.teachers[name] = load_teacher(
                        name, spec, self.teacher_data[name][1], self.num_outputs, self.config.device
                    )
                models_[name] = self.teachers[name]
                self.record(f"teachers.{name}", self.teachers[name])
        with field("student.model"):
            check_outputs(self._student(0), self.splits.small.x[:1], self.num_outputs, "the model")
        big = self.splits.big
        largest = max(arm.unlabelled for arm in self.config.arms.values())
        self.pool = big.x[random_indices(len(big), min(largest, len(big)), UNLABELLED_SEED)[0]]
        self.reads, self.views = {}, {}
        for name, arm in self.config.arms.items():
            with field(f"arms.{name}.method"):
                self.reads[name] = self._reads(name, arm, models_)
                method = self._method(name, arm, self._student(0), *arm.settings()[0])
                views = getattr(method, "views", None)
                self.views[name] = views if isinstance(views, Views) else None
            with field(f"arms.{name}.unlabelled"):
                self._check_pool(name, arm, method, len(big))
            with field(f"arms.{name}.mapping"):
                phi = self._mapping(arm.mapping)
                for teacher in self.reads[name]:
                    with torch.no_grad():
                        seen = self._phi(arm, teacher)(self.splits.small.x[:1])
                    source = f"teacher {teacher!r} (field 'teachers.{teacher}')"
                    check_outputs(models_[teacher], seen, self.num_outputs, source)
            self.record(f"arms.{name}.mapping", phi)

    def setup(self) -> None:
        records = []
        for name, spec in self.config.teachers.items():
            self.teachers[name], history = prepare_teacher(
                spec,
                self.teachers.get(name),
                *self.teacher_data[name],
                self.task,
                self.num_outputs,
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
        """Arm ``unit``: its teachers' columns on Small (one pass each), (λ, T) chosen on
        validation, then every seed trained on all of Small and scored on Test."""
        name, arm, splits = unit, self.config.arms[unit], self.splits
        pool = self._pool_of(name)
        small = splits.small.columns() if pool is None else with_unlabelled(splits.small, pool)
        for teacher, layers in self.reads[name].items():
            run = self.cache.run(
                self.teachers[teacher],
                self._phi(arm, teacher),
                small["x"],
                layers,
                name=f"teacher {teacher!r}",
            )
            small |= _teacher_columns(teacher, run)
        small = self._with_views(name, arm, small)
        (lam, temperature), selection = self._choose(name, arm, small)
        results = [{"arm": name, "seed": "", "metric": "lam", "value": lam}]
        if self.task == "classification":
            results.append({"arm": name, "seed": "", "metric": "temperature", "value": temperature})
        rows = []
        seeds = self.config.seeds
        methods = [self._method(name, arm, self._student(seed), lam, temperature) for seed in seeds]
        histories = train_seeds(
            methods,
            {column: small[column] for column in methods[0].columns},
            seeds,
            self.config.student.train,
            batched=self.config.batched,
            checkpoints=self.out / "checkpoints" / file_name(name),
            names=[f"student of arm {name!r}, seed {seed}" for seed in seeds],
            progress=self.progress,
            **self._scoring(),
        )
        for seed, history in zip(seeds, histories, strict=True):
            rows += [
                {"arm": name, "seed": seed, "lam": lam, "temperature": temperature, **h}
                for h in history
            ]
            criterion = self.test_metrics[-1]
            last = [h[criterion] for h in history[-JITTER_EPOCHS:]]
            per_seed = {m: history[-1][m] for m in self.test_metrics}
            per_seed[f"{criterion}_jitter"] = _spread(last)
            results += [
                {"arm": name, "seed": seed, "metric": m, "value": v} for m, v in per_seed.items()
            ]
        arm_level = {"parameters": count_parameters(self._student(0))}
        if pool is not None:
            arm_level["unlabelled_rows"] = len(pool)
        teacher = self.config.teacher_of(arm)
        if teacher in self.reads[name]:
            test_out = self.cache.outputs(
                self.teachers[teacher],
                self._phi(arm, teacher),
                splits.test.x,
                name=f"teacher {teacher!r}",
            )
            arm_level["teacher_parameters"] = count_parameters(self.teachers[teacher])
            for metric, value in metrics(test_out, splits.test.y, self.task).items():
                arm_level[f"teacher_{metric}"] = value
        results += [
            {"arm": name, "seed": "", "metric": m, "value": v} for m, v in arm_level.items()
        ]
        return {"metrics": rows, "selection": selection, "results": results}

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for row in rows["results"]:
            values[row["arm"], row["metric"]].append(row["value"])
        table = summarize(values)
        for metric in self.test_metrics:
            plot_curves(
                rows["metrics"],
                metric,
                self.out / "figures" / f"{metric}.png",
                title=self.config.name,
            )
        self._write_mapping_figures(self.splits.test)
        if any(arm.unlabelled for arm in self.config.arms.values()):
            self._plot_pools(values)
        caption = (
            f"**{self.config.name}**: final-epoch test metrics, mean ± std over "
            f"{len(self.config.seeds)} seeds; λ and T chosen on validation when swept."
        )
        return table, markdown_table(table, caption)

    def _plot_pools(self, values: dict[tuple[str, str], list[float]]) -> None:
        """``figures/unlabelled.png``: the first test metric (mean ± std over seeds) against the
        number of unlabelled rows, one line per group of arms alike but for ``unlabelled``
        (named by their names' common prefix), each with its teacher's f∘φ as a dotted line;
        an arm that reads no teacher is a dashed grey line. ``values``: (arm, metric) → the
        values of ``results.csv``."""
        metric = self.test_metrics[0]
        groups: dict[str, list[str]] = defaultdict(list)
        for name, arm in self.config.arms.items():
            key = arm.model_dump_json(exclude={"unlabelled"}) if self.reads[name] else name
            groups[key].append(name)
        figure, axes = plt.subplots(figsize=(6, 4))
        for names in groups.values():
            if not self.reads[names[0]]:
                axes.axhline(
                    mean(values[names[0], metric]), color="grey", linestyle="--", label=names[0]
                )
                continue
            names.sort(key=lambda name: self.config.arms[name].unlabelled)
            label = os.path.commonprefix(names).rstrip("_-") or names[0]
            (line,) = axes.plot(
                [self.config.arms[name].unlabelled for name in names],
                [mean(values[name, metric]) for name in names],
                marker="o",
                label=label,
            )
            axes.errorbar(
                [self.config.arms[name].unlabelled for name in names],
                [mean(values[name, metric]) for name in names],
                [_spread(values[name, metric]) for name in names],
                color=line.get_color(),
                linestyle="none",
                capsize=3,
            )
            teacher = values.get((names[0], f"teacher_{metric}"))
            if teacher:
                axes.axhline(
                    teacher[0], color=line.get_color(), linestyle=":", label=f"{label}: f∘φ"
                )
        sizes = sorted({arm.unlabelled for arm in self.config.arms.values()})
        axes.set_xscale("symlog", linthresh=min(size for size in sizes if size))
        axes.set_xticks(sizes, [f"{size:,}" for size in sizes])
        axes.minorticks_off()
        axes.set_xlabel("unlabelled rows")
        axes.set_ylabel(METRIC_LABELS.get(metric, metric))
        axes.set_title(self.config.name)
        axes.grid(alpha=0.3)
        axes.legend(fontsize="small")
        figure.tight_layout()
        save_figure(figure, self.out / "figures" / "unlabelled.png")
        plt.close(figure)

    def _load(self, data: DataConfig) -> DomainSplits:
        splits = data.load()
        return _standardize_targets(splits) if self.task == "regression" else splits

    def _mapping(self, spec: Spec) -> nn.Module:
        """The mapping a spec names, built once per run (a style network or translator loads its
        weights and data once, however many arms and the teacher share it)."""
        key = json.dumps(spec, sort_keys=True)
        if key not in self._mappings:
            self._mappings[key] = mappings.build(spec)
        return self._mappings[key]

    def _scoring(self) -> dict:
        """How a final run scores Test after every epoch (`train_seeds` keywords): riding the
        stack, `crossdistill.training.fit_many`'s ``score``."""
        return {"score": self.splits.test, "task": self.task}

    def _phi(self, arm: ArmConfig, teacher: str) -> nn.Module:
        """The mapping φ in front of ``teacher`` for arm ``arm``: the arm's ``mapping``."""
        return self._mapping(arm.mapping)

    def _method(
        self, name: str, arm: ArmConfig, student: nn.Module, lam: float, temperature: float
    ) -> Method:
        """Arm ``name``'s method around ``student`` at (λ, T), told of its unlabelled rows."""
        teacher, unlabelled = self.config.teacher_of(arm), self._pool_of(name) is not None
        return arm_method(arm, teacher, student, lam, temperature, self.task, unlabelled)

    def _with_views(
        self, name: str, arm: ArmConfig, columns: dict[str, Tensor]
    ) -> dict[str, Tensor]:
        """``columns`` with ``index`` and each teacher's outputs on every view of their rows
        (`crossdistill.methods.teacher_views`, cached) when arm ``name``'s method trains on
        views (`crossdistill.methods.ConsistentDistillation`); else ``columns`` as they are.
        Made for each set of rows a method trains on (the selection's and all of Small), so
        that a row's index is its position there and a view never mixes in a held-out row."""
        views = self.views[name]
        if views is None:
            return columns
        columns = {**columns, INDEX: torch.arange(len(columns["x"]))}
        for teacher in self.reads[name]:
            columns[views_column(teacher)] = teacher_views(
                self.teachers[teacher],
                self._phi(arm, teacher),
                columns["x"],
                views,
                self.cache,
                name=f"teacher {teacher!r}",
            )
        return columns

    def _pool_of(self, name: str) -> Tensor | None:
        """The inputs of the unlabelled rows arm ``name`` trains on ``(U, ...)``: the first
        ``unlabelled`` of Big's rows in one seeded random order (drawn once, in `check`), or
        None when it has none."""
        rows = self.config.arms[name].unlabelled
        return self.pool[:rows] if rows else None

    def _check_pool(self, name: str, arm: ArmConfig, method: Method, big: int) -> None:
        """Refuse arm ``name``'s ``unlabelled`` rows where Big (``big`` rows) has too few, the
        arm reads no teacher to label them, or its ``method`` cannot learn from them."""
        rows = arm.unlabelled
        if not rows:
            return
        if rows > big:
            raise ConfigError(
                f"the unlabelled rows are drawn from Big: expected at most {big} (the size of "
                f"Big), found {rows}"
            )
        if not self.reads[name]:
            raise ConfigError(
                f"the arm reads no teacher (λ = {arm.lam}), so its {rows} unlabelled rows would "
                "teach the student nothing: expected 0, or λ < 1"
            )
        if LABELLED not in method.columns:
            raise ConfigError(
                f"method {arm.method!r} cannot learn from {rows} unlabelled rows: it takes no "
                "`unlabelled` setting (`distillation`, `weighted_distillation` and "
                "`gdda_distillation` do)"
            )

    def _reads(
        self, name: str, arm: ArmConfig, teachers: dict[str, nn.Module]
    ) -> dict[str, list[str]]:
        """`arm_reads`, and every layer it reads checked against its teacher's submodules
        (``teachers``: each teacher as loaded, or its untrained model)."""
        reads = arm_reads(name, arm, self.config.teachers, self._student(0), self.task)
        for teacher, layers in reads.items():
            paths = [path for path, _ in teachers[teacher].named_modules() if path]
            for layer in layers:
                if layer not in paths:
                    raise ConfigError(
                        f"its method reads layer {layer!r} of teacher {teacher!r}, which has no "
                        f"such submodule; it has {', '.join(paths)}"
                    )
        return reads

    def _build(self, spec: Spec, example: Tensor) -> nn.Module:
        """The model ``spec`` names for inputs shaped like ``example`` ``(1, ...)``."""
        return models.build(
            spec, in_shape=tuple(example.shape[1:]), num_outputs=self.num_outputs
        ).to(self.config.device)

    def _student(self, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return self._build(self.config.student.model, self.splits.small.x[:1])

    def _choose(
        self, name: str, arm: ArmConfig, small: dict[str, Tensor]
    ) -> tuple[tuple[float, float], list[dict]]:
        """The (λ, T) of the arm's sweep with the best mean validation score over seeds, and
        the ``selection.csv`` rows (none when nothing is swept). Batched, every (λ, T) × seed
        trains in one stack; else each (λ, T) apart, one `fit` per seed."""
        settings = arm.settings()
        if len(settings) == 1:
            return settings[0], []
        labelled = len(self.splits.small)  # the unlabelled rows follow Small's
        valid_idx, train_idx = random_indices(labelled, self.config.validation, SELECTION_SEED)
        train_idx = torch.cat([train_idx, torch.arange(labelled, len(small["x"]))])
        train = self._with_views(
            name, arm, {column: values[train_idx] for column, values in small.items()}
        )
        valid = ArrayData(small["x"][valid_idx], small["y"][valid_idx])
        parts = [settings] if self.config.batched else [[s] for s in settings]
        trained: dict[tuple[float, float], list[Method]] = {}
        for part in parts:
            trained |= dict(zip(part, self._train_selection(name, arm, train, part), strict=True))

        def scores(setting: tuple[float, float]) -> list[dict[str, float]]:
            return [
                {"seed": s, **evaluate(m, valid, self.task)}
                for s, m in zip(self.config.seeds, trained[setting], strict=True)
            ]

        criterion = "cross_entropy" if self.task == "classification" else "mse"
        chosen, records = choose(settings, scores, criterion)
        selection = [
            {
                "arm": name,
                "lam": r["setting"][0],
                "temperature": r["setting"][1],
                **{k: v for k, v in r.items() if k != "setting"},
            }
            for r in records
        ]
        return chosen, selection

    def _train_selection(
        self,
        name: str,
        arm: ArmConfig,
        train: dict[str, Tensor],
        settings: list[tuple[float, float]],
    ) -> list[list[Method]]:
        """Arm ``name``'s student at each of ``settings`` for every seed (its initial weights
        and batch order), trained on ``train`` by one `train_seeds` call; per setting, its
        seeds' methods. Checkpoints ``checkpoints/selection/<arm>-sweep-seeds.pt`` (several
        settings, one stack) or ``<arm>-lam<λ>-T<T>-seed<s>.pt`` (one setting, one by one)."""
        seeds = self.config.seeds
        runs = [(setting, seed) for setting in settings for seed in seeds]
        methods = [self._method(name, arm, self._student(seed), *setting) for setting, seed in runs]
        read = dict.fromkeys(column for method in methods for column in method.columns)
        lam, temperature = settings[0]
        label = "sweep" if len(settings) > 1 else f"lam{lam:g}-T{temperature:g}"
        train_seeds(
            methods,
            {column: train[column] for column in read},
            [seed for _, seed in runs],
            self.config.student.train,
            batched=self.config.batched,
            checkpoints=self.out / "checkpoints" / "selection" / f"{file_name(name)}-{label}",
            names=[
                f"student of arm {name!r} at λ={setting[0]:g}, T={setting[1]:g}, seed {seed} "
                "(choosing λ, T on validation)"
                for setting, seed in runs
            ],
            progress=self.progress,
        )
        return [methods[k : k + len(seeds)] for k in range(0, len(methods), len(seeds))]

    def _write_mapping_figures(self, test: ArrayData) -> None:
        """Figures a mapping draws of itself (``write_figures(directory, images)``, e.g. the VAE
        translator's latent grid), on the first two Test images of each class."""
        figures = self.out / "figures"
        for name, arm in self.config.arms.items():
            phi = self._mapping(arm.mapping)
            if hasattr(phi, "write_figures"):
                examples = torch.cat([(test.y == c).nonzero()[:2, 0] for c in test.y.unique()])
                phi.write_figures(figures / file_name(name), test.x[examples])


def _spread(values: list[float]) -> float:
    """The sample standard deviation of ``values``, 0 for one value."""
    return stdev(values) if len(values) > 1 else 0.0


def _teacher_columns(name: str, run: TeacherRun) -> dict[str, Tensor]:
    """A teacher pass as batch columns ``teacher/<name>`` and ``features/<name>/<layer>``."""
    return {
        teacher_column(name): run.outputs,
        **{feature_column(name, layer): value for layer, value in run.features.items()},
    }


def _standardize_targets(splits: DomainSplits) -> DomainSplits:
    """Regression targets as ``(N, K)`` float, standardised with Train (Big ∪ Small) statistics."""
    train_y = (
        torch.cat([splits.big.y, splits.small.y]).reshape(-1, *splits.small.y.shape[1:]).float()
    )
    centre, scale = train_y.mean(0), train_y.std(0)

    def standardize(data: ArrayData) -> ArrayData:
        return ArrayData(data.x, ((data.y.float() - centre) / scale).reshape(len(data), -1))

    return DomainSplits(
        big=standardize(splits.big), small=standardize(splits.small), test=standardize(splits.test)
    )
