"""Early stopping of poor children: the rules on hand-made curves, and searches on digits
that prune, resume and refuse bad settings."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from nasrl.evaluators import base
from nasrl.evaluators.base import EvalResult, Evaluator, epoch_reports
from nasrl.execution import ProcessExecutor, SerialExecutor
from nasrl.pruning import PruningConfig, should_prune
from nasrl.search import Search, SearchConfig, load_config, make_evaluator
from nasrl.spaces import Architecture
from nasrl.store import TrialStore

MEDIAN = PruningConfig(rule="median", warmup_epochs=1, min_trials=3)
ASHA = PruningConfig(rule="asha", min_epochs=1, eta=2)


# -- the rules, on hand-made curves ------------------------------------------------------------------
def test_median_stops_a_child_below_the_median_of_best_so_far_after_warmup() -> None:
    others = [[0.5, 0.6, 0.7], [0.4, 0.3, 0.2], [0.2, 0.5, 0.6], [0.9]]
    # epoch 1 is warmup: even the worst child continues
    assert not should_prune(MEDIAN, [0.0], 4, others)
    # epoch 2: best-so-far of the three that reached it: 0.6, 0.4, 0.5 -> median 0.5
    assert should_prune(MEDIAN, [0.1, 0.45], 4, others)
    assert not should_prune(MEDIAN, [0.1, 0.5], 4, others)  # a tie continues
    # best-so-far, not the last value: an early peak keeps a child that dipped
    assert not should_prune(MEDIAN, [0.55, 0.1], 4, others)
    # epoch 3: 0.7, 0.4 (best so far, not the 0.2 it fell to), 0.6 -> median 0.6
    assert should_prune(MEDIAN, [0.1, 0.5, 0.59], 4, others)
    assert not should_prune(MEDIAN, [0.1, 0.5, 0.6], 4, others)


def test_median_waits_for_min_trials_and_never_stops_a_child_at_its_last_epoch() -> None:
    two = [[0.9, 0.9], [0.8, 0.8]]
    assert not should_prune(MEDIAN, [0.1, 0.1], 4, two)  # only 2 peers reached epoch 2, 3 needed
    assert should_prune(MEDIAN, [0.1, 0.1], 4, [*two, [0.7, 0.7]])
    assert not should_prune(MEDIAN, [0.1, 0.1], 2, [*two, [0.7, 0.7]])  # epoch 2 of 2: it is done
    off = PruningConfig()
    assert not should_prune(off, [0.1, 0.1], 4, [*two, [0.7, 0.7]])


def test_median_on_perplexity_stops_the_higher_one() -> None:
    others = [[300.0, 200.0], [400.0, 250.0], [500.0, 260.0]]  # best so far at 2: 200, 250, 260
    assert should_prune(MEDIAN, [600.0, 251.0], 5, others, higher_is_better=False)
    assert not should_prune(MEDIAN, [600.0, 249.0], 5, others, higher_is_better=False)
    assert should_prune(MEDIAN, [600.0, float("nan")], 5, others, higher_is_better=False)  # NaN: worst


def test_asha_promotes_the_top_1_over_eta_at_each_rung_only() -> None:
    # rungs at 1, 2, 4 epochs (min_epochs 1, eta 2); 8 epochs in all
    assert not should_prune(ASHA, [0.1], 8, [])  # the first child of a rung is its best
    assert should_prune(ASHA, [0.1], 8, [[0.3]])  # 2 at the rung: top 1 continues
    assert not should_prune(ASHA, [0.3], 8, [[0.1]])
    # 4 at rung 1 (0.5, 0.4, 0.2 and this one): the top 2 continue, the 2nd best is 0.4
    rung1 = [[0.5], [0.4], [0.2]]
    assert not should_prune(ASHA, [0.45], 8, rung1)
    assert not should_prune(ASHA, [0.4], 8, rung1)  # a tie continues
    assert should_prune(ASHA, [0.35], 8, rung1)
    # epoch 3 is no rung: nothing is decided there, however bad
    assert not should_prune(ASHA, [0.9, 0.9, 0.0], 8, [[0.9, 0.9, 0.9]] * 5)
    # rung 4 compares best-so-far at 4 among the children that reached 4
    at4 = [[0.1, 0.2, 0.3, 0.8], [0.5, 0.6, 0.7, 0.7], [0.5]]  # the third never got there
    # 3 at the rung: 3 // 2 = 1 continues, so second place (0.75 behind 0.8) stops
    assert should_prune(ASHA, [0.4, 0.5, 0.6, 0.75], 8, at4)
    assert not should_prune(ASHA, [0.4, 0.5, 0.6, 0.85], 8, at4)
    assert not should_prune(ASHA, [0.4, 0.9, 0.6, 0.6], 8, at4)  # best so far at 4 is 0.9
    assert not should_prune(ASHA, [0.0, 0.0, 0.0, 0.0], 4, at4)  # rung 4 of 4 epochs: it is done


def test_asha_rungs_follow_min_epochs_and_eta() -> None:
    rule = PruningConfig(rule="asha", min_epochs=2, eta=3)  # rungs 2, 6, 18
    better = [[0.9] * 18] * 9
    stops = [e for e in range(1, 20) if should_prune(rule, [0.0] * e, 20, better)]
    assert stops == [2, 6, 18]


# -- searches on digits ----------------------------------------------------------------------------
def digits(pruning: Mapping[str, Any], **kw: Any) -> SearchConfig:
    values: dict[str, Any] = {
        "budget": 8, "executor": "serial", "seed": 1, "strategy": "random",
        "training": {"epochs": 4, "max_train_samples": 300}, "space_params": {"num_layers": 2},
        "pruning": dict(pruning),
    }
    values.update(kw)
    return load_config(values)


def run_search(run_dir: Path, config: SearchConfig, evaluator: Evaluator | None = None) -> None:
    search = Search.create(run_dir, config)
    try:
        search.run(evaluator=evaluator)
    finally:
        search.close()


def trials_and_curves(run_dir: Path) -> tuple[list[Any], dict[int, list[float]]]:
    store = TrialStore(run_dir / "runs.db", readonly=True)
    trials = store.trials()
    curves = {c.trial_id: c.values for c in store.curves()}
    store.close()
    return trials, curves


MEDIAN_DIGITS = {"rule": "median", "warmup_epochs": 1, "min_trials": 2}


def assert_pruned_as_the_rule_says(trials: list[Any], curves: dict[int, list[float]], rule: PruningConfig,
                                   epochs: int, higher_is_better: bool = True) -> None:
    """Replays a serial run: every child went on after each epoch but its last, and stopped
    early exactly when the rule, given the curves of the children before it, said so."""
    for t in trials:
        curve = curves[t.id]
        earlier = [curves[u.id] for u in trials if u.id < t.id]  # serial: all finished before it
        assert not any(should_prune(rule, curve[:e], epochs, earlier, higher_is_better)
                       for e in range(1, len(curve)))
        if t.state == "pruned":
            assert should_prune(rule, curve, epochs, earlier, higher_is_better)
            assert t.metrics["epochs_trained"] == len(curve) < epochs
        else:
            assert t.state == "complete" and len(curve) == epochs


def test_a_serial_search_prunes_exactly_where_the_rule_says(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    run_search(tmp_path / "run", digits(MEDIAN_DIGITS))
    trials, curves = trials_and_curves(tmp_path / "run")
    states = [t.state for t in trials]
    assert states.count("pruned") >= 2 and states.count("complete") >= 2, states
    assert_pruned_as_the_rule_says(trials, curves, PruningConfig(**MEDIAN_DIGITS), 4)  # type: ignore[arg-type]
    for t in trials:
        if t.state == "pruned":
            assert t.metrics["val_acc"] == pytest.approx(curves[t.id][-1])
            assert t.reward == pytest.approx(max(curves[t.id]) ** 3)  # the objective on the epochs it trained
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    counts, best = store.counts(), store.best(8)
    store.close()
    assert counts["evaluated"] == 8 and counts["pruned"] == states.count("pruned")
    assert best and all(b.state == "complete" for b in best)  # a pruned child is never a best


def test_a_recurrent_cell_search_prunes_on_perplexity(tmp_path: Path, ptb_dir: Path) -> None:
    torch.set_num_threads(1)
    rule = {"rule": "asha", "min_epochs": 1, "eta": 2}
    config = load_config({
        "space": "rnn_cell", "dataset": "ptb", "data_dir": str(ptb_dir), "train_on_valid": True, "budget": 5,
        "executor": "serial", "seed": 2, "strategy": "random", "pruning": rule,
        "lm_training": {"epochs": 3, "max_train_tokens": 3000},
        "build_options": {"hidden_size": 16, "embedding_size": 16}})
    run_search(tmp_path / "run", config)
    trials, curves = trials_and_curves(tmp_path / "run")
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    assert {c.metric for c in store.curves()} == {"val_ppl"}
    store.close()
    assert any(t.state == "pruned" for t in trials), [t.state for t in trials]
    assert_pruned_as_the_rule_says(trials, curves, PruningConfig(**rule), 3, higher_is_better=False)  # type: ignore[arg-type]


class InterruptAt(Evaluator):
    """Ctrl-C in the middle of the ``call``-th child, after its ``epoch``-th epoch."""

    def __init__(self, inner: Evaluator, call: int, epoch: int) -> None:
        self.inner, self.call, self.epoch, self.calls = inner, call, epoch, 0

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        self.calls += 1
        outer = base._epoch_report
        if self.calls != self.call or outer is None:
            return self.inner.evaluate(arch, seed)

        def report(done: int, total: int, seconds: float, metrics: Mapping[str, float]) -> bool:
            stop = outer(done, total, seconds, metrics)
            if done == self.epoch:
                raise KeyboardInterrupt
            return stop

        with epoch_reports(report):
            return self.inner.evaluate(arch, seed)


def test_pruned_trials_stay_pruned_and_an_interrupted_child_restarts_on_resume(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    config = digits(MEDIAN_DIGITS)
    run_search(tmp_path / "straight", config)
    search = Search.create(tmp_path / "run", config)
    try:
        with pytest.raises(KeyboardInterrupt):
            search.run(evaluator=InterruptAt(make_evaluator(config, search.space), call=7, epoch=2))
    finally:
        search.close()
    before, curves = trials_and_curves(tmp_path / "run")
    pruned = [t.id for t in before if t.state == "pruned"]
    assert pruned and [t.state for t in before].count("running") == 1
    stood = next(t for t in before if t.state == "running")
    assert len(curves[stood.id]) == 2  # where the interrupted child stood

    resumed = Search.open(tmp_path / "run")
    try:
        resumed.run(SerialExecutor())
    finally:
        resumed.close()
    after, curves = trials_and_curves(tmp_path / "run")
    by_id = {t.id: t for t in after}
    for trial_id in pruned:  # not re-run: one attempt, the same result
        old = next(t for t in before if t.id == trial_id)
        assert by_id[trial_id].state == "pruned" and by_id[trial_id].attempts == 1
        assert by_id[trial_id].finished_at == old.finished_at
    assert by_id[stood.id].attempts == 2
    # the resumed run ends exactly as the uninterrupted one (serial pruning is deterministic)
    straight, straight_curves = trials_and_curves(tmp_path / "straight")
    assert [(t.arch.key, t.state, t.reward) for t in after] == [(t.arch.key, t.state, t.reward) for t in straight]
    assert curves == straight_curves


def test_a_process_pool_search_with_pruning_completes_on_digits(tmp_path: Path) -> None:
    config = digits({"rule": "asha", "min_epochs": 1, "eta": 2}, executor="process", workers=2)
    search = Search.create(tmp_path / "run", config)
    try:
        result = search.run(ProcessExecutor(2, threads_per_worker=1))
    finally:
        search.close()
    trials, curves = trials_and_curves(tmp_path / "run")
    assert result.counts["evaluated"] == 8 and {t.state for t in trials} <= {"complete", "pruned"}
    assert any(t.state == "pruned" for t in trials)
    for t in trials:
        assert len(curves[t.id]) == (4 if t.state == "complete" else t.metrics["epochs_trained"])
        if t.state == "pruned":
            assert len(curves[t.id]) in (1, 2)  # stopped at a rung (1 or 2; 4 is the last epoch)


def test_pruned_reward_none_tells_the_strategy_nothing(tmp_path: Path) -> None:
    config = digits({**MEDIAN_DIGITS, "pruned_reward": "none"}, budget=4)
    search = Search.create(tmp_path / "run", config)
    try:
        search.run()
        pruned = [t for t in search.store.trials() if t.state == "pruned"]
        assert pruned and all(t.reward is not None for t in pruned)  # stored for people to see
        assert all(search._observation(t).reward is None for t in pruned)
    finally:
        search.close()


# -- bad settings --------------------------------------------------------------------------------
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--set", "pruning.rule=hyperband"], "config key 'pruning.rule': 'hyperband' is not one of"),
    (["--set", "pruning.rule=asha", "--set", "pruning.eta=1"], "pruning.eta must be at least 2"),
    (["--set", "pruning.min_trials=0"], "pruning.min_trials must be at least 1"),
    (["--set", "pruning.patience=3"], "unknown config key 'pruning.patience'"),
    (["--set", "pruning.pruned_reward=best"], "'pruning.pruned_reward': 'best' is not one of"),
    (["--set", "pruning.rule=median", "--executor", "ray"], "pruning needs the serial or process executor"),
    (["--set", "pruning.rule=median", "--space", "nb201", "--evaluator", "tabular"],
     "pruning needs trained children"),
])
def test_bad_pruning_config_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    done = cli("search", *args, "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


# -- what people see ---------------------------------------------------------------------------------
def grey_pixels(path: Path) -> int:
    import matplotlib.pyplot as plt

    image = plt.imread(path)[..., :3]
    return int((abs(image - 0.7) < 0.02).all(axis=-1).sum())


def test_the_learning_curve_plot_greys_the_pruned_children(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from nasrl.report import plot_curves
    from nasrl.store.sqlite import Curve

    class T:
        def __init__(self, id_: int, state: str) -> None:
            self.id, self.state = id_, state

    complete = [Curve(1, "val_acc", [0.5, 0.7, 0.8])]
    pruned = [Curve(2, "val_acc", [0.2]), Curve(3, "val_acc", [0.3, 0.35])]
    trials = [T(1, "complete"), T(2, "pruned"), T(3, "pruned")]
    assert plot_curves(complete + pruned, trials, tmp_path / "with.png")  # type: ignore[arg-type]
    assert plot_curves(complete, trials, tmp_path / "without.png")  # type: ignore[arg-type]
    assert not plot_curves([], trials, tmp_path / "none.png")  # type: ignore[arg-type]
    assert grey_pixels(tmp_path / "with.png") > 50 + grey_pixels(tmp_path / "without.png")


def test_status_and_report_of_a_search_with_pruning(tmp_path: Path) -> None:
    run = tmp_path / "run"
    done = cli("search", "--budget", "6", "--executor", "serial", "--strategy", "random", "--out", str(run),
               "--set", "training.epochs=3", "--set", "training.max_train_samples=300",
               "--set", "space_params.num_layers=2", "--set", "pruning.rule=median",
               "--set", "pruning.min_trials=2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    store = TrialStore(run / "runs.db", readonly=True)
    pruned = store.counts()["pruned"]
    store.close()
    assert pruned > 0 and f"{pruned} pruned" in done.stdout and "pruned after" in done.stderr
    status = cli("status", str(run), cwd=tmp_path)
    assert status.returncode == 0 and "6/6 evaluated" in status.stdout and f"{pruned} pruned" in status.stdout
    report = cli("report", str(run), cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    page = (run / "report" / "index.html").read_text()
    assert "curves.png" in page and f"{pruned} pruned" in page and (run / "report" / "curves.png").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tensorboard")).Reload()
    tags = events.Tags()["scalars"]
    assert len(events.Scalars("trial/pruned_reward")) == pruned
    assert len(events.Scalars("trial/reward")) == 6 - pruned and "trial/epochs_trained" in tags
    ray = cli("resume", str(run), "--executor", "ray", cwd=tmp_path)  # Ray cannot prune
    assert ray.returncode == 2 and "pruning needs the serial or process executor" in ray.stderr
    assert len(ray.stderr.strip().splitlines()) == 1


def test_a_run_from_before_pruning_still_resumes(tmp_path: Path, nb201_table_path: Path) -> None:
    import sqlite3

    run = tmp_path / "run"
    values = {"space": "nb201", "evaluator": "tabular", "table": str(nb201_table_path), "budget": 6,
              "executor": "serial", "seed": 3}
    run_search(run, load_config(values))
    # make it a schema 3 database: the trials table's CHECK without 'pruned', no trial_epochs
    db = sqlite3.connect(run / "runs.db")
    ddl = db.execute("SELECT sql FROM sqlite_master WHERE name = 'trials'").fetchone()[0]
    old = ddl.replace(", 'pruned'", "").replace("CREATE TABLE trials", "CREATE TABLE trials_old", 1)
    assert old != ddl
    db.executescript(f"""PRAGMA foreign_keys = OFF; BEGIN; {old};
        INSERT INTO trials_old SELECT * FROM trials; DROP TABLE trials; ALTER TABLE trials_old RENAME TO trials;
        CREATE INDEX trials_by_key ON trials(arch_key); CREATE INDEX trials_by_round ON trials(round);
        DROP TABLE IF EXISTS trial_epochs; UPDATE runs SET schema = 3; COMMIT;""")
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("UPDATE trials SET state = 'pruned' WHERE id = 1")
    db.close()
    search = Search.open(run, {"budget": 10})
    try:
        result = search.run()
        assert search.config.pruning.rule == "none"  # nothing in its config switches it on
    finally:
        search.close()
    assert result.counts["evaluated"] == 10 and result.counts["pruned"] == 0
    store = TrialStore(run / "runs.db", readonly=True)
    assert store.run_info()["schema"] == 3 and store.curves() == []
    store.close()
    status = cli("status", str(run), cwd=tmp_path)
    assert status.returncode == 0 and "10/10 evaluated" in status.stdout and "0 pruned" in status.stdout
