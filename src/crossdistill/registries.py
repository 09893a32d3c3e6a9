"""Name → constructor registries, so that a config names a component by a string.

The six registries of the package live here: `models`, `mappings`, `methods`, `datasets`,
`privileged_datasets` and the experiment `kinds`. Each fills itself on first use by importing
the subpackages that register the built-in components, so this module imports neither torch
nor any subpackage:

>>> from crossdistill.registries import models
>>> "mlp" in models.names()
True

A user's component is added with the decorator, e.g. ``@methods.register("kd_hint")``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Generic, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from .data import DomainSplits, PrivilegedSplits
    from .experiments import ExperimentKind
    from .methods import Method

T = TypeVar("T")

Spec = str | Mapping[str, Any]
"""A component in a config: ``"identity"`` or ``{"name": "mlp", "hidden": [64]}``."""


class Registry(Generic[T]):
    """A table of named constructors of one kind of component (models, mappings, ...).

    ``filled_by`` names the modules whose import registers the built-in constructors; they are
    imported the first time the registry is read (`names`, `check`, `build`), not when it is
    created.

    >>> shapes = Registry("shape")
    >>> @shapes.register("square")
    ... def square(side: float) -> float:
    ...     return side * side
    >>> shapes.build({"name": "square", "side": 3.0})
    9.0
    """

    def __init__(self, kind: str, filled_by: Sequence[str] = ()) -> None:
        self.kind = kind
        self.filled_by = tuple(filled_by)
        self._constructors: dict[str, Callable[..., T]] = {}
        self._filled = not self.filled_by

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator adding a constructor under ``name``."""

        def add(constructor: Callable[..., T]) -> Callable[..., T]:
            if name in self._constructors:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._constructors[name] = constructor
            return constructor

        return add

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._table())

    def _table(self) -> dict[str, Callable[..., T]]:
        """The constructors, after importing the modules that register the built-in ones."""
        if not self._filled:
            self._filled = True
            for module in self.filled_by:
                importlib.import_module(module)
        return self._constructors

    def check(self, spec: Spec, *provided: str) -> None:
        """Raise ValueError if ``spec`` names no constructor or passes arguments it does not take,
        or a bool where the constructor's annotation expects a number; a setting annotated
        ``Annotated[..., registry]`` (a nested spec of another component) or
        ``Annotated[..., settings_class]`` (a mapping of that class's keyword arguments) is
        checked in turn.

        ``provided`` are the argument names the caller will add at build time. Nothing is built.
        """
        name, kwargs = self._split(spec)
        given = [key for key in kwargs if key in provided]
        if given:
            raise ValueError(
                f"{self.kind} {name!r}: {given[0]!r} is set by the experiment (from its data "
                "and settings); remove it from the spec"
            )
        try:
            check_settings(self._table()[name], kwargs, provided)
        except ValueError as error:
            raise ValueError(f"{self.kind} {name!r}: {error}") from None

    def build(self, spec: Spec, *, offer: Mapping[str, Any] | None = None, **defaults: Any) -> T:
        """Construct the component a spec names; ``defaults`` fill arguments the spec leaves out.

        ``offer`` holds keywords passed only to a constructor that takes them (by name or
        through ``**kwargs``), e.g. the λ and T a driver offers every method.
        """
        name, kwargs = self._split(spec)
        constructor = self._table()[name]
        if offer:
            parameters, takes_any = _parameters(constructor)
            defaults = {
                **{k: v for k, v in offer.items() if takes_any or k in parameters},
                **defaults,
            }
        try:
            return constructor(**{**defaults, **kwargs})
        except TypeError as error:
            raise ValueError(f"{self.kind} {name!r}: {error}") from error

    def _split(self, spec: Spec) -> tuple[str, dict[str, Any]]:
        if isinstance(spec, str):
            name, kwargs = spec, {}
        else:
            kwargs = dict(spec)
            if "name" not in kwargs:
                raise ValueError(f"{self.kind} spec {kwargs!r} has no 'name' field")
            name = kwargs.pop("name")
        if not isinstance(name, str):
            raise ValueError(f"{self.kind} spec: 'name' must be a string, found {name!r}")
        if name not in self._table():
            raise ValueError(
                f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}"
            )
        return name, kwargs


models: Registry[nn.Module] = Registry("model", ["crossdistill.models"])
"""Model constructors by name, e.g.
``models.build({"name": "mlp", "hidden": [1200, 1200]}, in_shape=(1, 28, 28), num_outputs=10)``."""

mappings: Registry[nn.Module] = Registry("mapping", ["crossdistill.mappings"])
"""Mappings φ between domains by name (``identity``, ``gaussian_noise``, ``vae``, ...)."""

methods: Registry[Method] = Registry("method", ["crossdistill.methods"])
"""Training methods by name, for configs:
``methods.build({"name": "distillation"}, student=..., ...)``. A constructor takes the student
as ``student`` and any of the keywords a driver offers (``task``, ``lam``, ``temperature``,
``teacher``), plus its own settings from the spec."""

datasets: Registry[DomainSplits] = Registry(
    "dataset", ["crossdistill.data", "crossdistill.mappings"]
)
"""Datasets split into Big/Small/Test by name: ``datasets.build("fashion_mnist", small=1000,
seed=0)``. The mappings register the ones made through a mapping (``generated_mnist``)."""

privileged_datasets: Registry[PrivilegedSplits] = Registry(
    "privileged dataset", ["crossdistill.data", "crossdistill.mappings"]
)
"""Datasets with privileged features by name, each built with a repetition ``seed``:
``privileged_datasets.build({"name": "lopez_paz_synthetic", "setting": "clean_labels"}, seed=0)``.
The mappings register ``regular_view`` (a mapping's view of a dataset)."""

kinds: Registry[ExperimentKind] = Registry("experiment kind", ["crossdistill.experiments"])
"""Experiment kinds by the ``kind`` field of their config (``distillation``, ``privileged``,
``gdda``, ``growth``, ``multiteacher``)."""


def _parameters(constructor: Callable[..., Any]) -> tuple[list[str], bool]:
    """A constructor's keyword names, and whether it also takes ``**kwargs``."""
    parameters = inspect.signature(constructor).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return list(parameters), takes_any


def check_settings(
    constructor: Callable[..., Any], settings: Mapping[str, Any], provided: Sequence[str] = ()
) -> None:
    """Raise ValueError unless ``constructor`` takes every keyword of ``settings`` (beside
    ``provided``, added by the caller), with no bool where its annotation (or, unannotated, its
    default) is a number, and every nested spec or settings mapping it annotates right (see
    `Registry.check`)."""
    parameters, takes_any = _parameters(constructor)
    unknown = [key for key in settings if key not in parameters and not takes_any]
    if unknown:
        accepted = [key for key in parameters if key not in provided]
        raise ValueError(
            f"no setting {unknown[0]!r}; it accepts {', '.join(accepted) or 'no settings'}"
        )
    hints = _hints(constructor)
    for key, value in settings.items():
        hint = hints.get(key)
        if hint is None:
            continue
        if _bool_for_number(hint, value):
            raise ValueError(
                f"{key!r} expects a number, found {value!r} (true and false are not numbers)"
            )
        for nested in _nested(hint, value):
            try:
                nested()
            except ValueError as error:
                raise ValueError(f"{key}: {error}") from None


def _nested(hint: Any, value: Any) -> list[Callable[[], None]]:
    """The checks of the nested specs or settings in ``value``, by ``hint``'s ``Annotated``
    metadata (a `Registry`, or a class whose keyword arguments ``value`` holds)."""
    if value is None or isinstance(value, bool):
        return []
    origin = typing.get_origin(hint)
    if origin is Annotated:
        inner, *metadata = typing.get_args(hint)
        for meta in metadata:
            if isinstance(meta, Registry) and isinstance(value, str | Mapping):
                return [functools.partial(meta.check, value)]
            if isinstance(meta, type) and isinstance(value, Mapping):
                return [functools.partial(check_settings, meta, value)]
        return _nested(inner, value)
    if origin in (typing.Union, types.UnionType):
        return [check for member in typing.get_args(hint) for check in _nested(member, value)]
    if (
        isinstance(value, list | tuple)
        and isinstance(origin, type)
        and issubclass(origin, Sequence)
    ):
        arguments = [a for a in typing.get_args(hint) if a is not Ellipsis]
        return [c for item in value for c in _nested(arguments[0], item)] if arguments else []
    return []


def _hints(constructor: Callable[..., Any]) -> dict[str, Any]:
    """A constructor's parameter annotations (``Annotated`` kept); for a parameter without a
    resolvable one, the type of its default when that is a number."""
    function = constructor.__init__ if isinstance(constructor, type) else constructor
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError):
        hints = {}
    for name, parameter in inspect.signature(constructor).parameters.items():
        default = parameter.default
        if name not in hints and type(default) in (int, float):
            hints[name] = type(default)
    return hints


def _bool_for_number(hint: Any, value: Any) -> bool:
    """Whether ``value`` holds a bool where ``hint`` expects a number (an int or a float, at
    any depth of sequences) and admits no bool."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(hint)
        if isinstance(value, bool):
            return bool not in members and any(m in (int, float) for m in members)
        return all(_bool_for_number(m, value) for m in members if _fits(m, value))
    if isinstance(value, bool):
        return hint in (int, float)
    if (
        isinstance(value, list | tuple)
        and isinstance(origin, type)
        and issubclass(origin, Sequence)
    ):
        arguments = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if origin is tuple and len(arguments) == len(value) > 1:
            return any(map(_bool_for_number, arguments, value))
        return bool(arguments) and any(_bool_for_number(arguments[0], item) for item in value)
    return False


def _fits(hint: Any, value: Any) -> bool:
    """Whether ``value`` may be meant for union member ``hint`` (sequences for sequences)."""
    origin = typing.get_origin(hint) or hint
    sequence = isinstance(origin, type) and issubclass(origin, Sequence) and origin is not str
    return sequence == isinstance(value, list | tuple)
