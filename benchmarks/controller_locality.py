"""Where a search spends its first evaluations on a ``without:OP`` landscape (issue 12's
subspace miss): a diagnosis, not a selection -- it may run on the held-out landscape
because nothing is chosen by it.

    python benchmarks/controller_locality.py [--landscape without:nor_conv_3x3] \
        [--good nor_conv_1x1] [--seeds 30] [--budget 200]

Per variant, means over seeds 0..: the share of evaluated cells that use the landscape's
failing op in evaluations 1-50 and 101-200 (uniform sampling: 1 - 0.8^6 = 74%), the share
using ``--good`` in 101-200 and the seeds that all but dropped it (< 5%), and how local the
search is: the mean Hamming distance (edges that differ) of evaluations 51-200 to the best
cell found before each, and the share at distance 1 -- evolution's mutation of a
tournament winner is distance 1 from a good member by construction.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from nasrl.benchmark import run_tabular
from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table
from nasrl.spaces.base import Architecture
from nasrl.strategies.base import make_strategy
from nasrl.study import make_landscape

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "evolution": ("evolution", {}),
    "reinforce": ("reinforce", {}),
    "rank": ("reinforce", {"advantage_shaping": "rank"}),
    "elite-0.3": ("reinforce", {"elite_weight": 0.3}),
    "elite-hold": ("reinforce", {"elite_halflife": None}),
}


def trace(table: TabularEvaluator, strategy_name: str, config: dict[str, Any], seed: int,
          budget: int) -> tuple[list[Architecture], float]:
    """The cells a search asked, in order, and its best val_acc after ``budget``."""
    strategy = make_strategy(strategy_name, table.space, seed, config)
    asked: list[Architecture] = []
    ask = strategy.ask

    def recording(n: int) -> list[Architecture]:
        archs = ask(n)
        asked.extend(archs)
        return archs

    strategy.ask = recording  # type: ignore[method-assign]
    result = run_tabular(strategy, table, budget)
    return asked, result.best_val[-1]


def locality(table: TabularEvaluator, asked: list[Architecture]) -> list[int]:
    """Hamming distance of each ask from the 51st on to the best cell evaluated before it."""
    best: Architecture | None = None
    out = []
    for i, arch in enumerate(asked):
        if best is not None and i >= 50:
            out.append(sum(a != b for a, b in zip(arch.choices, best.choices, strict=True)))
        if best is None or table.entries[arch.key].val_acc > table.entries[best.key].val_acc:
            best = arch
    return out


def share(asked: list[Architecture], op: str) -> float:
    return sum(op in (v for _, v in a.choices) for a in asked) / max(1, len(asked))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--landscape", default="without:nor_conv_3x3")
    parser.add_argument("--good", default="nor_conv_1x1", help="an op the subspace's best cell uses")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--budget", type=int, default=200)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    table = make_landscape(TabularEvaluator(find_nb201_table(None)), args.landscape)
    bad = args.landscape.partition(":")[2]
    for name in args.variants.split(","):
        strategy_name, config = VARIANTS[name]
        rows = []
        for seed in range(args.seeds):
            asked, best = trace(table, strategy_name, config, seed, args.budget)
            dist = locality(table, asked)
            rows.append((share(asked[:50], bad), share(asked[100:200], bad),
                         share(asked[100:200], args.good), statistics.fmean(dist),
                         sum(d == 1 for d in dist) / len(dist), best))
        cols = [statistics.fmean(col) for col in zip(*rows, strict=True)]
        dropped = sum(r[2] < 0.05 for r in rows)
        print(f"{name:<11} {bad} 1-50 {cols[0]:.2f}, 101-200 {cols[1]:.3f} | {args.good} 101-200 "
              f"{cols[2]:.2f} (dropped by {dropped}/{len(rows)} seeds) | distance to best so far "
              f"{cols[3]:.2f}, at 1: {cols[4]:.2f} | best@{args.budget} {cols[5]:.3f}", flush=True)


if __name__ == "__main__":
    main()
