"""Compare strategies on a tabular benchmark in seconds.

Each (strategy, seed) pair runs an independent search against the table. The budget
counts *distinct* architectures: a strategy that proposes one it has already seen gets
the stored result for free, as a real search with a result cache would. Strategies are
told what the search's objective gives (``nasrl.objectives``, the same code the
multi-trial search calls: by default the paper's accuracy cubed), so a benchmark and a
search learn from the same reward. Runs are spread over processes; each run's outcome
depends only on (strategy, config, seed), never on the number of processes.

With a cost constraint (``macs<=median``), "best" means best *feasible*, and the summary
adds the hypervolume of each run's (accuracy, cost) front divided by the true front's,
computed from the whole table, with the reference point (the table's median validation
accuracy, the constraint's target). Under a hard static limit ``reinforce`` searches the
whole front by default (``FRONT_TIERS`` cost tiers, ``ReinforceConfig.front_tiers``; set
``reinforce.front_tiers=0`` for the plain search for the best feasible cell): one run per
seed is measured on both numbers, and the plain search leaves most of the front unvisited.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from nasrl.errors import NasrlError
from nasrl.evaluators.tabular import TabularEvaluator
from nasrl.objectives import Objective, ObjectiveConfig, hypervolume_2d, pareto_front
from nasrl.spaces.feasible import FeasiblePrefixes
from nasrl.spaces.nb201 import NB201Space
from nasrl.strategies.base import Observation, Strategy, make_strategy

T = TypeVar("T")
R = TypeVar("R")

DEFAULT_CHECKPOINTS = (50, 100, 200, 500)
FRONT_TIERS = 5
"""reinforce's ``front_tiers`` in a benchmark with a hard static limit, unless set."""
FRONT_SEARCH: dict[str, Any] = {"baseline": "ema", "elite_weight": 0.02, "elite_halflife": None,
                                "front_projection": 1.0, "front_local_share": 0.4}
"""With the front search, unless set: one EMA baseline per tier (a leave-one-out baseline
would compare a batch's rows of different tiers), the steady elite term the front search
was tuned and measured with, each lower tier imitating the projections of the next
dearer tier's best (hv ratio 0.916 against 0.901 without on tuning seeds 1000-1099, but
only 0.906 against 0.904 on seeds 0-99), and 40% of the asks one-token edits of their
tier's best (hv ratio 0.948 against 0.916 without on seeds 1000-1099, 0.945 against
0.907 on seeds 0-99; evolution 0.907 / 0.908: README, issue 10)."""
PROPOSALS_PER_EVALUATION = 50
"""A run stops after budget x this many proposals even if the budget is not spent (a
collapsed policy re-proposing the same few architectures would otherwise never end)."""


@dataclass
class RunTrace:
    strategy: str
    seed: int
    best_val: list[float]
    """Best feasible val_acc so far after each distinct evaluation (nan before the first)."""
    best_test: list[float]
    """test_acc of the architecture holding best_val at that point."""
    found_best_at: int | None
    """Evaluation count at which the table's best (feasible) architecture was evaluated."""
    proposals: int
    seconds: float
    points: list[tuple[float, float]] | None = None
    """(val_acc, cost) of each evaluation, in order, when the objective has a cost."""


def best_feasible(table: TabularEvaluator, objective: Objective) -> str:
    """Key of the table's best architecture that meets the objective's hard constraints."""
    feasible = [e for e in table.entries.values() if objective.evaluate(table.metrics(e.arch)).feasible]
    if not feasible:
        raise NasrlError("no architecture of the table meets the constraints")
    return max(feasible, key=lambda e: e.val_acc).arch.key


def run_tabular(strategy: Strategy, table: TabularEvaluator, budget: int,
                objective: Objective | None = None, target: str | None = None,
                stop_when_found: bool = False,
                after_tell: Callable[[Strategy], None] | None = None) -> RunTrace:
    """One budgeted search: ask, answer from the table (repeats free), tell the objective's
    reward. ``target`` is the architecture whose discovery counts as "found best".

    ``stop_when_found`` ends the run once the target is evaluated: without a cost the
    best-so-far curve can only stay at the target's value from there on (``_at`` reads a
    short curve's last value), so every summary number except ``proposals`` and the
    time is the same as the full run's. ``after_tell`` is called after every tell."""
    objective = objective or Objective(ObjectiveConfig(), evaluator="tabular")
    target = target or table.best.arch.key
    cost = objective.cost_metrics[0] if objective.cost_metrics else None
    start = time.perf_counter()
    seen: dict[str, float | None] = {}
    best_val: list[float] = []
    best_test: list[float] = []
    points: list[tuple[float, float]] = []
    found_at: int | None = None
    proposals = 0
    best = (math.nan, math.nan)
    while len(seen) < budget and proposals < budget * PROPOSALS_PER_EVALUATION:
        observations = []
        for arch in strategy.ask(strategy.batch_size):
            proposals += 1
            if arch.key not in seen:
                if len(seen) >= budget:
                    continue  # proposed past the budget: never evaluated, never told
                metrics = table.metrics(arch)
                value = objective.evaluate(metrics)
                seen[arch.key] = value.reward
                val, test = 100 * metrics["val_acc"], 100 * metrics["test_acc"]
                if value.feasible and not val <= best[0]:
                    best = (val, test)
                best_val.append(best[0])
                best_test.append(best[1])
                if cost is not None:
                    points.append((val, metrics[cost]))
                if arch.key == target:
                    found_at = len(seen)
            observations.append(Observation(arch, seen[arch.key]))
        strategy.tell(observations)
        if after_tell is not None:
            after_tell(strategy)
        if stop_when_found and found_at is not None and cost is None:
            break
    return RunTrace(strategy.name, strategy.seed, best_val, best_test, found_at, proposals,
                    time.perf_counter() - start, points if cost is not None else None)


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


def worker_table() -> TabularEvaluator:
    """The table a pool worker loaded in :func:`_init_worker` (its error re-raised here)."""
    if isinstance(_TABLE, NasrlError):
        raise _TABLE
    assert _TABLE is not None
    return _TABLE


_TARGET: dict[tuple[str, ...], str] = {}
_FEASIBLE: dict[tuple[str, ...], FeasiblePrefixes] = {}


def feasible_set(table: TabularEvaluator, objective: Objective) -> FeasiblePrefixes | None:
    """The table's architectures within the objective's hard static limits (None without
    such limits): costs a real search also knows before training anything."""
    limits = objective.static_limits()
    if not limits:
        return None
    return FeasiblePrefixes.from_costs(
        table.space, ((e.arch, table.metrics(e.arch)) for e in table.entries.values()), limits)


_LANDSCAPES: dict[str, TabularEvaluator] = {}


def _run_one(args: tuple[str, int, int, Mapping[str, Any], Mapping[str, Any], str]) -> RunTrace:
    name, seed, budget, config, objective_config, landscape = args
    if landscape not in _LANDSCAPES:  # once per worker process
        from nasrl.study import make_landscape  # nasrl.study imports this module

        _LANDSCAPES[landscape] = make_landscape(worker_table(), landscape)
    table = _LANDSCAPES[landscape]
    objective = tabular_objective(objective_config)
    constraints = (landscape, *objective.config.constraints)
    if constraints not in _TARGET:
        _TARGET[constraints] = best_feasible(table, objective)
    strategy = make_strategy(name, table.space, seed, config)
    if objective.static_limits():
        if constraints not in _FEASIBLE:
            feasible = feasible_set(table, objective)
            assert feasible is not None
            _FEASIBLE[constraints] = feasible
        strategy.restrict(_FEASIBLE[constraints])
    return run_tabular(strategy, table, budget, objective, _TARGET[constraints])


def tabular_objective(values: Mapping[str, Any] | None = None) -> Objective:
    """The objective of a benchmark run; costs must be ones a table holds."""
    from nasrl.config import build

    objective = Objective(build(ObjectiveConfig, values or {}, prefix="objective."), evaluator="tabular")
    for metric in objective.cost_metrics:
        if metric not in ("params", "macs", "flops"):
            raise NasrlError(f"constraint on {metric!r}: a benchmark table has params, macs and flops only")
    return objective


def constrained_defaults(configs: Mapping[str, Mapping[str, Any]],
                         objective: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The strategy configs a benchmark runs: under a hard static limit, reinforce searches
    the front (``FRONT_TIERS``) unless its config says otherwise; without one, as given."""
    out = {name: dict(values) for name, values in configs.items()}
    if tabular_objective(objective).static_limits():
        reinforce = out.setdefault("reinforce", {})
        if reinforce.setdefault("front_tiers", FRONT_TIERS):
            for key, value in FRONT_SEARCH.items():  # what the user did not set
                reinforce.setdefault(key, value)
    return out


def run_benchmark(
    table_path: str | os.PathLike[str],
    strategies: Sequence[str],
    seeds: Sequence[int],
    budget: int,
    configs: Mapping[str, Mapping[str, Any]] | None = None,
    jobs: int | None = None,
    objective: Mapping[str, Any] | None = None,
    landscape: str = "val",
) -> list[RunTrace]:
    """Every (strategy, seed) run on the table's ``landscape`` (``nasrl.study.make_landscape``:
    val, test, noisy:SIGMA:SEED, without:OP), which the strategies search and are scored on."""
    configs = constrained_defaults(configs or {}, objective)
    for name in strategies:  # fail fast on a bad name or config, before starting workers
        make_strategy(name, NB201Space(), 0, configs.get(name, {}))
    tasks = [(name, seed, budget, dict(configs.get(name, {})), dict(objective or {}), landscape)
             for name in strategies for seed in seeds]
    return map_on_table(_run_one, tasks, table_path, jobs, chunks_per_job=8)


def map_on_table(fn: Callable[[T], R], tasks: Sequence[T], table_path: str | os.PathLike[str],
                 jobs: int | None, chunks_per_job: int | None = None) -> list[R]:
    """``fn`` over ``tasks`` in this process (jobs 1) or a spawned pool whose workers each
    load the table once; results in task order, so they never depend on ``jobs``.
    ``chunks_per_job``: tasks go out in about that many chunks per worker (None: one by
    one, for tasks of very uneven length)."""
    jobs = max(1, jobs or os.cpu_count() or 1)
    if jobs == 1:
        _init_worker(str(table_path))
        return _stoppable(fn(t) for t in tasks)
    import multiprocessing

    chunksize = 1 if chunks_per_job is None else max(1, len(tasks) // (jobs * chunks_per_job))
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                             initargs=(str(table_path),)) as pool:
        return _stoppable(pool.map(fn, tasks, chunksize=chunksize))


def _stoppable(results: Iterable[R]) -> list[R]:
    """The results as a list, with a stop whose exception was dropped (nasrl.signals)
    raised between two of them rather than after the last."""
    from nasrl.signals import check_stop

    out: list[R] = []
    for result in results:
        out.append(result)
        check_stop()
    return out


# -- summary -----------------------------------------------------------------------------
def true_front_reference(table: TabularEvaluator, objective: Objective) -> dict[str, Any] | None:
    """The reference point (median val_acc, the first constraint's target) and the
    hypervolume of the whole table's (val_acc, cost) front; None without a constraint."""
    if not objective.constraints:
        return None
    constraint = objective.constraints[0]
    points = [(100 * m["val_acc"], m[constraint.metric])
              for m in (table.metrics(e.arch) for e in table.entries.values())]
    reference = (statistics.median(v for v, _ in points), constraint.limit)
    front = [points[i] for i in pareto_front([(v, (c,)) for v, c in points])]
    return {"metric": constraint.metric, "reference": list(reference), "front_size": len(front),
            "hypervolume": hypervolume_2d(front, reference)}


def summarize(
    traces: Sequence[RunTrace], budget: int, checkpoints: Sequence[int] = DEFAULT_CHECKPOINTS,
    front: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    points = sorted({c for c in checkpoints if c <= budget} | {budget})
    out: dict[str, Any] = {"budget": budget, "checkpoints": points, "strategies": {}}
    if front is not None:
        out["front"] = dict(front)
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
            if front is not None:
                ratios = [_hv_ratio(t, cp, front) for t in runs]
                per_cp[str(cp)].update(hv_ratio=ratios, hv_mean=statistics.fmean(ratios),
                                       hv_std=statistics.pstdev(ratios))
        out["strategies"][name] = {
            "seeds": [t.seed for t in runs],
            "checkpoints": per_cp,
            "found_best_at": [t.found_best_at for t in runs],
            "proposals": [t.proposals for t in runs],
            "seconds": sum(t.seconds for t in runs),
        }
    return out


def _hv_ratio(trace: RunTrace, count: int, front: Mapping[str, Any]) -> float:
    """Hypervolume of the run's first ``count`` evaluations over the true front's."""
    found = (trace.points or [])[:count]
    reference = (float(front["reference"][0]), float(front["reference"][1]))
    return hypervolume_2d(found, reference) / front["hypervolume"] if front["hypervolume"] > 0 else math.nan


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
        rows = {"val": f"{name:<12}", "test": f"{'  test':<12}"}
        if "front" in summary:
            rows["hv"] = f"{'  hv ratio':<12}"
        for cp in points:
            c = data["checkpoints"][str(cp)]
            for key in rows:
                rows[key] += f"{c[key + '_mean']:>14.3f} ± {c[key + '_std']:<5.3f}"
        found = data["checkpoints"][str(points[-1])]["found_best"]
        rows["val"] += f"{100 * found:>11.0f}%"
        lines += list(rows.values())
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



def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b rank correlation of two equally long sequences (ties counted as
    scipy.stats.kendalltau counts them); NaN when either sequence is constant.

    Accuracies on a small validation set tie often, hence tau-b rather than tau-a. O(n^2)
    over pairs: meant for rankings of tens of architectures.
    """
    if len(x) != len(y):
        raise ValueError(f"kendall_tau: {len(x)} values against {len(y)}")
    concordance = untied_x = untied_y = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            sx = (x[i] > x[j]) - (x[i] < x[j])
            sy = (y[i] > y[j]) - (y[i] < y[j])
            concordance += sx * sy
            untied_x += sx != 0
            untied_y += sy != 0
    if not untied_x or not untied_y:
        return math.nan
    return concordance / math.sqrt(untied_x * untied_y)
