"""Constrained decoding: the controller, and REINFORCE with it, stay inside a feasible set."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import pytest
import torch

from nasrl.benchmark import feasible_set, run_tabular, tabular_objective
from nasrl.controller import Controller, ControllerConfig
from nasrl.evaluators import TabularEvaluator
from nasrl.objectives import ObjectiveConfig
from nasrl.search import Search, SearchConfig
from nasrl.spaces import Architecture, Categorical, ConvSpace, SearchSpace
from nasrl.spaces.feasible import FeasiblePrefixes
from nasrl.strategies import Observation, Reinforce, make_strategy

# 3 decisions x 4 options; "cost" = sum of the options, feasible when <= 3 (20 of 64).
# Masks are non-trivial at every position: after a 3 only zeros may follow.
SMALL = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(3)], name="small")
LIMIT = 3


def cost(arch: Architecture) -> dict[str, float]:
    return {"macs": float(sum(v for _, v in arch.choices))}  # type: ignore[misc]


def all_archs(space: SearchSpace) -> list[Architecture]:
    rows = itertools.product(*(range(k) for k in space.token_arities()))
    return [space.from_tokens(r) for r in rows]


@pytest.fixture
def feasible() -> FeasiblePrefixes:
    return FeasiblePrefixes.enumerate(SMALL, cost, {"macs": LIMIT})


def test_allowed_tokens_are_exactly_those_with_a_feasible_completion(feasible: FeasiblePrefixes) -> None:
    archs = all_archs(SMALL)
    ok = {tuple(SMALL.to_tokens(a)) for a in archs if cost(a)["macs"] <= LIMIT}
    assert len(feasible) == len(ok) == 20
    for depth in range(SMALL.num_tokens):
        for prefix in itertools.product(range(4), repeat=depth):
            expected = [any(r[: depth + 1] == (*prefix, t) for r in ok) for t in range(4)]
            assert feasible.allowed(prefix) == expected


def test_masked_controller_samples_only_feasible_architectures(feasible: FeasiblePrefixes) -> None:
    ctrl = Controller(SMALL, ControllerConfig(init_range=1.0), seed=0)
    ctrl.feasible = feasible
    out = ctrl.sample(500, torch.Generator().manual_seed(0))
    archs = ctrl.decode(out.tokens)
    assert all(cost(a)["macs"] <= LIMIT for a in archs)
    assert len({a.key for a in archs}) == 20  # and it reaches all of them
    # sampling and scoring agree under the mask, as they do without one
    torch.testing.assert_close(out.log_prob, ctrl.score(out.tokens).log_prob)
    torch.testing.assert_close(out.entropy, ctrl.score(out.tokens).entropy)


def test_log_probs_are_those_of_the_per_step_masked_distribution(feasible: FeasiblePrefixes) -> None:
    ctrl = Controller(SMALL, ControllerConfig(init_range=1.0), seed=1)
    archs = all_archs(SMALL)
    tokens = ctrl.encode(archs)
    with torch.no_grad():
        free = {tuple(r): p for r, p in zip(tokens.tolist(), ctrl.score(tokens).log_prob.exp().tolist(),
                                             strict=True)}
        ctrl.feasible = feasible
        masked = ctrl.score(tokens).log_prob

    def marginal(prefix: tuple[int, ...]) -> float:  # unmasked P(prefix)
        return sum(p for r, p in free.items() if r[: len(prefix)] == prefix)

    for row, lp in zip(tokens.tolist(), masked.tolist(), strict=True):
        if cost(SMALL.from_tokens(row))["macs"] > LIMIT:
            assert lp == -math.inf
            continue
        # q(t | prefix) = p(t | prefix) / sum of p over the allowed t', step by step
        expected = 0.0
        for d, tok in enumerate(row):
            prefix = tuple(row[:d])
            allowed = [t for t, ok in enumerate(feasible.allowed(prefix)) if ok]
            expected += math.log(marginal((*prefix, tok)) / sum(marginal((*prefix, t)) for t in allowed))
        assert lp == pytest.approx(expected, abs=1e-5)
    assert masked.exp().sum().item() == pytest.approx(1.0, abs=1e-5)


def test_masked_gradients_are_finite(feasible: FeasiblePrefixes) -> None:
    ctrl = Controller(SMALL, seed=2)
    ctrl.feasible = feasible
    out = ctrl.sample(16, torch.Generator().manual_seed(0))
    (out.log_prob.sum() + out.entropy.sum()).backward()  # type: ignore[no-untyped-call]
    grads = [p.grad for p in ctrl.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def test_skip_flags_are_masked_one_by_one() -> None:
    # a conv space with skip sets: at most one skip connection in the whole network
    space = ConvSpace(num_layers=3, filter_heights=(1,), filter_widths=(3,), num_filters=(8,))

    def skips(arch: Architecture) -> dict[str, float]:
        return {"params": float(sum(len(v) for _, v in arch.choices if isinstance(v, tuple)))}

    feasible = FeasiblePrefixes.enumerate(space, skips, {"params": 1})
    ctrl = Controller(space, ControllerConfig(init_range=2.0), seed=0)
    ctrl.feasible = feasible
    out = ctrl.sample(300, torch.Generator().manual_seed(0))
    assert all(skips(a)["params"] <= 1 for a in ctrl.decode(out.tokens))
    with torch.no_grad():
        total = ctrl.score(ctrl.encode(all_archs(space))).log_prob.exp().sum()
    assert total.item() == pytest.approx(1.0, abs=1e-5)


def test_enumerate_refuses_a_large_space() -> None:
    with pytest.raises(Exception, match="too many"):
        FeasiblePrefixes.enumerate(SMALL, cost, {"macs": LIMIT}, max_size=10)


@pytest.mark.parametrize("avoid_seen", [True, False])
def test_reinforce_told_the_feasible_set_proposes_only_feasible(feasible: FeasiblePrefixes,
                                                                 avoid_seen: bool) -> None:
    rl = make_strategy("reinforce", SMALL, 0, {"avoid_seen": avoid_seen, "learning_rate": 0.1})
    rl.restrict(feasible)
    for _ in range(8):
        archs = rl.ask(5)
        assert all(cost(a)["macs"] <= LIMIT for a in archs)
        rl.tell([Observation(a, cost(a)["macs"] / 3) for a in archs])
    # an infeasible architecture told from outside (a resumed run) is seen, never learned
    outside = SMALL.make({"d0": 3, "d1": 3, "d2": 3})
    assert isinstance(rl, Reinforce) and outside not in feasible
    updates, buffered = rl.num_updates, len(rl.buffer)
    rl.tell([Observation(outside, 1.0)] * 5)
    assert rl.num_updates == updates and len(rl.buffer) == buffered
    assert outside.key in rl.seen


def test_constrained_benchmark_spends_no_budget_outside_the_limit(nb201_table: TabularEvaluator) -> None:
    limit = 30e6
    objective = tabular_objective({"constraints": [f"macs<={limit}"]})
    feasible = feasible_set(nb201_table, objective)
    assert feasible is not None
    rl = make_strategy("reinforce", nb201_table.space, 0)
    rl.restrict(feasible)
    trace = run_tabular(rl, nb201_table, 60, objective)
    assert trace.points is not None and len(trace.points) == 60
    assert max(c for _, c in trace.points) <= limit
    # turned off, the same strategy does spend budget above the limit
    off = make_strategy("reinforce", nb201_table.space, 0, {"constrained_decoding": False})
    off.restrict(feasible)
    points = run_tabular(off, nb201_table, 60, objective).points
    assert points is not None and max(c for _, c in points) > limit


def test_constrained_tabular_search_proposes_only_feasible_cells(tmp_path: Path, nb201_table_path: Path) -> None:
    config = SearchConfig(space="nb201", evaluator="tabular", table=str(nb201_table_path), budget=30,
                          executor="serial", objective=ObjectiveConfig(constraints=("macs<=30M",)))
    Search.create(tmp_path / "run", config).run()
    from nasrl.runs import open_run

    trials = open_run(tmp_path / "run").store.trials()
    assert len(trials) >= 30 and all(t.feasible and t.metrics["macs"] <= 30e6 for t in trials)


def test_tabular_search_with_no_feasible_cell_still_runs(tmp_path: Path, nb201_table_path: Path) -> None:
    # nothing to restrict to: the search stores its trials as infeasible, as it always did
    config = SearchConfig(space="nb201", evaluator="tabular", table=str(nb201_table_path), budget=5,
                          executor="serial", objective=ObjectiveConfig(constraints=("macs<=1k",)))
    Search.create(tmp_path / "run", config).run()
    from nasrl.runs import open_run

    trials = open_run(tmp_path / "run").store.trials()
    assert len(trials) >= 5 and not any(t.feasible for t in trials)


@pytest.mark.parametrize("sampler", ["trie", "batched-rounds-then-adaptive-hot-anchorwise",
                                     "compiled-rounds-then-adaptive-hot"])
def test_the_last_unseen_feasible_architectures_are_found_however_unlikely(sampler: str) -> None:
    from nasrl.controller.unique import sample_unseen

    # a sharp policy over 64 architectures, 20 feasible; the two least likely of those are
    # left unseen, at probabilities far under float32's rounding of the seen ones' mass
    space = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(3)], name="small")
    rows = [list(r) for r in itertools.product(range(4), repeat=3) if sum(r) <= 3]
    ctrl = Controller(space, ControllerConfig(init_range=4.0), seed=0)
    ctrl.feasible = FeasiblePrefixes(space, [space.from_tokens(r) for r in rows])
    with torch.no_grad():
        logp = ctrl.score(torch.tensor(rows)).log_prob
    order = torch.argsort(logp).tolist()
    assert float(logp[order[1]]) < -17  # P < 4e-8
    unseen = sorted(rows[i] for i in order[:2])
    seen = [rows[i] for i in order[2:]]
    drawn = sample_unseen(ctrl, seen, 2, torch.Generator().manual_seed(0), sampler=sampler)
    assert sorted(row for row, _ in drawn) == unseen


@pytest.mark.parametrize("sampler", ["trie", "compiled-rounds-then-adaptive-hot"])
def test_seen_rows_outside_the_feasible_set_do_not_close_its_prefixes(sampler: str) -> None:
    from nasrl.controller.unique import sample_unseen

    # under a prefix, two feasible rows unseen and two infeasible ones seen (as a front
    # search's dearer tiers leave them): the prefix still has feasible rows to give
    space = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(3)], name="small")
    rows = [list(r) for r in itertools.product(range(4), repeat=3) if sum(r) <= 3]
    ctrl = Controller(space, ControllerConfig(init_range=0.5), seed=0)
    ctrl.feasible = FeasiblePrefixes(space, [space.from_tokens(r) for r in rows])
    unseen = [[1, 1, 0], [1, 1, 1]]
    seen = [r for r in rows if r not in unseen] + [[1, 1, 2], [1, 1, 3]]
    drawn = sample_unseen(ctrl, seen, 2, torch.Generator().manual_seed(0), sampler=sampler)
    assert sorted(row for row, _ in drawn) == unseen


def test_completions_count_the_feasible_rows_below_a_prefix(feasible: FeasiblePrefixes) -> None:
    rows = [list(r) for r in itertools.product(range(4), repeat=3)]
    for prefix in [[], [0], [1], [3], [0, 0], [1, 2], [3, 0], [2, 2], [0, 1, 2], [3, 3, 3]]:
        below = [r for r in rows if r[:len(prefix)] == prefix
                 and feasible.contains_row(r)]
        assert feasible.completions(prefix) == len(below)
    assert feasible.completions([]) == len(feasible)
