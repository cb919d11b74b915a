"""Look-up evaluation in a tabular benchmark (NAS-Bench-201 style).

The table is a CSV with columns ``index,arch,val_acc,test_acc`` (accuracies in percent) and
optionally ``params,macs``, plain or gzip-compressed (``.csv.gz``). The full NAS-Bench-201
CIFAR-10 table ships with the package (``nasrl/tables/nb201_cifar10.csv.gz``) and is the
last place :func:`find_nb201_table` looks. The evaluator reports ``val_acc`` and
``test_acc`` as fractions (the objective reads ``val_acc``; ``test_acc`` never feeds a
reward, as the test set must never steer a search), and parameters and MACs: from the
table's own columns, else, for NAS-Bench-201 cells, from the costs nasrl ships
(``nasrl.tables.nb201_costs``).
"""

from __future__ import annotations

import atexit
import contextlib
import csv
import gzip
import math
import os
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, TYPE_CHECKING

from nasrl.data.paths import find_file
from nasrl.errors import NasrlError
from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.spaces.base import Architecture, SearchSpace, SpaceError
from nasrl.spaces.nb201 import NB201Space

if TYPE_CHECKING:
    from nasrl.latency import LatencyTable
    from nasrl.objectives import LatencyConfig

COLUMNS = ("index", "arch", "val_acc", "test_acc")
NB201_FILENAME = "nb201_cifar10.csv"
NB201_ENV = "NASRL_NB201_TABLE"
NB201_LOCATIONS = ("~/.cache/nasrl", "/usr/share/datasets/nasbench201", "/usr/local/share/nasrl")
NB201_BUNDLED = ("nasrl.tables", NB201_FILENAME + ".gz")  # package, resource name


@dataclass(frozen=True)
class TableEntry:
    arch: Architecture
    index: int
    val_acc: float
    test_acc: float
    params: float | None = None
    macs: float | None = None


def find_nb201_table(path: str | os.PathLike[str] | None = None) -> Path:
    """``path``, then ``$NASRL_NB201_TABLE``, then :data:`NB201_LOCATIONS`, then the bundled table."""
    return find_file("NAS-Bench-201 table", NB201_FILENAME, path, NB201_ENV, NB201_LOCATIONS,
                     fallback=bundled_nb201_table())


_EXTRACTED = contextlib.ExitStack()  # bundled files copied out of a zipped install, for this process
atexit.register(_EXTRACTED.close)


def bundled_nb201_table() -> Path | None:
    """The NAS-Bench-201 table shipped inside the package, or None where it was left out."""
    package, name = NB201_BUNDLED
    resource = resources.files(package) / name
    if not resource.is_file():
        return None
    if isinstance(resource, Path):  # an ordinary install (wheel or editable): a file on disk
        return resource
    return _EXTRACTED.enter_context(resources.as_file(resource))  # e.g. imported from a zip


class TabularEvaluator(Evaluator):
    def __init__(self, path: str | os.PathLike[str], space: SearchSpace | None = None,
                 latency: LatencyConfig | None = None) -> None:
        self.path = Path(path)
        self.space = space if space is not None else NB201Space()
        self.latency = latency
        """Set when the objective needs ``latency_ms``."""
        self._table: LatencyTable | None = None
        self.entries: dict[str, TableEntry] = {}
        self._load()
        self.best = max(self.entries.values(), key=lambda e: e.val_acc)

    def _open(self) -> IO[str]:
        if self.path.suffix == ".gz":
            return gzip.open(self.path, "rt", newline="", encoding="utf-8")
        return self.path.open(newline="")

    def _load(self) -> None:
        try:
            with self._open() as fh:
                reader = csv.DictReader(fh)
                missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
                if missing:
                    raise NasrlError(f"{self.path}: missing column {missing[0]!r} "
                                     f"(need {','.join(COLUMNS)})")
                for row in reader:
                    self._add(row, reader.line_num)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as err:
            raise NasrlError(f"{self.path}: cannot read table ({err})") from None
        if not self.entries:
            raise NasrlError(f"{self.path}: the table has no rows")

    def _add(self, row: dict[str, str], line: int) -> None:
        parse = getattr(self.space, "from_string", self.space.parse)
        try:
            arch = parse(row["arch"])
            entry = TableEntry(arch, int(row["index"]), float(row["val_acc"]), float(row["test_acc"]),
                               *(float(row[c]) if row.get(c) not in (None, "") else None
                                 for c in ("params", "macs")))
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

    def metrics(self, arch: Architecture) -> dict[str, float]:
        entry = self.lookup(arch)
        # fractions, like the training evaluator's (the table stores percent)
        out = {"val_acc": entry.val_acc / 100.0, "test_acc": entry.test_acc / 100.0}
        costs = (entry.params, entry.macs)
        if costs[0] is None and isinstance(self.space, NB201Space):
            from nasrl.tables.nb201_costs import load_costs

            shipped = load_costs().get(self.space.to_string(arch))
            costs = (None, None) if shipped is None else (float(shipped[0]), float(shipped[1]))
        if costs[0] is not None and costs[1] is not None:
            out.update(params=costs[0], macs=costs[1], flops=2.0 * costs[1])
        return out

    def evaluate(self, arch: Architecture, seed: int = 0) -> EvalResult:
        metrics = self.metrics(arch)
        if self.latency is not None:
            metrics["latency_ms"] = self._latency(arch)
        return EvalResult(status="complete", metrics=metrics)

    def _latency(self, arch: Architecture) -> float:
        """A table has no latency: build the benchmark's network (latency does not depend on
        the weights) and time it, or predict it from the per-op table."""
        from nasrl.latency import LatencyTable, architecture_latency, example_input
        from nasrl.models import build_model

        assert self.latency is not None
        shape = (3, 32, 32)  # the benchmark's CIFAR-10 networks
        model = build_model(self.space, arch, input_shape=shape, num_classes=10)
        if self.latency.mode == "table" and self._table is None:
            self._table = LatencyTable(self.latency)
        return architecture_latency(model, example_input(shape, self.latency.batch_size, False),
                                    self.latency, self._table)
