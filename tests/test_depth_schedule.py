"""The paper's growing depth inside the multi-trial search (``space_params.depth_schedule``):
each child at the depth the schedule gives its position, every strategy across depths,
the depth visible in status, and kill -9 + resume across a change of depth."""

from __future__ import annotations

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

from nasrl.config import ConfigError
from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution import SerialExecutor
from nasrl.search import Search, SearchConfig
from nasrl.spaces import Architecture
from nasrl.spaces.conv import ConvSpace, DepthSchedule
from nasrl.store import StoreError, TrialStore
from nasrl.strategies.base import Observation, make_strategy

SCHEDULE = {"start": 2, "step": 1, "every": 7, "maximum": 4}


def depth(arch: Architecture) -> int:
    return ConvSpace().space_of(arch).num_layers


class FilterEvaluator(Evaluator):
    """A cheap landscape on conv architectures: the share of layers with 64 filters."""

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        choices = arch.as_dict()
        filters = [v for k, v in choices.items() if k.endswith(".filters")]
        acc = 0.5 + 0.4 * sum(f == 64 for f in filters) / len(filters)
        return EvalResult("complete", {"val_acc": acc, "val_acc_max_last": acc})


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True,
                          timeout=timeout)


# -- the schedule ------------------------------------------------------------------------------------
def test_segments_split_a_round_at_each_change_and_merge_at_the_maximum() -> None:
    schedule = DepthSchedule(start=2, step=1, every=7, maximum=4)
    assert schedule.segments(0, 5) == [(2, 5)]
    assert schedule.segments(5, 5) == [(2, 2), (3, 3)]
    assert schedule.segments(12, 10) == [(3, 2), (4, 8)]  # 14..20 and 21.. are both capped at 4
    assert [schedule.depth_at(i) for i in (0, 6, 7, 13, 14, 100)] == [2, 2, 3, 3, 4, 4]


def test_a_shallow_rows_tokens_are_a_prefix_of_the_deeper_spaces_and_name_their_depth() -> None:
    space = ConvSpace(num_layers=2)
    deep = space.with_layers(5)
    assert space.with_layers(5) is deep and deep.with_layers(2) is space  # one family, built once
    arch = space.sample(np.random.default_rng(0))
    grown = deep.adapt(arch, np.random.default_rng(1))
    assert deep.to_tokens(grown)[: space.num_tokens] == space.to_tokens(arch)
    assert deep.space_of(arch) is space and space.space_of(grown) is deep
    assert space.space_of_tokens(deep.num_tokens) is deep
    assert grown.key != arch.key and space.describe(grown) == deep.describe(grown)


def test_scoring_a_mixed_depth_batch_equals_scoring_each_depth_alone() -> None:
    """The controller is causal, so a shallow row padded to a deep one keeps its own
    log-probability and entropy: one batch can hold every depth of the schedule."""
    strategy = make_strategy("reinforce", ConvSpace(num_layers=2), 0)
    controller = strategy.controller  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    spaces = [ConvSpace(num_layers=d) for d in (2, 4, 3, 4)]
    rows = [s.to_tokens(s.sample(rng)) for s in spaces]
    mixed = controller.score_rows(rows)
    for i, (s, row) in enumerate(zip(spaces, rows, strict=True)):
        controller.use_space(s)
        alone = controller.score(torch.tensor([row]))
        assert torch.allclose(mixed.log_prob[i], alone.log_prob[0], atol=1e-5)
        assert torch.allclose(mixed.entropy[i], alone.entropy[0], atol=1e-5)
    assert mixed.token_mask is not None and mixed.token_mask.sum(1).tolist() == [len(r) for r in rows]


def test_reinforce_learns_from_a_mixed_depth_batch_and_its_state_round_trips() -> None:
    space = ConvSpace(num_layers=2)
    strategy = make_strategy("reinforce", space, 0, {"batch_size": 4, "baseline": "critic",
                                                      "update_epochs": 2})
    asked = strategy.ask(2)
    strategy.use_space(space.with_layers(3))
    asked += strategy.ask(2)
    before = [p.clone() for p in strategy.controller.parameters()]  # type: ignore[attr-defined]
    strategy.tell([Observation(a, 0.1 * i) for i, a in enumerate(asked)])
    after = list(strategy.controller.parameters())  # type: ignore[attr-defined]
    assert any(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    widths = [space.num_tokens] * 2 + [space.with_layers(3).num_tokens] * 2
    assert sorted(len(r) for r in strategy.seen.values()) == widths  # type: ignore[attr-defined]
    # a fresh strategy, built at the first depth as a resumed run builds it, takes the state
    fresh = make_strategy("reinforce", space, 0, {"batch_size": 4, "baseline": "critic",
                                                   "update_epochs": 2})
    fresh.load_state_dict(strategy.state_dict())
    fresh.use_space(space.with_layers(3))
    assert [a.key for a in fresh.ask(3)] == [a.key for a in strategy.ask(3)]


def test_evolution_grows_a_shallow_parent_to_the_depth_asked() -> None:
    space = ConvSpace(num_layers=2)
    strategy = make_strategy("evolution", space, 0, {"population_size": 4, "tournament_size": 2})
    members = strategy.ask(4)
    strategy.tell([Observation(a, float(i)) for i, a in enumerate(members)])
    strategy.use_space(space.with_layers(3))
    children = strategy.ask(3)
    assert [depth(c) for c in children] == [3, 3, 3]
    shallow = {tuple(space.to_tokens(m)) for m in members}
    deep = space.with_layers(3)
    assert all(tuple(deep.to_tokens(c)[: space.num_tokens]) in shallow for c in children)


# -- in the search -----------------------------------------------------------------------------------
@pytest.mark.parametrize("strategy, config", [
    ("reinforce", {"batch_size": 5}),
    ("random", {}),
    ("evolution", {"population_size": 6, "tournament_size": 3}),
])
def test_every_strategy_asks_each_child_at_the_scheduled_depth_and_resumes_identically(
        tmp_path: Path, strategy: str, config: dict[str, object]) -> None:
    cfg = SearchConfig(space="conv", space_params={"depth_schedule": SCHEDULE}, strategy=strategy,
                       strategy_config=config, budget=24, executor="serial", seed=5, round_size=5)
    search = Search.create(tmp_path / "whole", cfg)
    search.run(SerialExecutor(), evaluator=FilterEvaluator())
    want = [(t.arch.key, t.reward) for t in search.store.trials()]
    search.close()

    search = Search.create(tmp_path / "run", cfg)
    # stopped with 10 told and round 2 (children 10-14, depths 3 and 4) asked ahead
    search.run(SerialExecutor(), evaluator=FilterEvaluator(), max_rounds=2)
    search.close()
    search = Search.open(tmp_path / "run")
    search.run(SerialExecutor(), evaluator=FilterEvaluator())
    trials = search.store.trials()
    search.close()
    schedule = DepthSchedule(**SCHEDULE)
    assert [depth(t.arch) for t in trials] == [schedule.depth_at(i) for i in range(len(trials))]
    assert len(trials) == 24 and all(t.state == "complete" for t in trials)
    assert [(t.arch.key, t.reward) for t in trials] == want
    if strategy == "reinforce":  # avoid_seen: every architecture new
        assert len({t.arch.key for t in trials}) == 24


def test_bad_schedules_are_config_errors_naming_the_key() -> None:
    def check(params: dict[str, object], message: str, **kw: object) -> None:
        with pytest.raises(ConfigError, match=message):
            SearchConfig(space_params=params, **kw)  # type: ignore[arg-type]

    check({"depth_schedule": {"every": 0}}, r"depth_schedule\.every must be a positive integer")
    check({"depth_schedule": {"start": 2, "maximum": 1}}, r"maximum \(1\) is below its start")
    check({"depth_schedule": {"grow": 1}}, "unknown key 'grow'")
    check({"depth_schedule": 3}, "must be a table")
    check({"depth_schedule": {"start": 3}, "num_layers": 4}, "disagree")
    check({"depth_schedule": {}}, "only the conv space", space="nb201")
    check({"depth_schedule": {}}, "needs method multi-trial", method="enas")


def test_cli_bad_schedule_is_one_line_exit_2(tmp_path: Path) -> None:
    done = cli("search", "--budget", "3", "--executor", "serial", "--out", str(tmp_path / "run"),
               "--set", "space_params.depth_schedule.every=0")
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0 and "depth_schedule.every" in done.stderr
    assert not (tmp_path / "run").exists()


# -- on digits, killed and resumed -------------------------------------------------------------------
DIGITS = ["--executor", "serial", "--seed", "3", "--quiet",
          "--set", "training.epochs=1", "--set", "training.max_train_samples=200",
          "--set", "space_params.depth_schedule.start=2", "--set", "space_params.depth_schedule.step=1",
          "--set", "space_params.depth_schedule.every=4"]


def final_state(run: Path) -> tuple[list[tuple[str, int, float | None, str]], dict[str, torch.Tensor]]:
    store = TrialStore(run / "runs.db", readonly=True)
    trials: list[tuple[str, int, float | None, str]] = [(t.arch.key, t.seed, t.reward, t.state)
                                                        for t in store.trials()]
    _, _, state = store.strategy_state()
    store.close()
    return trials, state["controller"]


def finished_depths(run: Path) -> set[int]:
    try:
        store = TrialStore(run / "runs.db", readonly=True)
    except (StoreError, sqlite3.Error):
        return set()  # created, not yet committed
    try:
        return {depth(t.arch) for t in store.trials() if t.finished}
    except sqlite3.Error:
        return set()
    finally:
        store.close()


def test_digits_search_grows_the_depth_and_kill_9_after_a_change_then_resume_ends_identically(
        tmp_path: Path) -> None:
    budget = 12  # depths 2, 3, 4 for four children each; rounds of 5 straddle both changes
    reference = tmp_path / "reference"
    done = cli("search", "--budget", str(budget), *DIGITS, "--out", str(reference))
    assert done.returncode == 0, done.stderr
    want_trials, want_params = final_state(reference)
    store = TrialStore(reference / "runs.db", readonly=True)
    assert [depth(t.arch) for t in store.trials()] == [2] * 4 + [3] * 4 + [4] * 4
    store.close()
    status = cli("status", str(reference))
    assert "trials by depth: 4 at 2, 4 at 3, 4 at 4" in status.stdout, status.stdout
    assert cli("report", str(reference)).returncode == 0
    assert "trials by depth: 4 at 2, 4 at 3, 4 at 4" in (reference / "report" / "index.html").read_text()

    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "nasrl", "search", "--budget", str(budget), *DIGITS,
                             "--out", str(run)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and 3 not in finished_depths(run):
            time.sleep(0.01)
        assert proc.poll() is None, "the search ended before its first child of depth 3 finished"
        os.kill(proc.pid, signal.SIGKILL)  # just after the first child of the new depth is stored
    finally:
        proc.wait(timeout=60)
    assert 4 not in finished_depths(run)
    done = cli("resume", str(run), "--quiet")
    assert done.returncode == 0, done.stderr
    got_trials, got_params = final_state(run)
    assert got_trials == want_trials
    assert got_params.keys() == want_params.keys()
    for key in want_params:
        assert torch.equal(got_params[key], want_params[key]), key
