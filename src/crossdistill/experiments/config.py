"""Experiment configs: YAML files validated into typed objects before anything runs."""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch
import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    PositiveInt,
    ValidationError,
    model_validator,
)

from ..builtin import builtin_configs
from ..data import ArrayData, DomainSplits
from ..data.arrays import random_indices
from ..errors import CrossdistillError, number_hint
from ..files import file_name
from ..methods import GDDAClassifier
from ..registries import Registry, Spec, datasets, mappings, methods, models, privileged_datasets
from ..training import check_device, check_optimizer

OFFERED_TO_METHODS = (
    "task",
    "lam",
    "temperature",
    "teacher",
    "t2_scale",
    "soften_student",
    "unlabelled",
)
"""Keywords a driver offers every method's constructor besides ``student`` (it takes those it
names)."""


def _registered(registry: Registry, *provided: str) -> AfterValidator:
    """A validator: the spec names a registered component and only settings it accepts
    (``provided`` are the arguments the driver adds at build time)."""

    def check(spec: Spec) -> Spec:
        registry.check(spec, *provided)
        return spec

    return AfterValidator(check)


ModelSpec = Annotated[Spec, _registered(models, "in_shape", "num_outputs")]
MappingSpec = Annotated[Spec, _registered(mappings)]
MethodSpec = Annotated[Spec, _registered(methods, "student", *OFFERED_TO_METHODS)]


def _check_privileged(spec: Spec) -> Spec:
    privileged_datasets.check(spec, "seed")
    return spec


PrivilegedDataSpec = Annotated[Spec, AfterValidator(_check_privileged)]

FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Sweep = FiniteFloat | Annotated[list[FiniteFloat], Field(min_length=1)]
"""One value, or a non-empty list of values to choose from on validation data."""

Seed = Annotated[int, Field(ge=0, lt=2**63)]
"""A random seed: what `torch.manual_seed` accepts, 0 ≤ seed < 2⁶³."""


def _unique(values: list) -> list:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"each value must appear once, found {repeated[0]!r} repeated")
    return values


Seeds = Annotated[list[Seed], Field(min_length=1), AfterValidator(_unique)]
"""Distinct seeds, one run (or repetition) each; the tables' n is their number."""


NAME_BYTES = 100
"""The longest file name (`crossdistill.files.file_name`, in bytes) a name of an arm, teacher or
problem may have: run-directory files add their suffixes to it, within the 255 bytes a file
system allows."""


def _file_names(named: dict[str, Any]) -> dict[str, Any]:
    """Check that every name of ``named`` (arms, teachers, problems) makes a file name of its
    own: not empty, at most `NAME_BYTES` once encoded, and unlike every other name's even on a
    case-insensitive file system (macOS, Windows)."""
    seen: dict[str, str] = {}
    for name in named:
        if not name.strip():
            raise ValueError(f"a name must have a visible character, found {name!r}")
        encoded = file_name(name)
        if len(encoded) > NAME_BYTES:
            raise FieldError(
                name[:20] + "…",
                f"a name may take {NAME_BYTES} bytes as a file name, this one takes "
                f"{len(encoded)}; shorten it",
            )
        other = seen.setdefault(encoded.lower(), name)
        if other != name:
            raise FieldError(
                name,
                f"names {other!r} and {name!r} differ only in letter case, so they would "
                "share one file on a case-insensitive file system; rename one of them",
            )
    return named


Named = AfterValidator(_file_names)
"""A validator of a mapping by name whose names become file names in the run directory."""


def _check_device(name: str) -> str:
    return check_device(name)


Device = Annotated[str, AfterValidator(_check_device)]


def _check_optimizer(spec: dict[str, Any]) -> dict[str, Any]:
    check_optimizer(spec)
    return spec


OptimizerSpec = Annotated[dict[str, Any], AfterValidator(_check_optimizer)]


class ConfigError(CrossdistillError, ValueError):
    """A config that cannot run; the message names the file, the field, expected and found."""


class FieldError(ValueError):
    """Raised by a validator about a field below the one it validates: ``path`` (dotted, from
    that field) joins the field's location in the message."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


UserFile = Annotated[FilePath, Field(strict=False)]
"""A path of a user's file, written as text in YAML (relative to the current directory)."""


class _Strict(BaseModel):
    """Fields exactly as declared: no unknown field, and no value converted from another type
    (a bool is never a number, ``"1e-3"`` never a float, a float never an int)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class TrainConfig(_Strict):
    """How one model trains: epochs, batch size (rows per step), the optimizer spec, the
    precision (``bf16``: bfloat16 autocast, for GPUs) and ``checkpoint_every``: epochs between
    checkpoints (default: a checkpoint only at the end of each training and on an interrupt;
    see `crossdistill.training.fit`)."""

    epochs: PositiveInt
    batch_size: PositiveInt = 64
    optimizer: OptimizerSpec = Field(default_factory=lambda: {"name": "adam", "lr": 1e-3})
    precision: Literal["float32", "bf16"] = "float32"
    checkpoint_every: Annotated[
        PositiveInt | None, Field(exclude_if=lambda every: every is None)
    ] = None


class DataConfig(_Strict):
    """The student's data: a registered dataset (``name`` and its settings) split Big/Small/Test.

    ``big_size`` and ``test_size`` optionally keep only a seeded random part of Big and Test
    (reduced runs for tests and smoke checks). ``classes`` keeps only the rows of those labels
    in every split (so Small keeps fewer than ``small`` rows), relabelled 0, 1, … in the order
    given (e.g. ``[0, 1, 2, 3, 4]``: the first five classes).
    """

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str
    big_size: PositiveInt | None = None
    test_size: PositiveInt | None = None
    classes: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)] | None = None

    @model_validator(mode="after")
    def _check_loader(self) -> DataConfig:
        datasets.check(self.loader_spec())
        if self.classes is not None:
            _unique(self.classes)
        return self

    def loader_spec(self) -> dict[str, Any]:
        """The dataset spec handed to `crossdistill.data.datasets` (without the size limits)."""
        return {"name": self.name, **(self.model_extra or {})}

    def load(self) -> DomainSplits:
        """The dataset, Big and Test cut to ``big_size`` / ``test_size`` seeded random rows
        when those are given, and to the rows of ``classes`` (relabelled) when given.

        Raises:
            ValueError: ``classes`` names a label the dataset does not have.
        """
        splits = datasets.build(self.loader_spec())
        big, test = splits.big, splits.test
        if self.big_size is not None:
            big = big.subset(random_indices(len(big), min(self.big_size, len(big)), 0)[0])
        if self.test_size is not None:
            test = test.subset(random_indices(len(test), min(self.test_size, len(test)), 0)[0])
        splits = dataclasses.replace(splits, big=big, test=test)
        return splits if self.classes is None else keep_classes(splits, self.classes)


def keep_classes(splits: DomainSplits, classes: list[int]) -> DomainSplits:
    """The rows of ``classes`` in every split, labels replaced by their position in ``classes``."""
    declared = splits.num_classes
    outside = [c for c in classes if declared is not None and c >= declared]
    if outside:
        raise ValueError(f"classes: {outside[0]} is not a class of the dataset (0–{declared - 1})")
    parts = (splits.big, splits.small, splits.test)
    top = max([*classes, *(int(part.y.max()) for part in parts if len(part))])
    code = torch.full((top + 1,), -1)
    code[torch.tensor(classes)] = torch.arange(len(classes))

    def keep(data: ArrayData) -> ArrayData:
        rows = (code[data.y] >= 0).nonzero().squeeze(1)
        return ArrayData(data.x[rows], code[data.y[rows]])

    return DomainSplits(
        big=keep(splits.big),
        small=keep(splits.small),
        test=keep(splits.test),
        num_classes=len(classes),
    )


class TeacherConfig(_Strict):
    """A teacher, named in ``teachers``: trained here, or one the user already trained.

    - ``model`` + ``train``: trained once on ``transform`` applied to the Big split of ``data``
      (default the experiment's own dataset), checkpointed in the run directory;
    - ``model`` + ``checkpoint``: the spec built and given the state dict saved at that path
      (``torch.save(model.state_dict(), path)``), never trained;
    - ``torchscript``: the TorchScript model saved at that path (``torch.jit.save``).

    ``transform`` is the source-domain map of the teacher's own data (e.g. the noise it
    carries): the data its Test metrics are measured on. Paths are relative to the current
    directory.
    """

    model: ModelSpec | None = None
    train: TrainConfig | None = None
    checkpoint: UserFile | None = None
    torchscript: UserFile | None = None
    data: DataConfig | None = None
    transform: MappingSpec = "identity"
    seed: Seed = 0

    @model_validator(mode="after")
    def _check_source(self) -> TeacherConfig:
        given = [f for f in ("model", "train", "checkpoint", "torchscript") if getattr(self, f)]
        if given not in (["model", "train"], ["model", "checkpoint"], ["torchscript"]):
            raise ValueError(
                "give model and train (trained here), model and checkpoint (a state dict you "
                "saved) or torchscript (a TorchScript file); found "
                + (", ".join(given) or "none of them")
            )
        return self

    @property
    def trained_here(self) -> bool:
        """Whether the run trains this teacher (rather than loading it from a file)."""
        return self.train is not None


class StudentConfig(_Strict):
    """The student model spec and how it trains (the same for every arm and seed)."""

    model: ModelSpec
    train: TrainConfig


class SweptArm(_Strict):
    """An arm's loss weight λ and temperature T, each one value or a sweep (a list to choose
    from on validation data)."""

    lam: Sweep
    temperature: Sweep = 1.0

    @model_validator(mode="after")
    def _check_ranges(self) -> SweptArm:
        _check_sweeps(self.lam, self.temperature)
        return self

    def settings(self) -> list[tuple[float, float]]:
        """Every (λ, T) pair of the sweep, in config order."""
        return list(itertools.product(_as_list(self.lam), _as_list(self.temperature)))


class ArmConfig(SweptArm):
    """One compared arm: a registered ``method`` (default ``distillation``: multi-domain KD) with
    the loss weight λ (1 = no teacher), temperature T, the ``teacher`` it learns from (by name;
    default the config's only teacher) and the mapping φ in front of it.

    A list for ``lam`` or ``temperature`` is a sweep: the value is chosen on the validation part
    of Small (never on Test), then the arm is trained on all of Small with it. ``t2_scale`` and
    ``soften_student`` are offered to the method with λ, T and the teacher's name; a method
    takes the ones its constructor names.

    ``unlabelled`` rows of Big join Small without labels (their labels are never read): the
    first ``unlabelled`` of one seeded random order of Big, so that the pools of several arms
    are nested. The arm's teachers label them through its φ and the student learns them from
    the teacher terms alone; the arm must read a teacher and its method must take
    ``unlabelled``. Validation rows come from Small's labelled rows only. Left out of the
    resolved config when 0, so that runs made before it existed resume.
    """

    mapping: MappingSpec = "identity"
    teacher: str | None = None
    method: MethodSpec = "distillation"
    t2_scale: bool = True
    soften_student: bool = True
    unlabelled: Annotated[int, Field(ge=0, exclude_if=lambda rows: rows == 0)] = 0


class ExperimentConfig(_Strict):
    """A whole experiment: data, teachers by name, student, the arms compared, and the seeds.
    With ``batched`` (the default) every setting × seed of an arm's selection trains at once as
    one stacked model, and the seeds of its final runs as another
    (`crossdistill.training.fit_many`; the same results as one run each)."""

    kind: Literal["distillation"] = "distillation"
    name: str
    description: str = ""
    task: Literal["classification", "regression"] = "classification"
    data: DataConfig
    teachers: Annotated[dict[str, TeacherConfig], Named] = Field(default_factory=dict)
    student: StudentConfig
    arms: Annotated[dict[str, ArmConfig], Named] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    validation: PositiveInt = 200
    device: Device = "cpu"
    batched: bool = True

    @model_validator(mode="after")
    def _check_teachers(self) -> ExperimentConfig:
        _check_arm_teachers(self.arms, self.teachers)
        return self

    def teacher_of(self, arm: ArmConfig) -> str:
        """The teacher an arm learns from (see `teacher_of`)."""
        return teacher_of(arm, self.teachers)


class DeepGDDAArmConfig(ArmConfig):
    """An arm of a deep GDDA config: `ArmConfig` without a mapping of its own (each teacher
    brings its ``mapping``). ``lam`` defaults to 1 (no teacher); a method that learns its
    weights (``gdda_distillation``) only checks it."""

    lam: Sweep = 1.0

    @model_validator(mode="after")
    def _check_mapping(self) -> DeepGDDAArmConfig:
        if self.mapping != "identity":
            raise FieldError(
                "mapping",
                "each teacher brings its own (field 'teachers.<name>.mapping'); an arm takes "
                f"none, found {self.mapping!r}",
            )
        return self


class DeepGDDAConfig(ExperimentConfig):
    """Deep GDDA against a validation grid (after Ao, 2016, "Distilling"): an `ExperimentConfig`
    whose teachers each read the student's images through their own ``mapping`` φ, so that an
    arm's method (``weighted_distillation``, ``gdda_distillation``) can learn from several
    teachers on different domains. Each arm's wall time, its selection on validation included,
    is recorded. ``svm_arms`` (name → teachers) add the GDDA-SVM itself for comparison:
    `GDDAClassifier` with the ``classifier`` settings, fitted on Small's flattened inputs with
    those teachers' probabilities (every row labelled) and scored on Test."""

    kind: Literal["deep_gdda"]
    teachers: Annotated[dict[str, MappedTeacherConfig], Named] = Field(default_factory=dict)
    arms: Annotated[dict[str, DeepGDDAArmConfig], Named] = Field(min_length=1)
    svm_arms: Annotated[dict[str, list[str]], Named] = Field(default_factory=dict)
    classifier: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_svm_arms(self) -> DeepGDDAConfig:
        for name, members in self.svm_arms.items():
            unknown = [m for m in members if m not in self.teachers]
            if unknown or len(set(members)) < len(members):
                raise FieldError(
                    f"svm_arms.{name}",
                    f"must list teachers of field 'teachers' ({', '.join(self.teachers)}), each "
                    f"once, found {members!r}",
                )
            if name in self.arms:
                raise FieldError(f"svm_arms.{name}", "is also the name of an arm in field 'arms'")
        _check_classifier(self.classifier)
        return self


class PrivilegedConfig(_Strict):
    """Generalized distillation (Lopez-Paz et al., 2016): for every problem and repetition ``seed``,
    teachers (by name) trained on the privileged inputs x* of the training rows and students on
    their regular x; each arm reads its ``teacher`` (default the only one).

    ``problems`` name `crossdistill.data.privileged_datasets` specs (each built once per seed).
    Swept λ, T are chosen per repetition on a ``validation`` fraction of the training rows (the
    teacher of the selection is trained without them) by ``selection``: the lowest validation
    cross-entropy, or the highest accuracy (ties broken by cross-entropy). With ``curves``, every
    swept (λ, T) is also trained on all training rows and scored on Test, for the figure only.
    With ``batched`` (the default) a problem's whole sweep — every arm's (λ, T) × repetition —
    trains as one stacked model for the selection and another for the final runs
    (`crossdistill.training.fit_many`); ``false`` trains each run apart.
    """

    kind: Literal["privileged"]
    name: str
    description: str = ""
    problems: Annotated[dict[str, PrivilegedDataSpec], Named] = Field(min_length=1)
    teachers: Annotated[dict[str, StudentConfig], Named] = Field(min_length=1)
    student: StudentConfig
    arms: Annotated[dict[str, ArmConfig], Named] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    validation: float = Field(0.2, gt=0, lt=1)
    selection: Literal["cross_entropy", "accuracy"] = "cross_entropy"
    curves: bool = False
    device: Device = "cpu"
    batched: bool = True

    def teacher_of(self, arm: ArmConfig) -> str:
        """The teacher an arm learns from (see `teacher_of`)."""
        return teacher_of(arm, self.teachers)

    @model_validator(mode="after")
    def _check_arms(self) -> PrivilegedConfig:
        _check_arm_teachers(self.arms, self.teachers)
        for name in self.teachers:
            if name in self.arms:
                raise FieldError(
                    f"teachers.{name}", "a teacher has the name of an arm; rename one of them"
                )
        for name, arm in self.arms.items():
            if arm.mapping != "identity":
                raise FieldError(
                    f"arms.{name}.mapping",
                    "the teacher sees the privileged inputs, a mapping is not used here "
                    f"(found {arm.mapping!r})",
                )
        return self


class MappedTeacherConfig(TeacherConfig):
    """A teacher with its own mapping φ: it gives its outputs on ``mapping``(target x) (see
    `TeacherConfig` for the rest)."""

    mapping: MappingSpec = "identity"


class GDDATeacherConfig(MappedTeacherConfig):
    """A teacher of a GDDA config, on its own source domain (``data``, required): trained on
    ``transform`` of its Big or loaded (see `TeacherConfig`); it gives soft labels on
    ``mapping``(target x)."""

    data: DataConfig


GDDA_SET_BY_THE_RUN = ("lambda_search", "classes", "teacher_outputs")
"""`GDDAClassifier` settings a GDDA run sets itself (not in a config's ``classifier``)."""


class GDDAConfig(_Strict):
    """Multi-source domain adaptation with the GDDA-SVM (Ao, 2016, "Distilling").

    The target pool is ``target``'s Train (Big ∪ Small); each repetition ``seed`` labels
    ``labelled_per_class`` random pool rows per class and leaves the others unlabelled (they get
    the teachers' soft labels only); accuracy is measured on ``target``'s Test. The LS-SVM reads
    ``features``(target x), flattened. Each arm is a list of ``teachers``; per arm and repetition
    the classifier (`crossdistill.methods.GDDAClassifier` with ``classifier`` settings) learns
    λ by gradient, by the LOO-best point of the grid ``{0, 1/grid_steps, …, 1}^M ∩ simplex``
    (brute force), and is scored at every grid point for the curves.
    """

    kind: Literal["gdda"]
    name: str
    description: str = ""
    target: DataConfig
    features: MappingSpec = "identity"
    teachers: Annotated[dict[str, GDDATeacherConfig], Named] = Field(min_length=1)
    arms: Annotated[dict[str, list[str]], Named] = Field(min_length=1)
    classifier: dict[str, Any] = Field(default_factory=dict)
    labelled_per_class: PositiveInt = 1
    grid_steps: PositiveInt = 10
    seeds: Seeds = Field(default_factory=lambda: list(range(10)))
    device: Device = "cpu"

    @model_validator(mode="after")
    def _check(self) -> GDDAConfig:
        for name, members in self.arms.items():
            unknown = [m for m in members if m not in self.teachers]
            if not members or unknown:
                raise FieldError(
                    f"arms.{name}",
                    f"must list teachers of field 'teachers' ({', '.join(self.teachers)}), found "
                    f"{members!r}",
                )
        _check_classifier(self.classifier)
        return self


def _check_classifier(settings: dict[str, Any]) -> None:
    """Refuse `GDDAClassifier` settings a run sets itself, unknown ones and bad values."""
    allowed = set(GDDAClassifier().get_params()) - set(GDDA_SET_BY_THE_RUN)
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise FieldError(
            f"classifier.{unknown[0]}",
            f"no such setting; the classifier accepts {', '.join(sorted(allowed))}",
        )
    try:  # every setting's value, checked as fit checks it, on a two-row problem
        GDDAClassifier(**settings).fit(np.eye(2), np.arange(2))
    except (TypeError, ValueError) as error:
        raise FieldError("classifier", str(error)) from None


Fraction = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False)]
"""A number in [0, 1]: a probability or a share."""


class GDDAMultiSourceConfig(_Strict):
    """How accurately the GDDA-SVM (Ao, 2016, "Distilling") learns several imitation weights, on
    Gaussian classes whose posterior is known.

    Per seed: ``classes`` class means in ``dimensions`` dimensions drawn from
    N(0, ``separation``² I), rows x ~ N(μ_y, I) with equal priors (so p*(y|x) is a softmax in
    closed form), and ``test_rows`` Test rows with their true labels. Per n of
    ``labelled_per_class``: n rows per class, each label replaced by a uniformly random class
    with probability ``label_noise``. Per M of ``teachers``: teacher j's soft labels
    ``r_j p*(·|x) + (1 − r_j) ν`` with ν ~ Dirichlet(``concentration``) per row and teacher and
    the r_j evenly spaced from ``reliability[0]`` to ``reliability[1]`` (M = 1: the first).
    The classifier (`crossdistill.methods.GDDAClassifier` with ``classifier`` settings) learns λ
    by gradient on its leave-one-out loss and, for M ≤ ``grid_up_to``, by the LOO-best point of
    the grid {0, 0.1, …, 1}^(M+1) ∩ simplex; λ* minimises its Test cross-entropy (exactly).
    """

    kind: Literal["gdda_multisource"]
    name: str
    description: str = ""
    classes: Annotated[int, Field(ge=2)] = 5
    dimensions: PositiveInt = 20
    separation: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.55
    teachers: Annotated[list[PositiveInt], Field(min_length=1), AfterValidator(_unique)] = Field(
        default_factory=lambda: [1, 2, 4, 8]
    )
    reliability: Annotated[list[Fraction], Field(min_length=2, max_length=2)] = Field(
        default_factory=lambda: [0.9, 0.1]
    )
    concentration: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.3
    label_noise: Fraction = 0.3
    labelled_per_class: Annotated[
        list[PositiveInt], Field(min_length=1), AfterValidator(_unique)
    ] = Field(default_factory=lambda: [10, 50, 200])
    test_rows: PositiveInt = 2000
    classifier: dict[str, Any] = Field(default_factory=dict)
    grid_up_to: Annotated[int, Field(ge=0)] = 4
    seeds: Seeds = Field(default_factory=lambda: list(range(10)))
    device: Device = "cpu"

    @model_validator(mode="after")
    def _check(self) -> GDDAMultiSourceConfig:
        _check_classifier(self.classifier)
        return self


class GrowthObjectiveConfig(_Strict):
    """Anti-distillation's φ(u), minimised on D1* = ψ(the teacher's training rows) before the
    student trains on its own data: weights ``lam`` (λ1 fit on D1*, λ2 anchor ‖u − w[u]‖², λ3 robust
    loss L3^δ at radius ``delta``, λ4 ‖∂²L/∂w²‖²_F by Hutchinson; non-negative, summing to 1),
    ``rows`` of D1* (seeded random), and how long (``train``)."""

    lam: Annotated[
        list[Annotated[float, Field(ge=0, allow_inf_nan=False)]], Field(min_length=4, max_length=4)
    ]
    delta: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.1
    robust_samples: PositiveInt = 1
    hessian_samples: PositiveInt = 1
    rows: PositiveInt = 1000
    train: TrainConfig

    @model_validator(mode="after")
    def _check_sum(self) -> GrowthObjectiveConfig:
        if abs(sum(self.lam) - 1) > 1e-9:
            raise FieldError("lam", f"must sum to 1, found {self.lam} (sum {sum(self.lam):g})")
        return self


class GrowthArmConfig(_Strict):
    """One initialisation of the grown student (anti-distillation): the teacher's weights at their
    slots and the new entries by ``extension`` (`zero`, `zero_out`: the weights reading new units 0
    and the rest the student's own initialisation, `uniform` U[0, ``theta``], `net2net` with
    ``noise``, `gradmax`: `zero_out` with the new units' incoming weights chosen to maximise the
    loss gradient on a seeded batch of D2's Small, or `scratch`: the student's own initialisation),
    then optionally the growth ``objective`` (see `crossdistill.models.grow`).

    ``exact`` (net2net only): the weights reading a duplicated unit split equally among its k
    copies (w / k, the original net2net, whose copies stay identical); by default the shares
    are unequal, w (1 + ε_i) / k with Σ ε_i = 0, so training separates the copies. ``model``:
    the architecture the arm trains, the ``student``'s spec or the ``teacher``'s (the
    teacher's width at the student's input shape and classes): ``{model: teacher, extension:
    zero}`` fine-tunes the teacher itself (new input features and classes start at 0),
    ``{model: teacher, extension: scratch}`` trains a fresh network of the teacher's size."""

    extension: Literal["zero", "zero_out", "uniform", "scratch", "net2net", "gradmax"] = "zero"
    theta: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 0.1
    noise: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.0
    exact: bool = False
    model: Literal["student", "teacher"] = "student"
    objective: GrowthObjectiveConfig | None = None

    @model_validator(mode="after")
    def _check_exact(self) -> GrowthArmConfig:
        if self.exact and self.extension != "net2net":
            raise FieldError(
                "exact",
                "only extension net2net splits weights, exactly or not; found exact: true with "
                f"extension {self.extension!r}",
            )
        return self


class GrowthStudentConfig(StudentConfig):
    """The grown student: its ``model`` spec, how it trains, and its own dataset D2 (default the
    teacher's)."""

    data: DataConfig | None = None


class BayesArmConfig(SweptArm):
    """An arm of a Bayesian distillation config (Grabovoy and Strijov, 2021): how a student of
    each width learns.

    - ``method``: ``variational`` (a `crossdistill.methods.MeanField` student on the evidence
      lower bound, `crossdistill.methods.VariationalDistillation`) or ``map`` (point weights,
      the maximum a posteriori, `crossdistill.methods.PriorMAP`);
    - ``prior``: ``isotropic`` (N(0, I / τ)) or ``teacher`` (the teacher's diagonal Laplace
      posterior N(μ, 1 / (τ + h)), h its curvature, restricted to the units the student
      keeps);
    - ``prior_precision``: τ > 0 (in 1 / squared weight units), one value or a sweep chosen on
      validation with λ and T;
    - ``start``: ``own`` (the student's own initialisation) or ``teacher`` (the teacher's
      weights at the kept units); a variational student's σ starts at the config's
      ``initial_std`` either way;
    - ``rule``: how the kept units are chosen (``snr``: the largest posterior |μ| / σ at the
      arm's τ; ``random``), where the prior or the start reads the teacher;
    - ``lam`` (default 1: no teacher term) and ``temperature``: the KD soft term, as in a
      distillation arm.
    """

    lam: Sweep = 1.0
    method: Literal["variational", "map"] = "variational"
    prior: Literal["isotropic", "teacher"] = "isotropic"
    prior_precision: Sweep = 1.0
    start: Literal["own", "teacher"] = "own"
    rule: Literal["snr", "random"] = "snr"

    @model_validator(mode="after")
    def _check_precision(self) -> BayesArmConfig:
        for value in _as_list(self.prior_precision):
            if value <= 0:
                raise FieldError("prior_precision", f"must be positive, found {value}")
        return self

    def bayes_settings(self) -> list[tuple[float, float, float]]:
        """Every (λ, T, τ) of the sweep, in config order."""
        return [
            (lam, temperature, tau)
            for (lam, temperature), tau in itertools.product(
                self.settings(), _as_list(self.prior_precision)
            )
        ]


class BayesConfig(_Strict):
    """Bayesian distillation (Grabovoy and Strijov, 2021, "Bayesian distillation of deep
    learning models"): one ``teacher`` trained on Big (through its ``transform``), the
    ``curvature`` of its negative log-likelihood over its own training rows (for its diagonal
    Laplace posterior), and students that keep a fraction of its width (``widths``: each
    ``hidden`` / ``channels`` entry of its model spec times the fraction, rounded), trained on
    Small by every arm and seed. The teacher reads the student's images through ``mapping``
    φ for the soft term. Swept settings are chosen on ``validation`` rows of Small (lowest
    mean cross-entropy over the seeds). Test is scored once, after the last epoch;
    variational students start with σ = ``initial_std`` and predict with the mean weights
    (``samples`` 0) or the mean softmax of ``samples`` seeded draws."""

    kind: Literal["bayes"]
    name: str
    description: str = ""
    data: DataConfig
    teacher: TeacherConfig
    curvature: Literal["fisher", "empirical"] = "fisher"
    mapping: MappingSpec = "identity"
    widths: Annotated[
        list[Annotated[float, Field(gt=0, le=1, allow_inf_nan=False)]], Field(min_length=1)
    ]
    train: TrainConfig
    initial_std: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1e-3
    samples: Annotated[int, Field(ge=0)] = 0
    arms: Annotated[dict[str, BayesArmConfig], Named] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    validation: PositiveInt = 200
    device: Device = "cpu"

    @model_validator(mode="after")
    def _check_widths(self) -> BayesConfig:
        _unique(self.widths)
        if not self.teacher.trained_here and self.teacher.torchscript is not None:
            raise FieldError(
                "teacher",
                "needs a model spec (model and train, or model and checkpoint): the students' "
                "specs are made from it, found a TorchScript file",
            )
        return self


class GrowthConfig(_Strict):
    """Anti-distillation (Petrushina et al.): a ``teacher`` trained on D1 (its ``data``, required)
    grown into the bigger ``student`` on D2, per arm (an initialisation) and seed. ``input_map`` is
    ψ from the teacher's inputs to the student's (for D1* and a grown first layer). Quality on D2's
    Test: accuracy (after the last epoch, epochs 1 and 5, and its mean over the epochs),
    cross-entropy, the robust loss L3^δ at radius ``delta``, the same under each ``corruption``
    fraction of pixels, the prediction variance across seeds, the fraction of new units that train,
    and the epochs and seconds each arm takes to reach 99 % of the best arm's final accuracy.
    """

    kind: Literal["growth"]
    name: str
    description: str = ""
    teacher: TeacherConfig
    student: GrowthStudentConfig
    input_map: MappingSpec = "identity"
    arms: Annotated[dict[str, GrowthArmConfig], Named] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: list(range(5)))
    delta: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.1
    robust_samples: PositiveInt = 4
    corruption: list[Annotated[float, Field(ge=0, le=1)]] = Field(default_factory=list)
    device: Device = "cpu"

    @model_validator(mode="after")
    def _check(self) -> GrowthConfig:
        if self.teacher.data is None:
            raise FieldError("teacher.data", "the teacher's dataset D1 is required here")
        return self


class MultiTeacherTeacherConfig(TeacherConfig):
    """A teacher of a multi-teacher config (Sedova et al., 2022) with its own, incomplete view of
    the experiment's data: only the Big rows of ``classes`` (its outputs are those classes, in that
    order), a seeded random subset of ``rows`` Big rows (drawn with ``seed``), and the ``transform``
    φ, applied to its training data and to every input it is shown (the student's too). ``layer`` is
    the submodule (module path) whose output is its hidden representation for the shared latent.
    Trained here or loaded (see `TeacherConfig`; a loaded teacher's view of the data must be the one
    it was trained on)."""

    data: None = None
    classes: Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=2)] | None = None
    rows: PositiveInt | None = None
    layer: str

    @model_validator(mode="after")
    def _check_classes(self) -> MultiTeacherTeacherConfig:
        if self.classes is not None:
            try:
                _unique(self.classes)
            except ValueError as error:
                raise FieldError("classes", str(error)) from None
        return self


class MultiTeacherStudentConfig(StudentConfig):
    """The student: its model, how it trains, and ``layer``, the submodule (module path) whose
    output is projected into the shared latent."""

    layer: str


class LatentConfig(_Strict):
    """The shared latent (Sedova et al., 2022): each teacher's hidden layer reduced to ``reduce``
    principal components, encoded into ``size`` dimensions by an autoencoder (``hidden``-unit
    encoders and decoders, codes L2-normalised with ``normalize``) trained by ``train`` with
    the reconstruction loss plus ``triplet_weight`` × the triplet loss at margin ``margin``
    (in squared latent units), its triplets mined ``semi_hard`` (FaceNet) or ``random``; on
    ``rows`` seeded random rows of Big (drawn with ``seed``) or, when ``rows`` is absent, on the
    student's training rows. The student's projection of its hidden layer matches the
    (standardised) latent with weight ``weight``. An arm may sweep ``weight``, ``margin`` and
    ``triplet_weight`` instead (its ``latent_weight``, ``margin``, ``triplet_weight``)."""

    size: PositiveInt = 16
    reduce: PositiveInt = 32
    hidden: PositiveInt = 64
    normalize: bool = True
    mining: Literal["random", "semi_hard"] = "semi_hard"
    margin: Annotated[float, Field(ge=0, allow_inf_nan=False)] = 0.2
    triplet_weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    weight: Annotated[float, Field(gt=0, allow_inf_nan=False)] = 1.0
    rows: PositiveInt | None = None
    seed: Seed = 0
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(epochs=100, batch_size=128))


PositiveSweep = (
    Annotated[float, Field(gt=0, allow_inf_nan=False)]
    | Annotated[list[Annotated[float, Field(gt=0, allow_inf_nan=False)]], Field(min_length=1)]
)
"""One positive value, or a non-empty list of them to choose from on validation data."""


class MultiTeacherArmConfig(SweptArm):
    """One compared arm of a multi-teacher config: the ``teachers`` it learns from (``all``,
    a list of names, or ``best_one``: the single teacher chosen on validation with λ and T),
    how their soft labels are weighted (``average``: equal weights; ``confidence``: CA-MKD's
    per-sample weights, equal on rows where the weighted teachers do not know every class),
    and what the student's hidden layer also matches (``latent``): ``none``; ``hints``: each
    teacher's reduced hidden layer through its own projection (per-teacher FitNets hints);
    ``reconstruction``: the shared latent, its autoencoder trained by reconstruction alone;
    ``triplet``: the shared latent trained by reconstruction and the triplet loss. λ (1: no
    soft labels), T, and the hint weight ``latent_weight`` (with ``hints`` or a latent), the
    ``margin`` and the ``triplet_weight`` (with ``triplet``) may be sweeps, chosen on the
    validation part of Small; absent, the latter three are the config's ``latent`` values."""

    teachers: Literal["all", "best_one"] | Annotated[list[str], Field(min_length=1)] = "all"
    weighting: Literal["average", "confidence"] = "average"
    latent: Literal["none", "hints", "reconstruction", "triplet"] = "none"
    latent_weight: PositiveSweep | None = None
    margin: Sweep | None = None
    triplet_weight: PositiveSweep | None = None

    @model_validator(mode="after")
    def _check_latent_sweeps(self) -> MultiTeacherArmConfig:
        if self.latent == "none" and self.latent_weight is not None:
            raise FieldError("latent_weight", "needs latent: hints, reconstruction or triplet")
        for name in ("margin", "triplet_weight"):
            if getattr(self, name) is not None and self.latent != "triplet":
                raise FieldError(name, f"needs latent: triplet, found latent: {self.latent}")
        for value in _as_list(self.margin) if self.margin is not None else []:
            if value < 0:
                raise FieldError("margin", f"must be ≥ 0, found {value}")
        return self

    def latent_settings(self, latent: LatentConfig) -> list[tuple[float, float, float]]:
        """Every (hint weight γ, margin, triplet weight) the arm chooses among, in config
        order; (0, 0, 0) when it matches nothing, and margin and triplet weight 0 without the
        triplet loss."""
        if self.latent == "none":
            return [(0.0, 0.0, 0.0)]
        weights = _as_list(self.latent_weight if self.latent_weight is not None else latent.weight)
        if self.latent != "triplet":
            return [(w, 0.0, 0.0) for w in weights]
        margins = _as_list(self.margin if self.margin is not None else latent.margin)
        triplets = _as_list(
            self.triplet_weight if self.triplet_weight is not None else latent.triplet_weight
        )
        return list(itertools.product(weights, margins, triplets))


class MultiTeacherConfig(_Strict):
    """Multi-teacher distillation through a shared latent (Sedova et al., 2022): ``teachers`` (≥ 1,
    each with its own architecture and view of ``data``) trained on Big, the ``student`` on Small
    (``validation`` rows of it held out to choose each arm's settings), every arm × seed
    scored on Test; ``latent`` configures the shared latent of the arms that use it. With a
    ``baseline`` arm, the table also gives each arm's accuracy minus the baseline's, paired by
    seed (the same initial weights and batch order). With ``batched`` (the default) every
    setting × seed of an arm's selection trains at once, and the seeds of its final runs."""

    kind: Literal["multiteacher"]
    name: str
    description: str = ""
    data: DataConfig
    teachers: Annotated[dict[str, MultiTeacherTeacherConfig], Named] = Field(min_length=1)
    student: MultiTeacherStudentConfig
    latent: LatentConfig = Field(default_factory=LatentConfig)
    arms: Annotated[dict[str, MultiTeacherArmConfig], Named] = Field(min_length=1)
    seeds: Seeds = Field(default_factory=lambda: [0, 1, 2])
    validation: PositiveInt = 200
    baseline: str | None = None
    device: Device = "cpu"
    batched: bool = True

    @model_validator(mode="after")
    def _check_arms(self) -> MultiTeacherConfig:
        if self.baseline is not None and self.baseline not in self.arms:
            raise FieldError(
                "baseline", f"names arm {self.baseline!r}; field 'arms' has " + ", ".join(self.arms)
            )
        for name, arm in self.arms.items():
            if isinstance(arm.teachers, list):
                unknown = [t for t in arm.teachers if t not in self.teachers]
                if unknown:
                    raise FieldError(
                        f"arms.{name}.teachers",
                        f"names teacher {unknown[0]!r}; field 'teachers' has "
                        + ", ".join(self.teachers),
                    )
                try:
                    _unique(arm.teachers)
                except ValueError as error:
                    raise FieldError(f"arms.{name}.teachers", str(error)) from None
        return self

    def teachers_of(self, arm: MultiTeacherArmConfig) -> list[str]:
        """The teachers an arm may read (for ``best_one``, the candidates)."""
        return arm.teachers if isinstance(arm.teachers, list) else list(self.teachers)


AnyConfig = (
    ExperimentConfig
    | DeepGDDAConfig
    | PrivilegedConfig
    | GDDAConfig
    | GDDAMultiSourceConfig
    | GrowthConfig
    | MultiTeacherConfig
    | BayesConfig
)
SCHEMAS: dict[str, type[AnyConfig]] = {
    "distillation": ExperimentConfig,
    "deep_gdda": DeepGDDAConfig,
    "privileged": PrivilegedConfig,
    "gdda": GDDAConfig,
    "gdda_multisource": GDDAMultiSourceConfig,
    "growth": GrowthConfig,
    "multiteacher": MultiTeacherConfig,
    "bayes": BayesConfig,
}
"""Config classes by their ``kind`` field (absent: ``distillation``)."""


def teacher_of(arm: ArmConfig, teachers: dict[str, Any]) -> str:
    """The teacher an arm learns from: its own ``teacher``, else the config's only one, else
    ``""`` (no teacher can be chosen: a method that reads it is refused before anything
    runs)."""
    if arm.teacher is not None:
        return arm.teacher
    return next(iter(teachers)) if len(teachers) == 1 else ""


def _check_arm_teachers(arms: dict[str, ArmConfig], teachers: dict[str, Any]) -> None:
    for name, arm in arms.items():
        if arm.teacher is not None and arm.teacher not in teachers:
            raise FieldError(
                f"arms.{name}.teacher",
                f"names teacher {arm.teacher!r}; field 'teachers' has "
                + (", ".join(teachers) or "none"),
            )


def _check_sweeps(lam: Sweep, temperature: Sweep) -> None:
    """Every λ in [0, 1] and every T > 0 with a finite T² (the soft term's scale)."""
    for value in _as_list(lam):
        if not 0.0 <= value <= 1.0:
            raise FieldError("lam", f"must lie in [0, 1], found {value}")
    for value in _as_list(temperature):
        if value <= 0:
            raise FieldError("temperature", f"must be positive, found {value}")
        if not math.isfinite(value * value):
            raise FieldError("temperature", f"must have a finite square, found {value}")


def _as_list(value: Sweep) -> list[float]:
    return value if isinstance(value, list) else [value]


def load_config(source: str | Path, overrides: list[str] = ()) -> AnyConfig:
    """Read, override and validate a config.

    Args:
        source: a YAML path or the name of a built-in experiment (see `builtin_configs`).
        overrides: ``"key.sub=value"`` strings; values are parsed as YAML (``seeds=[0,1]``).
    """
    path = Path(source)
    if not path.suffix:
        known = builtin_configs()
        if str(source) not in known:
            raise ConfigError(
                f"no experiment {str(source)!r}: expected a YAML file or one of "
                f"{', '.join(sorted(known))}"
            )
        path = known[str(source)]
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of fields, found {type(raw).__name__}")
    for override in overrides:
        _apply_override(raw, override, path)
    kind = raw.get("kind", "distillation")
    if not isinstance(kind, str) or kind not in SCHEMAS:
        raise ConfigError(
            f"{path}: field 'kind': expected one of {', '.join(SCHEMAS)} (found {kind!r})"
        )
    try:
        return SCHEMAS[kind].model_validate(raw)
    except ValidationError as error:
        problems = error.errors()
        # of a union's alternatives, the one of the right type says what is wrong
        right_type = [p for p in problems if not p["type"].endswith(("_type", "_parsing"))]
        raise ConfigError(f"{path}: {_describe((right_type or problems)[0], raw)}") from None


FOUND_CHARS = 80
"""At most this many characters of a refused value are quoted in an error message."""


def _describe(problem: dict[str, Any], raw: Any) -> str:
    """One pydantic error as ``field 'a.b.c': what is wrong (found …)``, the location given as
    the keys of the user's file (pydantic's names of union members dropped)."""
    *inside, last = problem["loc"] or ("",)
    parts, node = [], raw
    for part in [*inside, last]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            if part is last and problem["type"] == "missing":
                parts.append(str(part))
            continue
        parts.append(str(part))
    cause = problem.get("ctx", {}).get("error")
    if isinstance(cause, FieldError):
        parts.append(cause.path)
    message = problem["msg"].removeprefix("Value error, ")
    if (
        problem["type"] != "missing"
        and "found" not in message
        and not isinstance(cause, FieldError)
    ):
        found = repr(problem["input"])
        found = found if len(found) <= FOUND_CHARS else found[: FOUND_CHARS - 1] + "…"
        message += f" (found {found}){number_hint(problem['input'])}"
    return f"field {'.'.join(parts) or '(top level)'!r}: {message}"


def _apply_override(raw: dict[str, Any], override: str, path: Path) -> None:
    key, sep, text = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r}: expected key=value, e.g. seeds=[0,1]")
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{path}: override {override!r}: field {part!r} is not a mapping")
        node = child
    try:
        node[leaf] = yaml.safe_load(text)
    except yaml.YAMLError as error:
        first = str(error).splitlines()[0]
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({first})") from None


def dump_config(config: AnyConfig) -> str:
    """The resolved config as YAML (what a run directory's ``config.yaml`` holds)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
