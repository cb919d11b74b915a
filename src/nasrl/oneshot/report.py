"""``nasrl report`` of a one-shot run: controller entropy and reward per round, shared
loss per epoch, and the derived architectures."""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import numpy as np

from nasrl.objectives import format_reward
from nasrl.report import _moving_average, plot_entropy
from nasrl.runs import RunView


def plot_controller(updates: list[tuple[int, float, dict[str, Any]]], path: Path) -> bool:
    """Reward and shared-weight accuracy on each round's validation batch."""
    import matplotlib.pyplot as plt

    points = [(r, m["oneshot/reward_mean"], m.get("oneshot/val_acc_mean", np.nan)) for r, _, m in updates
              if "oneshot/reward_mean" in m]
    if not points:
        return False
    rounds = np.array([p[0] for p in points])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, values, title in ((ax1, np.array([p[1] for p in points]), "mean reward per round"),
                              (ax2, 100 * np.array([p[2] for p in points]), "shared-weight accuracy (%)")):
        window = max(1, min(20, len(values) // 5 or 1))
        ax.plot(rounds, values, alpha=0.4, label="round")
        ax.plot(rounds, _moving_average(values, window), color="C1", label=f"moving average ({window})")
        ax.set(title=title, xlabel="controller round")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def plot_loss(epochs: list[tuple[int, float, dict[str, Any]]], path: Path) -> bool:
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    if not epochs:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([e for e, _, _ in epochs], [m["shared/loss"] for _, _, m in epochs], marker="o")
    ax.set(title="shared-weight training loss", xlabel="epoch", ylabel="loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_oneshot_report(view: RunView) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    out = view.run_dir / "report"
    out.mkdir(exist_ok=True)
    store = view.store
    plots = []
    updates = store.updates()
    if plot_entropy(updates, out / "entropy.png"):
        plots.append("entropy.png")
    if plot_controller(updates, out / "controller.png"):
        plots.append("controller.png")
    if plot_loss(store.epochs(), out / "loss.png"):
        plots.append("loss.png")
    page = out / "index.html"
    page.write_text(_html(view, plots))
    return page


def _html(view: RunView, plots: list[str]) -> str:
    from nasrl.lock import live_status

    info, cfg = view.info, view.config
    state, _ = live_status(view.run_dir, info["status"], {"queued": 0, "running": 0})
    rows = "".join(
        f"<tr><td>{d.rank}</td><td>{100 * d.score:.2f}%</td><td>{format_reward(d.reward)}</td>"
        f"<td>{int(d.metrics.get('times_sampled', 0))}</td>"
        f"<td><code>{html.escape(view.space.describe(d.arch))}</code></td></tr>"
        for d in view.store.derived())
    derived = ("<table><tr><th>#</th><th>shared-weight val acc</th><th>reward</th><th>times sampled</th>"
               f"<th>architecture</th></tr>{rows}</table>" if rows
               else "<p>none yet (the run has not finished)</p>")
    images = "".join(f'<p><img src="{p}" alt="{p}" style="max-width:100%"></p>' for p in plots)
    config = html.escape(json.dumps(info["config"], indent=2, sort_keys=True))
    title = html.escape(str(view.run_dir))
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>nasrl one-shot run {title}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{padding:2px 8px;text-align:left}}
tr:nth-child(even){{background:#f3f3f3}}code{{font-size:85%}}</style></head><body>
<h1>nasrl one-shot (ENAS) run <code>{title}</code></h1>
<p>{html.escape(state)}; {len(view.store.epochs())} of {cfg.oneshot.epochs} epochs, {cfg.strategy},
seed {info["seed"]}; nasrl {html.escape(info["version"])}</p>
<p>{html.escape(view.reward_note)} with the shared weights on one validation batch per round</p>
<h2>Derived architectures</h2>
{derived}
<h2>Plots</h2>{images}
<h2>Config</h2><pre>{config}</pre>
</body></html>
"""
