"""Name → constructor registries, so that a config names a component by a string."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Spec = str | Mapping[str, Any]
"""A component in a config: ``"identity"`` or ``{"name": "mlp", "hidden": [64]}``."""


class Registry(Generic[T]):
    """A table of named constructors of one kind of component (models, mappings, ...).

    >>> models = Registry("model")
    >>> @models.register("mlp")
    ... def mlp(in_features: int, hidden: list[int], out_features: int): ...
    >>> models.build({"name": "mlp", "hidden": [64]}, in_features=784, out_features=10)
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._constructors: dict[str, Callable[..., T]] = {}

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
        return sorted(self._constructors)

    def check(self, spec: Spec, *provided: str) -> None:
        """Raise ValueError if ``spec`` names no constructor or passes arguments it does not take.

        ``provided`` are the argument names the caller will add at build time. Nothing is built.
        """
        name, kwargs = self._split(spec)
        parameters, takes_any = _parameters(self._constructors[name])
        given = [key for key in kwargs if key in provided]
        if given:
            raise ValueError(
                f"{self.kind} {name!r}: {given[0]!r} is set by the experiment (from its data "
                "and settings); remove it from the spec"
            )
        unknown = [key for key in kwargs if key not in parameters and not takes_any]
        if unknown:
            accepted = [key for key in parameters if key not in provided]
            raise ValueError(
                f"{self.kind} {name!r} has no setting {unknown[0]!r}; "
                f"it accepts {', '.join(accepted) or 'no settings'}"
            )

    def build(self, spec: Spec, *, offer: Mapping[str, Any] | None = None, **defaults: Any) -> T:
        """Construct the component a spec names; ``defaults`` fill arguments the spec leaves out.

        ``offer`` holds keywords passed only to a constructor that takes them (by name or
        through ``**kwargs``), e.g. the λ and T a driver offers every method.
        """
        name, kwargs = self._split(spec)
        constructor = self._constructors[name]
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
        if name not in self._constructors:
            raise ValueError(
                f"unknown {self.kind} {name!r}; expected one of {', '.join(self.names())}"
            )
        return name, kwargs


def _parameters(constructor: Callable[..., Any]) -> tuple[list[str], bool]:
    """A constructor's keyword names, and whether it also takes ``**kwargs``."""
    parameters = inspect.signature(constructor).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    return list(parameters), takes_any
