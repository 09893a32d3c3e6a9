"""The deep GDDA kind (after Ao, 2016, "Distilling"): imitation weights learned by the GDDA-SVM's
leave-one-out loss inside a neural student, against the same weights chosen on a validation
grid, with each arm's wall time (its selection included)."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor, nn

from ..figures import save_figure
from ..methods import GDDAClassifier
from ..models import count_parameters
from ..registries import kinds
from ..training import evaluate, metrics
from .config import ArmConfig, DeepGDDAConfig
from .distillation import DistillationKind
from .driver import Rows, field

LEARNED = "lambda_"
"""Prefix of the per-epoch metrics that hold a learned weight: ``lambda_<source>``."""


@kinds.register("deep_gdda")
class DeepGDDAKind(DistillationKind):
    """A `DeepGDDAConfig`: the distillation kind with a mapping φ per teacher and timed arms.

    Beyond the distillation kind's files, ``results.csv`` holds per arm ``seconds`` (the wall
    time of the whole unit: the selection on validation, every seed's training and its Test
    scoring after every epoch), ``training_seconds`` (the same without the Test scoring, which
    only draws the curves), ``selection_seconds``, ``runs`` (student trainings, selection
    included) and, for an arm that learns its weights, each seed's final ``lambda_<source>``;
    the table gives an arm of several teachers their parameters together as
    ``teacher_parameters``, and a row ``teacher <name>`` per teacher with its own Test metrics
    through its φ; ``metrics.csv`` holds every epoch's weights and refit time, and
    ``figures/weights-<arm>.png`` draws them.
    A unit's time is that of the run that finished it: resumed from its checkpoints, it counts
    only what was left.
    """

    config: DeepGDDAConfig

    def check(self) -> None:
        for name, spec in self.config.teachers.items():
            with field(f"teachers.{name}.mapping"):
                self.record(f"teachers.{name}.mapping", self._mapping(spec.mapping))
        super().check()

    def units(self) -> list[str]:
        return [*self.config.arms, *self.config.svm_arms]

    def run_unit(self, unit: str) -> Rows:
        if unit in self.config.svm_arms:
            return {"results": self._svm_results(unit)}
        self._selection_seconds = self._scoring_seconds = 0.0
        start = time.perf_counter()
        rows = super().run_unit(unit)
        seconds = time.perf_counter() - start
        arm = self.config.arms[unit]
        settings = len(arm.settings())
        seeds = len(self.config.seeds)
        arm_level = {
            "seconds": seconds,
            "training_seconds": seconds - self._scoring_seconds,
            "selection_seconds": self._selection_seconds,
            "runs": seeds * (settings + 1) if settings > 1 else seeds,
        }
        results = rows["results"]
        last = {row["seed"]: row for row in rows["metrics"]}  # each seed's last epoch
        learned = [key for key in next(iter(last.values())) if key.startswith(LEARNED)]
        if learned:  # λ is the method's own: drop the unused setting, add the learned weights
            results = [row for row in results if row["metric"] != "lam"]
            results += [
                {"arm": unit, "seed": seed, "metric": key, "value": row[key]}
                for seed, row in last.items()
                for key in learned
            ]
        results += [
            {"arm": unit, "seed": "", "metric": m, "value": v} for m, v in arm_level.items()
        ]
        return {**rows, "results": results}

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        sized = {row["arm"] for row in rows["results"] if row["metric"] == "teacher_parameters"}
        read = {name: list(self.reads[name]) for name in self.config.arms} | self.config.svm_arms
        sizes = [  # an arm of several teachers: their parameters together
            {"arm": arm, "seed": "", "metric": "teacher_parameters", "value": total}
            for arm, teachers in read.items()
            if arm not in sized
            and (total := sum(count_parameters(self.teachers[t]) for t in teachers))
        ]
        alone = [  # each teacher alone through its φ, scored on the student's Test
            {"arm": f"teacher {name}", "seed": "", "metric": metric, "value": value}
            for name, spec in self.config.teachers.items()
            for metric, value in {
                "teacher_parameters": count_parameters(self.teachers[name]),
                **{
                    f"teacher_{m}": v
                    for m, v in metrics(
                        self.cache.outputs(
                            self.teachers[name],
                            self._mapping(spec.mapping),
                            self.splits.test.x,
                            name=f"teacher {name!r}",
                        ),
                        self.splits.test.y,
                        self.task,
                    ).items()
                },
            }.items()
        ]
        results = rows["results"] + sizes + alone
        table, markdown = super().table({**rows, "results": results})
        for arm in dict.fromkeys(row["arm"] for row in rows["metrics"]):
            mine = [row for row in rows["metrics"] if row["arm"] == arm]
            if any(key.startswith(LEARNED) and value != "" for key, value in mine[0].items()):
                path = self.out / "figures" / f"weights-{arm}.png"
                _plot_weights(mine, path, title=f"{arm}: learned weights λ per seed")
        caption = markdown.split("\n", 1)[0].removesuffix(".") + (
            "; learned weights (λ_labels, λ_<teacher>) are the final epoch's; `seconds` is the "
            "arm's wall time over all its runs, `training seconds` the same without the Test "
            "scoring after every epoch, selection included in both."
        )
        return table, caption + "\n" + markdown.split("\n", 1)[1]

    def _svm_results(self, name: str) -> list[dict]:
        """SVM arm ``name``: `GDDAClassifier` on Small's flattened inputs with its teachers'
        probabilities, λ learned by leave-one-out; its Test metrics, λ, size and fit time."""
        teachers = self.config.svm_arms[name]
        small, test = self.splits.small, self.splits.test
        probabilities = [
            self.cache.outputs(
                self.teachers[t],
                self._mapping(self.config.teachers[t].mapping),
                small.x,
                name=f"teacher {t!r}",
            )
            .softmax(1)
            .double()
            .numpy()
            for t in teachers
        ]
        start = time.perf_counter()
        classifier = GDDAClassifier(**self.config.classifier, classes=range(self.num_outputs))
        features = small.x.flatten(1).double().numpy()
        classifier.fit(features, small.y.numpy(), probabilities or None)  # none: a plain LS-SVM
        seconds = time.perf_counter() - start
        probas = classifier.predict_proba(test.x.flatten(1).double().numpy())
        found = metrics(torch.from_numpy(np.log(probas)), test.y, "classification")
        sources = ("labels", *teachers)
        found |= {f"{LEARNED}{s}": w for s, w in zip(sources, classifier.lambda_, strict=True)}
        found |= {
            "parameters": classifier.coef_.size + classifier.intercept_.size,
            "seconds": seconds,
            "runs": 1,
        }
        return [{"arm": name, "seed": "", "metric": m, "value": float(v)} for m, v in found.items()]

    def _scoring(self) -> dict:
        """Test scored by a timed ``validate`` (the runs train one by one), so that
        ``training_seconds`` can leave the scoring out."""
        return {"validate": self._score}

    def _score(self, model: nn.Module) -> dict[str, float]:
        start = time.perf_counter()
        found = evaluate(model, self.splits.test, self.task)
        self._scoring_seconds += time.perf_counter() - start
        return found

    def _phi(self, arm: ArmConfig, teacher: str) -> nn.Module:
        """The teacher's own ``mapping``."""
        return self._mapping(self.config.teachers[teacher].mapping)

    def _choose(
        self, name: str, arm: ArmConfig, small: dict[str, Tensor]
    ) -> tuple[tuple[float, float], list[dict]]:
        start = time.perf_counter()
        chosen = super()._choose(name, arm, small)
        if len(arm.settings()) > 1:  # else nothing was chosen
            self._selection_seconds = time.perf_counter() - start
        return chosen


def _plot_weights(rows: Sequence[dict], path: Path, title: str) -> None:
    """One panel per seed: the learned weights λ of each source over the epochs, stacked (they
    sum to 1), from an arm's ``metrics.csv`` rows."""
    seeds = list(dict.fromkeys(row["seed"] for row in rows))
    sources = [key for key in rows[0] if key.startswith(LEARNED) and rows[0][key] != ""]
    columns = min(len(seeds), 5)
    figure, axes = plt.subplots(
        math.ceil(len(seeds) / columns),
        columns,
        figsize=(2.4 * columns + 1.4, 2.2 * math.ceil(len(seeds) / columns) + 0.6),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    for axis, seed in zip(axes.flat, seeds, strict=False):
        mine = [row for row in rows if row["seed"] == seed]
        epochs = [int(row["epoch"]) for row in mine]
        weights = [[float(row[key]) for row in mine] for key in sources]
        axis.stackplot(epochs, weights, labels=[key.removeprefix(LEARNED) for key in sources])
        axis.set_title(f"seed {seed}", fontsize=9)
        axis.set_ylim(0, 1)
    for axis in axes.flat[len(seeds) :]:
        axis.set_visible(False)
    for axis in axes[-1]:
        axis.set_xlabel("epoch")
    for axis in axes[:, 0]:
        axis.set_ylabel("weight λ")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="center right", fontsize=8)
    figure.suptitle(title)
    figure.tight_layout(rect=(0, 0, 1 - 1.1 / figure.get_figwidth(), 1))
    save_figure(figure, path)
    plt.close(figure)
