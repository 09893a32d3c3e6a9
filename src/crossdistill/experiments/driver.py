"""The one experiment driver: every config kind runs as check → claim → set up → units → report.

A kind (`ExperimentKind`, registered in `kinds` under its config's ``kind``) says what its units
of work are and how to run one. Its `check` reads and validates everything a user's input can
get wrong, and fingerprints the data and files the run is made from, before anything is
written; the driver then claims the run directory for exactly that config and those inputs,
runs the units that are not finished yet, keeps each finished unit's rows in ``units/`` (the
one resume mechanism: a rerun reads them back instead of running them again; inside a unit,
every `fit` resumes from its checkpoint), writes the rows' CSV files after every unit, and
writes the table. A file that already holds what would be written is left alone, so a rerun of
a finished run writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from statistics import mean
from typing import Any, Literal, TypeVar

from pydantic import BaseModel
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..data import DomainSplits
from ..errors import CrossdistillError
from ..files import file_name, main_process, read_rebuildable, write_if_changed
from ..losses import Task
from ..methods import Method, teachers_read
from ..registries import kinds, methods
from ..training import distributed, fingerprint
from .config import ArmConfig, ConfigError, dump_config, teacher_of
from .outputs import claim_directory, write_csv

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
        self.inputs: dict[str, str] = {}

    def check(self) -> None:
        """Read and check everything a user's input can get wrong (data, teacher files, the
        settings of every model, mapping and method, data shapes against the models) before
        the run directory is claimed, each inside `field`; `record` what the run is made from.
        Writes nothing."""

    def record(self, what: str, *parts: nn.Module | Tensor | str) -> None:
        """Note that the run is made from ``parts`` (data tensors, a loaded model, a file's
        bytes as text), under the config field ``what``: a rerun whose inputs differ is refused,
        naming ``what``."""
        self.inputs[what] = fingerprint(*parts)

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


def run_experiment(config: BaseModel, out: str | Path, progress: bool = True) -> list[dict]:
    """Run ``config`` into directory ``out`` (resuming what is there); return the table rows.

    Raises:
        crossdistill.errors.CrossdistillError: a mistake in the config or its inputs (before
            anything is written), a directory holding another run, or training that diverged.
    """
    out = Path(out)
    kind = kinds.build(config.kind, config=config, out=out, progress=progress)
    kind.check()  # a wrong file or setting fails before any output
    claim_directory(out, dump_config(config), kind.inputs)  # by rank 0 of several processes
    distributed.barrier()
    kind.setup()
    rows: Rows = {name: [] for name in kind.outputs}
    for unit in tqdm(
        kind.units(),
        desc=config.name,
        unit="unit",
        disable=None if progress and main_process() else True,
    ):
        file = out / "units" / f"{file_name(unit)}.json"
        new = read_rebuildable(file, lambda path: json.loads(path.read_text()))
        ran = new is None
        if ran:
            new = kind.run_unit(unit)
            write_if_changed(file, json.dumps(new))
        for name in kind.outputs:
            rows[name] += new.get(name, [])
        if ran:  # the CSV files so far, for a reader of a run still going
            _write_rows(rows, out)
    _write_rows(rows, out)
    table, markdown = kind.table(rows)
    write_csv(table, out / "table.csv")
    write_if_changed(out / "table.md", markdown)
    distributed.barrier()
    return table


def _write_rows(rows: Rows, out: Path) -> None:
    for name, found in rows.items():
        if found:
            write_csv(found, out / f"{name}.csv")


@contextmanager
def field(path: str) -> Iterator[None]:
    """Turn a failure to build or check what config field ``path`` (dotted) describes into a
    `ConfigError` naming the field: a component's constructor refusing a setting (ValueError,
    TypeError), a model failing on the data's shape (RuntimeError)."""
    try:
        yield
    except (CrossdistillError, ValueError, TypeError, RuntimeError) as error:
        if isinstance(error, ConfigError) and str(error).startswith("field "):
            raise
        raise ConfigError(f"field {path!r}: {error}") from None


def target_size(splits: DomainSplits, task: Task) -> int:
    """The outputs a model needs for ``splits``: its classes (declared by the dataset, else the
    largest label + 1 over its splits), or the K columns of regression targets ``(N, K)``.

    Raises:
        ValueError: classification targets that are not integer class labels ≥ 0.
    """
    parts = (splits.big, splits.small, splits.test)
    if task == "regression":
        return parts[1].y.reshape(len(parts[1]), -1).shape[1]
    for part in parts:
        if part.y.is_floating_point() or part.y.ndim != 1 or (len(part) and part.y.min() < 0):
            raise ValueError(
                f"a classification run (field 'task') needs class labels, integers ≥ 0 shaped "
                f"(N,); found "
                f"{part.y.dtype} targets shaped {tuple(part.y.shape)}"
            )
    declared = getattr(splits, "num_classes", None)
    return declared or max(int(part.y.max()) + 1 for part in parts if len(part))


def splits_tensors(splits: DomainSplits) -> tuple[Tensor, ...]:
    """Inputs and targets of Big, Small and Test (what a run's data fingerprint covers)."""
    return tuple(t for part in (splits.big, splits.small, splits.test) for t in (part.x, part.y))


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
    arm: ArmConfig,
    teacher: str,
    student: nn.Module,
    lam: float,
    temperature: float,
    task: Task,
    unlabelled: bool = False,
) -> Method:
    """The arm's registered method around ``student`` at (λ, T), offered the arm's settings
    (`OFFERED_TO_METHODS`; ``teacher`` is the name of the arm's teacher) and, when its data
    hold rows without labels, ``unlabelled=True``."""
    offer = {
        **({"unlabelled": True} if unlabelled else {}),
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
            f"(field 'teachers' has {', '.join(teachers) or 'none'})"
        )
    unknown = [teacher for teacher in reads if teacher not in teachers]
    if unknown:
        raise ConfigError(
            f"arm {name!r}: its method reads teacher {unknown[0]!r}, but field 'teachers' "
            f"has {', '.join(teachers) or 'none'}"
        )
    return reads
