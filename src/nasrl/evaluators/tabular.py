"""Look-up evaluation in a tabular benchmark (NAS-Bench-201 style).

The table is a CSV with columns ``index,arch,val_acc,test_acc`` (accuracies in percent).
The reward is ``val_acc / 100``; ``test_acc`` is reported as a metric and never feeds the
reward, as the test set must never steer a search.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path

from nasrl.data.paths import find_file
from nasrl.errors import NasrlError
from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.spaces.base import Architecture, SearchSpace, SpaceError
from nasrl.spaces.nb201 import NB201Space

COLUMNS = ("index", "arch", "val_acc", "test_acc")
NB201_FILENAME = "nb201_cifar10.csv"
NB201_ENV = "NASRL_NB201_TABLE"
NB201_LOCATIONS = ("~/.cache/nasrl", "/usr/share/datasets/nasbench201", "/usr/local/share/nasrl")


@dataclass(frozen=True)
class TableEntry:
    arch: Architecture
    index: int
    val_acc: float
    test_acc: float


def find_nb201_table(path: str | os.PathLike[str] | None = None) -> Path:
    return find_file("NAS-Bench-201 table", NB201_FILENAME, path, NB201_ENV, NB201_LOCATIONS)


class TabularEvaluator(Evaluator):
    def __init__(self, path: str | os.PathLike[str], space: SearchSpace | None = None) -> None:
        self.path = Path(path)
        self.space = space if space is not None else NB201Space()
        self.entries: dict[str, TableEntry] = {}
        self._load()
        self.best = max(self.entries.values(), key=lambda e: e.val_acc)

    def _load(self) -> None:
        try:
            with self.path.open(newline="") as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise NasrlError(f"{self.path}: missing column {missing[0]!r} "
                                     f"(need {','.join(COLUMNS)})")
                for row in reader:
                    self._add(row, reader.line_num)
        except (OSError, UnicodeDecodeError, csv.Error) as err:
            raise NasrlError(f"{self.path}: cannot read table ({err})") from None
        if not self.entries:
            raise NasrlError(f"{self.path}: the table has no rows")

    def _add(self, row: dict[str, str], line: int) -> None:
        parse = getattr(self.space, "from_string", self.space.parse)
        try:
            arch = parse(row["arch"])
            entry = TableEntry(arch, int(row["index"]), float(row["val_acc"]),
                               float(row["test_acc"]))
        except (SpaceError, ValueError, TypeError) as err:
            raise NasrlError(f"{self.path}, line {line}: bad row ({err})") from None
        if not (math.isfinite(entry.val_acc) and math.isfinite(entry.test_acc)):
            raise NasrlError(f"{self.path}, line {line}: accuracies must be finite numbers")
        if arch.key in self.entries:
            raise NasrlError(f"{self.path}, line {line}: architecture listed twice")
        self.entries[arch.key] = entry

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, arch: Architecture) -> TableEntry:
        try:
            return self.entries[arch.key]
        except KeyError:
            raise NasrlError(f"{self.path}: no entry for {self.space.describe(arch)}") from None

    def evaluate(self, arch: Architecture, seed: int = 0) -> EvalResult:
        entry = self.lookup(arch)
        return EvalResult(
            status="complete",
            reward=entry.val_acc / 100.0,
            # fractions, like the training evaluator's (the table stores percent)
            metrics={"val_acc": entry.val_acc / 100.0, "test_acc": entry.test_acc / 100.0},
        )
