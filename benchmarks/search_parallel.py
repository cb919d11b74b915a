"""Issue 4's speed check: the default search (conv space, digits, REINFORCE) run serially
and on a local process pool, side by side in one run.

    python benchmarks/search_parallel.py [--budget 20] [--workers 2]

Three runs with one seed: serial with every core on one child at a time (torch's default
threads), serial with one thread (the pool's per-child share), and the process pool with
``workers`` children at once, cores divided among them. Prints wall times, the pool's
speed-up over each serial run (target >= 1.6x with 2 workers on 2 cores), how busy the
pool kept its workers, and the share of wall time spent in the controller and the store
(ask, tell, commits; target < 2%).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from nasrl.execution import ProcessExecutor, SerialExecutor, cpu_count
from nasrl.search import Search, SearchConfig, SearchResult


def run(kind: str, budget: int, workers: int, seed: int, root: Path) -> SearchResult:
    pool = kind == "pool"
    config = SearchConfig(budget=budget, seed=seed, executor="process" if pool else "serial", workers=workers)
    search = Search.create(root / kind, config)
    executor = ProcessExecutor(workers) if pool else SerialExecutor()
    threads = torch.get_num_threads()
    if kind == "serial-1":
        torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        result = search.run(executor)
        result.seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    child_seconds = sum(t.cost or 0.0 for t in search.store.trials())
    busy = child_seconds / (result.seconds * (workers if pool else 1))
    print(
        f"{kind:9s} {result.seconds:7.1f}s  children busy {100 * busy:5.1f}%  controller+store "
        f"{result.overhead_seconds:5.2f}s ({100 * result.overhead_seconds / result.seconds:.2f}%)  "
        f"best reward {result.best.reward if result.best else float('nan'):.4f}",
        flush=True,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(
        f"{cpu_count()} cores; serial child uses {torch.get_num_threads()} threads; pool: {args.workers} "
        f"workers; budget {args.budget}; default search (conv, digits, reinforce)",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        results = {
            k: run(k, args.budget, args.workers, args.seed, Path(tmp)) for k in ("serial", "serial-1", "pool")
        }
        for base in ("serial", "serial-1"):
            speedup = results[base].seconds / results["pool"].seconds
            verdict = "PASS" if speedup >= 1.6 else "MISS"
            print(f"pool speed-up over {base}: {speedup:.2f}x (target >= 1.6x) {verdict}")
        worst = max(100 * r.overhead_seconds / r.seconds for r in results.values())
        verdict = "PASS" if worst < 2 else "MISS"
        print(f"controller+store {worst:.2f}% of wall time at most (target < 2%) {verdict}")


if __name__ == "__main__":
    main()
