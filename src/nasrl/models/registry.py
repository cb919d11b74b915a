"""Builders registered per space: ``build_model`` is the one bridge from an Architecture
(a framework-free value) to a ``torch.nn.Module``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

from nasrl.errors import NasrlError
from nasrl.spaces.base import Architecture, SearchSpace

Builder = Callable[..., nn.Module]
F = TypeVar("F", bound=Builder)

_BUILDERS: dict[str, Builder] = {}
_TASKS: dict[str, str] = {}


def register_builder(space_name: str, task: str = "image") -> Callable[[F], F]:
    """Decorator: ``build_model`` calls ``fn(space, arch, input_shape=..., num_classes=..., **options)``.

    ``task`` says what the model consumes ("image": float (N, C, H, W) batches), so trainers
    and tests know which data fits.
    """

    def decorate(fn: F) -> F:
        if space_name in _BUILDERS:
            raise ValueError(f"a builder for space {space_name!r} is already registered")
        _BUILDERS[space_name] = fn
        _TASKS[space_name] = task
        return fn

    return decorate


def has_builder(space_name: str) -> bool:
    return space_name in _BUILDERS


def builder_task(space_name: str) -> str:
    if space_name not in _TASKS:
        raise NasrlError(f"no model builder for space {space_name!r}")
    return _TASKS[space_name]


def build_model(
    space: SearchSpace, arch: Architecture, *, input_shape: tuple[int, ...], num_classes: int,
    **options: Any,
) -> nn.Module:
    """Build ``arch`` (validated against ``space``) for inputs of ``input_shape`` (no batch dim).

    ``options`` are builder settings such as the NAS-Bench-201 channel count; unknown ones
    are an error rather than silently ignored.
    """
    try:
        builder = _BUILDERS[space.name]
    except KeyError:
        raise NasrlError(f"no model builder for space {space.name!r}") from None
    space = space.space_of(arch)  # a run with a depth schedule: the architecture's own depth
    arch = space.validate(arch)
    try:
        return builder(space, arch, input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise NasrlError(f"space {space.name!r} builder: {exc}") from None
        raise
