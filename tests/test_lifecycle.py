"""A run's lifecycle: one writer at a time, clean stops, workers that die with their driver,
status that tells a live run from an interrupted one, budgets changed on resume, and
progress reported from inside running trials."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from nasrl.errors import NasrlError
from nasrl.evaluators.base import EvalResult, Evaluator, report_epoch
from nasrl.execution import ProcessExecutor, SerialExecutor, Task
from nasrl.lock import RunLock, writer
from nasrl.search import Search, SearchConfig
from nasrl.signals import Terminated, handle_sigterm, stop_handled
from nasrl.spaces import Architecture, get_space
from nasrl.store import TrialStore

REPO = Path(__file__).resolve().parents[1]


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True,
                          timeout=timeout)


def tabular_args(table: Path, run: Path, budget: int) -> list[str]:
    return ["search", "--space", "nb201", "--evaluator", "tabular", "--table", str(table), "--budget",
            str(budget), "--executor", "serial", "--seed", "3", "--quiet", "--out", str(run)]


def trial_rows(run: Path) -> list[tuple[int, str, int, str]]:
    store = TrialStore(run / "runs.db", readonly=True)
    rows = [(t.id, t.state, t.attempts, t.arch.key) for t in store.trials()]
    store.close()
    return rows


def wait_for(what: str, check: object, limit: float = 120) -> None:
    """Poll ``check()`` until true; the limit only keeps a broken build from hanging CI."""
    deadline = time.monotonic() + limit
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    """Running (a zombie that nobody reaped yet has stopped running, so it counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


@contextmanager
def frozen_search(table: Path, run: Path) -> Iterator[subprocess.Popen[str]]:
    """A tabular search started in a subprocess and stopped (SIGSTOP) once it has trials,
    so the test looks at a live writer that cannot move on meanwhile."""
    proc = subprocess.Popen([sys.executable, "-m", "nasrl", *tabular_args(table, run, 5000)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for("the search to run trials", lambda: (run / "runs.db").exists() and _evaluated(run) >= 5)
        os.kill(proc.pid, signal.SIGSTOP)
        yield proc
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            os.kill(proc.pid, signal.SIGCONT)
        proc.wait(timeout=60)


def _evaluated(run: Path) -> int:
    try:
        store = TrialStore(run / "runs.db", readonly=True)
    except NasrlError:
        return 0  # not committed yet
    try:
        return store.counts()["evaluated"]
    finally:
        store.close()


# -- one writer -----------------------------------------------------------------------------------
def test_a_second_writer_is_refused_readers_stay_free_and_sigterm_stops_cleanly(
        tmp_path: Path, nb201_table_path: Path) -> None:
    run = tmp_path / "run"
    with frozen_search(nb201_table_path, run) as proc:
        before = trial_rows(run)
        second = cli("resume", str(run), "--quiet")
        assert second.returncode == 2
        assert second.stderr.count("\n") == 1 and "Traceback" not in second.stderr
        assert f"being written by pid {proc.pid}" in second.stderr
        assert trial_rows(run) == before  # the refused writer changed nothing
        # readers are not writers
        status = cli("status", str(run))
        assert status.returncode == 0, status.stderr
        assert f"running (pid {proc.pid}" in status.stdout
        assert cli("best", str(run)).returncode == 0

        os.kill(proc.pid, signal.SIGTERM)
        os.kill(proc.pid, signal.SIGCONT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=60)  # then its stderr says why it went on (or where it hung)
            pytest.fail(f"the driver ran on after SIGTERM; its stderr:\n{proc.stderr.read() if proc.stderr else ''}")
        assert proc.returncode == 143
        err = proc.stderr.read() if proc.stderr else ""
        assert err.count("\n") == 1 and "Traceback" not in err, err
        assert "terminated" in err and f"resume with: nasrl resume {run}" in err

    stopped = trial_rows(run)
    status = cli("status", str(run))
    assert f"interrupted (resume with: nasrl resume {run})" in status.stdout
    assert ", 0 running," in status.stdout
    assert TrialStore(run / "runs.db", readonly=True).run_info()["status"] == "interrupted"
    budget = sum(1 for _ in stopped) + 5  # a little more than asked, to finish soon
    done = cli("resume", str(run), "--quiet", "--budget", str(budget))
    assert done.returncode == 0, done.stderr
    # nothing computed was lost: every result from before the stop is kept as it was
    finished = {row[0]: row for row in trial_rows(run)}
    assert all(finished[r[0]] == r for r in stopped if r[1] in ("complete", "failed"))
    assert "finished;" in cli("status", str(run)).stdout


def test_status_after_kill_9_says_interrupted_not_running(tmp_path: Path, nb201_table_path: Path) -> None:
    run = tmp_path / "run"
    with frozen_search(nb201_table_path, run) as proc:
        # pretend a trial was running when the driver died (a serial tabular trial rarely is)
        store = TrialStore(run / "runs.db", readonly=True)
        queued = store.trials(state="queued")
        store.close()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    if queued:
        store = TrialStore(run / "runs.db")
        store.mark_running(queued[0].id)
        store.close()
    assert writer(run) is None
    status = cli("status", str(run))
    assert status.returncode == 0, status.stderr
    assert f"run {run}: interrupted (resume with: nasrl resume {run})" in status.stdout
    assert ", 0 running," in status.stdout
    assert cli("report", str(run)).returncode == 0  # the report reads the lock too, not the stored status
    assert "<p>interrupted (resume with" in (run / "report" / "index.html").read_text()


def test_lock_is_exclusive_records_the_holder_and_is_freed_on_release(tmp_path: Path) -> None:
    lock = RunLock(tmp_path).acquire()
    holder = writer(tmp_path)
    assert holder is not None and holder["pid"] == os.getpid()
    with pytest.raises(NasrlError, match=f"being written by pid {os.getpid()}"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert writer(tmp_path) is None
    with RunLock(tmp_path):
        assert writer(tmp_path) is not None


# -- workers die with their driver ---------------------------------------------------------------
DRIVER = """
import os, sys, time
from pathlib import Path
from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution import ProcessExecutor, Task
from nasrl.spaces import get_space
import numpy as np


class Slow(Evaluator):
    def __init__(self, pid_dir):
        self.pid_dir = pid_dir

    def evaluate(self, arch, seed):
        Path(self.pid_dir, f"{os.getpid()}.pid").write_text("")
        time.sleep(600)  # a long trial
        return EvalResult("complete", {"val_acc": 0.5})


if __name__ == "__main__":
    from driver import Slow  # pickled by module name, so the workers can import it
    executor = ProcessExecutor(2)
    executor.start(Slow(sys.argv[1]))
    rng = np.random.default_rng(0)
    for i in range(2):
        executor.submit(Task(i, get_space("nb201").sample(rng), i))
    executor.wait()
"""


def test_workers_die_when_the_driver_is_killed(tmp_path: Path) -> None:
    (tmp_path / "driver.py").write_text(textwrap.dedent(DRIVER))
    pids = tmp_path / "pids"
    pids.mkdir()
    path = [str(tmp_path), os.environ.get("PYTHONPATH", ""), str(REPO / "src")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in path if p)}
    proc = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(pids)], env=env)
    workers: list[int] = []
    try:
        wait_for("both workers to start their trials", lambda: len(list(pids.glob("*.pid"))) == 2)
        workers = [int(p.stem) for p in pids.glob("*.pid")]
        assert all(alive(pid) for pid in workers)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        # before the fix they slept out their 600 s trials
        wait_for("the orphaned workers to exit", lambda: not any(alive(pid) for pid in workers), limit=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


# -- budgets -------------------------------------------------------------------------------------
def test_resume_with_a_new_budget_records_it_and_refuses_one_below_the_work_done(
        tmp_path: Path, nb201_table_path: Path) -> None:
    run = tmp_path / "run"
    first = cli(*tabular_args(nb201_table_path, run, 10))
    assert first.returncode == 0, first.stderr
    more = cli("resume", str(run), "--budget", "15", "--quiet")
    assert more.returncode == 0, more.stderr
    assert "trials: 15/15 evaluated" in cli("status", str(run)).stdout
    assert json.loads((run / "config.json").read_text())["budget"] == 15
    again = cli("resume", str(run), "--quiet")  # keeps the recorded budget: nothing left to do
    assert again.returncode == 0 and "15 of 15 evaluated" in again.stdout

    lower = cli("resume", str(run), "--budget", "5", "--quiet")
    assert lower.returncode == 2
    assert lower.stderr.count("\n") == 1 and "Traceback" not in lower.stderr
    assert "cannot lower the budget to 5: 15 architectures" in lower.stderr
    assert "trials: 15/15 evaluated" in cli("status", str(run)).stdout


class Countdown(Evaluator):
    """A tabular-like evaluator that calls ``at_zero`` during its n-th call."""

    def __init__(self, n: int) -> None:
        self.n = n

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        self.n -= 1
        if self.n == 0:
            self.at_zero()
        return EvalResult("complete", {"val_acc": int(arch.key[:4], 16) / 65535})

    def at_zero(self) -> None:
        raise NotImplementedError


class StopAfter(Countdown):
    """Ctrl-C (KeyboardInterrupt) at the n-th call."""

    def at_zero(self) -> None:
        raise KeyboardInterrupt


def test_raising_the_budget_replays_a_round_cut_short_by_the_old_one(tmp_path: Path,
                                                                     nb201_table_path: Path) -> None:
    # budget 12 in rounds of 5: round 2 is asked with 2 architectures while round 1 runs;
    # stopped before round 1 is told, a resume must ask round 2 again with 2, not 5
    config = SearchConfig(space="nb201", evaluator="tabular", table=str(nb201_table_path), budget=12,
                          executor="serial", seed=3)
    search = Search.create(tmp_path / "run", config)
    with pytest.raises(KeyboardInterrupt):
        search.run(SerialExecutor(), evaluator=StopAfter(10))  # the last trial of round 1
    search.close()
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    assert store.run_info()["status"] == "interrupted"
    assert [len(store.trials(round_=r)) for r in range(3)] == [5, 5, 2]
    assert store.strategy_state()[1] == 2  # rounds asked as the saved state knows them
    store.close()
    resumed = Search.open(tmp_path / "run", {"budget": 17})
    try:
        result = resumed.run(SerialExecutor(), evaluator=StopAfter(10**9))
    finally:
        resumed.close()
    assert result.counts["evaluated"] == 17


class SigtermInAFinalizer(Countdown):
    """The SIGTERM lands while a finalizer (``__del__``) runs, where Python drops the
    handler's exception ("Exception ignored") and the trial goes on to its result."""

    def at_zero(self) -> None:
        _Finalized()  # gone at once: its __del__ runs here


class _Finalized:
    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # the handler runs (and raises) in here
            pass


class SigtermAt(Countdown):
    """The SIGTERM's exception arrives in the trial, as it should."""

    def at_zero(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(10)  # the handler raises in here


@pytest.fixture
def sigterm_handled(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """The command line's handlers installed in this process for the test (and put back
    after); yields what reaches the previous unraisable hook (a finalizer's dropped errors)."""
    reported: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: reported.append(u.exc_value))
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    handle_sigterm()
    yield reported
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    stop_handled()


def terminated_search(run: Path, table: Path, evaluator: Evaluator) -> None:
    """A 12-trial tabular search run with ``evaluator`` until SIGTERM stops it."""
    search = Search.create(run, SearchConfig(space="nb201", evaluator="tabular", table=str(table),
                                             budget=12, executor="serial", seed=3))
    try:
        with pytest.raises(Terminated):
            search.run(SerialExecutor(), evaluator=evaluator)
    finally:
        search.close()


def test_a_sigterm_whose_exception_a_finalizer_dropped_still_stops_after_the_trial(
        tmp_path: Path, nb201_table_path: Path, sigterm_handled: list[object]) -> None:
    terminated_search(tmp_path / "run", nb201_table_path, SigtermInAFinalizer(4))
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    assert store.run_info()["status"] == "interrupted"
    # the 4th trial got its result (so the exception did not reach it: it was dropped), and
    # the run stopped right after storing it, not at the end of the budget
    assert [t.state for t in store.trials()][:5] == ["complete"] * 4 + ["queued"]
    store.close()
    assert sigterm_handled == []  # no "Exception ignored" traceback: the stop is not an error


def test_after_a_clean_sigterm_stop_a_new_run_in_the_same_process_is_not_stopped_again(
        tmp_path: Path, nb201_table_path: Path, sigterm_handled: list[object]) -> None:
    terminated_search(tmp_path / "run", nb201_table_path, SigtermAt(4))
    resumed = Search.open(tmp_path / "run")
    try:
        result = resumed.run(SerialExecutor(), evaluator=SigtermAt(10**9))
    except Terminated:  # (not let through: pytest would end the whole session)
        pytest.fail("the resumed run was stopped by the SIGTERM its predecessor handled")
    finally:
        resumed.close()
    assert result.counts["evaluated"] == 12


# -- progress inside long trials ----------------------------------------------------------------------
class Epochs(Evaluator):
    """Reports three epochs, then a result."""

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        for epoch in range(1, 4):
            report_epoch(epoch, 3, 0.5 * epoch, {"val_acc": 0.1 * epoch})
        return EvalResult("complete", {"val_acc": 0.5})


def test_the_process_pool_passes_epoch_reports_to_the_driver_before_the_result() -> None:
    executor = ProcessExecutor(1)
    events: list[tuple[object, ...]] = []
    executor.on_progress = lambda *report: events.append(report)
    executor.start(Epochs())
    try:
        executor.submit(Task(4, get_space("nb201").sample(np.random.default_rng(0)), 0))
        results = []
        while executor.pending():
            results += executor.wait()
            events.append(("result",))
    finally:
        executor.close()
    assert [r[0] for r in results] == [4] and results[0][1].ok
    assert events == [(4, 1, 3, 0.5, {"val_acc": 0.1}), (4, 2, 3, 1.0, {"val_acc": 0.2}),
                      (4, 3, 3, 1.5, {"val_acc": 0.30000000000000004}), ("result",)]


def test_a_training_search_shows_epochs_inside_running_trials(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = cli("search", "--budget", "1", "--executor", "serial", "--out", str(run),
               "--set", "training.epochs=3", "--set", "space_params.num_layers=2")
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if ": epoch " in line]
    assert [line.split(": epoch ")[1].split()[0] for line in lines] == ["1/3", "2/3", "3/3"]
    assert "left" in lines[0] and "ETA ~" in lines[0]  # an ETA before any trial has finished


def test_status_lists_the_epochs_of_running_trials_while_the_run_is_live(
        tmp_path: Path, nb201_table_path: Path) -> None:
    run = tmp_path / "run"
    assert cli(*tabular_args(nb201_table_path, run, 5)).returncode == 0
    assert TrialStore(run / "runs.db", readonly=True).progress() == []  # the table is not even there
    with RunLock(run):  # stands in for a live writer
        store = TrialStore(run / "runs.db")
        store.mark_running(2)
        store.set_progress(2, 2, 8, 30.0)
        store.close()
        status = cli("status", str(run))
    assert status.returncode == 0, status.stderr
    assert "  trial 2: epoch 2/8 in 0m30s, about 1m30s left" in status.stdout
    store = TrialStore(run / "runs.db")
    store.requeue_unfinished()
    store.mark_running(2)  # a new attempt: the old attempt's report is not its progress
    assert store.progress() == []
    store.close()


def test_a_starting_writer_waits_out_a_reader_and_a_released_lock_names_nobody(tmp_path: Path) -> None:
    import fcntl
    import threading

    first = RunLock(tmp_path).acquire()
    first.release()
    assert (tmp_path / "writer.lock").read_text() == ""  # no stale pid for a later refusal
    # a reader (status, report) holds a shared lock for an instant while it asks
    fd = os.open(tmp_path / "writer.lock", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_SH)
    threading.Timer(0.3, os.close, args=(fd,)).start()
    second = RunLock(tmp_path).acquire()  # refused at once before: "being written by" a reader
    assert second.held and writer(tmp_path) is not None
    second.release()


def test_a_run_from_before_constrained_decoding_resumes_unmasked(tmp_path: Path, nb201_table_path: Path) -> None:
    import sqlite3

    run = tmp_path / "run"
    done = cli("search", "--space", "nb201", "--evaluator", "tabular", "--table", str(nb201_table_path),
               "--executor", "serial", "--budget", "10", "--constraint", "macs<=40M", "--quiet", "--out", str(run))
    assert done.returncode == 0, done.stderr
    db = sqlite3.connect(run / "runs.db")
    db.execute("UPDATE runs SET schema = 2")
    db.commit()
    db.close()
    search = Search.open(run)
    try:  # its rounds were asked by an unmasked controller; masking now would re-ask others
        assert search.config.strategy_config["constrained_decoding"] is False
    finally:
        search.close()
