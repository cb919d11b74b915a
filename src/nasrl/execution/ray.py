"""Ray Core: children as Ray tasks on a local Ray or a cluster (``address``).

Ray retries a task whose worker process died (``max_retries``); a task still failing after
that, or one that overruns the trial timeout (cancelled with force), comes back as a
failed result. With CUDA on the nodes, each child asks for ``gpu_fraction`` of a GPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nasrl.errors import NasrlError
from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution.base import Executor, Task, safe_evaluate, timed_out
from nasrl.spaces.base import Architecture


def _evaluate(evaluator: Evaluator, arch_json: str, seed: int, threads: int) -> EvalResult:
    import torch

    torch.set_num_threads(threads)
    return safe_evaluate(evaluator, Architecture.from_json(arch_json), seed)


class RayExecutor(Executor):
    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        cpus_per_trial: float = 1.0,
        gpu_fraction: float | None = None,
        max_retries: int = 2,
        trial_timeout: float | None = None,
    ) -> None:
        super().__init__(max_retries=max_retries, trial_timeout=trial_timeout)
        self.address = address
        self.workers = workers
        self.cpus_per_trial = cpus_per_trial
        self.gpu_fraction = gpu_fraction
        self.refs: dict[Any, tuple[Task, float]] = {}
        self._capacity = 1
        self._started_ray = False

    @property
    def capacity(self) -> int:
        return self._capacity

    def start(self, evaluator: Evaluator, on_start: Callable[[int], None] | None = None) -> None:
        super().start(evaluator, on_start)
        try:
            import ray
        except ImportError:
            raise NasrlError("executor 'ray' needs Ray: pip install 'nasrl[ray]'") from None
        if not ray.is_initialized():
            try:
                ray.init(
                    address=self.address,
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                )
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise NasrlError(
                    f"cannot connect to Ray at {self.address or 'a new local instance'}: {exc}".splitlines()[
                        0
                    ]
                ) from None
            self._started_ray = True
        resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
        gpus = float(resources.get("GPU", 0.0))
        if self.gpu_fraction is None:
            self.gpu_fraction = 0.25 if gpus > 0 else 0.0
        slots = int(float(resources.get("CPU", 1.0)) // self.cpus_per_trial)
        if self.gpu_fraction > 0:
            slots = min(slots, int(gpus / self.gpu_fraction))
        self._capacity = max(1, min(slots, self.workers) if self.workers else slots)
        self.evaluator_ref = ray.put(evaluator)
        self.remote = ray.remote(_evaluate).options(
            num_cpus=self.cpus_per_trial,
            num_gpus=self.gpu_fraction,
            max_retries=self.max_retries,
            retry_exceptions=False,
        )

    def submit(self, task: Task) -> None:
        ref = self.remote.remote(
            self.evaluator_ref, task.arch.to_json(), task.seed, max(1, int(self.cpus_per_trial))
        )
        self.refs[ref] = (task, time.monotonic())
        self.on_start(task.trial_id)

    def pending(self) -> int:
        return len(self.refs)

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        import ray

        if not self.refs:
            return []
        left = timeout
        if self.trial_timeout is not None:
            nearest = min(t0 for _, t0 in self.refs.values()) + self.trial_timeout - time.monotonic()
            left = max(0.0, nearest) if left is None else min(left, max(0.0, nearest))
        ready, _ = ray.wait(list(self.refs), num_returns=1, timeout=left)
        done: list[tuple[int, EvalResult]] = []
        for ref in ready:
            task, _ = self.refs.pop(ref)
            try:
                done.append((task.trial_id, ray.get(ref)))
            except ray.exceptions.RayError as exc:  # the worker died more than max_retries times
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                done.append(
                    (task.trial_id, EvalResult("failed", error=f"{type(exc).__name__}: {message}"))
                )
        if self.trial_timeout is not None:
            now = time.monotonic()
            for ref, (task, t0) in list(self.refs.items()):
                if now - t0 >= self.trial_timeout:
                    ray.cancel(ref, force=True)
                    del self.refs[ref]
                    done.append((task.trial_id, timed_out(self.trial_timeout)))
        return done

    def close(self) -> None:
        import ray

        for ref in list(self.refs):
            ray.cancel(ref, force=True)
        self.refs.clear()
        if self._started_ray:
            ray.shutdown()
