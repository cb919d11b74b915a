"""``nasrl search --method enas`` and ``resume | status | best | report`` of one-shot runs."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from nasrl.errors import NasrlError
from nasrl.runs import RunView


def run(search: Any, quiet: bool) -> int:
    """Run a one-shot search with the progress display and TensorBoard; print the result."""
    from nasrl.monitor import OneShotProgress, OneShotTensorBoard

    if not quiet:
        search.listeners.append(OneShotProgress(search.space))
    search.listeners.append(OneShotTensorBoard(search.run_dir))
    try:
        result = search.run()
    except KeyboardInterrupt as stop:
        from nasrl.signals import Terminated, exit_code

        how = "terminated" if isinstance(stop, Terminated) else "interrupted"
        done = search.store.checkpoint()
        print(f"nasrl: {how}; {0 if done is None else done[0]} epochs kept in {search.run_dir} "
              f"(resume with: nasrl resume {search.run_dir})", file=sys.stderr)
        return exit_code(stop)
    print(f"done: {result.epochs} epochs in {result.seconds:.1f}s")
    _print_derived(search.space, result.derived[:1])
    print(f"next: nasrl best {search.run_dir} --json > arch.json; nasrl train --arch arch.json")
    return 0


def header(search: Any, out: Path) -> None:
    cfg = search.config
    print(f"nasrl search: one-shot (ENAS) {cfg.space} space, {cfg.strategy} on "
          f"{cfg.dataset or 'digits'}, {cfg.oneshot.epochs} epochs, seed {cfg.seed}; run directory {out}",
          flush=True)
    print(f"  reward {search.objective.describe()} with the shared weights", flush=True)


def status(view: RunView) -> int:
    from nasrl.lock import live_status

    store, info = view.store, view.info
    cfg = view.config
    state, _ = live_status(view.run_dir, info["status"], {"queued": 0, "running": 0})
    epochs = store.epochs()
    updates = store.updates()
    print(f"run {view.run_dir}: {state}; one-shot (ENAS) {cfg.space} space, {cfg.strategy}, "
          f"seed {info['seed']}, nasrl {info['version']}")
    print(f"{view.reward_note} (shared weights, one validation batch)")
    last = ""
    if epochs:
        last = f", last {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(epochs[-1][1]))}"
    print(f"epochs: {len(epochs)}/{cfg.oneshot.epochs} done{last}; controller rounds: {len(updates)}")
    if epochs:
        metrics = epochs[-1][2]
        parts = [f"shared loss {metrics['shared/loss']:.4f}"]
        if "controller/entropy" in metrics:
            parts.append(f"controller entropy {metrics['controller/entropy']:.3f}")
        if "oneshot/val_acc_mean" in metrics:
            parts.append(f"reward-batch accuracy {100 * metrics['oneshot/val_acc_mean']:.1f}%")
        print(f"epoch {epochs[-1][0]}: {', '.join(parts)}")
    derived = store.derived()
    if derived:
        print(f"derived: {len(derived)} architectures, best shared-weight validation accuracy "
              f"{100 * derived[0].score:.2f}%")
    return 0


def best(view: RunView, n: int, as_json: bool) -> int:
    derived = view.store.derived()[:n]
    if not derived:
        raise NasrlError(f"{view.run_dir}: no derived architectures yet (the one-shot run has not "
                         "finished; resume it with: nasrl resume)")
    if as_json:
        docs = [document(view, d) for d in derived]
        print(json.dumps(docs[0] if n == 1 else docs, indent=2))
    else:
        _print_derived(view.space, derived)
    return 0


def document(view: RunView, derived: Any) -> dict[str, Any]:
    """An architecture document ``nasrl train --arch`` reads, with its shared-weight scores."""
    from nasrl.spaces.io import architecture_document

    return {**architecture_document(view.space, derived.arch), "reward": derived.reward,
            "metrics": {**derived.metrics, "rank": derived.rank},
            "description": view.space.describe(derived.arch)}


def _print_derived(space: Any, derived: Any) -> None:
    from nasrl.objectives import format_reward

    for d in derived:
        costs = "".join(f", {d.metrics[m] / 1e6:.2f}M {m}" for m in ("params", "macs") if m in d.metrics)
        print(f"#{d.rank} shared-weight validation accuracy {100 * d.score:.2f}%, reward "
              f"{format_reward(d.reward)}{costs}, sampled {int(d.metrics.get('times_sampled', 0))} times")
        print(f"   {space.describe(d.arch)}")
