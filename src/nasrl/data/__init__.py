"""Data loaders and lookup."""

from nasrl.data.paths import find_file

__all__ = ["find_file"]
