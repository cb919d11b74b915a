"""Reading a run directory: its store, its resolved config, space and objective.

``status``, ``best``, ``report`` and ``export`` open runs through :func:`open_run`, read
only, so they are safe while the search writes. A run written before nasrl 0.2 (whose
reward was shaped twice) still opens; :attr:`RunView.reward_note` says what its trials
stored and what its strategy learned from.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nasrl.errors import NasrlError
from nasrl.objectives import Objective, pareto_front
from nasrl.search import DB_NAME, SearchConfig, depth_schedule, make_objective, make_space, read_run_config
from nasrl.spaces.base import SearchSpace
from nasrl.store.sqlite import StoreError, Trial, TrialStore


@dataclass
class RunView:
    run_dir: Path
    store: TrialStore
    info: dict[str, Any]
    config: SearchConfig
    space: SearchSpace
    objective: Objective
    legacy_note: str | None
    """For runs written before nasrl 0.2: what reward the trials stored and the strategy
    learned from; None for current runs."""

    @property
    def reward_note(self) -> str:
        return self.legacy_note or f"reward {self.objective.describe()}"

    @property
    def depth_note(self) -> str | None:
        """With a depth schedule: the schedule and how many trials were asked at each depth
        (each trial's depth is its architecture's, so it survives any resume)."""
        schedule = depth_schedule(self.config)
        if schedule is None:
            return None
        per_depth: dict[int, int] = {}
        for t in self.store.trials():
            depth = int(getattr(self.space.space_of(t.arch), "num_layers", 0))
            per_depth[depth] = per_depth.get(depth, 0) + 1
        cap = "" if schedule.maximum is None else f", at most {schedule.maximum}"
        asked = ", ".join(f"{n} at {d}" for d, n in sorted(per_depth.items())) or "none yet"
        return (f"depth: {schedule.start} layers, +{schedule.step} every {schedule.every} "
                f"architectures{cap}; trials by depth: {asked}")

    def quality(self, trial: Trial) -> float | None:
        """The trial's quality metric (accuracy, or perplexity for language models)."""
        value = trial.metrics.get(self.objective.metric)
        return None if value is None else float(value)

    def pareto(self, metrics: list[str] | None = None) -> tuple[list[str], list[Trial]]:
        """The cost axes and the non-dominated feasible trials on (quality, costs), best
        quality first. Axes default to the objective's constrained metrics (else params)."""
        axes = metrics or self.objective.front_metrics()
        candidates = [t for t in self.store.trials(state="complete")
                      if t.reused_from is None and t.feasible and self.quality(t) is not None
                      and all(m in t.metrics for m in axes)]
        points = [(float(self.quality(t) or 0.0), [float(t.metrics[m]) for m in axes]) for t in candidates]
        front = pareto_front(points, self.objective.higher_is_better)
        return axes, [candidates[i] for i in front]


def open_run(run_dir: Path) -> RunView:
    """Open a run directory read-only; a damaged or missing one is a one-line error."""
    if not run_dir.is_dir():
        raise NasrlError(f"{run_dir}: no such run directory")
    store = TrialStore(run_dir / DB_NAME, readonly=True)
    info = store.run_info()
    try:
        config, legacy = read_run_config(info["config"])
    except NasrlError as exc:
        raise StoreError(f"{run_dir}: damaged run config ({exc})") from None
    return RunView(run_dir, store, info, config, make_space(config), make_objective(config), legacy)
