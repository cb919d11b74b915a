"""Evaluations one after another in this process (debugging, tabular searches)."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

from nasrl.evaluators.base import EvalResult, epoch_reports
from nasrl.execution.base import Executor, Task, safe_evaluate


class SerialExecutor(Executor):
    name = "serial"

    def __init__(self, **kwargs: float | int | None) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.queue: deque[Task] = deque()

    @property
    def capacity(self) -> int:
        return 1

    def submit(self, task: Task) -> None:
        self.queue.append(task)

    def pending(self) -> int:
        return len(self.queue)

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        if not self.queue:
            return []
        assert self.evaluator is not None, "start() the executor first"
        task = self.queue.popleft()
        self.on_start(task.trial_id)
        # the driver decides in this very call, between two epochs: pruning is deterministic
        def report(done: int, total: int, seconds: float, metrics: Mapping[str, float]) -> bool:
            return self.progress(task.trial_id, done, total, seconds, metrics)

        with epoch_reports(report):
            return [(task.trial_id, safe_evaluate(self.evaluator, task.arch, task.seed))]
