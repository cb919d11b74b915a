"""Parameters and MACs of every NAS-Bench-201 cell, so tabular searches can weigh costs.

The numbers come from building each of the 15,625 networks once, as the benchmark trained
them (C = 16, N = 5, CIFAR-10: 3 x 32 x 32 input, 10 classes), and counting with
:func:`nasrl.training.count_params` / :func:`nasrl.training.count_macs`. They are shipped as
``nb201_costs.csv.gz`` beside this file; regenerate it with

    python -m nasrl.tables.nb201_costs            (about 8 minutes on one core)
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import sys
import time
from functools import cache
from importlib import resources
from pathlib import Path

COSTS_FILE = "nb201_costs.csv.gz"
INPUT_SHAPE = (3, 32, 32)
NUM_CLASSES = 10


def cell_costs(arch_string: str) -> tuple[int, int]:
    """(parameters, MACs) of the benchmark's network for one cell, by building it."""
    import torch

    from nasrl.models import build_model
    from nasrl.spaces.nb201 import NB201Space
    from nasrl.training import count_macs, count_params

    space = NB201Space()
    arch = space.from_string(arch_string)
    model = build_model(space, arch, input_shape=INPUT_SHAPE, num_classes=NUM_CLASSES)
    return count_params(model), count_macs(model, torch.zeros(1, *INPUT_SHAPE))


def all_cells() -> list[str]:
    from nasrl.spaces.nb201 import EDGES, OPS, NB201Space, edge_name

    space = NB201Space()
    return [space.to_string(space.make({edge_name(i, j): op for (i, j), op in zip(EDGES, ops, strict=True)}))
            for ops in itertools.product(OPS, repeat=len(EDGES))]


@cache
def load_costs() -> dict[str, tuple[int, int]]:
    """Benchmark cell string -> (parameters, MACs), from the shipped file."""
    blob = resources.files("nasrl.tables").joinpath(COSTS_FILE).read_bytes()
    reader = csv.DictReader(io.StringIO(gzip.decompress(blob).decode()))
    return {row["arch"]: (int(row["params"]), int(row["macs"])) for row in reader}


def main(out: Path | None = None) -> None:
    import torch

    torch.set_num_threads(1)
    out = out or Path(__file__).with_name(COSTS_FILE)
    cells = all_cells()
    start = time.perf_counter()
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["arch", "params", "macs"])
    for i, cell in enumerate(cells):
        writer.writerow([cell, *cell_costs(cell)])
        if i % 1000 == 0:
            print(f"{i}/{len(cells)} {time.perf_counter() - start:.0f}s", file=sys.stderr, flush=True)
    # mtime=0: the same costs give the same bytes
    out.write_bytes(gzip.compress(buffer.getvalue().encode(), mtime=0))
    print(f"wrote {out}: {len(cells)} cells in {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else None)
