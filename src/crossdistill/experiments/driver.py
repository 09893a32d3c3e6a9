"""The one experiment driver: every config kind runs as check → claim → set up → units → report.

A kind (`ExperimentKind`, registered in `kinds` under its config's ``kind``) says what its units
of work are and how to run one; the driver claims the run directory, runs the units that are not
finished yet, keeps each finished unit's rows in ``units/`` (the one resume mechanism: a rerun
reads them back instead of running them again; inside a unit, every `fit` resumes from its
checkpoint), writes the rows' CSV files after every unit, and writes the table.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from statistics import mean
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from torch import nn
from tqdm.auto import tqdm

from ..files import atomic_path
from ..losses import Task
from ..methods import Method, methods, teachers_read
from ..registry import Registry
from .config import ArmConfig, ConfigError, dump_config, teacher_of
from .report import claim_directory, write_csv

Rows = dict[str, list[dict]]
"""A unit's results: rows of dicts by the CSV file (stem) they belong to."""

S = TypeVar("S")

Criterion = Literal["cross_entropy", "mse", "accuracy"]


class ExperimentKind:
    """One kind of experiment config, run by `run_experiment`.

    Subclasses set ``outputs`` (the CSV files their units fill, in writing order: the driver
    writes ``<name>.csv`` for each) and implement `units`, `run_unit` and `table`; `check`
    and `setup` are optional.

    Args:
        config: the validated config of this kind.
        out: the run directory.
        progress: show progress bars.
    """

    outputs: tuple[str, ...] = ()

    def __init__(self, config: BaseModel, out: Path, progress: bool = True) -> None:
        self.config = config
        self.out = Path(out)
        self.progress = progress

    def check(self) -> None:
        """Read and check everything a user's input can get wrong (data files, teacher files,
        method settings) before the run directory is claimed; writes nothing."""

    def setup(self) -> None:
        """Work shared by all units, after the directory is claimed (e.g. train the teachers)."""

    def units(self) -> list[str]:
        """The names of the units of work, in running order."""
        raise NotImplementedError

    def run_unit(self, unit: str) -> Rows:
        """Run one unit and return its rows."""
        raise NotImplementedError

    def table(self, rows: Rows) -> tuple[list[dict], str]:
        """The final table rows (``table.csv``) and its Markdown (``table.md``) from all units'
        rows; may also draw ``figures/``."""
        raise NotImplementedError

    def label(self, text: str) -> str | bool:
        """A progress-bar label, or False when progress is off."""
        return text if self.progress else False


kinds: Registry[ExperimentKind] = Registry("experiment kind")
"""Experiment kinds by the ``kind`` field of their config."""


def run_experiment(config: BaseModel, out: str | Path, progress: bool = True) -> list[dict]:
    """Run ``config`` into directory ``out`` (resuming what is there); return the table rows."""
    out = Path(out)
    kind = kinds.build(config.kind, config=config, out=out, progress=progress)
    kind.check()  # a wrong file or setting fails before any output
    claim_directory(out, dump_config(config))
    kind.setup()
    rows: Rows = {name: [] for name in kind.outputs}
    for unit in tqdm(
        kind.units(), desc=config.name, unit="unit", disable=None if progress else True
    ):
        file = out / "units" / f"{re.sub(r'[^A-Za-z0-9_.=-]+', '_', unit)}.json"
        if file.exists():
            new = json.loads(file.read_text())
        else:
            new = kind.run_unit(unit)
            with atomic_path(file) as tmp:
                tmp.write_text(json.dumps(new))
        for name in kind.outputs:
            rows[name] += new.get(name, [])
            if rows[name]:
                write_csv(rows[name], out / f"{name}.csv")
    table, markdown = kind.table(rows)
    write_csv(table, out / "table.csv")
    with atomic_path(out / "table.md") as tmp:
        tmp.write_text(markdown)
    return table


def choose(
    settings: Sequence[S],
    scores: Callable[[S], list[dict[str, float]]],
    criterion: Criterion,
) -> tuple[S, list[dict[str, Any]]]:
    """The one validation chooser: the setting with the best mean validation score.

    Args:
        settings: the candidates (e.g. (λ, T) pairs), in config order; ties go to the first.
        scores: a setting's validation metrics, one dict per seed (never Test metrics).
        criterion: ``cross_entropy`` or ``mse`` (lowest mean), or ``accuracy`` (highest mean,
            ties broken by the lowest mean cross-entropy).

    Returns:
        The chosen setting and every score, ``{"setting": s, **metrics}`` per seed.
    """
    keys, records = {}, []
    for index, setting in enumerate(settings):
        per_seed = scores(setting)
        records += [{"setting": setting, **score} for score in per_seed]
        if criterion == "accuracy":
            keys[index] = (
                -mean(s["accuracy"] for s in per_seed),
                mean(s["cross_entropy"] for s in per_seed),
            )
        else:
            keys[index] = (mean(s[criterion] for s in per_seed),)
    return settings[min(keys, key=keys.get)], records


def arm_method(
    arm: ArmConfig, teacher: str, student: nn.Module, lam: float, temperature: float, task: Task
) -> Method:
    """The arm's registered method around ``student`` at (λ, T), offered the arm's settings
    (`OFFERED_TO_METHODS`; ``teacher`` is the name of the arm's teacher)."""
    offer = {
        "task": task,
        "lam": lam,
        "temperature": temperature,
        "teacher": teacher,
        "t2_scale": arm.t2_scale,
        "soften_student": arm.soften_student,
    }
    return methods.build(arm.method, offer=offer, student=student)


def arm_reads(
    name: str, arm: ArmConfig, teachers: Collection[str], student: nn.Module, task: Task
) -> dict[str, list[str]]:
    """The teachers (with their layers) arm ``name``'s method reads at any of its (λ, T), the
    method built around an example ``student``: the teacher passes a driver must make.

    Raises:
        ConfigError: the method reads a teacher that is not among ``teachers``.
    """
    reads: dict[str, list[str]] = {}
    for lam, temperature in arm.settings():
        method = arm_method(arm, teacher_of(arm, teachers), student, lam, temperature, task)
        for teacher, layers in teachers_read(method.columns).items():
            reads[teacher] = list(dict.fromkeys([*reads.get(teacher, []), *layers]))
    if "" in reads:
        raise ConfigError(
            f"arm {name!r}: its method reads a teacher; name it in the arm's `teacher` "
            f"(teachers has {', '.join(teachers) or 'none'})"
        )
    unknown = [teacher for teacher in reads if teacher not in teachers]
    if unknown:
        raise ConfigError(
            f"arm {name!r}: its method reads teacher {unknown[0]!r}, but teachers has "
            f"{', '.join(teachers) or 'none'}"
        )
    return reads
