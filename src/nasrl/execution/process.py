"""A local pool of worker processes, each evaluating one architecture at a time.

Own workers rather than ``concurrent.futures.ProcessPoolExecutor``: when one worker dies
(killed, out of memory) or overruns the trial timeout, only that worker is replaced and
only its task is retried or failed; a ``ProcessPoolExecutor`` breaks as a whole. Workers
are spawned (not forked: torch and threads do not survive a fork) and torch's CPU threads
are divided among them.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import signal
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from nasrl.evaluators.base import EpochReport, EvalResult, Evaluator, epoch_reports
from nasrl.execution.base import Executor, Task, safe_evaluate, timed_out
from nasrl.spaces.base import Architecture


def _worker_main(conn: Connection, evaluator_blob: bytes, threads: int, parent_pid: int) -> None:
    from nasrl.signals import die_with_parent

    die_with_parent(parent_pid)
    # Ctrl-C reaches the whole process group; the driver stops its workers itself, so a
    # worker must not die mid-send with a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # so must a group-wide SIGTERM (kill -TERM -PGID, systemd, SLURM): a worker killed by it
    # would count as a death and could fail its trial for good; the driver's own clean stop
    # and PR_SET_PDEATHSIG end the workers
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import torch

    torch.set_num_threads(threads)
    # the evaluator was pickled by our own parent process a moment ago: trusted input
    evaluator: Evaluator = pickle.loads(evaluator_blob)
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        trial_id, arch_json, seed, stoppable = message
        with epoch_reports(_epoch_sender(conn, trial_id, stoppable)):
            result = safe_evaluate(evaluator, Architecture.from_json(arch_json), seed)
        try:
            conn.send((trial_id, result))
        except OSError:
            return  # the driver is gone (it re-runs unfinished trials when resumed)


EPOCH = "epoch"  # tags a progress message; a result is a (trial id, EvalResult) pair


def _epoch_sender(conn: Connection, trial_id: int, stoppable: bool) -> EpochReport:
    def send(done: int, total: int, seconds: float, metrics: Mapping[str, float]) -> bool:
        conn.send((EPOCH, trial_id, done, total, seconds, dict(metrics)))
        if not stoppable:
            return False
        # pruning: the driver answers every report (continue or stop) before this child
        # trains another epoch, so the decision reaches it between two epochs
        try:
            return bool(conn.recv())
        except (EOFError, OSError):
            return True  # the driver is gone: nobody will read this child's result

    return send


@dataclass
class _Worker:
    process: Any
    conn: Connection
    task: Task | None = None
    started: float = 0.0


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class ProcessExecutor(Executor):
    name = "process"

    def __init__(
        self,
        workers: int | None = None,
        *,
        threads_per_worker: int | None = None,
        max_retries: int = 2,
        trial_timeout: float | None = None,
    ) -> None:
        super().__init__(max_retries=max_retries, trial_timeout=trial_timeout)
        self.workers_wanted = workers or cpu_count()
        self.threads = threads_per_worker or max(1, cpu_count() // self.workers_wanted)
        self.ctx = mp.get_context("spawn")
        self.workers: list[_Worker] = []
        self.queue: deque[Task] = deque()
        self.attempts: dict[int, int] = {}
        self.blob = b""

    @property
    def capacity(self) -> int:
        return self.workers_wanted

    def start(self, evaluator: Evaluator, on_start: Callable[[int], None] | None = None) -> None:
        super().start(evaluator, on_start)
        self.blob = pickle.dumps(evaluator)
        self.workers = [self._spawn() for _ in range(self.workers_wanted)]

    def _spawn(self) -> _Worker:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(target=_worker_main, args=(child, self.blob, self.threads, os.getpid()),
                                   daemon=True)
        process.start()
        child.close()
        return _Worker(process, parent)

    def submit(self, task: Task) -> None:
        self.queue.append(task)
        self._dispatch()

    def pending(self) -> int:
        return len(self.queue) + sum(w.task is not None for w in self.workers)

    def _dispatch(self) -> None:
        for worker in self.workers:
            if worker.task is None and self.queue:
                task = self.queue.popleft()
                worker.task, worker.started = task, time.monotonic()
                self.attempts[task.trial_id] = self.attempts.get(task.trial_id, 0) + 1
                worker.conn.send((task.trial_id, task.arch.to_json(), task.seed, self.stoppable))
                self.on_start(task.trial_id)

    def wait(self, timeout: float | None = None) -> list[tuple[int, EvalResult]]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            busy = [w for w in self.workers if w.task is not None]
            if not busy:
                return []
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if self.trial_timeout is not None:
                nearest = min(w.started + self.trial_timeout for w in busy) - time.monotonic()
                left = max(0.0, nearest) if left is None else min(left, max(0.0, nearest))
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=left)
            done = self._collect(busy, ready)
            self._dispatch()
            if done or (deadline is not None and time.monotonic() >= deadline):
                return done

    def _collect(self, busy: list[_Worker], ready: list[Any]) -> list[tuple[int, EvalResult]]:
        done: list[tuple[int, EvalResult]] = []
        now = time.monotonic()
        for worker in busy:
            assert worker.task is not None
            task = worker.task
            if worker.conn in ready:
                try:
                    message = worker.conn.recv()
                except (EOFError, OSError):
                    pass  # died while sending: handled as a death below
                else:
                    if message[0] == EPOCH:
                        stop = self.progress(*message[1:])
                        if self.stoppable:
                            with contextlib.suppress(OSError):  # died meanwhile: handled as a death
                                worker.conn.send(stop)
                        continue  # still running; its result comes later
                    worker.task = None
                    done.append(message)
                    continue
            if not worker.process.is_alive() or worker.process.sentinel in ready:
                code = worker.process.exitcode
                self._replace(worker)
                if self.attempts[task.trial_id] <= self.max_retries:
                    self.queue.appendleft(task)  # retried first, same architecture and seed
                else:
                    done.append(
                        (
                            task.trial_id,
                            EvalResult(
                                "failed",
                                error=f"worker died (exit code {code}) in "
                                f"{self.attempts[task.trial_id]} attempts",
                            ),
                        )
                    )
            elif self.trial_timeout is not None and now - worker.started >= self.trial_timeout:
                self._replace(worker, kill=True)
                done.append((task.trial_id, timed_out(self.trial_timeout)))
        return done

    def _replace(self, worker: _Worker, kill: bool = False) -> None:
        if kill and worker.process.is_alive():
            worker.process.kill()
        worker.process.join(timeout=5)
        worker.conn.close()
        fresh = self._spawn()
        worker.process, worker.conn, worker.task = fresh.process, fresh.conn, None

    def worker_pids(self) -> list[int]:
        return [int(w.process.pid) for w in self.workers]

    def busy_pids(self) -> list[int]:
        return [int(w.process.pid) for w in self.workers if w.task is not None]

    def close(self) -> None:
        for worker in self.workers:
            if worker.task is not None and worker.process.is_alive():
                # its result would be dropped anyway (a resumed run re-runs the trial):
                # stop it now rather than wait for its training to end
                worker.process.kill()
                continue
            with contextlib.suppress(OSError):  # already dead: nothing to tell
                worker.conn.send(None)
        for worker in self.workers:
            worker.process.join(timeout=2)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join(timeout=2)
            worker.conn.close()
        self.workers = []
