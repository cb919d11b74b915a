from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution import ProcessExecutor, SerialExecutor, Task
from nasrl.search import Search, SearchConfig
from nasrl.spaces import Architecture, get_space
from nasrl.store import StoreError, TrialStore


def tabular_config(table: Path, **kw: object) -> SearchConfig:
    values: dict[str, object] = {"space": "nb201", "evaluator": "tabular", "table": str(table), "budget": 40,
                                 "executor": "serial", "seed": 3}
    values.update(kw)
    return SearchConfig(**values)  # type: ignore[arg-type]


def final_state(run_dir: Path) -> tuple[list[tuple[str, int, float | None, str]], dict[str, torch.Tensor]]:
    store = TrialStore(run_dir / "runs.db", readonly=True)
    trials = [(t.arch.key, t.seed, t.reward, t.state) for t in store.trials()]
    _, _, state = store.strategy_state()
    store.close()
    return trials, state["controller"]


def cli(*args: str, cwd: Path | None = None, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=timeout)


# -- the store -------------------------------------------------------------------------------------
def test_store_contract_states_counts_and_atomic_rounds(tmp_path: Path) -> None:
    space = get_space("nb201")
    rng = np.random.default_rng(0)
    store = TrialStore(tmp_path / "runs.db", create=True)
    store.init_run({"budget": 3}, 0, "test", {"x": torch.zeros(2)})
    a, b = space.sample(rng), space.sample(rng)
    ids = store.add_trials(0, [(a, 11, None), (b, 12, None), (a, 13, -1)])
    assert [t.state for t in store.trials()] == ["queued"] * 3
    assert store.trial(ids[2]).reused_from == ids[0]
    store.mark_running(ids[0])
    store.mark_running(ids[1])
    assert store.counts()["running"] == 2
    store.finish(ids[0], "complete", 0.5, {"val_acc": 0.5}, None, 1.0)
    store.finish(ids[1], "failed", None, {}, "boom", 2.0)
    assert store.requeue_unfinished() == 0
    counts = store.counts()
    assert counts["complete"] == 1 and counts["failed"] == 1 and counts["evaluated"] == 2
    assert store.first_by_key(a.key).id == ids[0]  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        store.finish(ids[2], "running", None, {}, None, None)
    # a failing commit leaves neither the told flags nor the new state behind
    with pytest.raises(RuntimeError), store.transaction() as db:
        db.execute("UPDATE trials SET told = 1 WHERE round = 0")
        raise RuntimeError("crash in the middle")
    assert not any(t.told for t in store.trials())
    assert store.strategy_state()[0] == 0
    store.commit_round(0, {"x": torch.ones(2)}, {"m": 1.0}, asked=2)
    round_, asked, state = store.strategy_state()
    assert round_ == 1 and asked == 2 and torch.equal(state["x"], torch.ones(2)) and all(t.told for t in store.trials())
    store.mark_running(ids[2])
    assert store.requeue_unfinished() == 1 and store.trial(ids[2]).state == "queued"


def test_seen_rows_are_appended_to_their_own_table_not_rewritten_in_every_state(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    rows = torch.from_numpy(rng.integers(0, 4, size=(300, 7)).astype(np.int16))
    deep = torch.from_numpy(rng.integers(0, 2, size=(40, 11)).astype(np.int16))

    def state(n: int, m: int = 0) -> dict[str, object]:
        seen = {7: rows[:n].clone()} | ({11: deep[:m].clone()} if m else {})
        return {"x": torch.full((2,), float(n)), "seen_rows": seen}

    def blob_size() -> int:
        return len(sqlite3.connect(tmp_path / "runs.db").execute("SELECT state FROM strategy").fetchone()[0])

    def chunks() -> list[tuple[int, int]]:
        return sqlite3.connect(tmp_path / "runs.db").execute(
            "SELECT length, start FROM strategy_rows ORDER BY length, start").fetchall()

    store = TrialStore(tmp_path / "runs.db", create=True)
    store.init_run({"budget": 3}, 0, "test", state(10))
    small = blob_size()
    store.commit_round(0, state(100), {}, asked=1)
    store.commit_round(1, state(300, 40), {}, asked=2)
    assert chunks() == [(7, 0), (7, 10), (7, 100), (11, 0)]  # only the new rows each time
    assert blob_size() < small + 200  # the state does not grow with the rows
    store.close()
    _, _, loaded = TrialStore(tmp_path / "runs.db").strategy_state()  # a fresh process
    assert torch.equal(loaded["seen_rows"][7], rows) and torch.equal(loaded["seen_rows"][11], deep[:40])
    assert torch.equal(loaded["x"], torch.full((2,), 300.0))
    # a state whose rows are not an extension of the stored ones replaces them; a failed
    # commit leaves the table as it was
    store = TrialStore(tmp_path / "runs.db")
    store.strategy_state()
    with pytest.raises(RuntimeError), store.transaction():
        store.save_strategy(3, 3, state(50))
        raise RuntimeError("crash in the middle")
    assert torch.equal(store.strategy_state()[2]["seen_rows"][7], rows)
    other = {"x": torch.zeros(2), "seen_rows": {7: rows[150:160].clone()}}
    store.save_strategy(3, 3, other)
    assert chunks() == [(7, 0)]
    assert torch.equal(store.strategy_state()[2]["seen_rows"][7], rows[150:160])
    assert store.strategy_state()[2].keys() == {"x", "seen_rows"}
    store.close()
    sqlite3.connect(tmp_path / "runs.db", isolation_level=None).execute("DELETE FROM strategy_rows")
    with pytest.raises(StoreError, match="damaged strategy state .10 seen rows of length 7 recorded, 0"):
        TrialStore(tmp_path / "runs.db").strategy_state()


def test_trial_counters_agree_with_the_table_and_are_added_to_an_older_database(tmp_path: Path) -> None:
    space = get_space("nb201")
    rng = np.random.default_rng(1)
    store = TrialStore(tmp_path / "runs.db", create=True)
    store.init_run({"budget": 9}, 0, "test", {"x": torch.zeros(1)})
    archs = [space.sample(rng) for _ in range(6)]
    ids = store.add_trials(0, [(a, i, None) for i, a in enumerate(archs[:4])])
    ids += store.add_trials(1, [(archs[4], 5, None), (archs[0], 6, ids[0]), (archs[5], 7, None)])
    for i, state in zip(ids[:3], ["complete", "failed", "pruned"], strict=True):
        store.mark_running(i)
        store.finish(i, state, 0.1 * i if state != "failed" else None, {}, None, 1.0)
    store.mark_running(ids[3])
    expected = store._count_rows()  # the whole-table COUNT(*) the counters replace
    assert store.counts() == expected
    assert expected["evaluated"] == 3 and expected["reused"] == 1 and expected["running"] == 1
    assert [store.planned_before(r) for r in range(3)] == [0, 4, 6]
    assert [store.total_trials_before(r) for r in range(3)] == [0, 4, 7]
    assert store.planned_total() == 6
    store.close()
    # triggers gone (a rebuilt trials table drops them), the counts table left stale: read
    # without it, and counted anew on the next writable open, as a database from before them
    db = sqlite3.connect(tmp_path / "runs.db")
    db.executescript("DROP TRIGGER trial_counts_insert; DROP TRIGGER trial_counts_update; "
                     "DROP TRIGGER trial_counts_delete;")
    db.execute("UPDATE trials SET state = 'queued' WHERE id = ?", (ids[3],))
    db.commit()
    db.close()
    old = TrialStore(tmp_path / "runs.db", readonly=True)
    assert old.counts()["queued"] == 4 and old.counts()["running"] == 0  # read without them
    old.close()
    store = TrialStore(tmp_path / "runs.db")
    assert store.counts() == store._count_rows()
    store.mark_running(ids[3])
    store.finish(ids[3], "complete", 0.9, {}, None, 1.0)
    assert store.counts() == store._count_rows() and store.counts()["evaluated"] == 4
    assert store.best(1)[0].id == ids[3]


def test_damaged_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "runs.db").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError, match="damaged run database"):
        TrialStore(tmp_path / "runs.db")
    with pytest.raises(StoreError, match="no run database"):
        TrialStore(tmp_path / "nothing.db")
    db = sqlite3.connect(tmp_path / "other.db")
    db.execute("CREATE TABLE x (a)")
    db.close()
    with pytest.raises(StoreError, match="missing table"):
        TrialStore(tmp_path / "other.db")


def test_readers_see_consistent_snapshots_while_the_search_writes(tmp_path: Path, nb201_table_path: Path) -> None:
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "nasrl", "search", "--space", "nb201", "--evaluator", "tabular",
                             "--table", str(nb201_table_path), "--budget", "300", "--executor", "serial",
                             "--quiet", "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if (run / "runs.db").exists():
                try:
                    store = TrialStore(run / "runs.db", readonly=True)
                except StoreError:
                    time.sleep(0.01)  # created but its tables not yet committed
                    continue
                with store.snapshot():
                    counts = store.counts()
                    trials = store.trials()
                    round_, _, _ = store.strategy_state()
                store.close()
                # the committed strategy state always covers exactly the trials marked told
                assert [t.id for t in trials if t.told] == [t.id for t in trials if t.round < round_]
                assert all(t.finished for t in trials if t.told)
                seen.append(counts["evaluated"])
            time.sleep(0.02)
    finally:
        proc.wait(timeout=120)
    assert proc.returncode == 0, proc.stderr.read().decode() if proc.stderr else ""
    assert len(seen) >= 3 and seen == sorted(seen) and seen[-1] <= 300


# -- crash safety --------------------------------------------------------------------------------------
def test_kill_9_at_random_moments_then_resume_equals_an_uninterrupted_run(tmp_path: Path,
                                                                           nb201_table_path: Path) -> None:
    budget = 80
    run = tmp_path / "killed"
    args = ["search", "--space", "nb201", "--evaluator", "tabular", "--table", str(nb201_table_path),
            "--budget", str(budget), "--executor", "serial", "--seed", "3", "--quiet", "--out", str(run)]
    # the reference runs the same command uninterrupted, in a fresh process like the killed ones
    # (this test process may have changed torch's thread settings, and with them the last bits)
    reference = tmp_path / "reference"
    done = cli(*args[:-1], str(reference))
    assert done.returncode == 0, done.stderr
    want_trials, want_params = final_state(reference)
    assert len({k for k, *_ in want_trials}) == budget

    rng = np.random.default_rng(0)
    kills = 0
    for attempt in range(6):
        cmd = args if attempt == 0 else ["resume", str(run), "--quiet"]
        proc = subprocess.Popen([sys.executable, "-m", "nasrl", *cmd], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        target = int(rng.integers(5, budget - 5))
        while proc.poll() is None:
            try:
                store = TrialStore(run / "runs.db", readonly=True)
                n = len(store.trials())
                store.close()
            except (StoreError, sqlite3.Error):
                n = 0
            if n >= target:
                time.sleep(float(rng.uniform(0, 0.05)))  # somewhere inside a round or a commit
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
                break
            time.sleep(0.005)
        proc.wait(timeout=60)
        if proc.returncode == 0:
            break
    done = cli("resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    assert kills >= 2
    got_trials, got_params = final_state(run)
    assert got_trials == want_trials
    assert got_params.keys() == want_params.keys()
    for key in want_params:
        assert torch.equal(got_params[key], want_params[key]), key


def test_same_seed_gives_the_same_trials_serial_and_process_pool(tmp_path: Path, nb201_table_path: Path) -> None:
    Search.create(tmp_path / "serial", tabular_config(nb201_table_path, budget=20)).run()
    Search.create(tmp_path / "pool", tabular_config(nb201_table_path, budget=20, executor="process",
                                                    workers=2)).run()
    assert final_state(tmp_path / "serial")[0] == final_state(tmp_path / "pool")[0]


# -- executors and failures ----------------------------------------------------------------------------
class SleepyEvaluator(Evaluator):
    """Sleeps, then rewards by a hash of the architecture; records its pid for the test to kill."""

    def __init__(self, seconds: float, pid_dir: str | None = None, fail_if: str | None = None) -> None:
        self.seconds, self.pid_dir, self.fail_if = seconds, pid_dir, fail_if

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        if self.pid_dir:
            Path(self.pid_dir, f"{os.getpid()}.pid").write_text(str(seed))
        if self.fail_if is not None and self.fail_if in arch.to_json():
            raise RuntimeError("this child cannot be built")
        time.sleep(self.seconds)
        acc = int(arch.key[:4], 16) / 65535
        return EvalResult("complete", {"val_acc": acc, "val_acc_max_last": acc, "slept": self.seconds})


def nb201_archs(n: int) -> list[Architecture]:
    space = get_space("nb201")
    rng = np.random.default_rng(1)
    return [space.sample(rng) for _ in range(n)]


def test_killed_worker_is_replaced_and_its_trial_retried(tmp_path: Path) -> None:
    executor = ProcessExecutor(2, max_retries=1)
    started: list[int] = []
    executor.start(SleepyEvaluator(1.5, str(tmp_path)), started.append)
    try:
        archs = nb201_archs(3)
        for i, arch in enumerate(archs):
            executor.submit(Task(i, arch, seed=i))
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("*.pid"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        victim = int(next(tmp_path.glob("*.pid")).stem)
        os.kill(victim, signal.SIGKILL)
        results: dict[int, EvalResult] = {}
        while executor.pending():
            results.update(executor.wait())
        assert sorted(results) == [0, 1, 2]
        assert all(r.ok for r in results.values())
        assert len(started) == 4  # three trials, one of them twice
        assert victim not in executor.worker_pids()
    finally:
        executor.close()


def test_worker_dying_every_time_fails_the_trial_and_a_timeout_fails_it_too(tmp_path: Path) -> None:
    executor = ProcessExecutor(1, max_retries=0, trial_timeout=0.8)
    executor.start(SleepyEvaluator(5.0, str(tmp_path)))
    try:
        executor.submit(Task(7, nb201_archs(1)[0], seed=0))
        (tid, result), = executor.wait()
        assert tid == 7 and result.status == "failed" and "timed out after 0.8s" in (result.error or "")
        executor.trial_timeout = None
        executor.submit(Task(8, nb201_archs(1)[0], seed=0))
        deadline = time.monotonic() + 60
        while not executor.busy_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        os.kill(executor.busy_pids()[0], signal.SIGKILL)
        (tid, result), = executor.wait()
        assert tid == 8 and result.status == "failed" and "worker died" in (result.error or "")
    finally:
        executor.close()


def test_children_that_raise_are_failed_trials_and_the_search_completes(tmp_path: Path,
                                                                         nb201_table_path: Path) -> None:
    config = tabular_config(nb201_table_path, budget=25, strategy="random")
    search = Search.create(tmp_path / "run", config)
    result = search.run(SerialExecutor(), evaluator=SleepyEvaluator(0.0, fail_if='"edge_1_0":"none"'))
    store = search.store
    failed = store.trials(state="failed")
    assert result.counts["evaluated"] == 25 and failed
    assert all("RuntimeError: this child cannot be built" in (t.error or "") for t in failed)
    assert all('"edge_1_0":"none"' in t.arch.to_json() for t in failed)
    assert result.best is not None and result.best.state == "complete"


def test_a_diverging_child_is_a_failed_trial(tmp_path: Path) -> None:
    done = cli("search", "--budget", "3", "--executor", "serial", "--quiet", "--out", str(tmp_path / "run"),
               "--set", "training.epochs=1", "--set", "training.learning_rate=1e30",
               "--set", "training.max_train_samples=256")
    assert done.returncode == 1, done.stderr  # nothing completed
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    trials = store.trials()
    assert len(trials) == 3 and all(t.state == "failed" for t in trials)
    assert all("loss became" in (t.error or "") or "NaN" in (t.error or "") for t in trials), trials[0].error


# -- the command line ----------------------------------------------------------------------------------
def test_search_on_digits_then_status_best_export_and_report(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = cli("search", "--budget", "6", "--workers", "2", "--out", str(run), "--set", "training.epochs=3",
               "--set", "space_params.num_layers=3", "--set", "strategy_config.batch_size=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "#1 trial" in done.stdout and "validation accuracy" in done.stdout
    config = json.loads((run / "config.json").read_text())
    assert config["seed"] == 0 and config["version"] and config["strategy_config"]["learning_rate"] > 0
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    status = cli("status", str(run))
    assert status.returncode == 0 and "6/6 evaluated" in status.stdout
    best = cli("best", str(run), "--json")
    doc = json.loads(best.stdout)
    assert doc["space"] == "conv" and doc["params"]["num_layers"] == 3 and doc["reward"] > 0
    report = cli("report", str(run))
    assert report.returncode == 0, report.stderr
    page = (run / "report" / "index.html").read_text()
    assert "Leaderboard" in page and "rewards.png" in page and "choices.png" in page and "entropy.png" in page
    for fmt in ("json", "torchscript", "onnx"):
        exported = cli("export", str(run), "--format", fmt, "--epochs", "1")
        assert exported.returncode == 0, exported.stderr
    model = torch.jit.load(str(next((run / "export").glob("*.pt"))))
    assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    assert next((run / "export").glob("*.onnx")).stat().st_size > 1000


@pytest.mark.parametrize("args, message", [
    (["search", "--set", "bogus=1"], "unknown config key 'bogus'"),
    (["search", "--set", "training.epochz=1"], "unknown config key 'training.epochz'"),
    (["search", "--space", "transformer"], "unknown space 'transformer'"),
    (["search", "--dataset", "fashion-mnist", "--data-dir", "/nonexistent/fm"], "does not exist"),
    (["search", "--evaluator", "tabular", "--space", "nb201", "--table", "/nonexistent.csv"], "not found"),
    (["search", "--config", "bad.toml"], "not valid TOML"),
    (["search", "--config", "missing.toml"], "config file not found"),
    (["resume", "nowhere"], "no such run directory"),
    (["resume", "garbage"], "damaged run database"),
    (["status", "empty"], "no run database"),
    (["best", "garbage"], "damaged run database"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "bad.toml").write_text("budget = [unclosed\n")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "runs.db").write_bytes(b"\x00garbage" * 500)
    (tmp_path / "empty").mkdir()
    done = cli(*args, "--out", str(tmp_path / "out"), cwd=tmp_path) if args[0] == "search" else cli(*args, cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_toml_config_with_dotted_overrides(tmp_path: Path, nb201_table_path: Path) -> None:
    (tmp_path / "search.toml").write_text(
        f'space = "nb201"\nevaluator = "tabular"\ntable = "{nb201_table_path}"\nbudget = 10\nexecutor = "serial"\n'
        '[strategy_config]\nlearning_rate = 0.01\n')
    done = cli("search", "--config", "search.toml", "--set", "strategy_config.batch_size=2", "--quiet",
               "--out", "run", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["strategy_config"]["learning_rate"] == 0.01 and config["strategy_config"]["batch_size"] == 2
    again = cli("search", "--config", "search.toml", "--out", "run", cwd=tmp_path)
    assert again.returncode == 2 and "already holds a run" in again.stderr
