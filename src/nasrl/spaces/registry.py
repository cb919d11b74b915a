"""Spaces registered by name, so configs, run records and the CLI can refer to them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from nasrl.spaces.base import SearchSpace, SpaceError

SpaceFactory = Callable[..., SearchSpace]
F = TypeVar("F", bound=SpaceFactory)

_SPACES: dict[str, SpaceFactory] = {}


def register_space(name: str) -> Callable[[F], F]:
    """Class or function decorator: ``get_space(name, **params)`` calls it with ``params``."""

    def decorate(factory: F) -> F:
        if name in _SPACES:
            raise ValueError(f"space {name!r} is already registered")
        _SPACES[name] = factory
        return factory

    return decorate


def list_spaces() -> list[str]:
    return sorted(_SPACES)


def space_factory(name: str) -> SpaceFactory:
    try:
        return _SPACES[name]
    except KeyError:
        known = ", ".join(list_spaces())
        raise SpaceError(f"unknown space {name!r} (known: {known})") from None


def get_space(name: str, **params: Any) -> SearchSpace:
    """Build a registered space; unknown names and parameters are :class:`SpaceError`."""
    factory = space_factory(name)
    accepted = inspect.signature(factory).parameters
    for key in params:
        if key not in accepted:
            raise SpaceError(f"space {name!r}: unknown parameter {key!r}")
    return factory(**params)

