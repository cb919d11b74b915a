"""``build_supernet``: one shared-weight network per space, registered like model builders."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from nasrl.errors import NasrlError
from nasrl.spaces.base import SearchSpace

if TYPE_CHECKING:
    from nasrl.models.supernet.base import SuperNet

SupernetBuilder = Callable[..., "SuperNet"]
B = TypeVar("B", bound=SupernetBuilder)

_SUPERNETS: dict[str, SupernetBuilder] = {}


def register_supernet(space_name: str) -> Callable[[B], B]:
    """Decorator: ``build_supernet`` calls ``fn(space, input_shape=..., num_classes=..., **options)``."""

    def decorate(fn: B) -> B:
        if space_name in _SUPERNETS:
            raise ValueError(f"a supernet for space {space_name!r} is already registered")
        _SUPERNETS[space_name] = fn
        return fn

    return decorate


def has_supernet(space_name: str) -> bool:
    return space_name in _SUPERNETS


def build_supernet(space: SearchSpace, input_shape: tuple[int, ...], num_classes: int,
                   **options: Any) -> SuperNet:
    """The shared-weight network of ``space`` for inputs of ``input_shape`` (no batch dim).

    ``options`` are the same builder settings ``build_model`` takes for the space (e.g.
    the NAS-Bench-201 channel count), so every child it yields has the stand-alone shape;
    unknown ones are an error rather than silently ignored.
    """
    try:
        builder = _SUPERNETS[space.name]
    except KeyError:
        raise NasrlError(f"no shared-weight network for space {space.name!r} "
                         f"(available: {', '.join(sorted(_SUPERNETS))})") from None
    try:
        return builder(space, input_shape=tuple(input_shape), num_classes=num_classes, **options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise NasrlError(f"space {space.name!r} supernet: {exc}") from None
        raise
