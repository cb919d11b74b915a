"""Compare strategies on a tabular benchmark in seconds.

Each (strategy, seed) pair runs an independent search against the table. The budget
counts *distinct* architectures: a strategy that proposes one it has already seen gets
the stored result for free, as a real search with a result cache would. Runs are spread
over processes; each run's outcome depends only on (strategy, config, seed), never on
the number of processes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasrl.errors import NasrlError
from nasrl.evaluators.tabular import TabularEvaluator
from nasrl.spaces.nb201 import NB201Space
from nasrl.strategies.base import Observation, Strategy, make_strategy

DEFAULT_CHECKPOINTS = (50, 100, 200, 500)
PROPOSALS_PER_EVALUATION = 50
"""A run stops after budget x this many proposals even if the budget is not spent (a
collapsed policy re-proposing the same few architectures would otherwise never end)."""


@dataclass
class RunTrace:
    strategy: str
    seed: int
    best_val: list[float]
    """Best val_acc so far after each distinct evaluation."""
    best_test: list[float]
    """test_acc of the architecture holding best_val at that point."""
    found_best_at: int | None
    """Evaluation count at which the table's best architecture was evaluated, if ever."""
    proposals: int
    seconds: float


def run_tabular(strategy: Strategy, table: TabularEvaluator, budget: int) -> RunTrace:
    """One budgeted search: ask, answer from the table (repeats free), tell."""
    start = time.perf_counter()
    seen: dict[str, float] = {}
    best_val: list[float] = []
    best_test: list[float] = []
    found_at: int | None = None
    proposals = 0
    while len(seen) < budget and proposals < budget * PROPOSALS_PER_EVALUATION:
        observations = []
        for arch in strategy.ask(strategy.batch_size):
            proposals += 1
            if arch.key not in seen:
                if len(seen) >= budget:
                    continue  # proposed past the budget: never evaluated, never told
                entry = table.lookup(arch)
                seen[arch.key] = entry.val_acc / 100.0
                if not best_val or entry.val_acc > best_val[-1]:
                    best_val.append(entry.val_acc)
                    best_test.append(entry.test_acc)
                else:
                    best_val.append(best_val[-1])
                    best_test.append(best_test[-1])
                if arch.key == table.best.arch.key:
                    found_at = len(seen)
            observations.append(Observation(arch, seen[arch.key]))
        strategy.tell(observations)
    return RunTrace(strategy.name, strategy.seed, best_val, best_test, found_at, proposals,
                    time.perf_counter() - start)


# -- parallel driver ---------------------------------------------------------------------
_TABLE: TabularEvaluator | NasrlError | None = None


def _init_worker(table_path: str) -> None:
    global _TABLE
    import torch

    torch.set_num_threads(1)  # tiny controller: more threads only add overhead
    try:
        _TABLE = TabularEvaluator(table_path)
    except NasrlError as exc:
        # An initializer that raises only breaks the pool ("terminated abruptly"); kept
        # here, the first task re-raises it and the caller gets the table's own message.
        _TABLE = exc


def _run_one(args: tuple[str, int, int, Mapping[str, Any]]) -> RunTrace:
    name, seed, budget, config = args
    if isinstance(_TABLE, NasrlError):
        raise _TABLE
    assert _TABLE is not None
    strategy = make_strategy(name, _TABLE.space, seed, config)
    return run_tabular(strategy, _TABLE, budget)


def run_benchmark(
    table_path: str | os.PathLike[str],
    strategies: Sequence[str],
    seeds: Sequence[int],
    budget: int,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: int | None = None,
) -> list[RunTrace]:
    configs = configs or {}
    for name in strategies:  # fail fast on a bad name or config, before starting workers
        make_strategy(name, NB201Space(), 0, configs.get(name, {}))
    tasks = [(name, seed, budget, dict(configs.get(name, {}))) for name in strategies
             for seed in seeds]
    jobs = max(1, jobs or os.cpu_count() or 1)
    if jobs == 1:
        _init_worker(str(table_path))
        return [_run_one(t) for t in tasks]
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(table_path),)) as pool:
        return list(pool.map(_run_one, tasks, chunksize=max(1, len(tasks) // (jobs * 8))))


# -- summary -----------------------------------------------------------------------------
def summarize(
    traces: Sequence[RunTrace], budget: int, checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS
) -> dict[str, Any]:
    points = sorted({c for c in checkpoints if c <= budget} | {budget})
    out: dict[str, Any] = {"budget": budget, "checkpoints": points, "strategies": {}}
    for name in dict.fromkeys(t.strategy for t in traces):
        runs = [t for t in traces if t.strategy == name]
        per_cp = {}
        for cp in points:
            vals = [_at(t.best_val, cp) for t in runs]
            tests = [_at(t.best_test, cp) for t in runs]
            per_cp[str(cp)] = {
                "val_acc": vals,
                "test_acc": tests,
                "val_mean": statistics.fmean(vals),
                "val_std": statistics.pstdev(vals),
                "test_mean": statistics.fmean(tests),
                "test_std": statistics.pstdev(tests),
                "found_best": sum(1 for t in runs if t.found_best_at is not None
                                  and t.found_best_at <= cp) / len(runs),
            }
        out["strategies"][name] = {
            "seeds": [t.seed for t in runs],
            "checkpoints": per_cp,
            "found_best_at": [t.found_best_at for t in runs],
            "proposals": [t.proposals for t in runs],
            "seconds": sum(t.seconds for t in runs),
        }
    return out


def _at(curve: Sequence[float], count: int) -> float:
    """Best-so-far after ``count`` evaluations (the last value if the run stopped early)."""
    if not curve:
        return math.nan
    return curve[min(count, len(curve)) - 1]


def format_table(summary: Mapping[str, Any]) -> str:
    points = summary["checkpoints"]
    head = f"{'strategy':<12}" + "".join(f"{'@' + str(cp):>22}" for cp in points)
    head += f"{'found best':>12}"
    lines = [head, "-" * len(head)]
    for name, data in summary["strategies"].items():
        row_v = f"{name:<12}"
        row_t = f"{'  test':<12}"
        for cp in points:
            c = data["checkpoints"][str(cp)]
            row_v += f"{c['val_mean']:>14.3f} ± {c['val_std']:<5.3f}"
            row_t += f"{c['test_mean']:>14.3f} ± {c['test_std']:<5.3f}"
        found = data["checkpoints"][str(points[-1])]["found_best"]
        lines += [row_v + f"{100 * found:>11.0f}%", row_t]
    return "\n".join(lines)


def write_outputs(summary: Mapping[str, Any], traces: Sequence[RunTrace], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "benchmark.json").write_text(json.dumps(summary, indent=1))
    plot_curves(traces, summary["budget"], out_dir / "benchmark.png")


def plot_curves(traces: Sequence[RunTrace], budget: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7, 4.5))
    low = math.inf
    for name in dict.fromkeys(t.strategy for t in traces):
        curves = np.array([[_at(t.best_val, i) for i in range(1, budget + 1)]
                           for t in traces if t.strategy == name])
        mean, std = curves.mean(0), curves.std(0)
        x = np.arange(1, budget + 1)
        ax.plot(x, mean, label=name)
        ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        low = min(low, float(mean[min(9, budget - 1)]))
    # the first few random draws span 10-85%; the comparison lives near the top
    ax.set_ylim(bottom=low - 2)
    ax.set_xscale("log")
    ax.set_xlabel("distinct architectures evaluated")
    ax.set_ylabel("best validation accuracy so far (%)")
    ax.set_title(f"NAS-Bench-201, mean ± std over {len({t.seed for t in traces})} seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

