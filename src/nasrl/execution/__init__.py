"""Where evaluations run: serially, on a local process pool, or on Ray."""

from __future__ import annotations

from nasrl.errors import NasrlError
from nasrl.execution.base import Executor, Task, safe_evaluate
from nasrl.execution.process import ProcessExecutor, cpu_count
from nasrl.execution.serial import SerialExecutor

EXECUTORS = ("serial", "process", "ray")


def make_executor(
    name: str,
    *,
    workers: int | None = None,
    ray_address: str | None = None,
    max_retries: int = 2,
    trial_timeout: float | None = None,
) -> Executor:
    if name == "serial":
        return SerialExecutor(max_retries=max_retries, trial_timeout=trial_timeout)
    if name == "process":
        return ProcessExecutor(workers, max_retries=max_retries, trial_timeout=trial_timeout)
    if name == "ray":
        from nasrl.execution.ray import RayExecutor

        return RayExecutor(ray_address, workers=workers, max_retries=max_retries, trial_timeout=trial_timeout)
    raise NasrlError(f"unknown executor {name!r} (known: {', '.join(EXECUTORS)})")


__all__ = [
    "EXECUTORS",
    "Executor",
    "ProcessExecutor",
    "SerialExecutor",
    "Task",
    "cpu_count",
    "make_executor",
    "safe_evaluate",
]
