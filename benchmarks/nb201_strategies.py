"""Issue 2's acceptance run: reinforce vs random vs regularized evolution on NAS-Bench-201.

    python benchmarks/nb201_strategies.py [--table PATH] [--seeds 100] [--budget 500]

Runs the three strategies side by side in one run, prints the table and wall time, and
checks the targets: at 200 evaluations reinforce beats random clearly and is not below
evolution; at 500 reinforce's mean best val_acc >= 84.75 and the table's best found in
>= 90% of seeds; the whole run under 5 minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from nasrl.benchmark import format_table, run_benchmark, summarize

DEFAULT_TABLE = Path(__file__).resolve().parents[1].parent / "shared/data/nasbench201/nb201_cifar10.csv"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--table", type=Path, default=DEFAULT_TABLE)
    parser.add_argument("--seeds", type=int, default=100)
    parser.add_argument("--budget", type=int, default=500)
    args = parser.parse_args()
    start = time.perf_counter()
    traces = run_benchmark(args.table, ["reinforce", "random", "evolution"],
                           range(args.seeds), args.budget)
    seconds = time.perf_counter() - start
    summary = summarize(traces, args.budget)
    print(format_table(summary))
    s = summary["strategies"]
    at = min(200, args.budget)
    rl, rnd, evo = (s[n]["checkpoints"][str(at)]["val_mean"]
                    for n in ("reinforce", "random", "evolution"))
    end = s["reinforce"]["checkpoints"][str(args.budget)]
    checks = {
        f"@{at}: reinforce - random = {rl - rnd:+.3f} (> 0.3)": rl - rnd > 0.3,
        f"@{at}: reinforce - evolution = {rl - evo:+.3f} (>= 0)": rl >= evo,
        f"@{args.budget}: reinforce mean best {end['val_mean']:.3f} (>= 84.75)":
            end["val_mean"] >= 84.75,
        f"@{args.budget}: found best {100 * end['found_best']:.0f}% (>= 90%)":
            end["found_best"] >= 0.9,
        f"wall time {seconds:.0f}s (< 300s)": seconds < 300,
    }
    for text, ok in checks.items():
        print(("PASS " if ok else "MISS ") + text)


if __name__ == "__main__":
    main()
