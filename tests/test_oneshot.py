"""One-shot (ENAS) search: the driver on digits with a tiny supernet, its use of the
strategy's own tell, the random baseline, resume after kill -9 and the CLI on such runs."""

from __future__ import annotations

import html
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from nasrl.cli import main
from nasrl.config import ConfigError
from nasrl.oneshot.enas import OneShotSearch
from nasrl.search import Search, load_config, make_space
from nasrl.spaces.io import read_architecture
from nasrl.store import TrialStore
from nasrl.strategies import RandomSearch, Reinforce, make_strategy
from nasrl.training.shared import steps_per_epoch

torch.set_num_threads(1)

EPOCHS, STEPS, BATCH = 3, 3, 5  # one-shot epochs, controller rounds per epoch, REINFORCE batch
SETTINGS = {
    "space_params.num_layers": 2,
    "space_params.num_filters": [8, 16],
    "oneshot.epochs": EPOCHS,
    "oneshot.controller_steps": STEPS,
    "oneshot.derive_samples": 10,
    "oneshot.top_k": 3,
    "oneshot.training.batch_size": 32,
    "oneshot.training.learning_rate": 0.2,
    "strategy_config.batch_size": BATCH,
    "device": "cpu",
}


def tiny(**extra: Any) -> dict[str, Any]:
    """The tiny run's config; an ``extra`` of None leaves that setting out."""
    values: dict[str, Any] = {"method": "enas"}
    for dotted, value in {**SETTINGS, **extra}.items():
        if value is None:
            continue
        node = values
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return values


def set_flags(**extra: Any) -> list[str]:
    return [arg for k, v in {**SETTINGS, **extra}.items() for arg in ("--set", f"{k}={json.dumps(v)}")]


def run_oneshot(run_dir: Path, **extra: Any) -> OneShotSearch:
    search = OneShotSearch.create(run_dir, load_config(tiny(**extra)))
    search.run()
    search.close()
    return search


def checkpoint(run_dir: Path) -> tuple[int, dict[str, Any]]:
    store = TrialStore(run_dir / "runs.db", readonly=True)
    saved = store.checkpoint()
    store.close()
    assert saved is not None
    return saved


def test_a_oneshot_run_on_digits_trains_the_supernet_and_controller_and_derives(tmp_path: Path) -> None:
    search = run_oneshot(tmp_path / "run")
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    epochs = store.epochs()
    assert [e for e, _, _ in epochs] == [1, 2, 3]
    assert epochs[-1][2]["shared/loss"] < epochs[0][2]["shared/loss"]
    updates = store.updates()
    assert [r for r, _, _ in updates] == list(range(EPOCHS * STEPS))
    assert all("controller/entropy" in m for _, _, m in updates)  # the first batch learns too
    derived = store.derived()
    assert [d.rank for d in derived] == [1, 2, 3]
    scores = [d.score for d in derived]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0.2  # chance is 0.1
    assert len({d.arch.key for d in derived}) == 3
    assert all(d.reward == pytest.approx(d.score**3) for d in derived)  # the objective's reward
    assert store.run_info()["status"] == "finished"
    # the controller learned: its weights moved away from the seed's
    epoch, state = checkpoint(tmp_path / "run")
    fresh = make_strategy("reinforce", search.space, 0, search.config.strategy_config)
    assert isinstance(fresh, Reinforce) and epoch == EPOCHS
    assert state["strategy"]["num_updates"] == EPOCHS * STEPS
    assert not all(torch.equal(a, b) for a, b in zip(fresh.controller.state_dict().values(),
                                                      state["strategy"]["controller"].values(), strict=True))
    store.close()


def test_the_driver_learns_through_the_strategys_own_tell(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    told: list[list[float | None]] = []
    original = Reinforce.tell

    def spy(self: Reinforce, observations: Any) -> None:
        told.append([o.reward for o in observations])
        original(self, observations)

    monkeypatch.setattr(Reinforce, "tell", spy)
    run_oneshot(tmp_path / "run")
    assert len(told) == EPOCHS * STEPS and all(len(batch) == BATCH for batch in told)
    # rewards are accuracies on one validation batch of 128, cubed by the objective
    for batch in told:
        for reward in batch:
            assert reward is not None
            correct = round(reward ** (1 / 3) * 128)
            assert reward == pytest.approx((correct / 128) ** 3)


def test_a_constrained_oneshot_run_tells_infeasible_children_their_reward_and_derives_none(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasrl.models import build_model
    from nasrl.training.common import count_params

    told: list[tuple[Any, float | None]] = []
    original = Reinforce.tell

    def spy(self: Reinforce, observations: Any) -> None:
        told.extend((o.arch, o.reward) for o in observations)
        original(self, observations)

    def params(space: Any, arch: Any) -> int:
        return count_params(build_model(space, arch, input_shape=(1, 8, 8), num_classes=10))

    monkeypatch.setattr(Reinforce, "tell", spy)
    space = make_space(load_config(tiny()))
    rng = np.random.default_rng(0)
    limit = int(np.median([params(space, space.sample(rng)) for _ in range(30)]))
    search = run_oneshot(tmp_path / "run", **{"objective.constraints": [f"params<={limit}"],
                                               "objective.infeasible_reward": -0.5})
    over = [(a, r) for a, r in told if params(space, a) > limit]
    assert over and len(over) < len(told)  # both kinds were sampled
    assert all(r == -0.5 for _, r in over)  # the configured reward for an infeasible child
    assert all(r is not None and r >= 0 for a, r in told if params(space, a) <= limit)
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    derived = store.derived()
    updates = store.updates()
    store.close()
    assert derived and all(d.metrics["params"] == params(space, d.arch) <= limit for d in derived)
    assert all(d.reward == pytest.approx(d.score**3) for d in derived)
    assert all(0 <= m["oneshot/feasible_share"] <= 1 for _, _, m in updates)
    assert "subject to params<=" in search.objective.describe()


def test_the_random_strategy_gives_the_weight_sharing_random_baseline(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    sampled: list[int] = []
    original = RandomSearch.sample

    def spy(self: RandomSearch, n: int, seed: int) -> Any:
        sampled.append(n)
        return original(self, n, seed)

    monkeypatch.setattr(RandomSearch, "sample", spy)
    run_oneshot(tmp_path / "run", strategy="random", **{"strategy_config.batch_size": None})
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    steps = steps_per_epoch(_train_size(), load_config(tiny()).oneshot.shared_training())
    # every training batch's architecture came from the strategy's uniform draw, then the derivation
    assert sampled == [steps] * EPOCHS + [10]
    assert all("controller/entropy" not in m and "oneshot/reward_mean" in m for _, _, m in store.updates())
    assert len(store.derived()) == 3
    store.close()


def _train_size() -> int:
    from nasrl.data import load_images

    return len(load_images("digits", seed=0).train_x)


def test_sample_draws_from_the_policy_without_touching_the_strategy() -> None:
    from nasrl.spaces import ConvSpace

    space = ConvSpace(num_layers=2)
    for name in ("reinforce", "random"):
        strategy = make_strategy(name, space, 0)
        before = strategy.state_dict()
        first, again = strategy.sample(20, seed=5), strategy.sample(20, seed=5)
        assert [a.key for a in first] == [a.key for a in again]
        assert [a.key for a in strategy.sample(20, seed=6)] != [a.key for a in first]
        after = strategy.state_dict()
        assert after.keys() == before.keys()
        for key in before:
            if isinstance(before[key], torch.Tensor):
                assert torch.equal(before[key], after[key]), (name, key)
            elif key != "controller" and key != "optimizer":
                assert before[key] == after[key], (name, key)
        assert strategy.ask(3) is not None  # ask still draws from the untouched generator
    with pytest.raises(ConfigError, match="no distribution"):
        make_strategy("evolution", space, 0).sample(1, seed=0)


KILLER = textwrap.dedent("""
    import os, signal, sys
    import torch
    torch.set_num_threads(1)
    import nasrl.oneshot.enas as enas
    from nasrl.search import load_config

    calls = 0
    real = enas.shared_accuracy

    def dying(*args, **kwargs):
        # kill -9 in the middle of epoch 2's controller rounds: the controller and the
        # supernet have moved on in memory since the last checkpoint
        global calls
        calls += 1
        if calls == int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)

    enas.shared_accuracy = dying
    search = enas.OneShotSearch.create(sys.argv[1], load_config(__import__("json").loads(sys.argv[2])))
    search.run()
""")


def test_resume_after_kill_9_ends_bit_identical_to_an_uninterrupted_run(tmp_path: Path) -> None:
    run_oneshot(tmp_path / "whole")
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    kill_at = STEPS * BATCH + STEPS * BATCH // 2 + 1
    proc = subprocess.run([sys.executable, "-c", KILLER, str(killed), json.dumps(tiny()), str(kill_at)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert checkpoint(killed)[0] == 1  # epoch 2 was lost, epoch 1 kept
    status = subprocess.run([sys.executable, "-m", "nasrl", "status", str(killed)], capture_output=True,
                            text=True, env=env, timeout=300)
    assert "interrupted" in status.stdout and f"epochs: 1/{EPOCHS} done" in status.stdout, status.stdout
    resumed = subprocess.run([sys.executable, "-m", "nasrl", "resume", str(killed), "--quiet"],
                             capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    (epochs_a, a), (epochs_b, b) = checkpoint(tmp_path / "whole"), checkpoint(killed)
    assert epochs_a == epochs_b == EPOCHS
    for part in ("supernet", "optimizer"):
        _assert_identical(a[part], b[part], part)
    _assert_identical(a["strategy"], b["strategy"], "strategy")
    views = [TrialStore(d / "runs.db", readonly=True) for d in (tmp_path / "whole", killed)]
    derived = [[(d.arch.key, d.score) for d in v.derived()] for v in views]
    assert derived[0] == derived[1] and len(derived[0]) == 3
    updates = [[m for _, _, m in v.updates()] for v in views]
    assert updates[0] == updates[1]
    for v in views:
        v.close()


def _assert_identical(a: Any, b: Any, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_identical(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list | tuple):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_cli_search_status_best_report_on_a_oneshot_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert main(["search", "--method", "enas", "--out", str(run), "--quiet", *set_flags()]) == 0
    capsys.readouterr()
    assert main(["status", str(run)]) == 0
    out = capsys.readouterr().out
    assert "finished; one-shot (ENAS) conv space" in out and f"epochs: {EPOCHS}/{EPOCHS} done" in out
    assert main(["best", str(run), "-n", "3"]) == 0
    assert capsys.readouterr().out.count("shared-weight validation accuracy") == 3
    assert main(["best", str(run), "--json"]) == 0
    doc = capsys.readouterr().out
    store = TrialStore(run / "runs.db", readonly=True)
    top = store.derived()[0]
    store.close()
    space, arch = read_architecture(doc)  # what `nasrl train --arch` reads
    assert arch.key == top.arch.key and json.loads(doc)["metrics"]["shared_val_acc"] == top.score
    assert main(["report", str(run)]) == 0
    page = (run / "report" / "index.html").read_text()
    assert "Derived architectures" in page and html.escape(space.describe(top.arch)) in page
    assert {"entropy.png", "controller.png", "loss.png"} <= {p.name for p in (run / "report").iterdir()}
    assert (run / "tensorboard").is_dir()

    # export: a derived architecture (rank 1 by default) trained from scratch like any child
    assert main(["export", str(run), "--trial", "2", "--out", str(tmp_path / "two.json")]) == 0
    second = json.loads((tmp_path / "two.json").read_text())
    assert second["metrics"]["rank"] == 2 and read_architecture(json.dumps(second))[1].key == \
        store_derived(run)[1].arch.key
    assert main(["export", str(run), "--format", "pt2", "--epochs", "1"]) == 0
    capsys.readouterr()
    exported = run / "export" / "derived-1.pt2"
    meta = json.loads((run / "export" / "derived-1.model.json").read_text())
    assert meta["trained"] and meta["architecture"]["metrics"]["rank"] == 1
    assert (run / "export" / "weights" / "derived-1-e1.pt").is_file()
    model = torch.export.load(str(exported)).module()
    assert model(torch.full((3, 1, 8, 8), 128.0)).shape == (3, 10)
    assert main(["export", str(run), "--trial", "9"]) == 2
    assert "no derived architecture of rank 9" in capsys.readouterr().err


def store_derived(run: Path) -> list[Any]:
    store = TrialStore(run / "runs.db", readonly=True)
    try:
        return store.derived()
    finally:
        store.close()


@pytest.mark.parametrize(("flags", "message"), [
    (["--set", "oneshot.epochs=0"], "oneshot.epochs must be at least 1"),
    (["--set", "oneshot.epoch=2"], "unknown config key 'oneshot.epoch'"),
    (["--set", "oneshot.training.epochs=5"], "set oneshot.epochs instead"),
    (["--strategy", "evolution"], "method enas takes strategy reinforce or random"),
    (["--space", "rnn_cell"], "no shared-weight network for space 'rnn_cell'"),
    (["--constraint", "latency_ms<=2"], "one-shot runs take constraints on params, macs, flops"),
])
def test_bad_oneshot_settings_are_one_line_errors_before_any_run_exists(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str) -> None:
    run = tmp_path / "run"
    assert main(["search", "--method", "enas", "--out", str(run), "--quiet", *flags]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (run / "runs.db").exists()


def test_resume_of_a_oneshot_run_refuses_multi_trial_overrides(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    search = OneShotSearch.create(tmp_path / "run", load_config(tiny()))
    search.run(max_epochs=1)
    search.close()
    assert main(["resume", str(tmp_path / "run"), "--budget", "5", "--quiet"]) == 2
    assert "--budget does not apply to a one-shot run" in capsys.readouterr().err
    assert checkpoint(tmp_path / "run")[0] == 1  # nothing lost


def test_a_schema_2_run_still_opens_and_resumes(tmp_path: Path, nb201_table_path: Path) -> None:
    """Schema 3 only adds the one-shot tables: a run written before them resumes as it is."""
    run = tmp_path / "run"
    config = load_config({"space": "nb201", "evaluator": "tabular", "table": str(nb201_table_path),
                          "budget": 5, "executor": "serial"})
    search = Search.create(run, config)
    search.run()
    search.close()
    db = sqlite3.connect(run / "runs.db")
    db.executescript("DROP TABLE checkpoint; DROP TABLE epochs; DROP TABLE derived; "
                     "UPDATE runs SET schema = 2;")
    db.close()
    again = Search.open(run, {"budget": 10})
    result = again.run()
    again.close()
    assert result.counts["evaluated"] == 10
    assert main(["status", str(run)]) == 0
    assert np.isfinite(result.best.reward if result.best and result.best.reward is not None else np.nan)


def test_a_damaged_checkpoint_is_a_one_line_error_and_keeps_the_run(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    search = OneShotSearch.create(run, load_config(tiny()))
    search.run(max_epochs=1)
    search.close()
    db = sqlite3.connect(run / "runs.db")
    db.execute("UPDATE checkpoint SET state = ? WHERE id = 1", (b"not a checkpoint",))
    db.commit()
    db.close()
    assert main(["resume", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "damaged one-shot checkpoint" in err and err.count("\n") == 1, err
    assert main(["status", str(run)]) == 0  # still readable: epoch 1's metrics are there
    assert "epochs: 1/3 done" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="OneShotSearch"):
        Search.create(tmp_path / "other", load_config(tiny()))


def test_a_oneshot_run_has_one_writer(tmp_path: Path) -> None:
    from nasrl.lock import RunBusyError

    search = OneShotSearch.create(tmp_path / "run", load_config(tiny()))  # holds the lock
    with pytest.raises(RunBusyError, match="only one search may write a run"):
        OneShotSearch.open(tmp_path / "run")
    search.close()
    OneShotSearch.open(tmp_path / "run").close()  # free again once the writer closed



def test_a_sigterm_whose_exception_was_dropped_stops_at_the_next_epoch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the state a SIGTERM leaves when a finalizer swallowed its exception (see test_lifecycle)
    import nasrl.signals
    from nasrl.oneshot.enas import OneShotListener
    from nasrl.signals import Terminated

    class DroppedSigterm(OneShotListener):
        def on_epoch(self, epoch: int, epochs: int, metrics: Any, seconds: float) -> None:
            monkeypatch.setattr(nasrl.signals, "_pending", Terminated)

    search = OneShotSearch.create(tmp_path / "run", load_config(tiny()))
    search.listeners.append(DroppedSigterm())
    with pytest.raises(Terminated):
        search.run()
    search.close()
    assert checkpoint(tmp_path / "run")[0] == 1  # the first epoch is kept, the second never began
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    assert store.run_info()["status"] == "interrupted"
    store.close()


def test_samples_per_epoch_walks_through_the_whole_training_split_in_windows(tmp_path: Path) -> None:
    search = OneShotSearch.create(tmp_path / "run", load_config(tiny(**{"oneshot.samples_per_epoch": 300})))
    try:
        data = search.data()
        full = {tuple(row.flatten().tolist()) for row in data.train_x}
        windows = len(data.train_x) // 300
        seen: list[set[tuple[float, ...]]] = []
        for epoch in range(windows + 1):
            x, y = search._epoch_split(data, epoch)
            assert len(x) == len(y) == 300
            seen.append({tuple(row.flatten().tolist()) for row in x})
        first_pass = set().union(*seen[:windows])
        assert sum(len(s) for s in seen[:windows]) == len(first_pass)  # disjoint windows
        assert len(full - first_pass) < 300  # the pass covers all but the remainder
        assert seen[windows] != seen[0]  # the next pass is a new permutation
        result = search.run()  # and a run with short epochs trains on them
        assert result.epochs == EPOCHS
    finally:
        search.close()
    assert main(["search", "--method", "enas", "--out", str(tmp_path / "bad"), "--quiet",
                 "--set", "oneshot.samples_per_epoch=0"]) == 2


def test_oneshot_reinforce_defaults_are_recorded_and_a_users_controller_keys_keep_the_rest(
        tmp_path: Path) -> None:
    from nasrl.oneshot.enas import ONESHOT_REINFORCE, oneshot_config

    config = oneshot_config(load_config(tiny(**{"strategy_config.controller": {"hidden_size": 20},
                                                "strategy_config.learning_rate": 0.02})))
    assert config.strategy_config["controller"] == {**ONESHOT_REINFORCE["controller"], "hidden_size": 20}
    assert config.strategy_config["learning_rate"] == 0.02  # the user's value wins
    search = OneShotSearch.create(tmp_path / "run", load_config(tiny()))
    try:
        strategy = search.strategy
        assert isinstance(strategy, Reinforce)
        assert strategy.config.controller.tanh_constant == ONESHOT_REINFORCE["controller"]["tanh_constant"]
        assert strategy.config.learning_rate == ONESHOT_REINFORCE["learning_rate"]
        recorded = json.loads((tmp_path / "run" / "config.json").read_text())
        assert recorded["strategy_config"]["controller"]["tanh_constant"] == 1.5
    finally:
        search.close()


def test_progress_says_how_far_derivation_is(tmp_path: Path) -> None:
    import io

    from nasrl.monitor import OneShotProgress

    search = OneShotSearch.create(tmp_path / "run", load_config(tiny(**{"oneshot.epochs": 1})))
    stream = io.StringIO()
    search.listeners.append(OneShotProgress(search.space, stream))
    try:
        search.run()
    finally:
        search.close()
    lines = stream.getvalue().splitlines()
    deriving = [line for line in lines if line.startswith("deriving:")]
    total = int(deriving[-1].split("/")[1].split()[0])
    assert deriving and deriving[-1] == f"deriving: {total}/{total} candidates scored"
    assert lines.index(deriving[-1]) < next(i for i, line in enumerate(lines) if line.startswith("derived "))


def test_derivation_screens_every_candidate_on_a_quarter_then_rescores_the_finalists(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nasrl.oneshot.enas as enas

    calls: list[tuple[str, int, float]] = []
    original = enas.shared_accuracy

    def spy(supernet: Any, arch: Any, x: Any, y: Any, config: Any, **kw: Any) -> float:
        acc = original(supernet, arch, x, y, config, **kw)
        if "calibration" in kw:  # derivation's scoring (controller rounds pass none)
            calls.append((arch.key, len(x), acc))
        return acc

    monkeypatch.setattr(enas, "shared_accuracy", spy)
    search = run_oneshot(tmp_path / "run", **{"oneshot.derive_finalists": 3, "oneshot.derive_samples": 12,
                                               "oneshot.derive_val_samples": 200})
    screen = [c for c in calls if c[1] == 50]
    final = [c for c in calls if c[1] == 200]
    assert len(screen) == len({c[0] for c in screen}) > 3 and len(final) == 3 == len(calls) - len(screen)
    # the finalists are the screen's best three, in its order (a stable sort keeps ties first-scored)
    assert [c[0] for c in final] == [c[0] for c in sorted(screen, key=lambda c: -c[2])[:3]]
    derived = store_derived(tmp_path / "run")
    assert [d.score for d in derived] == sorted((c[2] for c in final), reverse=True)
    assert search.config.oneshot.derive_finalists == 3


def test_under_a_soft_constraint_the_derived_architectures_are_ranked_by_the_reward(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nasrl.oneshot.enas as enas
    from nasrl.models import build_model
    from nasrl.training.common import count_params

    scores: dict[str, float] = {}
    original = enas.shared_accuracy

    def spy(supernet: Any, arch: Any, x: Any, y: Any, config: Any, **kw: Any) -> float:
        acc = original(supernet, arch, x, y, config, **kw)
        if "calibration" in kw:
            scores[arch.key] = acc
        return acc

    monkeypatch.setattr(enas, "shared_accuracy", spy)
    space = make_space(load_config(tiny()))
    rng = np.random.default_rng(0)
    sizes = [count_params(build_model(space, space.sample(rng), input_shape=(1, 8, 8), num_classes=10))
             for _ in range(30)]
    limit = int(np.percentile(sizes, 10))
    run_oneshot(tmp_path / "run", **{"objective.constraints": [f"params<={limit}:soft=-3"],
                                     "oneshot.derive_finalists": 0, "oneshot.derive_samples": 16,
                                     "oneshot.top_k": 5})
    derived = store_derived(tmp_path / "run")
    # each reward is the objective on the candidate's accuracy and size, and they come in its order
    for d in derived:
        assert d.reward == pytest.approx(d.score**3 * min(1.0, (d.metrics["params"] / limit) ** -3))
    assert [d.reward for d in derived] == sorted((d.reward for d in derived), reverse=True)
    # the objective's order is not the accuracy's here, so ranking by accuracy would fail this
    assert [d.score for d in derived] != sorted(scores.values(), reverse=True)[: len(derived)]


def test_warmup_epochs_train_uniformly_drawn_children_before_any_controller_round(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    sampled: list[int] = []
    original = Reinforce.sample

    def spy(self: Reinforce, n: int, seed: int) -> Any:
        sampled.append(n)
        return original(self, n, seed)

    monkeypatch.setattr(Reinforce, "sample", spy)
    run_oneshot(tmp_path / "run", **{"oneshot.warmup_epochs": 1})
    store = TrialStore(tmp_path / "run" / "runs.db", readonly=True)
    updates, epochs = store.updates(), store.epochs()
    store.close()
    steps = steps_per_epoch(_train_size(), load_config(tiny()).oneshot.shared_training())
    # the policy drew epochs 2 and 3's training children and the derivation, not epoch 1's
    assert sampled == [steps] * (EPOCHS - 1) + [10]
    assert len(updates) == (EPOCHS - 1) * STEPS and min(m["oneshot/epoch"] for _, _, m in updates) == 2
    assert "controller/entropy" not in epochs[0][2] and "controller/entropy" in epochs[1][2]
    assert main(["status", str(tmp_path / "run")]) == 0 and main(["report", str(tmp_path / "run")]) == 0
    assert f"epochs: {EPOCHS}/{EPOCHS} done" in capsys.readouterr().out
    assert main(["search", "--method", "enas", "--out", str(tmp_path / "bad"), "--quiet",
                 "--set", f"oneshot.epochs={EPOCHS}", "--set", f"oneshot.warmup_epochs={EPOCHS}"]) == 2
    assert "oneshot.warmup_epochs must be from 0 to" in capsys.readouterr().err
