"""Finding data files: an explicit path, then an environment variable, then standard
install locations. Never the repository's test data."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from nasrl.errors import NasrlError


def find_file(
    what: str, filename: str, explicit: str | os.PathLike[str] | None, env: str,
    locations: Sequence[str | os.PathLike[str]],
) -> Path:
    """Return the first existing candidate; an explicit path that does not exist is an error."""
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
    tried = ", ".join(str(Path(loc).expanduser()) for loc in locations)
    raise NasrlError(f"{what}: {filename} not found; pass its path or set ${env} (looked in {tried})")
