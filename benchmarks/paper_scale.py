"""Issue 13's paper-scale run: 12,800 children with the paper's depth schedule on the
``conv`` space (6 layers, +2 every 1,600, up to 20), through the real search loop, REINFORCE
strategy and sqlite store, with the simulator's synthetic evaluator (free to evaluate) --
so what is measured is the driver: the time to ask each architecture, the rest of the
driver's work per trial (tell, store), and its resident memory, at checkpoints.

    python benchmarks/paper_scale.py --out runs/paper-scale [--children 12800]
        [--every 1600] [--round-size 8] [--seed 0] [--strategy-set KEY=JSON ...]
        [--sampler NAME] [--compare-sampler NAME [--compare-every 10]]

Targets (issue 13): ask time per architecture under 5 ms and driver memory under 1 GB
throughout. The synthetic landscape (:class:`nasrl.execution.simulated.SyntheticEvaluator`)
gives the controller something to learn; its accuracies mean nothing beyond that. Ask
time is the time of ``strategy.ask``, divided by the architectures it returned.
"""

from __future__ import annotations

import argparse
import copy
import json
import resource
import time
from pathlib import Path
from typing import Any

from nasrl.controller import compiled, unique
from nasrl.errors import NasrlError
from nasrl.execution.simulated import SyntheticEvaluator
from nasrl.search import RunListener, Search, load_config
from nasrl.spaces.base import Architecture
from nasrl.store.sqlite import Trial
from nasrl.strategies.base import Strategy

CHECKPOINTS = (1600, 3200, 6400, 9600, 12800)


class Meter(RunListener):
    """Times every ask (wrapping the strategy's), the driver's time between trials, and
    reads the resident memory at each checkpoint."""

    def __init__(self, strategy: Strategy, checkpoints: tuple[int, ...],
                 compare: str | None = None, every: int = 10) -> None:
        self.window_asked = self.window_ask = self.window_ask_cpu = 0.0
        self.checkpoints = list(checkpoints)
        self.rows: list[dict[str, float]] = []
        self.trials = 0
        self.window_start = time.perf_counter()
        ask = strategy.ask
        self.asks = 0
        self.paired = [0.0, 0.0, 0.0]  # CPU seconds: this sampler, the other; architectures

        def timed_ask(n: int) -> list[Architecture]:
            self.asks += 1
            if compare is not None and self.asks % every == 0:
                self._pair(strategy, compare, ask, n)
            t0, c0 = time.perf_counter(), time.process_time()
            archs = ask(n)
            self.window_ask += time.perf_counter() - t0
            self.window_ask_cpu += time.process_time() - c0  # unaffected by other jobs
            self.window_asked += len(archs)
            return archs

        strategy.ask = timed_ask  # type: ignore[method-assign]
        self.window_trie = 0
        draw = unique._draw_from_trie

        def counted(*args: Any, **kwargs: Any) -> list[tuple[list[int], float]]:
            self.window_trie += 1  # asks that needed the exact sampler (scores every seen row)
            return draw(*args, **kwargs)

        unique._draw_from_trie = counted
        draw_all = unique._draw_from_all

        def counted_all(*args: Any, **kwargs: Any) -> list[tuple[list[int], float]]:
            self.window_trie += 1  # the same, with the hot sampler
            return draw_all(*args, **kwargs)

        unique._draw_from_all = counted_all
        self.window_hot = 0
        hot = unique._draw_from_hot

        def counted_hot(*args: Any, **kwargs: Any) -> list[tuple[list[int], float]]:
            self.window_hot += 1  # asks that needed the trie over the hot rows
            return hot(*args, **kwargs)

        unique._draw_from_hot = counted_hot

    def _pair(self, strategy: Strategy, other: str, ask: Any, n: int) -> None:
        """The same ask, from the same state, by a twin with the ``other`` sampler and by
        this run's (on a second twin, so the run itself goes on undisturbed): a paired
        comparison, in CPU time, on the states this run's own trajectory reaches."""
        counts = self.window_trie, self.window_hot  # the twins' asks are not the run's
        for k, sampler in ((0, None), (1, other)):
            twin = copy.deepcopy(strategy)
            del twin.__dict__["ask"]  # the copy would call the original's timed ask
            if sampler is not None:
                twin.sampler = sampler  # type: ignore[attr-defined]
            c0 = time.process_time()
            got = twin.ask(n)
            self.paired[k] += time.process_time() - c0
        self.paired[2] += len(got)
        self.window_trie, self.window_hot = counts

    def on_trial(self, trial: Trial, counts: dict[str, int], best: float | None) -> None:
        self.trials = counts["evaluated"]
        if self.checkpoints and self.trials >= self.checkpoints[0]:
            self.checkpoints.pop(0)
            now = time.perf_counter()
            window = now - self.window_start
            done = self.trials - (self.rows[-1]["trials"] if self.rows else 0)
            per_trial = 1000 * window / max(done, 1)
            row = {
                "trials": float(self.trials),
                "depth": float(sum(k.endswith(".filters") for k, _ in trial.arch.choices)),
                "ask_ms_per_arch": 1000 * self.window_ask / max(self.window_asked, 1),
                "ask_cpu_ms_per_arch": 1000 * self.window_ask_cpu / max(self.window_asked, 1),
                "driver_ms_per_trial": per_trial,
                "rss_mb": _rss_mb(),
                "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                "best": float(best) if best is not None else float("nan"),
                "trie_asks": float(self.window_trie),
                "paired_cpu_ms_per_arch": 1000 * self.paired[0] / max(self.paired[2], 1),
                "paired_other_cpu_ms_per_arch": 1000 * self.paired[1] / max(self.paired[2], 1),
                "hot_asks": float(self.window_hot),
            }
            self.rows.append(row)
            print(f"{int(row['trials']):6d} trials  depth {int(row['depth']):2d}  ask "
                  f"{row['ask_ms_per_arch']:6.2f} ms/arch (CPU {row['ask_cpu_ms_per_arch']:6.2f})  "
                  f"driver {per_trial:6.2f} ms/trial  "
                  f"RSS {row['rss_mb']:5.0f} MB (peak {row['peak_rss_mb']:5.0f})  best {row['best']:.4f}  "
                  f"asks via the hot trie {self.window_hot}, the full trie {self.window_trie}",
                  flush=True)
            self.window_start, self.window_ask, self.window_asked, self.window_ask_cpu = now, 0.0, 0.0, 0.0
            if self.paired[2]:
                print(f"        paired asks (CPU): this sampler {row['paired_cpu_ms_per_arch']:.2f}, "
                      f"the other {row['paired_other_cpu_ms_per_arch']:.2f} ms/arch", flush=True)
            self.window_trie = self.window_hot = 0
            self.paired = [0.0, 0.0, 0.0]


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _create(args: argparse.Namespace) -> Search:
    config = load_config({
        "space": "conv",
        "space_params": {"depth_schedule": {"start": 6, "step": 2, "every": args.every, "maximum": 20}},
        "strategy": "reinforce",
        "strategy_config": args.strategy_config,
        "executor": "serial",
        "budget": args.children,
        "seed": args.seed,
        "round_size": args.round_size,
        "lookahead": 0,
    })
    return Search.create(args.out, config)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a new run directory")
    parser.add_argument("--children", type=int, default=12800)
    parser.add_argument("--every", type=int, default=1600, help="children per depth step")
    parser.add_argument("--round-size", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sampler", choices=sorted(unique.SAMPLERS), default=unique.DEFAULT_SAMPLER,
                        help="how asks avoid seen architectures (default: %(default)s)")
    parser.add_argument("--compare-sampler", choices=sorted(unique.SAMPLERS),
                        help="every --compare-every asks, time the same ask from the same state "
                        "with this sampler too (paired, CPU time)")
    parser.add_argument("--compare-every", type=int, default=10)
    parser.add_argument("--strategy-set", action="append", default=[], metavar="KEY=JSON",
                        help="a REINFORCE setting, e.g. learning_rate=6e-4 (the paper's)")
    args = parser.parse_args()
    args.strategy_config = {}
    for item in args.strategy_set:
        key, _, value = item.partition("=")
        try:
            args.strategy_config[key] = json.loads(value)
        except json.JSONDecodeError:
            parser.exit(2, f"paper_scale.py: --strategy-set {item!r}: the value must be JSON\n")
    import torch

    torch.set_num_threads(1)
    try:
        search = _create(args)
    except NasrlError as exc:  # a run already there, a bad count: one line, exit 2
        parser.exit(2, f"paper_scale.py: {exc}\n")
    # a new run, nothing asked yet: its saved state (which the run starts from) names the sampler
    search.strategy.sampler = args.sampler  # type: ignore[attr-defined]
    search.store.save_strategy(0, 0, search.strategy.state_dict())
    if any(unique.SAMPLERS[s].compiled for s in (args.sampler, args.compare_sampler) if s):
        # Numba compiles once per install (then loads from its cache): not an ask's cost
        seconds = compiled.warm_up()
        print(f"compiled walk ready in {seconds:.1f} s (compiled once per install, then cached)")
    checkpoints = tuple(c * args.children // 12800 for c in CHECKPOINTS)
    meter = Meter(search.strategy, checkpoints, args.compare_sampler, args.compare_every)
    search.listeners.append(meter)
    start = time.perf_counter()
    try:
        result = search.run(evaluator=SyntheticEvaluator(search.space, args.seed))
    finally:
        search.close()
    seconds = time.perf_counter() - start
    best = result.best.reward if result.best else None
    print(f"{result.counts['evaluated']} children in {seconds:.0f} s; best reward {best}")
    worst_ask = max(r["ask_ms_per_arch"] for r in meter.rows)
    worst_cpu = max(r["ask_cpu_ms_per_arch"] for r in meter.rows)
    peak = max(r["peak_rss_mb"] for r in meter.rows)
    print(("PASS" if worst_ask < 5 else "MISS")
          + f" ask time per architecture: worst window {worst_ask:.2f} ms (target < 5; CPU time "
          f"{worst_cpu:.2f} ms)")
    print(("PASS" if peak < 1024 else "MISS") + f" driver memory: peak {peak:.0f} MB (target < 1024)")
    record = {"rows": meter.rows, "seconds": seconds, "args": vars(args) | {"out": str(args.out)}}
    (args.out / "paper_scale.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
