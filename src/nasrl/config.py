"""Typed component configs: dataclasses with defaults, strict dotted overrides.

Unknown keys are errors (a typo must not silently fall back to a default), values are
checked against the field's annotation, and ``to_dict`` gives the resolved config that a
run records.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from nasrl.errors import NasrlError

T = TypeVar("T")


class ConfigError(NasrlError):
    """A config key or value is invalid; the message names the key."""


MAX_SEED = 2**32 - 1  # numpy's legacy seeding and most tools stop here


def check_seed(value: int, what: str = "seed") -> int:
    """A seed every random source accepts (torch, numpy and Python's)."""
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{what} must be between 0 and {MAX_SEED}, got {value}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def build(cls: type[T], values: Mapping[str, Any] | None = None, prefix: str = "") -> T:
    """Make ``cls`` from a (possibly nested) mapping; unknown keys raise ConfigError.

    A class may name keys it no longer has in ``removed_keys`` ({key: what to use
    instead}): such a key set to a value is an error saying so, and set to None (how a run
    recorded by an older version lists it when unused) it is ignored, so old runs resume.
    """
    values = dict(values or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    removed: Mapping[str, str] = getattr(cls, "removed_keys", {})
    for key, value in values.items():
        if key in removed and key not in fields:
            if value is None:
                continue  # recorded unset by an older version's resolved config: a no-op then too
            raise ConfigError(f"config key {prefix + key!r} was removed: {removed[key]}")
        if key not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(f"unknown config key {prefix + key!r} (known: {known})")
        hint = hints[key]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if isinstance(value, hint):
                kwargs[key] = value
            elif isinstance(value, Mapping):
                kwargs[key] = build(hint, value, prefix + key + ".")
            else:
                raise ConfigError(f"config key {prefix + key!r} must be a table of settings")
        else:
            kwargs[key] = _check(value, hint, prefix + key)
    return cls(**kwargs)


def with_overrides(config: T, overrides: Mapping[str, Any]) -> T:
    """A copy of ``config`` with dotted keys replaced, e.g. ``{"controller.hidden_size": 64}``."""
    data = to_dict(config)
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ConfigError(f"unknown config key {dotted!r}")
            node = child
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {dotted!r} (known: {', '.join(sorted(node))})")
        node[parts[-1]] = value
    return build(type(config), data)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line; the value is read as JSON when it parses."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like key=value")
    raw = raw.strip()
    if raw.lower() in ("none", "null"):
        return key.strip(), None
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def _check(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            try:
                return _check(value, arg, key)
            except ConfigError:
                continue
        raise ConfigError(f"config key {key!r}: {value!r} is not a valid {_name(hint)}")
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"config key {key!r}: {value!r} is not one of {list(args)}")
    if hint is type(None):
        if value is None:
            return None
    elif hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif hint is str:
        if isinstance(value, str):
            return value
    elif origin is dict and isinstance(value, Mapping):
        return {str(k): v for k, v in value.items()}
    elif origin is tuple and isinstance(value, list | tuple):
        return tuple(_check(v, args[0], key) for v in value)
    raise ConfigError(f"config key {key!r}: {value!r} is not a valid {_name(hint)}")


def _name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
