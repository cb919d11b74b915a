"""Children in virtual time, for scale simulations (``benchmarks/scale_simulation.py``).

:class:`SimulatedExecutor` is a real :class:`~nasrl.execution.base.Executor` driven by the
real search loop, strategy and store; only the children are simulated. It keeps a virtual
clock: ``submit`` starts a task on a free simulated worker (or queues it), with a finish
time of now + the task's duration; ``wait`` moves the clock to the next finish and
returns every task finished by then, its result computed at once by a cheap evaluator
(a table, or :class:`SyntheticEvaluator`). The driver's own work is not free: the real
wall time the driver spends between two executor calls (ask, tell, store) moves the
virtual clock too, so a slow controller shows up as idle workers, as it would on a
cluster. The time the evaluator takes to answer is excluded: it stands for a remote
worker's training, already counted in the task's duration.
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution.base import Executor, Task, safe_evaluate
from nasrl.spaces.base import Architecture, SearchSpace


def lognormal_durations(median: float, sigma: float) -> Callable[[Task], float]:
    """Seconds a child takes: log-normal with this median and log-space sigma, drawn from
    the trial's own seed (a retried or resumed trial takes the same time)."""
    def duration(task: Task) -> float:
        return lognormal_seconds(task.seed, median, sigma)

    return duration


def lognormal_seconds(seed: int, median: float, sigma: float) -> float:
    """The time :func:`lognormal_durations` gives the child of this trial seed."""
    return float(np.random.default_rng([seed, 0x51]).lognormal(math.log(median), sigma))


@dataclass
class _Running:
    finish: float
    order: int
    task: Task
    seconds: float

    def __lt__(self, other: _Running) -> bool:
        return (self.finish, self.order) < (other.finish, other.order)


class SimulatedExecutor(Executor):
    name = "simulated"

    def __init__(self, workers: int, duration: Callable[[Task], float], *,
                 driver_time_counts: bool = True) -> None:
        super().__init__(max_retries=0)
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self.duration = duration
        self.driver_time_counts = driver_time_counts
        self.now = 0.0
        """Virtual seconds since start."""
        self.busy = 0.0
        """Virtual worker-seconds spent on finished tasks."""
        self.last_submit = 0.0
        """Virtual time of the latest submission (after it, workers only drain)."""
        self.area = 0.0
        """Worker-seconds busy so far, up to ``now`` (finished or not)."""
        self.area_at_last_submit = 0.0
        self.running: list[_Running] = []
        self.queue: deque[Task] = deque()
        self._order = itertools.count()
        self._mark = time.perf_counter()

    @property
    def capacity(self) -> int:
        return self.workers

    def start(self, evaluator: Evaluator, on_start: Callable[[int], None] | None = None) -> None:
        super().start(evaluator, on_start)
        self._mark = time.perf_counter()

    def _driver_time(self) -> None:
        """Move the clock by the real time the driver worked since the executor last returned."""
        mark = time.perf_counter()
        if self.driver_time_counts:
            self._advance(self.now + mark - self._mark)
        self._mark = mark

    def _advance(self, t: float) -> None:
        self.area += len(self.running) * (t - self.now)
        self.now = t

    def submit(self, task: Task) -> None:
        self._driver_time()
        self.queue.append(task)
        self._dispatch()
        self.last_submit, self.area_at_last_submit = self.now, self.area

    def _dispatch(self) -> None:
        while self.queue and len(self.running) < self.workers:
            task = self.queue.popleft()
            seconds = self.duration(task)
            heapq.heappush(self.running, _Running(self.now + seconds, next(self._order), task, seconds))
            self.on_start(task.trial_id)

    def pending(self) -> int:
        return len(self.queue) + len(self.running)

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        self._driver_time()
        if not self.running:
            return []
        assert self.evaluator is not None, "start() the executor first"
        self._advance(max(self.now, self.running[0].finish))
        done: list[tuple[int, EvalResult]] = []
        while self.running and self.running[0].finish <= self.now:
            item = heapq.heappop(self.running)
            self.busy += item.seconds
            result = safe_evaluate(self.evaluator, item.task.arch, item.task.seed)
            done.append((item.task.trial_id, EvalResult(result.status, result.metrics,
                                                        cost=item.seconds, error=result.error)))
        self._dispatch()
        self._mark = time.perf_counter()  # the evaluator's answer stands for remote work
        return done

    def utilisation(self) -> float:
        """Busy worker time over workers x makespan (the virtual time of the last finish)."""
        return self.busy / (self.workers * self.now) if self.now > 0 else 0.0

    def utilisation_before_drain(self) -> float:
        """The same up to the last submission: how busy the workers were kept while there
        was still work to hand out (after it, the last children only finish)."""
        return self.area_at_last_submit / (self.workers * self.last_submit) if self.last_submit > 0 else 0.0


class SyntheticEvaluator(Evaluator):
    """A cheap, fixed reward landscape over any space: each (position, token) of the
    architecture's token sequence adds a weight drawn from ``seed``; the sum, scaled by the
    sequence length, is squashed into an accuracy in (0.5, 1). Learnable (a policy can find
    the good tokens) and free of noise, so best-reward curves compare strategies, not luck."""

    def __init__(self, space: SearchSpace, seed: int = 0) -> None:
        self.space = space
        self.seed = seed
        self._weights: dict[int, np.ndarray] = {}

    def _weight(self, position: int, token: int) -> float:
        row = self._weights.get(position)
        if row is None or token >= len(row):
            size = max(64, token + 1)
            row = np.random.default_rng([self.seed, position]).normal(size=size)
            self._weights[position] = row
        return float(row[token])

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        tokens = self.space.space_of(arch).to_tokens(arch)  # at its own depth (depth schedule)
        score = sum(self._weight(i, t) for i, t in enumerate(tokens)) / math.sqrt(max(1, len(tokens)))
        acc = 0.5 + 0.5 / (1.0 + math.exp(-score))
        return EvalResult("complete", {"val_acc": acc, "val_acc_max_last": acc})
