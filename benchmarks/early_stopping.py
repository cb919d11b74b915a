"""Issue 14's comparison: with the same wall-clock budget, does pruning evaluate more
children (target >= 2x) and find a best child no worse than a search without it?

    python benchmarks/early_stopping.py --out runs/early-stopping [--dataset fashion-mnist]
        [--data-dir DIR] [--seconds 1200] [--seeds 3] [--rules median,asha] [--epochs 8]
        [--train-samples 10000] [--layers 6] [--strides] [--strategy reinforce]
        [--executor process] [--workers 2] [--threads 1]

For each seed and each condition (no pruning, then each rule of ``--rules``) it runs an
ordinary multi-trial search (budget large enough never to end it) and stops it cleanly
once ``--seconds`` of wall-clock time have passed (the trial in training then is lost,
alike for every condition). Per run: children evaluated (complete + pruned + failed) and
the best validation accuracy among children that trained their full schedule (the
objective's metric, ``val_acc_max_last``; a pruned child never counts as a best). Then
the means over seeds with their spread (min..max), the ratio of children evaluated and
PASS/MISS for the two targets.

Each run is a run directory under ``--out`` with a ``result.json`` beside it; a finished
run is not repeated, an unfinished one (the benchmark was killed) is started again, since
a time budget cannot be resumed fairly. Fashion-MNIST runs take seeds x conditions x
``--seconds`` (3 x 3 x 20 min = 3 h by default). ``--dataset digits`` with a small
``--seconds`` is a smoke test of the script itself, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from nasrl.search import RunListener, Search, load_config
from nasrl.store import TrialStore
from nasrl.store.sqlite import Progress, Trial

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared/data/fashion-mnist"
RULES: dict[str, dict[str, Any]] = {
    "none": {"rule": "none"},
    # judge from epoch 2 on, against at least 5 children that got there
    "median": {"rule": "median", "warmup_epochs": 1, "min_trials": 5},
    # rungs at 1 and 3 epochs (and 9): a third of the children go on at each
    "asha": {"rule": "asha", "min_epochs": 1, "eta": 3},
}


class Deadline(RunListener):
    """Stops the search like Ctrl-C once its time is up (checked at every epoch and trial)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def _check(self) -> None:
        if time.monotonic() >= self.end:
            raise KeyboardInterrupt

    def on_trial(self, trial: Trial, counts: dict[str, int], best: float | None) -> None:
        self._check()

    def on_epoch(self, progress: Progress) -> None:
        self._check()


def search_config(args: argparse.Namespace, rule: str, seed: int) -> dict[str, Any]:
    values: dict[str, Any] = {
        "budget": 100_000,  # the clock ends the search, never the budget
        "seed": seed,
        "strategy": args.strategy,
        "executor": args.executor,
        "workers": args.workers,
        "training": {"epochs": args.epochs, "max_train_samples": args.train_samples},
        "space_params": {"num_layers": args.layers, "predict_strides": args.strides},
        "pruning": RULES[rule],
    }
    if args.dataset != "digits":
        values.update(dataset=args.dataset, data_dir=str(args.data_dir))
    return values


def one_run(args: argparse.Namespace, rule: str, seed: int) -> dict[str, Any]:
    run = args.out / f"{rule}-seed{seed}"
    record = run.with_suffix(".json")
    if record.is_file():
        saved: dict[str, Any] = json.loads(record.read_text())
        return saved
    if run.exists():
        shutil.rmtree(run)  # killed mid-run: a time budget cannot be resumed fairly
    values = search_config(args, rule, seed)
    search = Search.create(run, load_config(values))
    search.listeners.append(Deadline(args.seconds))
    start = time.monotonic()
    try:
        search.run()
    except KeyboardInterrupt:
        pass  # the deadline (or the user): every finished trial is in the store
    finally:
        search.close()
    seconds = time.monotonic() - start
    store = TrialStore(run / "runs.db", readonly=True)
    counts = store.counts()
    full = [t.metrics["val_acc_max_last"] for t in store.trials(state="complete")
            if t.reused_from is None and "val_acc_max_last" in t.metrics]
    store.close()
    saved = {"rule": rule, "seed": seed, "seconds": seconds, "evaluated": counts["evaluated"],
             "complete": counts["complete"], "pruned": counts["pruned"], "failed": counts["failed"],
             "best_val_acc": max(full) if full else None, "config": values}
    record.write_text(json.dumps(saved, indent=2) + "\n")
    print(f"{rule:6s} seed {seed}: {counts['evaluated']} evaluated ({counts['pruned']} pruned) in "
          f"{seconds:.0f}s, best val acc {_pct(saved['best_val_acc'])}", flush=True)
    return saved


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _spread(values: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    return f"{fmt.format(mean)} ({fmt.format(min(values) * scale)}..{fmt.format(max(values) * scale)})"


def report(results: list[dict[str, Any]], rules: list[str]) -> None:
    print(f"\n{'rule':8s} {'runs':>4s}  {'children evaluated, mean (min..max)':36s} "
          f"{'best val acc %, mean (min..max)':32s}")
    means: dict[str, tuple[float, float | None]] = {}
    for rule in ["none", *rules]:
        rows = [r for r in results if r["rule"] == rule]
        evaluated = [float(r["evaluated"]) for r in rows]
        best = [float(r["best_val_acc"]) for r in rows if r["best_val_acc"] is not None]
        print(f"{rule:8s} {len(rows):4d}  {_spread(evaluated):36s} {_spread(best, 100, '{:.2f}'):32s}")
        # a run with no child complete has no best: no mean of bests for its rule then
        mean_best = statistics.fmean(best) if best and len(best) == len(rows) else None
        means[rule] = (statistics.fmean(evaluated), mean_best)
    base_n, base_best = means["none"]
    for rule in rules:
        n, rule_best = means[rule]
        ratio = n / base_n if base_n else float("inf")
        print(("PASS " if ratio >= 2 else "MISS ")
              + f"{rule}: {ratio:.2f}x the children evaluated (target >= 2x)")
        ok = rule_best is not None and base_best is not None and rule_best >= base_best
        print(("PASS " if ok else "MISS ") + f"{rule}: mean best {_pct(rule_best)} vs "
              f"{_pct(base_best)} without pruning (target: no worse)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--seconds", type=float, default=1200.0, help="wall-clock budget per run")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rules", default="median,asha")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train-samples", type=int, default=10000)
    parser.add_argument("--layers", type=int, default=6, help="conv layers of every child")
    parser.add_argument("--strides", action="store_true",
                        help="the controller predicts strides (cheaper children on 28x28 images)")
    parser.add_argument("--strategy", default="reinforce")
    parser.add_argument("--executor", choices=["serial", "process"], default="process")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads in this (driver) process")
    args = parser.parse_args()
    rules = [r for r in args.rules.split(",") if r]
    unknown = [r for r in rules if r not in RULES or r == "none"]
    if unknown or args.seconds <= 0 or args.seeds < 1:
        parser.error(f"--rules takes {', '.join(r for r in RULES if r != 'none')}; "
                     "--seconds and --seeds must be positive")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    # seeds outermost: an interrupted benchmark has every condition for its first seeds
    results = [one_run(args, rule, seed) for seed in range(args.seeds) for rule in ["none", *rules]]
    report(results, rules)


if __name__ == "__main__":
    main()
