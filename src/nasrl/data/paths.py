"""Finding data files: an explicit path, then an environment variable, then standard
install locations. Never the repository's test data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nasrl.errors import NasrlError


def find_file(
    what: str, filename: str, explicit: str | os.PathLike[str] | None, env: str,
    locations: Sequence[str | os.PathLike[str]], fallback: Path | None = None,
) -> Path:
    """Return the first existing candidate; an explicit path that does not exist is an error.

    ``fallback`` (e.g. a copy shipped with the package) is the last candidate, after every
    location; an explicit path or the environment variable never falls back to it.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if path.is_dir():
            path = path / filename
        if not path.is_file():
            raise NasrlError(f"{what}: file not found: {path}")
        return path
    from_env = os.environ.get(env)
    if from_env:
        path = Path(from_env).expanduser()
        path = path / filename if path.is_dir() else path
        if not path.is_file():
            raise NasrlError(f"{what}: ${env} points to {path}, which does not exist")
        return path
    for loc in locations:
        path = Path(loc).expanduser() / filename
        if path.is_file():
            return path
    if fallback is not None and fallback.is_file():
        return fallback
    tried = ", ".join(str(Path(loc).expanduser()) for loc in locations)
    raise NasrlError(f"{what}: {filename} not found; pass its path or set ${env} (looked in {tried})")


def find_data_dir(
    what: str, required: Sequence[Sequence[str]], explicit: str | os.PathLike[str] | None,
    env: str, locations: Sequence[str | os.PathLike[str]],
) -> Path | None:
    """The first directory holding every required file, or None when no candidate has them.

    ``required`` lists, per file, the names it may have (e.g. compressed or not). An
    explicit directory or an environment variable that lacks a file is an error naming it;
    standard locations are only candidates.
    """

    def missing(folder: Path) -> str | None:
        for names in required:
            if not any((folder / name).is_file() for name in names):
                return names[0]
        return None

    for given, label in ((explicit, "directory"), (os.environ.get(env) or None, f"${env}")):
        if given is None:
            continue
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise NasrlError(f"{what}: {label} {folder} does not exist")
        lacking = missing(folder)
        if lacking:
            raise NasrlError(f"{what}: {lacking} not found in {folder}")
        return folder
    for loc in locations:
        folder = Path(loc).expanduser()
        if folder.is_dir() and missing(folder) is None:
            return folder
    return None


def pick(folder: Path, names: Sequence[str]) -> Path:
    """The first of ``names`` present in ``folder`` (find_data_dir checked one is)."""
    for name in names:
        if (folder / name).is_file():
            return folder / name
    raise NasrlError(f"{names[0]} not found in {folder}")
