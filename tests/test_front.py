"""The front search (``ReinforceConfig.front_tiers``): cost tiers, a tier-conditioned
controller, per-tier baselines and elites, and what a benchmark under a limit runs."""

from __future__ import annotations

import copy
import io
import itertools
import math
from pathlib import Path

import pytest
import torch

from nasrl.benchmark import (
    FRONT_SEARCH,
    FRONT_TIERS,
    constrained_defaults,
    feasible_set,
    run_tabular,
    tabular_objective,
)
from nasrl.cli import main
from nasrl.config import ConfigError
from nasrl.controller import Controller, ControllerConfig
from nasrl.evaluators import TabularEvaluator
from nasrl.spaces import Architecture, Categorical, SearchSpace
from nasrl.spaces.feasible import FeasiblePrefixes
from nasrl.strategies import Observation, Reinforce, make_strategy
from nasrl.strategies.reinforce import front_tiers

# 3 decisions x 4 options; cost 1 + the sum of the options, feasible when <= 4 (20 of 64):
# geometric tiers between 1 and 4 are 1, 2, 4 (1, 4 and 20 architectures).
SMALL = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(3)], name="small")


def cost(arch: Architecture) -> dict[str, float]:
    return {"macs": 1.0 + sum(v for _, v in arch.choices), "params": 7.0}  # type: ignore[misc]


def reward(arch: Architecture) -> float:
    return cost(arch)["macs"] / 4  # dearer is better, as accuracy usually is


@pytest.fixture
def feasible() -> FeasiblePrefixes:
    return FeasiblePrefixes.enumerate(SMALL, cost, {"macs": 4})


def front(feasible: FeasiblePrefixes, **config: object) -> Reinforce:
    # the policy's own draws unless a test asks for local ones (front_local_share)
    rl = make_strategy("reinforce", SMALL, 0, {**FRONT_SEARCH, "front_tiers": 3, "front_local_share": 0.0,
                                               **config})
    assert isinstance(rl, Reinforce)
    rl.restrict(feasible)
    return rl


def test_tiers_are_geometric_achievable_limits_and_keep_only_limited_costs(feasible: FeasiblePrefixes) -> None:
    assert feasible.limits == {"macs": 4} and all(set(c) == {"macs"} for c in (feasible.costs or {}).values())
    limits, sets = front_tiers(feasible, 3)
    assert limits == [1.0, 2.0, 4.0] and [len(s) for s in sets] == [1, 4, 20] and sets[-1] is feasible
    # 1, 4^(1/3) = 1.59 -> 1 (merged with the first), 4^(2/3) = 2.52 -> 2, 4
    assert front_tiers(feasible, 4)[0] == [1.0, 2.0, 4.0]
    assert sets[1].limits == {"macs": 2.0}
    assert {a.key for a in all_archs() if a in sets[1]} == {a.key for a in all_archs() if cost(a)["macs"] <= 2}


def all_archs() -> list[Architecture]:
    return [SMALL.from_tokens(r) for r in itertools.product(range(4), repeat=3)]


@pytest.mark.parametrize("avoid_seen", [True, False])
def test_each_sample_respects_its_tiers_limit(feasible: FeasiblePrefixes, avoid_seen: bool) -> None:
    rl = front(feasible, avoid_seen=avoid_seen, learning_rate=0.1)
    asked: list[Architecture] = []
    for _ in range(4):
        archs = rl.ask(5)
        assert all(cost(a)["macs"] <= rl.tier_limits[rl.tier_of[a.key]] for a in archs)
        asked += archs
        rl.tell([Observation(a, reward(a)) for a in archs])
    if avoid_seen:  # all 20 feasible, none twice: an exhausted cheap tier's asks move up
        assert len({a.key for a in asked}) == 20


def test_tier_schedule_gives_the_top_its_share_and_lower_tiers_by_size(feasible: FeasiblePrefixes) -> None:
    rl = front(feasible, avoid_seen=False)
    tiers: list[int] = []
    for _ in range(6):
        tiers += rl._tier_schedule(5)
    # half the asks at the top; the lower ones in proportion to the tiers' sizes (1 : 4),
    # the cheaper first on a tie
    assert tiers.count(2) == 15 and tiers.count(0) == 3 and tiers.count(1) == 12
    assert tiers[:8] == [1, 2, 1, 2, 1, 2, 0, 2] and rl.asked == 30
    quarter = front(feasible, avoid_seen=False, front_top_share=0.25)
    assert quarter._tier_schedule(8).count(2) == 2


def test_tier_conditioning_changes_the_distribution_and_is_absent_without_it() -> None:
    plain = Controller(SMALL, ControllerConfig(init_range=1.0), seed=3)
    tiered = Controller(SMALL, ControllerConfig(init_range=1.0), seed=3, num_tiers=2)
    tokens = torch.tensor(list(itertools.product(range(4), repeat=3)))
    # unconditioned, the tiered controller is the plain one (same weights, same draws)
    torch.testing.assert_close(tiered.score(tokens).log_prob, plain.score(tokens).log_prob, rtol=0, atol=0)
    with tiered.conditioned([0], [None, None]):
        low = tiered.score(tokens).log_prob
    with tiered.conditioned([1], [None, None]):
        high = tiered.score(tokens).log_prob
    assert (low - high).abs().max() > 0.05
    # per-row tiers score each row as its own tier does
    with tiered.conditioned([0, 1] * 32, [None, None]):
        mixed = tiered.score(tokens).log_prob
    torch.testing.assert_close(mixed, torch.where(torch.arange(64) % 2 == 0, low, high))


def test_asked_log_probs_are_those_of_the_conditioned_masked_policy(feasible: FeasiblePrefixes) -> None:
    rl = front(feasible, avoid_seen=False)
    archs = rl.ask(10)
    for arch in archs:
        tier = rl.tier_of[arch.key]
        with torch.no_grad(), rl.controller.conditioned([tier], rl.tier_sets):
            logp = float(rl.controller.score(rl.controller.encode([arch])).log_prob[0])
        assert math.isclose(rl.sampled_logp[arch.key], logp, rel_tol=1e-5)
    # the only architecture of tier 0 is certain there
    zero = SMALL.make({"d0": 0, "d1": 0, "d2": 0})
    with torch.no_grad(), rl.controller.conditioned([0], rl.tier_sets):
        assert float(rl.controller.score(rl.controller.encode([zero])).log_prob[0]) == 0.0


def test_each_tier_has_its_own_baseline(feasible: FeasiblePrefixes) -> None:
    rl = front(feasible, baseline_decay=0.5, elite_weight=0.0)
    a = {k: SMALL.make(dict(zip(("d0", "d1", "d2"), k, strict=True))) for k in
         [(0, 0, 0), (1, 0, 0), (0, 1, 0), (3, 0, 0), (1, 1, 1), (2, 1, 0), (0, 0, 3)]}
    batch = [(a[(3, 0, 0)], 2, 0.1), (a[(1, 1, 1)], 2, 0.2), (a[(1, 0, 0)], 1, 0.3),
             (a[(2, 1, 0)], 2, 0.4), (a[(0, 0, 0)], 0, 0.5)]
    # the first batch: leave-one-out within each tier, a lone row is its own baseline
    base = rl._tier_base(torch.tensor([r for *_, r in batch]), [t for _, t, _ in batch])
    torch.testing.assert_close(base, torch.tensor([0.3, 0.25, 0.3, 0.15, 0.5]))
    for arch, tier, _ in batch:
        rl.tier_of[arch.key] = tier
    rl.tell([Observation(x, r) for x, _, r in batch])
    assert rl.tier_baselines == pytest.approx({2: (0.1 + 0.2 + 0.4) / 3, 1: 0.3, 0: 0.5})
    # a batch of tier 2 only moves tier 2's EMA
    second = [a[(0, 0, 3)], a[(0, 1, 0)], a[(3, 0, 0)], a[(1, 1, 1)], a[(2, 1, 0)]]
    for arch in second:
        rl.tier_of[arch.key] = 2
    rl.tell([Observation(x, 1.0) for x in second])
    assert rl.tier_baselines == pytest.approx({2: 0.5 * (0.7 / 3) + 0.5, 1: 0.3, 0: 0.5})


def test_lower_tiers_imitate_their_own_best(feasible: FeasiblePrefixes) -> None:
    rl = front(feasible)
    top, cheap = SMALL.make({"d0": 3, "d1": 0, "d2": 0}), SMALL.make({"d0": 0, "d1": 1, "d2": 0})
    rl.tell([Observation(top, 0.9), Observation(cheap, 0.5)])
    assert rl.elites == [(0.9, SMALL.to_tokens(top))]
    assert rl.tier_elites == {1: [(0.5, SMALL.to_tokens(cheap))]}  # tier 0 holds neither


def test_lower_tiers_imitate_the_projections_of_the_next_dearer_best(feasible: FeasiblePrefixes) -> None:
    rl = front(feasible)
    dear, mid = SMALL.make({"d0": 3, "d1": 0, "d2": 0}), SMALL.make({"d0": 1, "d1": 0, "d2": 0})
    rl.tell([Observation(dear, 0.9)])
    # tier 1 (cost <= 2) nearest the top's best (3,0,0): (0,0,0) and (1,0,0), one decision off
    assert rl._projections(1) == [[0, 0, 0], [1, 0, 0]]
    assert rl._projections(0) == []  # tier 1 has no best yet
    rl.tell([Observation(mid, 0.5)])
    assert rl._projections(0) == [[0, 0, 0]] and rl._projections(1) == [[0, 0, 0], [1, 0, 0]]
    rl.tell([Observation(SMALL.make({"d0": 0, "d1": 0, "d2": 0}), 0.7)])
    assert rl._projections(0) == []  # tier 1's best is in tier 0 already


def test_the_projection_term_raises_the_projections_likelihood(feasible: FeasiblePrefixes) -> None:
    near = torch.tensor([[0, 0, 0], [1, 0, 0]])
    gains = {}
    for weight in (0.0, 1.0):
        rl = front(feasible, front_projection=weight, elite_weight=0.5, learning_rate=0.1,
                   batch_size=1)
        with torch.no_grad(), rl.controller.conditioned([1], rl.tier_sets):
            before = rl.controller.score(near).log_prob.sum()
        # one top-tier row: the update's only gradients are its own and the imitation terms
        rl.tell([Observation(SMALL.make({"d0": 3, "d1": 0, "d2": 0}), 0.9)])
        with torch.no_grad(), rl.controller.conditioned([1], rl.tier_sets):
            gains[weight] = float(rl.controller.score(near).log_prob.sum() - before)
    assert gains[1.0] > gains[0.0] + 0.05, gains


def hamming(a: Architecture, b: list[int]) -> int:
    return sum(x != y for x, y in zip(SMALL.to_tokens(a), b, strict=True))


def test_front_local_asks_edit_their_tiers_best_within_its_limit(feasible: FeasiblePrefixes) -> None:
    rl = front(feasible, front_local_share=0.5, learning_rate=0.1)
    rl.tell([Observation(x, reward(x)) for x in rl.ask(5)])
    edits = 0
    for _ in range(2):
        parents = {t: [row for _, row in e] for t, e in rl.tier_parents.items()}
        archs = rl.ask(5)
        local = {a.key for a in archs if a.key in rl.local_keys}
        edits += len(local)
        for arch in (a for a in archs if a.key in local):
            assert arch.key not in rl.tier_of  # never learned from
            # one token from a parent of a tier, and inside that tier's limit
            assert any(arch in rl.tier_sets[t] and any(hamming(arch, p) == 1 for p in rows)
                       for t, rows in parents.items())
        rl.tell([Observation(x, reward(x)) for x in archs])
        assert not local & {a.key for a, _ in rl.buffer}
    assert edits >= 4  # half of the ten asks, less a slot with no unseen edit left
    # each tier's parents are the best evaluated within its limit
    for tier, rows in rl.tier_parents.items():
        assert all(rl.space.from_tokens(row) in rl.tier_sets[tier] for _, row in rows)


def test_a_front_state_saved_without_local_asks_resumes_without_them(feasible: FeasiblePrefixes) -> None:
    old = front(feasible, front_local_share=0.0, learning_rate=0.1)
    for _ in range(2):
        old.tell([Observation(x, reward(x)) for x in old.ask(5)])
    assert "local_share" not in old.state_dict()["front"]
    new = front(feasible, front_local_share=0.5, learning_rate=0.1)
    new.load_state_dict(copy.deepcopy(old.state_dict()))
    assert new.front_local_share == 0.0
    for _ in range(2):
        archs = old.ask(5)
        assert new.ask(5) == archs and not new.local_keys
        for s in (old, new):
            s.tell([Observation(x, reward(x)) for x in archs])


@pytest.mark.parametrize("local_share", [0.0, 0.4])
def test_state_round_trip_continues_identically(feasible: FeasiblePrefixes, local_share: float) -> None:
    a = front(feasible, learning_rate=0.1, front_local_share=local_share)
    for _ in range(4):  # 16 asks: the local schedule is not back at its phase 0
        archs = a.ask(4)
        a.tell([Observation(x, reward(x)) for x in archs[:-1]])  # one left in flight
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    assert state["front"]["tier_baselines"] and state["front"]["asked"] == 16
    b = make_strategy("reinforce", SMALL, 99, {**FRONT_SEARCH, "front_tiers": 3, "learning_rate": 0.1,
                                                "front_local_share": local_share})
    b.restrict(feasible)
    b.load_state_dict(state)
    assert isinstance(b, Reinforce) and b.local_keys == a.local_keys
    assert bool(a.local_keys) == (local_share > 0)  # a local ask was in flight when saved
    for _ in range(4):
        archs = a.ask(5)
        assert b.ask(5) == archs
        obs = [Observation(x, reward(x)) for x in archs]
        a.tell(obs)
        b.tell(obs)
    assert b.tier_baselines == a.tier_baselines and b.tier_parents == a.tier_parents


def test_without_a_feasible_set_front_tiers_change_nothing() -> None:
    plain = make_strategy("reinforce", SMALL, 5, FRONT_SEARCH)
    tiered = make_strategy("reinforce", SMALL, 5, {**FRONT_SEARCH, "front_tiers": 4})
    for _ in range(8):
        archs = plain.ask(5)
        assert tiered.ask(5) == archs
        plain.tell([Observation(x, reward(x)) for x in archs])
        tiered.tell([Observation(x, reward(x)) for x in archs])
    assert "front" not in plain.state_dict()


@pytest.mark.parametrize(("config", "message"), [
    ({"front_tiers": 1}, "front_tiers must be 0 (off) or at least 2"),
    ({"front_tiers": -2}, "front_tiers must be 0 (off) or at least 2"),
    ({"front_tiers": 3, "constrained_decoding": False}, "front_tiers needs constrained_decoding"),
    ({"front_tiers": 3, "baseline": "leave_one_out"}, "front_tiers keeps one EMA baseline per tier"),
    ({"front_top_share": 0.0}, "front_top_share must be in (0, 1]"),
    ({"front_projection": -1.0}, "front_projection must be >= 0"),
    ({"front_top_share": 1.5}, "front_top_share must be in (0, 1]"),
    ({"front_local_share": 1.0}, "front_local_share must be in [0, 1)"),
    ({"front_local_share": -0.2}, "front_local_share must be in [0, 1)"),
])
def test_bad_front_config_is_a_config_error(config: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make_strategy("reinforce", SMALL, 0, config)


def test_front_metric_must_be_a_limited_cost(feasible: FeasiblePrefixes) -> None:
    rl = make_strategy("reinforce", SMALL, 0, {**FRONT_SEARCH, "front_tiers": 3, "front_metric": "params"})
    with pytest.raises(ConfigError, match="front_metric 'params' is not a hard static limit"):
        rl.restrict(feasible)


def test_a_constrained_benchmark_searches_the_front_by_default(nb201_table: TabularEvaluator) -> None:
    objective = {"constraints": ["macs<=30M"]}
    assert constrained_defaults({}, objective) == {"reinforce": {"front_tiers": FRONT_TIERS, **FRONT_SEARCH}}
    assert constrained_defaults({"reinforce": {"front_tiers": 0}}, objective)["reinforce"]["front_tiers"] == 0
    assert constrained_defaults({}, None) == {} and constrained_defaults({}, {"constraints": ["macs<=30M:soft"]}) == {}
    limits = tabular_objective(objective)
    feasible = feasible_set(nb201_table, limits)
    assert feasible is not None
    rl = make_strategy("reinforce", nb201_table.space, 0, {**FRONT_SEARCH, "front_tiers": FRONT_TIERS})
    assert isinstance(rl, Reinforce)
    rl.restrict(feasible)
    trace = run_tabular(rl, nb201_table, 40, limits)
    assert trace.points is not None and max(c for _, c in trace.points) <= 30e6
    # the cheap tiers are visited: a plain search for the best feasible cell stays at the limit
    assert min(c for _, c in trace.points) <= rl.tier_limits[0] < rl.tier_limits[-1] <= 30e6


@pytest.mark.parametrize(("setting", "message"), [
    ("reinforce.front_tiers=1", "reinforce.front_tiers must be 0 (off) or at least 2, got 1"),
    ("reinforce.front_metric=params", "reinforce.front_metric 'params' is not a hard static limit"),
    ("reinforce.front_top_share=2", "reinforce.front_top_share must be in (0, 1], got 2.0"),
])
def test_bad_front_settings_on_the_command_line_are_one_line(
        setting: str, message: str, nb201_table_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "nb201", "--strategies", "reinforce", "--budget", "5", "--seeds", "1",
                 "--jobs", "1", "--table", str(nb201_table_path), "--constraint", "macs<=median",
                 "--set", setting]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
