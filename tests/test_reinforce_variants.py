"""Each REINFORCE variant changes the update the way its formula says.

The expected gradient is computed by hand from a copy of the controller taken before the
update -- (1/m) sum_k sum_t -A_kt grad log P(a_kt | a_k,<t) with the A_kt the variant's
formula gives -- and compared with the gradient the strategy's update left on its
parameters (elite imitation, entropy bonus and gradient clipping off, so the policy
gradient is the whole loss unless a test adds a term).
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import torch

from nasrl.config import ConfigError
from nasrl.controller.lstm import Controller, ControllerConfig
from nasrl.spaces import Architecture, Categorical, SearchSpace
from nasrl.strategies import Observation, Reinforce, make_strategy

SMALL = SearchSpace([Categorical(f"d{i}", (0, 1, 2), kind="x") for i in range(3)], name="small")
PLAIN = {"batch_size": 4, "baseline": "ema", "elite_weight": 0.0, "avoid_seen": False, "local_share": 0.0}
"""The EMA baseline spelled out (the default is leave_one_out): most formulas below are its;
no local asks, so every asked architecture is a policy sample the update learns from."""
DATA = Path(__file__).parent / "data"


def reward(arch: Architecture) -> float:
    return 0.1 + 0.3 * sum(v for _, v in arch.choices) / 6


def strategy(**config: object) -> Reinforce:
    s = make_strategy("reinforce", SMALL, 3, {**PLAIN, **config})
    assert isinstance(s, Reinforce)
    return s


def hand_gradient(controller: Controller, archs: list[Architecture],
                  advantage: torch.Tensor) -> list[torch.Tensor]:
    """-(1/m) sum_k sum_t A_kt grad log P(a_kt | a_k,<t); advantage is (m, T) or (m,)."""
    out = controller.score(controller.encode(archs))
    weights = advantage if advantage.dim() == 2 else advantage[:, None].expand_as(out.token_log_prob)
    loss = -(weights * out.token_log_prob).sum(1).mean()
    return list(torch.autograd.grad(loss, list(controller.parameters())))


def update_gradient(s: Reinforce, archs: list[Architecture], rewards: list[float]) -> list[torch.Tensor]:
    """The gradient the strategy's update leaves on the controller's parameters."""
    s.tell([Observation(a, r) for a, r in zip(archs, rewards, strict=True)])
    return [p.grad.clone() for p in s.controller.parameters()]  # type: ignore[union-attr]


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-7)


REWARDS = [0.2, 0.5, 0.35, 0.9]


def test_first_batch_learns_against_leave_one_out_means() -> None:
    s = strategy()
    archs = s.ask(4)
    before = copy.deepcopy(s.controller)
    r = torch.tensor(REWARDS)
    want = hand_gradient(before, archs, r - (r.sum() - r) / 3)
    assert_same(update_gradient(s, archs, REWARDS), want)
    assert s.baseline == pytest.approx(sum(REWARDS) / 4)  # the EMA starts at the batch mean


def test_first_batch_with_a_zero_baseline() -> None:
    s = strategy(first_batch="zero")
    archs = s.ask(4)
    want = hand_gradient(copy.deepcopy(s.controller), archs, torch.tensor(REWARDS))
    assert_same(update_gradient(s, archs, REWARDS), want)


def test_later_batches_use_the_ema_of_earlier_returns() -> None:
    s = strategy(baseline_decay=0.5)
    s.tell([Observation(a, 0.4) for a in s.ask(4)])
    s.tell([Observation(a, 0.8) for a in s.ask(4)])
    assert s.baseline == pytest.approx(0.6)
    archs = s.ask(4)
    want = hand_gradient(copy.deepcopy(s.controller), archs, torch.tensor(REWARDS) - 0.6)
    assert_same(update_gradient(s, archs, REWARDS), want)


def test_no_baseline_uses_the_reward_itself() -> None:
    s = strategy(baseline="none")
    s.tell([Observation(a, 0.4) for a in s.ask(4)])
    archs = s.ask(4)
    want = hand_gradient(copy.deepcopy(s.controller), archs, torch.tensor(REWARDS))
    assert_same(update_gradient(s, archs, REWARDS), want)


def test_leave_one_out_baseline_in_every_batch() -> None:
    s = strategy(baseline="leave_one_out")
    s.tell([Observation(a, 0.4) for a in s.ask(4)])  # no EMA carried over from this batch
    archs = s.ask(4)
    r = torch.tensor(REWARDS)
    want = hand_gradient(copy.deepcopy(s.controller), archs, r - (r.sum() - r) / 3)
    assert_same(update_gradient(s, archs, REWARDS), want)
    assert s.metrics()["controller/baseline"] == pytest.approx(float(((r.sum() - r) / 3).mean()))


def test_rank_shaping_ranks_against_the_latest_returns() -> None:
    s = strategy(advantage_shaping="rank", rank_window=6)
    first = [0.3, 0.1, 0.3, 0.7]
    archs = s.ask(4)
    # first batch, each against its 3 others: 0.3 is above 0.1 and ties 0.3 -> (1 + 0.5) / 3
    want = hand_gradient(copy.deepcopy(s.controller), archs,
                         torch.tensor([2 * 1.5 / 3 - 1, -1.0, 2 * 1.5 / 3 - 1, 1.0]))
    assert_same(update_gradient(s, archs, first), want)
    second = [0.2, 0.5, 0.35, 0.9]
    s.tell([Observation(a, r) for a, r in zip(s.ask(4), second, strict=True)])
    assert s.rank_ref == pytest.approx([0.3, 0.7, *second])  # the window keeps the last 6
    archs = s.ask(4)
    # against [0.3, 0.7, 0.2, 0.5, 0.35, 0.9]: 0.35 is above 2 of 6 and ties 1, 0.95 above
    # all, 0.1 below all, 0.5 above 3 and ties 1
    third = [0.35, 0.95, 0.1, 0.5]
    want = hand_gradient(copy.deepcopy(s.controller), archs,
                         torch.tensor([2 * 2.5 / 6 - 1, 1.0, -1.0, 2 * 3.5 / 6 - 1]))
    assert_same(update_gradient(s, archs, third), want)


def test_rank_shaping_does_not_see_the_rewards_scale() -> None:
    # the same architectures and ranks, rewards 1000x apart: the same update
    grads = []
    for scale in (1.0, 0.001):
        s = strategy(advantage_shaping="rank")
        s.tell([Observation(a, scale * reward(a)) for a in s.ask(4)])
        archs = s.ask(4)
        grads.append(update_gradient(s, archs, [scale * r for r in REWARDS]))
    assert_same(grads[0], grads[1])


def test_rank_shaping_needs_a_batch_or_ema_baseline() -> None:
    with pytest.raises(ConfigError, match="advantage_shaping rank replaces the baseline"):
        make_strategy("reinforce", SMALL, 0, {"advantage_shaping": "rank", "baseline": "critic"})
    make_strategy("reinforce", SMALL, 0, {"advantage_shaping": "rank"})  # with the default
    with pytest.raises(ConfigError, match="rank_window must be >= 1"):
        make_strategy("reinforce", SMALL, 0, {"advantage_shaping": "rank", "rank_window": 0})


def test_rank_reference_survives_a_state_round_trip() -> None:
    s = strategy(advantage_shaping="rank", rank_window=6)
    for _ in range(2):
        s.tell([Observation(a, reward(a)) for a in s.ask(4)])
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    t = strategy(advantage_shaping="rank", rank_window=6)
    t.load_state_dict(torch.load(buf, weights_only=True))
    assert t.rank_ref == s.rank_ref and len(t.rank_ref) == 6
    for x in (s, t):
        x.tell([Observation(a, reward(a)) for a in x.ask(4)])
    assert s.ask(4) == t.ask(4) and s.rank_ref == t.rank_ref


def test_elite_halflife_halves_the_imitation_weight() -> None:
    # the update's gradient is the policy gradient minus w * grad of the elite's log P,
    # w = elite_weight * 0.5 ** (updates / halflife)
    s = strategy(baseline="none", elite_weight=0.3, elite_halflife=2)
    for _ in range(2):
        s.tell([Observation(a, reward(a)) for a in s.ask(4)])
    assert s.num_updates == 2 and s.elites
    archs = s.ask(4)
    before = copy.deepcopy(s.controller)
    assert s.elites[0][0] < 0.9  # rewards of 0.1-0.4 so far: the 0.9 below becomes the elite
    pg = hand_gradient(before, archs, torch.tensor(REWARDS))
    log_p = before.score(before.encode([archs[REWARDS.index(0.9)]])).log_prob.mean()
    imitation = torch.autograd.grad(log_p, list(before.parameters()))
    want = [g - 0.3 * 0.5 * e for g, e in zip(pg, imitation, strict=True)]  # 2 updates: half
    assert_same(update_gradient(s, archs, REWARDS), want)
    with pytest.raises(ConfigError, match="elite_halflife must be > 0"):
        make_strategy("reinforce", SMALL, 0, {"elite_halflife": 0})


def test_a_state_saved_before_shaping_and_halflife_resumes_without_them() -> None:
    # the keys a state gets from this version on, removed: how an older version saved it
    old = strategy(elite_weight=0.1, elite_halflife=None)
    for _ in range(2):
        old.tell([Observation(a, reward(a)) for a in old.ask(4)])
    state = old.state_dict()
    for key in ("advantage_shaping", "rank_ref", "elite_halflife"):
        del state[key]
    new = strategy(elite_weight=0.1, advantage_shaping="rank", elite_halflife=1)
    new.load_state_dict(state)
    assert new.shaping == "none" and new.elite_halflife is None
    for _ in range(2):
        batch = old.ask(4)
        assert new.ask(4) == batch
        for s in (old, new):
            s.tell([Observation(a, reward(a)) for a in batch])
    assert old.ask(4) == new.ask(4)


@pytest.mark.parametrize("clip", [0.05, 0.1])
def test_advantage_clip_clips_r_minus_b_not_the_reward(clip: float) -> None:
    s = strategy(advantage_clip=clip)
    s.tell([Observation(a, 0.4) for a in s.ask(4)])  # b = 0.4
    archs = s.ask(4)
    advantage = (torch.tensor(REWARDS) - 0.4).clamp(-clip, clip)
    want = hand_gradient(copy.deepcopy(s.controller), archs, advantage)
    assert_same(update_gradient(s, archs, REWARDS), want)
    # what reward clipping did instead: every reward above the clip looked alike
    assert advantage.tolist() != torch.tensor(REWARDS).clamp(-clip, clip).sub(0.4).tolist()


def test_removed_reward_clip_names_its_replacement() -> None:
    with pytest.raises(ConfigError, match="'reinforce.reward_clip' was removed.*advantage_clip"):
        make_strategy("reinforce", SMALL, 0, {"reward_clip": 0.1})
    # a run recorded by 0.2.0 lists it unset: that still resumes
    s = make_strategy("reinforce", SMALL, 0, {"reward_clip": None})
    assert "reward_clip" not in s.resolved_config()
    with pytest.raises(ConfigError, match="advantage_clip must be > 0"):
        make_strategy("reinforce", SMALL, 0, {"advantage_clip": 0})


def test_l2_adds_twice_its_weight_times_the_parameters() -> None:
    s = strategy(baseline="none", l2=0.01)
    archs = s.ask(4)
    before = copy.deepcopy(s.controller)
    pg = hand_gradient(before, archs, torch.tensor(REWARDS))
    want = [g + 2 * 0.01 * p.detach() for g, p in zip(pg, before.parameters(), strict=True)]
    assert_same(update_gradient(s, archs, REWARDS), want)


def test_critic_gives_each_decision_the_return_minus_its_prefix_value() -> None:
    s = strategy(baseline="critic")
    archs = s.ask(4)
    want = hand_gradient(copy.deepcopy(s.controller), archs, torch.tensor(REWARDS))  # V starts at 0
    assert_same(update_gradient(s, archs, REWARDS), want)
    s.tell([Observation(a, reward(a)) for a in s.ask(4)])  # the critic has learned twice
    archs = s.ask(4)
    before, critic = copy.deepcopy(s.controller), copy.deepcopy(s.critic)
    assert critic is not None
    with torch.no_grad():  # V(a_<t) = w . h_t / sqrt(H) + c
        hidden = before.score(before.encode(archs)).token_hidden
        values = critic(hidden / hidden.shape[-1] ** 0.5).squeeze(-1)  # (m, T)
    assert float(values.std()) > 0  # the value depends on the prefix
    advantage = torch.tensor(REWARDS)[:, None] - values
    want = hand_gradient(before, archs, advantage)
    assert_same(update_gradient(s, archs, REWARDS), want)


def test_critic_regresses_towards_the_return() -> None:
    s = strategy(baseline="critic", batch_size=8)
    assert s.critic is not None
    target = 0.6
    errors = []
    for _ in range(30):
        archs = s.ask(8)
        with torch.no_grad():
            out = s.controller.score(s.controller.encode(archs))
            errors.append(float((s.value(out.token_hidden) - target).abs().mean()))
        s.tell([Observation(a, target) for a in archs])
    assert errors[0] == pytest.approx(target) and errors[-1] < 0.1 * target


def test_reward_plus_next_adds_the_next_told_reward() -> None:
    s = strategy(baseline="none", batch_size=2, return_mode="reward_plus_next")
    archs = s.ask(5)
    r = [0.1, 0.2, 0.4, 0.8, 0.3]
    before = copy.deepcopy(s.controller)
    s.tell([Observation(archs[0], r[0]), Observation(archs[1], r[1])])
    assert s.num_updates == 0 and s.pending == (archs[1], r[1])  # archs[1] waits for its next
    s.tell([Observation(archs[2], r[2]), Observation(archs[3], None)])  # a failure is skipped
    want = hand_gradient(before, archs[:2], torch.tensor([r[0] + r[1], r[1] + r[2]]))
    assert s.num_updates == 1
    assert_same([p.grad for p in s.controller.parameters()], want)  # type: ignore[misc]
    s.tell([Observation(archs[4], r[4])])
    assert s.buffer == [(archs[2], r[2] + r[4])] and s.pending == (archs[4], r[4])


def test_pending_return_survives_a_state_round_trip() -> None:
    s = strategy(batch_size=2, return_mode="reward_plus_next", baseline="critic")
    archs = s.ask(3)
    s.tell([Observation(a, reward(a)) for a in archs])
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    t = strategy(batch_size=2, return_mode="reward_plus_next", baseline="critic")
    t.load_state_dict(torch.load(buf, weights_only=True))
    assert t.pending == s.pending == (archs[2], reward(archs[2]))
    nxt = s.ask(3)
    assert t.ask(3) == nxt
    for x in (s, t):
        x.tell([Observation(a, reward(a)) for a in nxt])
    assert s.critic is not None and t.critic is not None
    assert torch.equal(s.critic.weight, t.critic.weight) and s.ask(2) == t.ask(2)


def test_measured_variance_is_that_of_the_per_architecture_gradients() -> None:
    s = strategy()
    s.measure_updates = 2
    s.tell([Observation(a, 0.4) for a in s.ask(4)])
    archs = s.ask(4)
    before = copy.deepcopy(s.controller)
    grads = update_gradient(s, archs, REWARDS)
    m = s.metrics()
    assert m["controller/pg_grad_sqnorm"] == pytest.approx(sum(float((g**2).sum()) for g in grads))
    r = torch.tensor(REWARDS)
    rows = []
    for k, arch in enumerate(archs):  # g_k = -A_k grad log P(a_k), one architecture at a time
        g = hand_gradient(before, [arch], (r[k:k + 1] - 0.4))
        rows.append(torch.cat([x.reshape(-1) for x in g]))
    g_all = torch.stack(rows)
    var = float(((g_all - g_all.mean(0)) ** 2).sum()) / (4 * 3)
    assert m["controller/pg_grad_var"] == pytest.approx(var, rel=1e-4)
    assert m["controller/advantage_var"] == pytest.approx(float((r - 0.4).var(unbiased=False)))
    # rewards of ~0.2-0.9 all push the same way without a baseline: more variance
    assert m["controller/pg_grad_var_no_baseline"] > m["controller/pg_grad_var"]
    s.tell([Observation(a, 0.5) for a in s.ask(4)])
    s.tell([Observation(a, 0.5) for a in s.ask(4)])
    assert "controller/pg_grad_var" not in s.metrics()  # only the first measure_updates


def test_without_a_baseline_the_paired_variances_agree() -> None:
    s = strategy(baseline="none")
    s.measure_updates = 1
    s.tell([Observation(a, r) for a, r in zip(s.ask(4), REWARDS, strict=True)])
    m = s.metrics()
    assert m["controller/pg_grad_var"] == pytest.approx(m["controller/pg_grad_var_no_baseline"])


def test_gru_controller_samples_scores_and_learns() -> None:
    gru = Controller(SMALL, ControllerConfig(cell="gru"), seed=0)
    lstm = Controller(SMALL, ControllerConfig(), seed=0)
    assert isinstance(gru.cells[0], torch.nn.GRUCell)
    assert sum(p.numel() for p in gru.parameters()) < sum(p.numel() for p in lstm.parameters())
    out = gru.sample(6, torch.Generator().manual_seed(0))
    torch.testing.assert_close(gru.score(out.tokens).log_prob, out.log_prob)
    s = strategy(controller={"cell": "gru"}, learning_rate=0.1, batch_size=8)
    target = SMALL.make({"d0": 2, "d1": 2, "d2": 2})

    def p_target() -> float:
        with torch.no_grad():
            return float(s.controller.score(s.controller.encode([target])).log_prob.exp())

    start = p_target()
    for _ in range(25):
        archs = s.ask(8)
        s.tell([Observation(a, reward(a)) for a in archs])
    assert p_target() > 5 * start


def test_unknown_cell_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="reinforce.controller.cell"):
        make_strategy("reinforce", SMALL, 0, {"controller": {"cell": "rnn"}})


def test_a_state_saved_by_0_2_0_resumes_as_an_lstm() -> None:
    info = json.loads((DATA / "reinforce-state-0.2.0.json").read_text())
    space = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(4)], name="toy4")
    s = make_strategy("reinforce", space, 999, info["config"])  # no "cell" key: lstm
    assert isinstance(s, Reinforce) and isinstance(s.controller.cells[0], torch.nn.LSTMCell)
    s.load_state_dict(torch.load(DATA / "reinforce-state-0.2.0.pt", weights_only=True))
    assert [a.key for a in s.ask(5)] == info["next_ask"]


def test_critic_stays_finite_on_nb201() -> None:
    # seeds 1 and 2 drove an unscaled critic (lr 0.2 on 35 features in [-1, 1]) to nan
    from nasrl.benchmark import run_tabular
    from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table

    table = TabularEvaluator(find_nb201_table(None))
    for seed in (1, 2):
        s = make_strategy("reinforce", table.space, seed, {"baseline": "critic"})
        assert isinstance(s, Reinforce)
        trace = run_tabular(s, table, 150)
        assert len(trace.best_val) == 150
        assert s.critic is not None and torch.isfinite(s.critic.weight).all()
        assert 0.3 < float(s.critic.bias.detach()) < 1.0  # near the level of cubed accuracies
