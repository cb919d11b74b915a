"""Issue 11 defect 12: the driver's controller work while children keep every core busy,
with torch's default threads and with the one thread ``Search.run`` now gives the driver
when children train in other processes, side by side in one run.

    python benchmarks/driver_overhead.py [--rounds 20] [--busy 2] [--repeats 3]

``busy`` spawned processes stand in for training children (one-thread matrix products, as
a pool worker's share of the cores). Meanwhile the driver runs what ``Search`` counts as
"controller and store" per round: REINFORCE on the default conv space asks 5
architectures, is told their rewards, and its state is encoded for the commit. Rounds
alternate between the two thread settings so drifting load hits both alike. Prints the
median seconds per round for each and their ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time
from typing import Any

import numpy as np
import torch

from nasrl.search import SearchConfig, make_space
from nasrl.store.sqlite import encode_state
from nasrl.strategies.base import Observation, make_strategy


def _burn(stop: Any) -> None:
    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = torch.tanh(a @ a)


def _round(strategy: Any, rng: np.random.Generator) -> float:
    start = time.perf_counter()
    archs = strategy.ask(5)
    strategy.tell([Observation(a, float(rng.uniform(0.5, 1.0))) for a in archs])
    encode_state(strategy.state_dict())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=20, help="rounds per setting and repeat")
    parser.add_argument("--busy", type=int, default=mp.cpu_count(), help="busy child processes")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    default_threads = torch.get_num_threads()
    space = make_space(SearchConfig())
    strategies = {n: make_strategy("reinforce", space, 0) for n in (default_threads, 1)}
    rng = np.random.default_rng(0)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    burners = [ctx.Process(target=_burn, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in burners:
        p.start()
    time.sleep(2.0)  # let the children start burning
    times: dict[int, list[float]] = {n: [] for n in strategies}
    try:
        for _ in range(args.repeats):
            for threads, strategy in strategies.items():
                torch.set_num_threads(threads)
                times[threads] += [_round(strategy, rng) for _ in range(args.rounds)]
    finally:
        stop.set()
        for p in burners:
            p.join(timeout=5)
        torch.set_num_threads(default_threads)
    med = {n: statistics.median(t) for n, t in times.items()}
    print(f"{mp.cpu_count()} cores, {args.busy} busy children, {args.repeats} x {args.rounds} rounds each")
    for n, m in med.items():
        print(f"driver with {n} torch thread(s): median {1000 * m:7.1f} ms per round "
              f"(mean {1000 * statistics.mean(times[n]):7.1f} ms)")
    print(f"ratio default / one thread: {med[default_threads] / med[1]:.2f}x")


if __name__ == "__main__":
    main()
