"""Run an experiment config: train the teacher once, then every arm × seed; write the run dir."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from statistics import mean, stdev

import torch
from torch import Tensor, nn

from ..data import ArrayData
from ..data.arrays import random_indices
from ..data.datasets import DomainSplits
from ..files import atomic_path
from ..mappings import mappings
from ..methods import distillation_loss
from ..models import count_parameters, models
from ..registry import Spec
from ..training import TeacherCache, evaluate, fit, metrics
from .config import (
    AnyConfig,
    ArmConfig,
    DataConfig,
    ExperimentConfig,
    GDDAConfig,
    PrivilegedConfig,
    TrainConfig,
    dump_config,
)
from .gdda import GDDAExperiment
from .privileged import PrivilegedExperiment
from .report import (
    TABLE_COLUMNS,
    claim_directory,
    markdown_table,
    plot_curves,
    summarize,
    write_csv,
)

JITTER_EPOCHS = 10
"""Epochs at the end of a run over which the test loss's spread (``*_jitter``) is measured."""

SELECTION_SEED = 0
"""Seed of the split of Small into a validation part and the rest (used to choose λ and T)."""


class Experiment:
    """One experiment config bound to its run directory.

    The directory holds ``config.yaml``, ``metrics.csv`` (one row per arm, seed and epoch),
    ``selection.csv`` (validation scores of swept λ, T), ``teacher.csv``, ``table.csv``
    (``arm,metric,mean,std,n`` of final-epoch values over seeds), ``table.md``,
    ``figures/*.png`` and ``checkpoints/`` (every finished model; a rerun resumes from them).
    """

    def __init__(self, config: ExperimentConfig, out: str | Path, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out)
        self.progress = progress
        self._mappings: dict[str, nn.Module] = {}
        self.task = config.task
        self.test_metrics = (
            ["accuracy", "cross_entropy"] if self.task == "classification" else ["mse"]
        )

    def run(self) -> list[dict]:
        """Train everything not already finished, write all outputs and return the table rows."""
        splits = self._load(self.config.data)  # a missing or corrupt file fails before any output
        claim_directory(self.out, dump_config(self.config))
        num_outputs = (
            splits.small.num_classes if self.task == "classification" else splits.small.y.shape[1]
        )
        teacher = self._train_teacher(splits, num_outputs)
        cache = TeacherCache(self.out / "cache")
        student_params = count_parameters(self._student(splits.small, num_outputs, seed=0))
        rows: list[dict] = []
        selection: list[dict] = []
        values: dict[tuple[str, str], list[float]] = defaultdict(list)
        for name, arm in self.config.arms.items():
            small_out = test_out = None
            if arm.uses_teacher:
                phi = self._mapping(arm.mapping)
                small_out = cache.outputs(teacher, phi, splits.small.x)
                test_out = cache.outputs(teacher, phi, splits.test.x)
            lam, temperature = self._choose(
                name, arm, splits.small, small_out, num_outputs, selection
            )
            values[name, "lam"].append(lam)
            if self.task == "classification":
                values[name, "temperature"].append(temperature)
            for seed in self.config.seeds:
                student = self._student(splits.small, num_outputs, seed)
                history = fit(
                    student,
                    distillation_loss(
                        self.task, lam, temperature, arm.t2_scale, arm.soften_student
                    ),
                    splits.small,
                    teacher_outputs=small_out if lam < 1 else None,
                    seed=seed,
                    validate=lambda model: evaluate(model, splits.test, self.task),
                    checkpoint=self.out / "checkpoints" / f"{name}-seed{seed}.pt",
                    progress=self._label(f"{name} seed {seed}"),
                    **self._training(self.config.student.train),
                )
                rows += [
                    {"arm": name, "seed": seed, "lam": lam, "temperature": temperature, **h}
                    for h in history
                ]
                write_csv(rows, self.out / "metrics.csv")
                for metric in self.test_metrics:
                    values[name, metric].append(history[-1][metric])
                criterion = self.test_metrics[-1]
                last = [h[criterion] for h in history[-JITTER_EPOCHS:]]
                values[name, f"{criterion}_jitter"].append(stdev(last) if len(last) > 1 else 0.0)
            values[name, "parameters"].append(student_params)
            if test_out is not None:
                values[name, "teacher_parameters"].append(count_parameters(teacher))
                for metric, value in metrics(test_out, splits.test.y, self.task).items():
                    values[name, f"teacher_{metric}"].append(value)
        table = summarize(values)
        self._write_outputs(rows, table)
        self._write_mapping_figures(splits.test)
        return table

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

    def _label(self, text: str) -> str | bool:
        return text if self.progress else False

    def _training(self, train: TrainConfig) -> dict:
        return {
            "epochs": train.epochs,
            "batch_size": train.batch_size,
            "optimizer": train.optimizer,
        }

    def _student(self, data: ArrayData, num_outputs: int, seed: int) -> nn.Module:
        torch.manual_seed(seed)
        model = models.build(
            self.config.student.model, in_shape=tuple(data.x.shape[1:]), num_outputs=num_outputs
        )
        return model.to(self.config.device)

    def _train_teacher(self, splits: DomainSplits, num_outputs: int) -> nn.Module:
        spec = self.config.teacher
        source = splits if spec.data is None else self._load(spec.data)
        transform = self._mapping(spec.transform)
        train, test = source.big.map_x(transform), source.test.map_x(transform)
        torch.manual_seed(spec.seed)
        teacher = models.build(
            spec.model, in_shape=tuple(train.x.shape[1:]), num_outputs=num_outputs
        )
        teacher = teacher.to(self.config.device)
        history = fit(
            teacher,
            distillation_loss(self.task, lam=1.0),
            train,
            seed=spec.seed,
            validate=lambda model: evaluate(model, test, self.task),
            checkpoint=self.out / "checkpoints" / "teacher.pt",
            progress=self._label("teacher"),
            **self._training(spec.train),
        )
        write_csv(history, self.out / "teacher.csv")
        teacher.eval()
        return teacher

    def _choose(
        self,
        name: str,
        arm: ArmConfig,
        small: ArrayData,
        small_out: Tensor | None,
        num_outputs: int,
        selection: list[dict],
    ) -> tuple[float, float]:
        """The (λ, T) of the arm's sweep with the best mean validation score over seeds."""
        settings = arm.settings()
        if len(settings) == 1:
            return settings[0]
        valid_idx, train_idx = random_indices(len(small), self.config.validation, SELECTION_SEED)
        train, valid = small.subset(train_idx), small.subset(valid_idx)
        criterion = "cross_entropy" if self.task == "classification" else "mse"
        scores = {}
        for lam, temperature in settings:
            per_seed = []
            for seed in self.config.seeds:
                student = self._student(small, num_outputs, seed)
                fit(
                    student,
                    distillation_loss(
                        self.task, lam, temperature, arm.t2_scale, arm.soften_student
                    ),
                    train,
                    teacher_outputs=None if lam == 1 else small_out[train_idx],
                    seed=seed,
                    checkpoint=self.out
                    / "checkpoints"
                    / "selection"
                    / f"{name}-lam{lam:g}-T{temperature:g}-seed{seed}.pt",
                    progress=self._label(f"{name} λ={lam:g} T={temperature:g} seed {seed} (val)"),
                    **self._training(self.config.student.train),
                )
                score = evaluate(student, valid, self.task)
                selection.append(
                    {"arm": name, "lam": lam, "temperature": temperature, "seed": seed, **score}
                )
                per_seed.append(score[criterion])
            scores[lam, temperature] = mean(per_seed)
        write_csv(selection, self.out / "selection.csv")
        return min(scores, key=scores.get)

    def _write_outputs(self, rows: list[dict], table: list[dict]) -> None:
        write_csv(table, self.out / "table.csv")
        caption = (
            f"**{self.config.name}**: final-epoch test metrics, mean ± std over "
            f"{len(self.config.seeds)} seeds; λ and T chosen on validation when swept."
        )
        with atomic_path(self.out / "table.md") as tmp:
            tmp.write_text(markdown_table(table, caption))
        for metric in self.test_metrics:
            plot_curves(
                rows, metric, self.out / "figures" / f"{metric}.png", title=self.config.name
            )

    def _write_mapping_figures(self, test: ArrayData) -> None:
        """Figures a mapping draws of itself (``write_figures(directory, images)``, e.g. the VAE
        translator's latent grid), on the first two Test images of each class."""
        figures = self.out / "figures"
        for name, arm in self.config.arms.items():
            phi = self._mapping(arm.mapping)
            if hasattr(phi, "write_figures"):
                examples = torch.cat([(test.y == c).nonzero()[:2, 0] for c in test.y.unique()])
                phi.write_figures(figures / name, test.x[examples])


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


def run_experiment(config: AnyConfig, out: str | Path, progress: bool = True) -> list[dict]:
    """Run ``config`` into directory ``out`` (resuming what is there); return the table rows."""
    if isinstance(config, PrivilegedConfig):
        return PrivilegedExperiment(config, out, progress).run()
    if isinstance(config, GDDAConfig):
        return GDDAExperiment(config, out, progress).run()
    return Experiment(config, out, progress).run()


__all__ = ["TABLE_COLUMNS", "Experiment", "run_experiment"]
