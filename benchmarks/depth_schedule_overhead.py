"""Issue 13 item 2: the controller and store time of a search with the depth schedule,
beside the same search at a fixed depth (the schedule's last), in one run.

    python benchmarks/depth_schedule_overhead.py [--budget 300] [--start 2] [--step 1] \
        [--every 100] [--repeats 1]

Children are not trained: a synthetic reward (the share of 64-filter layers) stands in, so
the whole time is what ``Search`` counts as "controller and store" (ask, tell, commit). The
two settings alternate, so drifting load hits both alike. Prints each run's seconds and
the ratio of the medians (schedule / fixed).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution import SerialExecutor
from nasrl.search import Search, SearchConfig
from nasrl.spaces import Architecture


class Filters64(Evaluator):
    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        filters = [v for k, v in arch.choices if k.endswith(".filters")]
        acc = 0.5 + 0.4 * sum(f == 64 for f in filters) / len(filters)
        return EvalResult("complete", {"val_acc": acc, "val_acc_max_last": acc})


def overhead(run_dir: Path, space_params: Mapping[str, Any], budget: int) -> float:
    config = SearchConfig(space="conv", space_params=dict(space_params), budget=budget, executor="serial",
                          seed=0)
    search = Search.create(run_dir, config)
    try:
        return search.run(SerialExecutor(), evaluator=Filters64()).overhead_seconds
    finally:
        search.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=int, default=300)
    parser.add_argument("--start", type=int, default=2)
    parser.add_argument("--step", type=int, default=1)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(1)
    schedule = {"start": args.start, "step": args.step, "every": args.every}
    last = args.start + args.step * ((args.budget - 1) // args.every)
    times: dict[str, list[float]] = {"schedule": [], "fixed": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, params in (("schedule", {"depth_schedule": schedule}), ("fixed", {"num_layers": last})):
                seconds = overhead(Path(tmp) / f"{name}{r}", params, args.budget)
                times[name].append(seconds)
                print(f"{name:8s} repeat {r}: {seconds:.1f} s controller + store for {args.budget} children")
    ratio = statistics.median(times["schedule"]) / statistics.median(times["fixed"])
    print(f"schedule {args.start} +{args.step} every {args.every} (up to {last} layers) vs fixed {last} "
          f"layers: ratio of medians {ratio:.2f}")


if __name__ == "__main__":
    main()
