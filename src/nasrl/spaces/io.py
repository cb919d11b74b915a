"""Reading and writing architectures as documents that carry their space.

A document is ``{"space": NAME, "params": {...}, "choices": {...}}``; ``params`` rebuild
the space through the registry. Hand-written documents may leave ``params`` out: spaces
that can, infer them from the choices (a ``conv`` architecture tells its depth, and
whether it has strides, pooling and skips).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nasrl.spaces.base import Architecture, SearchSpace, SpaceError
from nasrl.spaces.registry import get_space, space_factory

# What nasrl writes beside an architecture (``best --json``, ``export --format json``): read
# back as information, never as part of the architecture.
METADATA_FIELDS = frozenset({"trial", "reward", "feasible", "metrics", "description"})


def architecture_document(space: SearchSpace, arch: Architecture) -> dict[str, Any]:
    space = space.space_of(arch)  # its own depth (a run with a depth schedule has several)
    arch = space.validate(arch)
    return {"space": space.name, "params": space.params(), "choices": arch.to_dict()["choices"]}


def trial_document(space: SearchSpace, trial: Any) -> dict[str, Any]:
    """An architecture document with what the run learned about it (``best --json``, export)."""
    return {**architecture_document(space, trial.arch), "trial": trial.id, "reward": trial.reward,
            "feasible": bool(getattr(trial, "feasible", True)), "metrics": trial.metrics,
            "description": space.describe(trial.arch)}


def _architecture_object(doc: Any, where: str) -> dict[str, Any]:
    """The architecture in any document nasrl writes: a list of them (``best -n 2 --json``:
    the first, the best), a training record (``train --save``), or the document itself."""
    if isinstance(doc, list):
        if not doc:
            raise SpaceError(f"{where}: an empty list holds no architecture")
        doc = doc[0]
    if isinstance(doc, dict) and isinstance(doc.get("architecture"), dict):
        doc = doc["architecture"]
    if not isinstance(doc, dict):
        raise SpaceError(f"{where}: expected a JSON object (an architecture document)")
    return {k: v for k, v in doc.items() if k not in METADATA_FIELDS}


def read_architecture(source: str, space: str | None = None,
                      space_params: Mapping[str, Any] | None = None) -> tuple[SearchSpace, Architecture]:
    """An architecture from a file path, inline JSON, or a space's own text form.

    ``space`` (and ``space_params``) say which space to read it in when the text does not,
    and must agree with the document when it does.
    """
    text, where = source, "--arch"
    path = Path(source).expanduser()
    if not source.lstrip().startswith(("{", "[", "|")):
        if not path.is_file():
            raise SpaceError(f"architecture file not found: {path}")
        try:
            text, where = path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(f"{path}: cannot read ({exc})") from None
    if not text.lstrip().startswith(("{", "[")):
        if space is None:
            raise SpaceError(f"{where}: not JSON; give the space so its own text form can be read")
        built = get_space(space, **dict(space_params or {}))
        return built, built.parse(text)
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpaceError(f"{where}: not valid JSON ({err.msg} at char {err.pos})") from None
    doc = _architecture_object(doc, where)
    params = doc.pop("params", None)
    try:
        arch = Architecture.from_dict(doc)
    except SpaceError as exc:
        raise SpaceError(f"{where}: {exc}") from None
    if space is not None and arch.space != space:
        raise SpaceError(f"{where}: architecture is from space {arch.space!r}, not {space!r}")
    if space_params:
        params = dict(space_params)
    elif params is None:
        params = infer_params(arch)
    elif not isinstance(params, dict):
        raise SpaceError(f"{where}: field 'params' must be an object")
    built = get_space(arch.space, **params)
    return built, built.validate(arch)


def infer_params(arch: Architecture) -> dict[str, Any]:
    factory = space_factory(arch.space)
    infer = getattr(factory, "infer_params", None)
    return dict(infer(arch.as_dict())) if infer is not None else {}
