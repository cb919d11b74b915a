"""Paper scale in virtual time: synchronous rounds vs asynchronous workers, 8 to 800 workers.

The real search loop, strategy (REINFORCE) and sqlite store run as they would on a
cluster; only the children are simulated, by :class:`nasrl.execution.simulated.SimulatedExecutor`:
each child takes a log-normal time (median ``--median`` virtual seconds, log-space sigma
``--sigma``) and its reward comes from a cheap evaluator (a synthetic landscape over the
``conv`` space by default, or the NAS-Bench-201 table given by ``--table``). The driver's
real time (ask, tell, store) moves the virtual clock too, so a slow controller idles the
workers as it would for real.

The default sigma, 0.27, is the log-space standard deviation of the five digits children
measured on this machine (tests/data/legacy-run-0.1.0: 3.71-7.83 s); the default median,
600 s, stands for a CIFAR-scale child on one accelerator (the digits children take ~5 s,
which would make a single driver, not the workers, the limit at 800 workers).

Repeats are trained again (``reuse_results`` off unless ``--reuse-results``): with reuse on
and ``avoid_seen`` off, a converging policy asks mostly repeats, which cost no worker and
no budget, and the run asks many times its budget. Every asked child then takes a worker,
as in the paper.

Reported per (workers, mode): worker utilisation (busy worker time / (workers x makespan),
and the same up to the last submission, before the final drain; and what a driver that
takes no time would reach with the same children: the final drain's bound), controller + store time
per trial (real seconds the driver spent outside waiting for children, over trials),
the driver's whole CPU time per trial (the same work, plus the
simulated executor and the cheap evaluator; unlike wall time, not inflated when other jobs
share the cores), trials per simulated hour, staleness (async), and the best reward after 1/4, 1/2 and all
trials. Rounds mode uses one worker-load per round (round_size = workers) and the default
lookahead of 1.

    python benchmarks/scale_simulation.py                       # 8/64/512/800 workers, 12,800 trials
    python benchmarks/scale_simulation.py --rewards nb201 --table ../shared/data/nasbench201/nb201_cifar10.csv
    python benchmarks/scale_simulation.py --quick               # a smoke run (seconds)
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from nasrl.evaluators.base import Evaluator
from nasrl.execution.simulated import (
    SimulatedExecutor,
    SyntheticEvaluator,
    lognormal_durations,
    lognormal_seconds,
)
from nasrl.search import Search, SearchConfig, make_space
from nasrl.store import TrialStore


@dataclass
class Row:
    workers: int
    mode: str
    trials: int
    utilisation: float
    utilisation_until_last_submit: float
    utilisation_free_driver: float
    overhead_ms_per_trial: float
    cpu_ms_per_trial: float
    driver_seconds: float
    simulated_hours: float
    trials_per_simulated_hour: float
    staleness_mean: float | None
    staleness_max: int | None
    best_quarter: float | None
    best_half: float | None
    best_all: float | None


def config_for(args: argparse.Namespace, workers: int, mode: str) -> SearchConfig:
    strategy_config: dict[str, Any] = {}
    for item in args.strategy_set:
        key, _, value = item.partition("=")
        strategy_config[key] = json.loads(value)
    common: dict[str, Any] = {"budget": args.trials, "seed": args.seed, "executor": "serial",
                              "mode": mode, "strategy_config": strategy_config,
                              "reuse_results": args.reuse_results}
    if mode == "rounds":
        common["round_size"] = workers
    if args.rewards == "nb201":
        return SearchConfig(space="nb201", evaluator="tabular", table=str(args.table), **common)
    return SearchConfig(space="conv", space_params={"num_layers": args.layers}, **common)


def best_curve(store: TrialStore, trials: int) -> tuple[float | None, ...]:
    """The best reward among the first quarter, half and all of the evaluated trials, in
    the order they finished (virtual time order: the simulated clock stamps nothing, so
    the store's finish order, which follows it)."""
    done = [t for t in store.trials() if t.reused_from is None and t.state == "complete"]
    done.sort(key=lambda t: (t.finished_at or 0.0, t.id))
    out: list[float | None] = []
    for part in (trials // 4, trials // 2, trials):
        rewards = [t.reward for t in done[:part] if t.reward is not None]
        out.append(max(rewards) if rewards else None)
    return tuple(out)


def free_driver_utilisation(seconds: list[float], workers: int) -> float:
    """Utilisation of these children, in this order, on ``workers`` with a driver that
    takes no time at all: each starts the moment a worker frees. Asynchronous mode can do
    no better with these children; what it misses of 100% is the final drain alone (the
    last children finishing while the other workers have nothing left to do)."""
    free = [0.0] * workers
    for s in seconds:
        heapq.heappush(free, heapq.heappop(free) + s)
    return sum(seconds) / (workers * max(free))


def drain_bound(workers: int, trials: int, median: float, sigma: float, seeds: int
                ) -> tuple[float, float, float]:
    """Mean, min and max over ``seeds`` sets of ``trials`` independent log-normal children
    of the free-driver utilisation: with children whose times are luck (independent of
    the order they are handed out in), every scheduler that never idles a worker while
    children remain has this distribution, so no such scheduler does better on average."""
    import numpy as np

    values = [free_driver_utilisation(list(np.random.default_rng([seed, workers]).lognormal(
        np.log(median), sigma, trials)), workers) for seed in range(seeds)]
    return sum(values) / len(values), min(values), max(values)


def simulate(args: argparse.Namespace, workers: int, mode: str, where: Path) -> Row:
    config = config_for(args, workers, mode)
    search = Search.create(where / f"{mode}-{workers}", config)
    evaluator: Evaluator | None = None
    if args.rewards == "synthetic":
        evaluator = SyntheticEvaluator(make_space(config), seed=args.seed)
    executor = SimulatedExecutor(workers, lognormal_durations(args.median, args.sigma))
    cpu = time.process_time()
    result = search.run(executor, evaluator=evaluator)
    cpu = time.process_time() - cpu
    store = search.store
    evaluated = result.counts["evaluated"]
    stale = [s.staleness for s in store.staleness().values()]
    children = sorted((t for t in store.trials() if t.reused_from is None), key=lambda t: t.id)
    free_driver = free_driver_utilisation(
        [lognormal_seconds(t.seed, args.median, args.sigma) for t in children], workers)
    best = best_curve(store, evaluated)
    search.close()
    hours = executor.now / 3600
    return Row(
        workers=workers, mode=mode, trials=evaluated,
        utilisation=executor.utilisation(),
        utilisation_until_last_submit=executor.utilisation_before_drain(),
        utilisation_free_driver=free_driver,
        overhead_ms_per_trial=1000 * result.overhead_seconds / max(1, evaluated),
        cpu_ms_per_trial=1000 * cpu / max(1, evaluated),
        driver_seconds=result.seconds,
        simulated_hours=hours,
        trials_per_simulated_hour=evaluated / hours if hours else 0.0,
        staleness_mean=sum(stale) / len(stale) if stale else None,
        staleness_max=max(stale) if stale else None,
        best_quarter=best[0], best_half=best[1], best_all=best[2],
    )


def table(rows: list[Row]) -> str:
    def f(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    lines = ["| workers | mode | trials | utilisation | util. before drain | async with a free driver | "
             "ctrl+store ms/trial (wall) | "
             "driver CPU ms/trial | trials / sim. hour | staleness mean / max | best @1/4, 1/2, all |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        stale = "-" if r.staleness_mean is None else f"{r.staleness_mean:.1f} / {r.staleness_max}"
        lines.append(f"| {r.workers} | {r.mode} | {r.trials} | {100 * r.utilisation:.1f}% | "
                     f"{100 * r.utilisation_until_last_submit:.1f}% | "
                     f"{100 * r.utilisation_free_driver:.1f}% | "
                     f"{r.overhead_ms_per_trial:.2f} | "
                     f"{r.cpu_ms_per_trial:.2f} | "
                     f"{r.trials_per_simulated_hour:.0f} | {stale} | "
                     f"{f(r.best_quarter)}, {f(r.best_half)}, {f(r.best_all)} |")
    return "\n".join(lines)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--workers", default="8,64,512,800", help="comma-separated worker counts")
    p.add_argument("--modes", default="rounds,async")
    p.add_argument("--trials", type=int, default=12_800)
    p.add_argument("--small-trials", type=int, default=1_600,
                   help="trials for worker counts below 512 (the big ones get --trials)")
    p.add_argument("--median", type=float, default=600.0, help="median child time, virtual seconds")
    p.add_argument("--sigma", type=float, default=0.27, help="log-space sigma of child times")
    p.add_argument("--rewards", choices=("synthetic", "nb201"), default="synthetic")
    p.add_argument("--table", type=Path, help="the NAS-Bench-201 csv (with --rewards nb201)")
    p.add_argument("--layers", type=int, default=6, help="conv layers (synthetic rewards)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strategy-set", action="append", default=[], metavar="KEY=JSON",
                   help="a REINFORCE setting, e.g. avoid_seen=false")
    p.add_argument("--reuse-results", action="store_true",
                   help="answer repeats from earlier results (off: every asked child occupies a "
                   "worker, so a policy that converges to repeats still fills the budget)")
    p.add_argument("--json", type=Path, help="write the rows here too")
    p.add_argument("--drain-seeds", type=int, default=0, metavar="N",
                   help="also print the final drain's bound over N sets of children (no search)")
    p.add_argument("--quick", action="store_true", help="8 and 64 workers, 200 trials: a smoke run")
    args = p.parse_args(argv)
    if args.rewards == "nb201" and (args.table is None or not args.table.is_file()):
        p.error("--rewards nb201 needs --table PATH to nb201_cifar10.csv")
    if args.quick:
        args.workers, args.trials, args.small_trials = "8,64", 200, 200
    try:
        args.worker_counts = [int(w) for w in args.workers.split(",")]
    except ValueError:
        p.error(f"--workers: comma-separated integers, got {args.workers!r}")
    if any(w < 1 for w in args.worker_counts) or args.trials < 1 or args.small_trials < 1:
        p.error("--workers, --trials and --small-trials must be positive")
    if args.drain_seeds < 0:
        p.error("--drain-seeds must be >= 0")
    args.mode_list = args.modes.split(",")
    if not set(args.mode_list) <= {"rounds", "async"}:
        p.error(f"--modes: rounds and/or async, got {args.modes!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    torch.set_num_threads(1)  # the driver's controller is tiny; the children are virtual
    rows: list[Row] = []
    trials = args.trials
    with tempfile.TemporaryDirectory() as tmp:
        for workers in args.worker_counts:
            args.trials = trials if workers >= 512 else min(trials, args.small_trials)
            for mode in args.mode_list:
                t0 = time.perf_counter()
                rows.append(simulate(args, workers, mode, Path(tmp)))
                print(f"{workers} workers, {mode}: {time.perf_counter() - t0:.1f} s real", file=sys.stderr)
    print(table(rows))
    for workers in args.worker_counts if args.drain_seeds else []:
        n = trials if workers >= 512 else min(trials, args.small_trials)
        mean, low, high = drain_bound(workers, n, args.median, args.sigma, args.drain_seeds)
        print(f"drain bound, {workers} workers, {n} children, {args.drain_seeds} sets: mean "
              f"{100 * mean:.1f}%, {100 * low:.1f}-{100 * high:.1f}%")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
