"""Asynchronous search (mode = async) and the simulated executor of the scale simulation."""

from __future__ import annotations

import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution import SerialExecutor, Task
from nasrl.execution.simulated import SimulatedExecutor, SyntheticEvaluator
from nasrl.search import Search, SearchConfig
from nasrl.spaces import Architecture, get_space
from nasrl.store import StoreError, TrialStore
from test_search import SleepyEvaluator, nb201_archs, tabular_config


# -- the simulated executor --------------------------------------------------------------------------
class Fixed(Evaluator):
    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        return EvalResult("complete", {"val_acc": seed / 10})


def test_simulated_executor_keeps_virtual_time_and_utilisation_by_hand() -> None:
    # two workers; A takes 3 s, B and C 1 s each; C is submitted when B finishes (t = 1)
    seconds = {0: 3.0, 1: 1.0, 2: 1.0}
    executor = SimulatedExecutor(2, lambda task: seconds[task.trial_id], driver_time_counts=False)
    started: list[int] = []
    executor.start(Fixed(), started.append)
    a, b, c = nb201_archs(3)
    executor.submit(Task(0, a, seed=1))
    executor.submit(Task(1, b, seed=2))
    assert executor.wait() == [(1, EvalResult("complete", {"val_acc": 0.2}, cost=1.0))]
    assert executor.now == 1.0
    executor.submit(Task(2, c, seed=3))
    assert [tid for tid, _ in executor.wait()] == [2] and executor.now == 2.0
    assert [tid for tid, _ in executor.wait()] == [0] and executor.now == 3.0
    assert executor.wait() == [] and executor.pending() == 0
    assert started == [0, 1, 2]
    # busy 3 + 1 + 1 = 5 worker-seconds of 2 x 3; both busy until the last submission
    assert executor.utilisation() == pytest.approx(5 / 6)
    assert executor.utilisation_before_drain() == pytest.approx(1.0)


def test_simulated_executor_queues_beyond_its_workers_and_counts_driver_time() -> None:
    for counts in (False, True):
        executor = SimulatedExecutor(1, lambda task: 0.01, driver_time_counts=counts)
        executor.start(Fixed())
        a, b = nb201_archs(2)
        executor.submit(Task(0, a, seed=0))
        executor.submit(Task(1, b, seed=0))
        assert executor.pending() == 2
        time.sleep(0.05)  # the driver "works" while the first child runs
        assert [tid for tid, _ in executor.wait()] == [0]
        # counted, the driver's time has moved the clock past the child's finish
        assert executor.now >= 0.05 if counts else executor.now == 0.01
        assert [tid for tid, _ in executor.wait()] == [1]
        assert executor.now >= 0.06 if counts else executor.now == 0.02


def test_synthetic_rewards_are_fixed_by_the_seed_and_separate_architectures() -> None:
    space = get_space("conv")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(20)]
    first = [SyntheticEvaluator(space, seed=1).evaluate(a, 0).metrics["val_acc"] for a in archs]
    again = [SyntheticEvaluator(space, seed=1).evaluate(a, 5).metrics["val_acc"] for a in archs]
    other = [SyntheticEvaluator(space, seed=2).evaluate(a, 0).metrics["val_acc"] for a in archs]
    assert first == again and first != other
    assert len(set(first)) == 20 and all(0.5 < v < 1 for v in first)


# -- async searches --------------------------------------------------------------------------------
def async_config(table: Path, **kw: object) -> SearchConfig:
    return tabular_config(table, mode="async", **kw)


def check_complete_async_run(run: Path, budget: int) -> list[int]:
    """Every trial finished and told once; the strategy learned from all of them; returns
    the staleness of each trial."""
    store = TrialStore(run / "runs.db", readonly=True)
    try:
        trials = store.trials()
        told, _, state = store.strategy_state()
        stale = store.staleness()
        assert store.counts()["evaluated"] == budget
        assert all(t.finished and t.told for t in trials)
        assert sorted(stale) == [t.id for t in trials]
        assert told >= len(trials)  # a resumed run may tell a trial again
        if "num_updates" in state:  # REINFORCE: learned every 5 results of its own draws
            complete = len([t for t in trials if t.state == "complete"])
            # local asks (a share of the asks, at most) are never learned from
            share = state["local"]["share"] if "local" in state else 0.0
            assert state["num_updates"] >= math.floor(complete * (1 - share)) // 5 - 1
        return [stale[t.id].staleness for t in trials]
    finally:
        store.close()


def test_async_search_completes_serially_and_on_the_process_pool(tmp_path: Path,
                                                                 nb201_table_path: Path) -> None:
    serial = Search.create(tmp_path / "serial", async_config(nb201_table_path, budget=20))
    result = serial.run(SerialExecutor())
    assert result.counts["evaluated"] == 20 and result.best is not None
    serial.close()
    # serially every ask waits for the results before it: asked by the newest policy, except
    # the batch asked together (5 at a time) while an update falls inside it
    assert max(check_complete_async_run(tmp_path / "serial", 20)) <= 1
    pool = Search.create(tmp_path / "pool", async_config(nb201_table_path, budget=20, executor="process",
                                                         workers=2))
    pool.run(evaluator=SleepyEvaluator(0.2))
    pool.close()
    assert min(check_complete_async_run(tmp_path / "pool", 20)) == 0


def test_async_rounds_hold_the_policy_version_and_max_staleness_stops_learning(tmp_path: Path,
                                                                            nb201_table_path: Path) -> None:
    # max_staleness 0: a result asked before the latest update is stored but not learned from
    search = Search.create(tmp_path / "run", async_config(nb201_table_path, budget=30, max_staleness=0,
                                                          executor="process", workers=2))
    search.run(evaluator=SleepyEvaluator(0.1))
    store = search.store
    stale = store.staleness()
    trials = store.trials()
    assert [t.round for t in trials] == sorted(t.round for t in trials)  # asked by ever newer policies
    unlearned = [s for s in stale.values() if not s.learned]
    assert unlearned and all(s.staleness > 0 for s in unlearned)
    assert all(s.learned for s in stale.values() if s.staleness == 0)
    assert all(stale[t.id].told_update - t.round == stale[t.id].staleness for t in trials)
    search.close()


def test_async_retries_the_trial_of_a_killed_worker(tmp_path: Path, nb201_table_path: Path) -> None:
    pids = tmp_path / "pids"
    pids.mkdir()

    def kill_first_busy_worker() -> None:
        deadline = time.monotonic() + 120
        while not list(pids.glob("*.pid")) and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(next(pids.glob("*.pid")).stem), signal.SIGKILL)

    search = Search.create(tmp_path / "run", async_config(nb201_table_path, budget=6, executor="process",
                                                          workers=2, max_retries=1, strategy="random"))
    killer = threading.Thread(target=kill_first_busy_worker)
    killer.start()
    result = search.run(evaluator=SleepyEvaluator(1.0, str(pids)))
    killer.join()
    trials = search.store.trials()
    search.close()
    assert result.counts["evaluated"] == 6 and result.counts["complete"] == 6
    assert sorted(t.attempts for t in trials) == [1, 1, 1, 1, 1, 2]


def finished_trials(run: Path) -> dict[int, tuple[str, int, float | None, str]]:
    try:
        store = TrialStore(run / "runs.db", readonly=True)
    except StoreError:
        return {}
    try:
        return {t.id: (t.arch.key, t.seed, t.reward, t.state) for t in store.trials() if t.finished}
    except sqlite3.Error:
        return {}
    finally:
        store.close()


def kill_9_and_resume(run: Path, first: list[str], resume: list[str], budget: int, seed: int,
                      attempts: int = 6) -> int:
    """Start ``first``, kill -9 the driver at random moments (resuming with ``resume``) until
    it completes; after each kill, every trial finished before it must survive unchanged.
    Returns how many kills landed."""
    rng = np.random.default_rng(seed)
    kills = 0
    for attempt in range(attempts):
        cmd = first if attempt == 0 else resume
        proc = subprocess.Popen([sys.executable, "-m", "nasrl", *cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        target = len(finished_trials(run)) + int(rng.integers(3, 8))
        before: dict[int, tuple[str, int, float | None, str]] = {}
        while proc.poll() is None:
            seen = finished_trials(run)
            if len(seen) >= target:
                time.sleep(float(rng.uniform(0, 0.1)))
                before = finished_trials(run)  # the last look before the kill
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.01)
        _, err = proc.communicate(timeout=120)
        after = finished_trials(run)
        assert {k: after.get(k) for k in before} == before, "a finished trial was lost or changed"
        if proc.returncode == 0:
            break
        assert proc.returncode == -signal.SIGKILL, err
    done = subprocess.run([sys.executable, "-m", "nasrl", *resume], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    check_complete_async_run(run, budget)
    return kills


def test_kill_9_of_an_async_driver_then_resume_loses_no_finished_trial(tmp_path: Path,
                                                                       nb201_table_path: Path) -> None:
    budget, run = 40, tmp_path / "run"
    first = ["search", "--space", "nb201", "--evaluator", "tabular", "--table", str(nb201_table_path),
             "--budget", str(budget), "--executor", "process", "--workers", "2", "--seed", "3",
             "--set", "mode=async", "--set", "async_checkpoint_seconds=0", "--quiet", "--out", str(run)]
    kills = kill_9_and_resume(run, first, ["resume", str(run), "--quiet"], budget, seed=0)
    assert kills >= 2


def test_async_settings_are_checked_and_rounds_stay_the_default() -> None:
    from nasrl.config import ConfigError
    from nasrl.search import load_config

    assert SearchConfig().mode == "rounds"
    for bad, named in (({"mode": "later"}, "mode"), ({"max_staleness": -1}, "max_staleness"),
                       ({"async_checkpoint_seconds": -1.0}, "async_checkpoint_seconds")):
        with pytest.raises(ConfigError, match=named):
            load_config(bad)
