"""``nasrl report``: PNG plots and an HTML page (leaderboard and plots) for a run.

Choice probabilities over time are the frequencies of each option among the trials in a
sliding window: strategy-agnostic, and for REINFORCE what the controller actually sampled.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from nasrl.objectives import format_number, format_reward
from nasrl.runs import RunView
from nasrl.spaces.base import Categorical, SearchSpace, SkipSet
from nasrl.store.sqlite import Curve, Trial


def _moving_average(values: np.ndarray, window: int) -> np.ndarray:
    out = np.empty_like(values)
    for i in range(len(values)):
        out[i] = values[max(0, i - window + 1) : i + 1].mean()
    return out


def plot_rewards(trials: list[Trial], path: Path) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    done = [t for t in trials if t.reused_from is None and t.state == "complete" and t.reward is not None]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    if done:
        x = np.arange(1, len(done) + 1)
        r = np.array([t.reward for t in done], dtype=float)
        window = max(1, min(20, len(r) // 5 or 1))
        ax1.scatter(x, r, s=10, alpha=0.5, label="trial")
        ax1.plot(x, _moving_average(r, window), color="C1", label=f"moving average ({window})")
        ax2.plot(x, np.maximum.accumulate(r), color="C2")
    ax1.set(title="reward per trial", xlabel="completed trial", ylabel="reward")
    if done:  # a run where every trial failed has nothing to label
        ax1.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    else:
        ax1.text(0.5, 0.5, "no completed trial", ha="center", va="center", transform=ax1.transAxes)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set(title="best so far", xlabel="completed trial", ylabel="best reward")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_entropy(updates: list[tuple[int, float, dict[str, Any]]], path: Path) -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    points = [(r, m["controller/entropy"]) for r, _, m in updates if "controller/entropy" in m]
    if not points:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([p[0] for p in points], [p[1] for p in points])
    ax.set(title="controller entropy per architecture", xlabel="round", ylabel="entropy (nats)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # rounds are whole
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _decision_series(d: Any, values: list[Any]) -> tuple[list[str], list[list[float]]] | None:
    """Per option (for a skip set: per earlier layer) a 0/1 indicator per trial."""
    if isinstance(d, Categorical):
        if d.size < 2:
            return None
        return [str(o) for o in d.options], [[float(v == o) for v in values] for o in d.options]
    if isinstance(d, SkipSet) and d.layer > 0:
        sources = range(d.layer)
        return [f"from {j}" for j in sources], [[float(j in v) for v in values] for j in sources]
    return None


def choice_panels(sampled: list[Trial], space: SearchSpace) -> list[tuple[Any, list[str], list[list[float]]]]:
    """(decision, option labels, per-option indicators over trials) for each decision to plot."""
    panels = []
    for d in space.decisions:
        series = _decision_series(d, [t.arch[d.name] for t in sampled])
        if series is not None:
            panels.append((d, *series))
    return panels


def plot_choices(trials: list[Trial], space: SearchSpace, path: Path) -> bool:
    """Every decision's option frequencies over trials (skip sets: how often each earlier
    layer feeds the anchor), a panel per decision, legends beside the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    sampled = [t for t in trials if t.reused_from is None]
    panels = choice_panels(sampled, space)
    if not panels or len(sampled) < 2:
        return False
    window = max(2, min(25, len(sampled) // 4))
    cols = min(4, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 2.3 * rows), squeeze=False)
    x = np.arange(1, len(sampled) + 1)
    for ax, (d, labels, indicators) in zip(axes.flat, panels, strict=False):
        freqs = np.array([_moving_average(np.array(ind), window) for ind in indicators])
        if isinstance(d, SkipSet):
            for label, f in zip(labels, freqs, strict=True):
                ax.plot(x, f, label=label, linewidth=1.2)
        else:
            ax.stackplot(x, freqs, labels=labels)
        ax.set_title(d.name, fontsize=9)
        ax.set_ylim(0, 1)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        # beside the panel, never over the curves
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"choice frequencies over trials (moving window {window}; skip sets: share of "
                 "trials with each input)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def plot_front(view: RunView, axes: list[str], front: list[Trial], path: Path) -> bool:
    """Every trial on (cost, quality) per cost axis: feasible ones, infeasible ones (grey),
    the Pareto front as a staircase and the constraints' targets as vertical lines."""
    import matplotlib.pyplot as plt

    done = [t for t in view.store.trials(state="complete") if t.reused_from is None
            and view.quality(t) is not None]
    if not done:
        return False
    scale = 100.0 if view.objective.quality == "accuracy" else 1.0
    label = f"{view.objective.metric}{' (%)' if scale == 100 else ''}"
    fig, axs = plt.subplots(1, len(axes), figsize=(5.5 * len(axes), 4.2), squeeze=False)
    limits = {c.metric: c for c in view.objective.constraints}
    for ax, metric in zip(axs[0], axes, strict=True):
        for feasible, style in ((True, {"color": "C0", "s": 14, "alpha": 0.6, "label": "trial"}),
                                (False, {"color": "0.6", "s": 14, "marker": "x", "label": "infeasible"})):
            pts = [(t.metrics[metric], scale * (view.quality(t) or 0.0)) for t in done
                   if t.feasible == feasible and metric in t.metrics]
            if pts:
                ax.scatter(*zip(*pts, strict=True), **style)
        edge = sorted((t.metrics[metric], scale * (view.quality(t) or 0.0)) for t in front)
        if edge:
            ax.step(*zip(*edge, strict=True), where="post", color="C3", label="Pareto front")
            ax.scatter(*zip(*edge, strict=True), color="C3", s=22, zorder=3)
        if metric in limits:
            c = limits[metric]
            ax.axvline(c.limit, color="k", linestyle="--", linewidth=1,
                       label=f"{c.kind} target {format_number(c.limit)}")
        if metric in ("params", "macs", "flops"):
            ax.set_xscale("log")
        ax.set(xlabel=metric, ylabel=label, title=f"{label} vs {metric}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.15), ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_curves(curves: list[Curve], trials: list[Trial], path: Path) -> bool:
    """Every trial's validation metric per epoch; pruned children in grey, so what the
    pruning rule stopped (and when) shows against the curves that ran their schedule."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not curves:
        return False
    states = {t.id: t.state for t in trials}
    accuracy = curves[0].metric == "val_acc"
    scale = 100.0 if accuracy else 1.0
    fig, ax = plt.subplots(figsize=(8, 4.5))
    seen: set[str] = set()
    # pruned ones first, so the curves that completed are drawn over them
    for curve in sorted(curves, key=lambda c: states.get(c.trial_id) != "pruned"):
        state = states.get(curve.trial_id, "running")
        style = ({"color": "0.7", "linewidth": 0.8, "zorder": 1} if state == "pruned"
                 else {"color": "C3" if state == "failed" else "C0", "linewidth": 1.0, "alpha": 0.6,
                       "zorder": 2})
        label = state if state not in seen else None
        seen.add(state)
        epochs = np.arange(1, len(curve.values) + 1)
        ax.plot(epochs, scale * np.asarray(curve.values, dtype=float), marker=".", markersize=3,
                label=label, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ylabel = "validation accuracy (%)" if accuracy else "validation perplexity"
    ax.set(title="learning curves (pruned children in grey)", xlabel="epoch", ylabel=ylabel)
    if not accuracy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(view: RunView) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    run_dir, store, space = view.run_dir, view.store, view.space
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    trials = store.trials()
    info = store.run_info()
    plots = ["rewards.png"]
    plot_rewards(trials, out / "rewards.png")
    axes, front = view.pareto()
    if plot_front(view, axes, front, out / "front.png"):
        plots.append("front.png")
    if plot_entropy(store.updates(), out / "entropy.png"):
        plots.append("entropy.png")
    if plot_choices(trials, space, out / "choices.png"):
        plots.append("choices.png")
    if plot_curves(store.curves(), trials, out / "curves.png"):
        plots.append("curves.png")
    page = out / "index.html"
    page.write_text(_html(view, info, plots, axes, front))
    return page


def _quality_label(view: RunView) -> str:
    return "val acc" if view.objective.quality == "accuracy" else "val perplexity"


def _quality_text(view: RunView, t: Trial) -> str:
    q = view.quality(t)
    if q is None:
        return ""
    return f"{100 * q:.2f}%" if view.objective.quality == "accuracy" else f"{q:.1f}"


def _front_table(view: RunView, axes: list[str], front: list[Trial]) -> str:
    if not front:
        return ""
    head = "".join(f"<th>{html.escape(m)}</th>" for m in axes)
    rows = []
    for t in front:
        costs = "".join(f"<td>{format_number(t.metrics[m])}</td>" for m in axes)
        rows.append(f"<tr><td>{t.id}</td><td>{_quality_text(view, t)}</td>{costs}"
                    f"<td>{format_reward(t.reward)}</td>"
                    f"<td><code>{html.escape(view.space.describe(t.arch))}</code></td></tr>")
    return (f"<h2>Pareto front ({len(front)} trials)</h2><table><tr><th>trial</th>"
            f"<th>{html.escape(view.objective.metric)}</th>{head}<th>reward</th><th>architecture</th></tr>"
            + "".join(rows) + "</table>")


def _html(view: RunView, info: dict[str, Any], plots: list[str], axes: list[str], front: list[Trial]) -> str:
    from nasrl.lock import live_status

    run_dir, store, space = view.run_dir, view.store, view.space
    # the lock, not the stored status, tells a live run from one killed with -9
    state, counts = live_status(run_dir, info["status"], store.counts())
    rows = []
    for rank, t in enumerate(store.best(20), 1):
        params = t.metrics.get("params")
        rows.append(
            f"<tr><td>{rank}</td><td>{t.id}</td><td>{format_reward(t.reward)}</td>"
            f"<td>{_quality_text(view, t)}</td>"
            f"<td>{'' if params is None else f'{int(params):,}'}</td>"
            f"<td><code>{html.escape(space.describe(t.arch))}</code></td></tr>"
        )
    failed = [t for t in store.trials(state="failed")][:20]
    failed_rows = "".join(f"<tr><td>{t.id}</td><td>{html.escape(t.error or '')}</td></tr>" for t in failed)
    depth = f"<p>{html.escape(view.depth_note)}</p>" if view.depth_note else ""
    images = "".join(f'<p><img src="{p}" alt="{p}" style="max-width:100%"></p>' for p in plots)
    config = html.escape(json.dumps(info["config"], indent=2, sort_keys=True))
    failed_table = (
        "<h2>Failed trials</h2><table><tr><th>trial</th><th>error</th></tr>" + failed_rows + "</table>"
        if failed
        else ""
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nasrl run {html.escape(str(run_dir))}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
tr:nth-child(even){{background:#f3f3f3}}code{{font-size:85%}}</style></head><body>
<h1>nasrl run <code>{html.escape(str(run_dir))}</code></h1>
<p>{html.escape(state)}; {counts["evaluated"]} of {info["config"]["budget"]} evaluated,
{counts["failed"]} failed, {counts["pruned"]} pruned, {counts["reused"]} reused; seed {info["seed"]};
nasrl {html.escape(info["version"])}</p>
<p>{html.escape(view.reward_note)}</p>{depth}
<h2>Leaderboard</h2>
<table><tr><th>#</th><th>trial</th><th>reward</th><th>{html.escape(_quality_label(view))}</th><th>params</th>
<th>architecture</th></tr>
{"".join(rows)}</table>
{_front_table(view, axes, front)}
<h2>Plots</h2>{images}
{failed_table}
<h2>Config</h2><pre>{config}</pre>
</body></html>
"""
