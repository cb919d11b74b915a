"""The controller study: named REINFORCE variants side by side on a tabular benchmark.

Each variant is one strategy config (one field changed from the defaults, so a row
differs from ``reinforce`` by exactly what its name says). Every (variant, seed) pair is an
independent budgeted search (``nasrl.benchmark.run_tabular``) that stops once it has
evaluated the table's best cell: from there its best-so-far curve is flat, so the summary
is that of the full budget at a fraction of the time. For the first ``MEASURE_UPDATES``
updates a REINFORCE run also records the policy gradient's squared norm and its
within-batch variance, with the advantages it used and, on the same batch and policy,
with the reward itself (no baseline): their ratio is the baseline's variance reduction.

A *landscape* is the table a study runs on: ``val`` (the table as it is), ``test`` (its
test column as the reward: the same cells ranked by other images), ``noisy:SIGMA:SEED``
(validation accuracy plus Gaussian noise of SIGMA points), ``without:OP`` (every cell
using OP scored at the table's worst accuracy: the search must find the best cell of the
4-op subspace). Held-out landscapes for choosing defaults that do not fit one table.
"""

from __future__ import annotations

import json
import math
import os
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nasrl.benchmark import RunTrace, _at, map_on_table, run_tabular, summarize, worker_table
from nasrl.config import ConfigError
from nasrl.evaluators.tabular import TabularEvaluator
from nasrl.spaces.nb201 import OPS, NB201Space
from nasrl.strategies.base import Strategy, make_strategy

MEASURE_UPDATES = 20
"""Updates whose gradient variance is measured (the first 100 evaluations at batch 5)."""
GRADIENT_METRICS = ("pg_grad_sqnorm", "pg_grad_var", "pg_grad_var_no_baseline", "advantage_var")

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "reinforce": ("reinforce", {}),
    "gru": ("reinforce", {"controller": {"cell": "gru"}}),
    "no-baseline": ("reinforce", {"baseline": "none"}),
    "critic": ("reinforce", {"baseline": "critic"}),
    "adv-clip-0.05": ("reinforce", {"advantage_clip": 0.05}),
    "adv-clip-0.1": ("reinforce", {"advantage_clip": 0.1}),
    "reward+next": ("reinforce", {"return_mode": "reward_plus_next"}),
    "l2-1e-4": ("reinforce", {"l2": 1e-4}),
    "ppo-4": ("reinforce", {"update_epochs": 4}),
    "first-batch-zero": ("reinforce", {"baseline": "ema", "first_batch": "zero"}),
    "ema": ("reinforce", {"baseline": "ema"}),
    "previous-default": ("reinforce", {"baseline": "ema", "elite_weight": 0.02,
                                       "elite_halflife": None, "local_share": 0.0}),
    "no-local": ("reinforce", {"local_share": 0.0}),
    "rank": ("reinforce", {"advantage_shaping": "rank"}),
    "no-avoid-seen": ("reinforce", {"avoid_seen": False}),
    "paper": ("reinforce", {"learning_rate": 6e-4, "avoid_seen": False, "baseline": "ema",
                            "baseline_decay": 0.95, "elite_weight": 0.0, "elite_halflife": None,
                            "local_share": 0.0}),
    "evolution": ("evolution", {}),
    "random": ("random", {}),
}
"""Name -> (strategy, config). ``first-batch-zero`` is the EMA baseline's first batch (the
default baseline, leave_one_out, has no first-batch case); ``previous-default`` is nasrl
0.2's defaults (EMA baseline, elite_weight 0.02 held throughout, no local asks);
``no-local`` is today's defaults without local asks (pure REINFORCE)."""
DEFAULT_VARIANTS = ("reinforce", "gru", "no-baseline", "ema", "critic", "adv-clip-0.05",
                    "adv-clip-0.1", "reward+next", "l2-1e-4", "ppo-4", "no-local", "evolution")
"""The study's default list. Not in it, by cost: ``no-avoid-seen`` and ``paper`` (a policy
that collapses re-proposes seen cells, for up to 50 proposals per evaluation)."""


@dataclass
class StudyRun:
    trace: RunTrace
    updates: list[dict[str, float]] = field(default_factory=list)
    """Per measured update: GRADIENT_METRICS."""


def make_landscape(table: TabularEvaluator, spec: str) -> TabularEvaluator:
    """The table with its val_acc column replaced as ``spec`` says (see the module doc)."""
    kind, _, rest = spec.partition(":")
    entries = table.entries
    if kind == "val" and not rest:
        return table
    if kind == "test" and not rest:
        new = {k: replace(e, val_acc=e.test_acc) for k, e in entries.items()}
    elif kind == "noisy":
        sigma, seed = _noise_args(spec, rest)
        rng = random.Random(seed)
        new = {k: replace(e, val_acc=e.val_acc + rng.gauss(0.0, sigma)) for k, e in entries.items()}
    elif kind == "without" and rest in OPS:
        worst = min(e.val_acc for e in entries.values())
        new = {k: replace(e, val_acc=worst) if rest in (v for _, v in e.arch.choices) else e
               for k, e in entries.items()}
    else:
        raise ConfigError(f"landscape {spec!r}: use val, test, noisy:SIGMA:SEED or without:OP "
                          f"(OP one of {', '.join(OPS)})")
    out = object.__new__(TabularEvaluator)
    out.__dict__.update(table.__dict__)
    out.entries = new
    out.best = max(new.values(), key=lambda e: e.val_acc)
    return out


def _noise_args(spec: str, rest: str) -> tuple[float, int]:
    sigma, _, seed = rest.partition(":")
    try:
        value, number = float(sigma), int(seed or 0)
    except ValueError:
        raise ConfigError(f"landscape {spec!r}: noisy:SIGMA:SEED needs a number and an integer") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"landscape {spec!r}: SIGMA must be > 0")
    return value, number


Variants = dict[str, tuple[str, dict[str, Any]]]


def resolve_variants(names: Sequence[str],
                     overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Variants:
    """Variant name -> (strategy, config), each config checked now (before any worker)."""
    out = {}
    for name in names:
        if name not in VARIANTS:
            raise ConfigError(f"unknown variant {name!r} (known: {', '.join(VARIANTS)})")
        strategy, config = VARIANTS[name]
        config = _merge(config, (overrides or {}).get(strategy, {}))
        make_strategy(strategy, NB201Space(), 0, config)
        out[name] = (strategy, config)
    return out


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


# -- runs --------------------------------------------------------------------------------
_LANDSCAPES: dict[str, TabularEvaluator] = {}


def _study_one(args: tuple[str, str, dict[str, Any], int, int, str]) -> StudyRun:
    variant, strategy_name, config, seed, budget, landscape = args
    if landscape not in _LANDSCAPES:  # once per worker process
        _LANDSCAPES[landscape] = make_landscape(worker_table(), landscape)
    table = _LANDSCAPES[landscape]
    strategy = make_strategy(strategy_name, table.space, seed, config)
    if hasattr(strategy, "measure_updates"):
        strategy.measure_updates = MEASURE_UPDATES
    updates: list[dict[str, float]] = []
    last = [0]

    def record(s: Strategy) -> None:
        done = getattr(s, "num_updates", 0)
        metrics = s.metrics()
        if done > last[0] and "controller/pg_grad_var" in metrics:
            updates.append({k: metrics["controller/" + k] for k in GRADIENT_METRICS})
        last[0] = done

    trace = run_tabular(strategy, table, budget, stop_when_found=True, after_tell=record)
    trace.strategy = variant
    return StudyRun(trace, updates)


def run_study(table_path: str | os.PathLike[str], variants: Mapping[str, tuple[str, dict[str, Any]]],
              seeds: Sequence[int], budget: int, landscape: str = "val",
              jobs: int | None = None) -> list[StudyRun]:
    """Every (variant, seed) pair; the outcome depends only on those, not on ``jobs``."""
    tasks = [(name, strategy, dict(config), seed, budget, landscape)
             for name, (strategy, config) in variants.items() for seed in seeds]
    return map_on_table(_study_one, tasks, table_path, jobs)


# -- summary -----------------------------------------------------------------------------
def summarize_study(runs: Sequence[StudyRun], budget: int) -> dict[str, Any]:
    """benchmark.summarize's numbers per variant, plus the gradient statistics: means over
    every measured update of every seed, and the paired with/without-baseline ratio."""
    out = summarize([r.trace for r in runs], budget)
    for name, data in out["strategies"].items():
        curves = [[_at(r.trace.best_val, i) for i in range(1, budget + 1)]
                  for r in runs if r.trace.strategy == name]
        data["mean_curve"] = [round(statistics.fmean(col), 4) for col in zip(*curves, strict=True)]
        updates = [u for r in runs if r.trace.strategy == name for u in r.updates]
        if not updates:
            continue
        grad: dict[str, Any] = {k: statistics.fmean(u[k] for u in updates) for k in GRADIENT_METRICS}
        grad["updates"] = len(updates)
        grad["variance_ratio_vs_no_baseline"] = grad["pg_grad_var"] / grad["pg_grad_var_no_baseline"]
        grad["per_update"] = _per_update(runs, name)
        data["gradient"] = grad
    return out


def _per_update(runs: Sequence[StudyRun], name: str) -> dict[str, list[float]]:
    """Mean over seeds of pg_grad_var at each update index, and the across-seed variance of
    the gradient's squared norm there."""
    mine = [r.updates for r in runs if r.trace.strategy == name]
    mean_var, sqnorm_var = [], []
    for i in range(MEASURE_UPDATES):
        at = [u[i] for u in mine if len(u) > i]
        if len(at) < 2:
            break
        mean_var.append(statistics.fmean(u["pg_grad_var"] for u in at))
        sqnorm_var.append(statistics.variance([u["pg_grad_sqnorm"] for u in at]))
    return {"pg_grad_var_mean": mean_var, "pg_grad_sqnorm_var_across_seeds": sqnorm_var}


def format_markdown(summary: Mapping[str, Any]) -> str:
    points = summary["checkpoints"]
    head = ["variant", *(f"@{cp}" for cp in points), f"best found by {points[-1]}",
            "E‖g‖²", "tr Var(g)", "Var(g) / no baseline", "Var(A)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, data in summary["strategies"].items():
        row = [name]
        for cp in points:
            c = data["checkpoints"][str(cp)]
            row.append(f"{c['val_mean']:.3f} ± {c['val_std']:.3f}")
        row.append(f"{100 * data['checkpoints'][str(points[-1])]['found_best']:.0f}%")
        g = data.get("gradient")
        if g:
            row += [f"{g['pg_grad_sqnorm']:.3g}", f"{g['pg_grad_var']:.3g}",
                    f"{g['variance_ratio_vs_no_baseline']:.3f}", f"{g['advantage_var']:.3g}"]
        else:
            row += ["", "", "", ""]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def write_study(summary: Mapping[str, Any], out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "study.json").write_text(json.dumps(summary, indent=1))
    (out_dir / "study.md").write_text(format_markdown(summary) + "\n")
    plot_study(summary, out_dir / "study.png")


def plot_study(summary: Mapping[str, Any], path: Path) -> None:
    """Mean best-so-far curves and the gradient variance per update, from the summary alone
    (so a study.json can be redrawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budget = summary["budget"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    low = math.inf
    for i, name in enumerate(summary["strategies"]):
        style = {"label": name, "linestyle": "-" if i < 10 else "--"}  # 10 colours in the cycle
        mean = summary["strategies"][name]["mean_curve"]
        left.plot(range(1, budget + 1), mean, **style)
        low = min(low, mean[min(9, budget - 1)])
        grad = summary["strategies"][name].get("gradient")
        if grad and grad["per_update"]["pg_grad_var_mean"]:
            ys = grad["per_update"]["pg_grad_var_mean"]
            right.plot(range(1, len(ys) + 1), ys, **style)
    left.set(xscale="log", ylim=(low - 1, None), xlabel="distinct architectures evaluated",
             ylabel="mean best validation accuracy so far (%)")
    seeds = len(next(iter(summary["strategies"].values()))["seeds"])
    left.set_title(f"mean over {seeds} seeds")
    right.set(yscale="log", xlabel="controller update",
              ylabel="tr Var(policy-gradient estimate), mean over seeds")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
