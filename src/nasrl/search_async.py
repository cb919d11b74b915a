"""The asynchronous search loop (``mode = "async"``): workers never wait for a round.

Whenever a worker is free the strategy is asked for more architectures (as many as there
are free workers, and at least ``round_size``, by default the strategy's batch), which are
queued in the store and submitted at once. Each finished child is stored the moment it arrives and
told to the strategy in the order results arrive; REINFORCE updates every ``batch_size``
results, so a child may have been asked by a policy a few updates older than the one it
is told to -- the paper's asynchronous controller replicas, in one process. That lag is
the trial's *staleness*: ``trial.round`` holds the strategy's update count when it was
asked, and the ``staleness`` table the count when it was told and the difference.
``max_staleness`` bounds it: a staler result is stored and counts in the budget but is
told as failed (remembered as seen, not learned from).

What the store holds, so that ``kill -9`` at any moment loses no finished trial and never
corrupts the strategy:

* every asked architecture is queued before it runs, and every result is written the
  moment it arrives, with its staleness once told: trials are never lost;
* the strategy state is a *checkpoint*, saved together with the told marks of the
  results it has learned from, in one transaction, at most every
  ``async_checkpoint_seconds`` (and at the end). Saving it after every result would
  cost time linear in the architectures seen (its seen set), quadratic over a run.

A resumed run loads the checkpoint and tells it again, in the order they finished, the
finished trials it had not learned from; unfinished trials run again with their seeds.
Trials asked after the checkpoint are not in the checkpoint's seen set, so the restored
strategy may ask some of them again: such a repeat is answered from the first trial's
result (no budget), and told like any repeat.

Unlike synchronous rounds this is not reproducible: what is asked next depends on which
results came back first, so two runs with one seed (or a run and its resumed twin) differ
in their trials. Use rounds where a search must be repeatable to the bit.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from nasrl.errors import NasrlError
from nasrl.evaluators.base import Evaluator
from nasrl.execution import Executor, Task
from nasrl.signals import check_stop
from nasrl.spaces.base import Architecture
from nasrl.store.sqlite import Staleness, StoreError, Trial
from nasrl.strategies.base import Observation

if TYPE_CHECKING:
    from nasrl.search import Search, SearchResult


def strategy_updates(strategy: Any, told: int) -> int:
    """How many times the strategy has learned: REINFORCE's gradient updates; a strategy
    without such a counter (evolution, random) changes with every result told."""
    updates = getattr(strategy, "num_updates", None)
    return told if updates is None else int(updates)


@dataclass
class AsyncLoop:
    """One async run of ``search``: the counters below are rebuilt from the store on resume."""

    search: Search
    executor: Executor | None
    evaluator: Evaluator | None
    told: int = 0
    """Results told so far (the strategy row's ``round`` in an async run)."""
    asked: int = 0
    """Architectures asked so far (the strategy row's ``asked``)."""
    trials: int = 0
    """Rows in the trials table (reused ones included): the next trial's seed index."""
    planned: int = 0
    """Budget taken: trials that are not reused, finished or not."""
    waiting: dict[int, list[Trial]] = field(default_factory=dict)
    """Source trial id -> reused trials waiting for its result."""
    told_since: list[int] = field(default_factory=list)
    """Trials told since the last checkpoint (marked told by the next one)."""
    checkpointed: float = field(default_factory=time.monotonic)
    overhead: float = 0.0

    # -- the loop ------------------------------------------------------------------------------
    def run(self) -> SearchResult:
        from nasrl.search import SearchResult

        start = time.perf_counter()
        search, store = self.search, self.search.store
        store.set_status("running")
        store.requeue_unfinished()
        search._load_curves()
        self.told, self.asked, state = store.strategy_state()
        try:
            search.strategy.load_state_dict(state)
        except Exception as exc:
            raise StoreError(f"{search.run_dir}: strategy state does not fit this run ({exc})") from None
        executor = None
        try:
            t0 = time.perf_counter()
            todo = self._recover()
            self.overhead += time.perf_counter() - t0
            if todo or not self._spent():
                executor = search._start_executor(self.executor, self.evaluator)
                for trial in todo:
                    executor.submit(Task(trial.id, trial.arch, trial.seed))
                self._loop(executor)
            t0 = time.perf_counter()
            self._checkpoint()
            self.overhead += time.perf_counter() - t0
            store.set_status("finished")
        finally:
            if executor is not None:
                executor.close()
            for listener in search.listeners:
                listener.close()
        best = store.best(1)
        return SearchResult(search.run_dir, store.counts(), best[0] if best else None,
                            time.perf_counter() - start, self.overhead)

    def _loop(self, executor: Executor) -> None:
        while True:
            t0 = time.perf_counter()
            self._fill(executor)
            self.overhead += time.perf_counter() - t0
            running = executor.pending()
            for listener in self.search.listeners:
                listener.on_running(min(executor.capacity, running))
            if not running:
                break
            done = executor.wait()
            t0 = time.perf_counter()
            finished: list[Trial] = []
            for trial_id, result in done:
                self.search._record(trial_id, result)
                finished.append(self.search.store.trial(trial_id))
                for twin in self.waiting.pop(trial_id, []):
                    finished.append(self._copy_result(twin))
            self._tell(finished)
            self.overhead += time.perf_counter() - t0
            check_stop()  # the batch is stored and told: a dropped stop (nasrl.signals) stops here
        if self.waiting:
            raise NasrlError(f"trials {sorted(self.waiting)} were never run (executor lost them)")

    def _spent(self) -> bool:
        cfg = self.search.config
        # a strategy that only proposes repeats (a tiny space) must not ask forever
        return self.planned >= cfg.budget or self.trials >= 50 * cfg.budget

    def _fill(self, executor: Executor) -> None:
        """Ask for as many architectures as there are free workers, until the budget is
        queued; repeats answered from earlier results free no worker, so ask again."""
        cfg = self.search.config
        # at least a strategy batch per ask, as each of the paper's replicas sampled its m
        # children from one copy of the policy: sampling n costs about what sampling one
        # does, and the extra ones wait in the executor's queue for the next free workers
        batch = cfg.round_size or self.search.strategy.batch_size
        while not self._spent():
            free = executor.capacity - executor.pending()
            if free <= 0:
                return
            n = min(max(free, batch), cfg.budget - self.planned)
            # through the search: the depth schedule gives each architecture its depth
            for trial in self._queue(self.search.ask_from(self.trials, n)):
                if trial.reused_from is None:
                    executor.submit(Task(trial.id, trial.arch, trial.seed))
                else:
                    self._reuse(trial)

    # -- asking --------------------------------------------------------------------------------
    def _queue(self, archs: Sequence[Architecture]) -> list[Trial]:
        """Queue the asked architectures; their ``round`` is the update count of the policy
        that asked them."""
        from nasrl.search import trial_seed

        search, store = self.search, self.search.store
        rows: list[tuple[Architecture, int, int | None]] = []
        for i, arch in enumerate(archs):
            reused: int | None = None
            if search.config.reuse_results:
                prior = store.first_by_key(arch.key)
                twin = next((j for j in range(i) if archs[j].key == arch.key), None)
                reused = prior.id if prior is not None else None if twin is None else -(twin + 1)
            rows.append((arch, trial_seed(search.config.seed, self.trials + i), reused))
        ids = store.add_trials(strategy_updates(search.strategy, self.told), rows)
        self.asked += len(archs)
        self.trials += len(archs)
        self.planned += sum(r[2] is None for r in rows)
        return [store.trial(i) for i in ids]

    def _reuse(self, trial: Trial) -> None:
        """A repeat: told the first evaluation's result now, or when that one finishes."""
        assert trial.reused_from is not None
        source = self.search.store.trial(trial.reused_from)
        if source.finished:
            self._tell([self._copy_result(trial)])
        else:
            self.waiting.setdefault(source.id, []).append(trial)

    def _copy_result(self, trial: Trial) -> Trial:
        store = self.search.store
        assert trial.reused_from is not None
        src = store.trial(trial.reused_from)
        store.finish(trial.id, src.state, src.reward, src.metrics, src.error, 0.0, src.feasible)
        return store.trial(trial.id)

    # -- telling -------------------------------------------------------------------------------
    def _tell(self, trials: Sequence[Trial]) -> None:
        """Tell finished trials one by one (an update may fall between two of them, and the
        next one's staleness counts it); record their staleness; checkpoint when due."""
        if not trials:
            return
        search = self.search
        strategy, cfg = search.strategy, search.config
        rows: list[Staleness] = []
        updates: list[tuple[int, dict[str, float]]] = []
        for trial in trials:
            now = strategy_updates(strategy, self.told)
            # a trial asked after the checkpoint a resumed run started from has a later
            # round than the restored counter: it was asked by (at most) the current policy
            stale = max(0, now - trial.round)
            learned = cfg.max_staleness is None or stale <= cfg.max_staleness
            obs = search._observation(trial)
            strategy.tell([obs if learned else Observation(obs.arch, None)])
            self.told += 1
            rows.append(Staleness(trial.id, now, stale, learned))
            after = strategy_updates(strategy, self.told)
            if after != now and getattr(strategy, "num_updates", None) is not None:
                updates.append((after - 1, {**strategy.metrics(), "async/staleness": float(stale)}))
        search.store.record_tells(rows, updates)
        self.told_since.extend(t.id for t in trials)
        if time.monotonic() - self.checkpointed >= cfg.async_checkpoint_seconds:
            self._checkpoint()
        for update, metrics in updates:
            for listener in search.listeners:
                listener.on_round(update, metrics)

    def _checkpoint(self) -> None:
        self.search.store.commit_tells(self.told_since, self.told, self.asked,
                                       self.search.strategy.state_dict())
        self.told_since = []
        self.checkpointed = time.monotonic()

    # -- resuming ------------------------------------------------------------------------------
    def _recover(self) -> list[Trial]:
        """After a crash: tell what finished untold, re-attach repeats to their sources, and
        return the unfinished trials to run again (never asked again)."""
        store = self.search.store
        try:
            trials = store.trials()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.search.run_dir}: damaged run database ({exc})") from None
        self.trials = len(trials)
        self.planned = sum(t.reused_from is None for t in trials)
        by_id = {t.id: t for t in trials}
        untold = [t for t in trials if t.finished and not t.told]
        untold.sort(key=lambda t: (t.finished_at if t.finished_at is not None else math.inf, t.id))
        self._tell(untold)
        todo: list[Trial] = []
        for trial in trials:
            if trial.finished:
                continue
            if trial.reused_from is None:
                todo.append(trial)
            elif by_id[trial.reused_from].finished:
                self._tell([self._copy_result(trial)])
            else:
                self.waiting.setdefault(trial.reused_from, []).append(trial)
        return todo


def run_async(search: Search, executor: Executor | None, evaluator: Evaluator | None) -> SearchResult:
    """Run ``search`` asynchronously until its budget is spent (see the module docstring)."""
    return AsyncLoop(search, executor, evaluator).run()
