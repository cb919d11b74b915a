"""Executors run evaluations somewhere and report what finished; they know nothing about
search. The contract: ``submit`` never blocks (work waits in the executor's queue when all
workers are busy), ``wait`` returns at least one finished task unless the timeout passes,
and a task whose worker dies is retried up to ``max_retries`` times before it comes back
as a failed result. A timeout is a failed result too.
"""

from __future__ import annotations

import abc
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.spaces.base import Architecture

Progress = Callable[[int, int, int, float, Mapping[str, float]], bool | None]
"""(trial id, epochs done, epochs in all, seconds since the trial started, the epoch's
validation metric) -> True when the trial should stop (pruned)."""


@dataclass(frozen=True)
class Task:
    trial_id: int
    arch: Architecture
    seed: int


class Executor(abc.ABC):
    name: str = "executor"

    def __init__(self, *, max_retries: int = 2, trial_timeout: float | None = None) -> None:
        self.max_retries = max_retries
        self.trial_timeout = trial_timeout
        self.evaluator: Evaluator | None = None
        self._on_start: Callable[[int], None] | None = None
        self.on_progress: Progress | None = None
        """Told of each epoch a running trial finishes, where the executor can tell (not Ray)."""
        self.stoppable = False
        """Set when ``on_progress`` may answer stop (pruning): a pool worker then waits for
        the driver's answer after each epoch; otherwise it never waits."""

    @property
    @abc.abstractmethod
    def capacity(self) -> int:
        """How many evaluations run at once."""

    def start(self, evaluator: Evaluator, on_start: Callable[[int], None] | None = None) -> None:
        """Get ready to evaluate; ``on_start(trial_id)`` is called as each task starts running."""
        self.evaluator = evaluator
        self._on_start = on_start

    @abc.abstractmethod
    def submit(self, task: Task) -> None: ...

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        """Finished (trial id, result) pairs; empty only when ``timeout`` passed first."""

    @abc.abstractmethod
    def pending(self) -> int:
        """Tasks submitted and not yet returned by ``wait``."""

    def on_start(self, trial_id: int) -> None:
        if self._on_start is not None:
            self._on_start(trial_id)

    def progress(self, trial_id: int, done: int, total: int, seconds: float,
                 metrics: Mapping[str, float] | None = None) -> bool:
        """Pass an epoch report on; True when the driver says the trial should stop."""
        if self.on_progress is None:
            return False
        return bool(self.on_progress(trial_id, done, total, seconds, dict(metrics or {})))

    def close(self) -> None:  # noqa: B027  (optional hook: the serial executor has nothing to stop)
        """Stop workers; unfinished tasks are dropped (a resumed run re-queues them)."""


def timed_out(seconds: float) -> EvalResult:
    return EvalResult("failed", cost=seconds, error=f"timed out after {seconds:g}s")


def safe_evaluate(evaluator: Evaluator, arch: Architecture, seed: int) -> EvalResult:
    """Evaluators should not raise for a bad child; if one does, it is still the trial's failure."""
    try:
        return evaluator.evaluate(arch, seed)
    except Exception as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return EvalResult("failed", error=f"{type(exc).__name__}: {exc} (at {where.filename}:{where.lineno})")
