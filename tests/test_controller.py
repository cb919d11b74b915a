from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from nasrl.controller import Controller, ControllerConfig
from nasrl.spaces import Categorical, ConvSpace, SearchSpace, get_space, list_spaces

TINY_CONV = ConvSpace(num_layers=3, filter_heights=(1, 3), filter_widths=(3, 5), num_filters=(8,))


@pytest.mark.parametrize("name", list_spaces())
def test_sample_shapes_and_validity(name: str) -> None:
    space = get_space(name)
    ctrl = Controller(space)
    out = ctrl.sample(7, torch.Generator().manual_seed(0))
    assert out.tokens.shape == (7, space.num_tokens)
    assert out.log_prob.shape == (7,) and out.entropy.shape == (7,)
    assert torch.all(out.log_prob < 0) and torch.all(out.entropy > 0)
    for arch in ctrl.decode(out.tokens):
        assert space.validate(arch) == arch


@pytest.mark.parametrize(
    "space",
    [get_space("nb201"), ConvSpace(num_layers=5, predict_strides=True, pooling=True)],
    ids=["nb201", "conv-v3"],
)
@pytest.mark.parametrize("cfg", [ControllerConfig(), ControllerConfig(temperature=2.0,
                                                                      tanh_constant=2.5)])
def test_log_prob_of_a_sample_equals_its_score(space, cfg) -> None:  # type: ignore[no-untyped-def]
    ctrl = Controller(space, cfg, seed=3)
    out = ctrl.sample(16, torch.Generator().manual_seed(1))
    scored = ctrl.score(out.tokens)
    torch.testing.assert_close(out.log_prob, scored.log_prob)
    torch.testing.assert_close(out.entropy, scored.entropy)
    # and scoring the architectures (not the raw tokens) gives the same numbers
    again = ctrl.score(ctrl.encode(ctrl.decode(out.tokens)))
    torch.testing.assert_close(out.log_prob, again.log_prob)


def test_probabilities_of_all_architectures_sum_to_one() -> None:
    # A proper distribution over the whole space, skip-set Bernoullis included.
    space = TINY_CONV
    ctrl = Controller(space, ControllerConfig(init_range=0.5), seed=0)
    per_layer = [list(itertools.product((1, 3), (3, 5))) for _ in range(3)]
    archs = []
    for layers in itertools.product(*per_layer):
        for skips in itertools.product([()], [(), (0,)], [(), (0,), (1,), (0, 1)]):
            choices = {}
            for i, ((fh, fw), inp) in enumerate(zip(layers, skips, strict=True)):
                choices.update({f"L{i}.filter_height": fh, f"L{i}.filter_width": fw,
                                f"L{i}.filters": 8, f"L{i}.inputs": inp})
            archs.append(space.make(choices))
    assert len(archs) == space.size()
    with torch.no_grad():
        total = ctrl.score(ctrl.encode(archs)).log_prob.exp().sum()
    assert abs(float(total) - 1.0) < 1e-4


def test_sampling_frequencies_match_the_scored_probabilities() -> None:
    space = TINY_CONV
    ctrl = Controller(space, ControllerConfig(init_range=0.6), seed=1)
    with torch.no_grad():
        out = ctrl.sample(20000, torch.Generator().manual_seed(0))
    rows, counts = np.unique(out.tokens.numpy(), axis=0, return_counts=True)
    top = counts.argmax()
    with torch.no_grad():
        p = float(ctrl.score(torch.as_tensor(rows[top : top + 1])).log_prob.exp())
    freq = counts[top] / 20000
    assert abs(freq - p) < 4 * np.sqrt(p * (1 - p) / 20000) + 1e-3


def test_anchor_attention_receives_gradient() -> None:
    space = ConvSpace(num_layers=4)
    ctrl = Controller(space, seed=0)
    out = ctrl.sample(8, torch.Generator().manual_seed(0))
    out.log_prob.sum().backward()
    for p in (ctrl.w_prev.weight, ctrl.w_curr.weight, ctrl.v.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0


def test_skip_probability_is_the_papers_formula() -> None:
    space = ConvSpace(num_layers=2, filter_heights=(3,), filter_widths=(3,), num_filters=(8,))
    ctrl = Controller(space, seed=0)
    # All categorical decisions have one option, so log P(arch) = log P(skip flag).
    with torch.no_grad():
        lp_skip = ctrl.score(torch.tensor([[0, 0, 0, 0, 0, 0, 1]])).log_prob
        # recompute by hand: walk the LSTM to both anchors
        hidden = ctrl.config.hidden_size
        state = [(torch.zeros(1, hidden), torch.zeros(1, hidden)) for _ in ctrl.cells]
        x = ctrl.go
        anchors = []
        for d in space.decisions:
            for layer, cell in enumerate(ctrl.cells):
                h, c = cell(x, state[layer])
                state[layer], x = (h, c), h
            if d.kind == "anchor":
                anchors.append(h)
                x = ctrl.go
            else:
                x = ctrl.embeddings[d.kind](torch.tensor([0]))
        p = torch.sigmoid(ctrl.v(torch.tanh(ctrl.w_prev(anchors[0]) + ctrl.w_curr(anchors[1]))))
    torch.testing.assert_close(lp_skip.exp(), p.reshape(1))


def test_initialization_and_seed() -> None:
    space = get_space("nb201")
    a, b = Controller(space, seed=5), Controller(space, seed=5)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
        assert float(pa.detach().abs().max()) <= 0.08
    assert not torch.equal(next(Controller(space, seed=6).parameters()), next(a.parameters()))
    assert len(a.cells) == 2 and a.cells[0].hidden_size == 35


def test_temperature_and_tanh_constant_shape_the_distribution() -> None:
    space = get_space("nb201")
    base = Controller(space, ControllerConfig(init_range=1.0), seed=0)
    hot = Controller(space, ControllerConfig(init_range=1.0, temperature=5.0), seed=0)
    squashed = Controller(space, ControllerConfig(init_range=1.0, tanh_constant=0.1), seed=0)
    tokens = base.sample(64, torch.Generator().manual_seed(0)).tokens
    with torch.no_grad():
        e0, e1, e2 = (c.score(tokens).entropy.mean() for c in (base, hot, squashed))
    assert e1 > e0 and e2 > e0
    assert float(e2) == pytest.approx(6 * np.log(5), rel=5e-3)  # |logits| <= 0.1: ~uniform


def test_a_controller_follows_a_deeper_space() -> None:
    ctrl = Controller(ConvSpace(num_layers=6), seed=0)
    n_params = sum(p.numel() for p in ctrl.parameters())
    ctrl.use_space(ConvSpace(num_layers=8))
    out = ctrl.sample(3, torch.Generator().manual_seed(0))
    assert out.tokens.shape[1] == ConvSpace(num_layers=8).num_tokens
    assert sum(p.numel() for p in ctrl.parameters()) == n_params
    with pytest.raises(ValueError, match="unknown kind"):
        ctrl.use_space(ConvSpace(num_layers=8, predict_strides=True))


def test_sampling_without_replacement_enumerates_the_space() -> None:
    from nasrl.controller.unique import sample_unseen

    space = TINY_CONV  # 512 architectures
    ctrl = Controller(space, ControllerConfig(init_range=1.0), seed=0)
    gen = torch.Generator().manual_seed(0)
    seen: list[list[int]] = []
    while len(seen) < space.size():
        drawn = sample_unseen(ctrl, seen, 128, gen)
        with torch.no_grad():
            scores = ctrl.score(torch.tensor([row for row, _ in drawn])).log_prob.tolist()
        for (row, logp), score in zip(drawn, scores, strict=True):
            assert row not in seen
            assert logp == pytest.approx(score, abs=1e-5)
            seen.append(row)
    assert len({tuple(r) for r in seen}) == space.size()
    # exhausted: repeats are let through rather than hanging
    assert len(sample_unseen(ctrl, seen, 3, gen)) == 3


def test_sampling_without_replacement_follows_the_conditional_policy() -> None:
    from nasrl.controller.unique import sample_unseen

    space = get_space("nb201")
    ctrl = Controller(space, ControllerConfig(init_range=1.0), seed=2)
    with torch.no_grad():
        mode = ctrl.sample(4000, torch.Generator().manual_seed(0)).tokens
    rows, counts = np.unique(mode.numpy(), axis=0, return_counts=True)
    top = rows[counts.argmax()].tolist()
    # with the mode seen, the next draw is the policy renormalised over the rest
    draws = [tuple(sample_unseen(ctrl, [top], 1, torch.Generator().manual_seed(s))[0][0])
             for s in range(300)]
    assert tuple(top) not in draws
    second = rows[np.argsort(counts)[-2]].tolist()
    with torch.no_grad():
        lp = ctrl.score(torch.tensor([top, second])).log_prob.exp()
    expected = float(lp[1] / (1 - lp[0]))
    freq = draws.count(tuple(second)) / 300
    assert abs(freq - expected) < 4 * np.sqrt(expected * (1 - expected) / 300) + 0.01


# What nasrl 0.x up to dc27ed7 asked (always through the trie) in `_legacy_asks`: recorded
# with that version, so a run it saved resumes with the same architectures.
LEGACY_ASKS = [
    '0f8ee9a919af8556', 'b771318cdaed70fc', 'd9f343b391eab06c', '1290f0b8c73fb291',
    '0eb1ef7a189a3e41', '9279995582670942', 'c9ad22130034e543', 'acdda2ddf60f159c',
    'dfcac16f25e90a18', 'da4098bddca7a8a8', '1f0faf06efd1d7e3', 'a9520970d849584b',
    '4e26b9c46f26be44', '0b4415d5d11587a0', '34f423b5bf5b42a1', 'd0a0eacf7429d5f2',
    'b553c8abf74346cb', 'e6045447af3cd87f', 'de9188fded33a7e5', '319c8eae0c9458f1',
    '64f718da9de3958e', 'c0e6cc4923b2bf5d', '3288482509174b98', 'd2614b9fc2102518',
    '51aa5714bc1a3259', '626d03c4189b9c6a', 'b086f3b01e00eb9b', '87ab59032d0c32e5',
    '0804586fc7b0574c', '7c928d516751b487', 'beca14e1ea3cf4bb', '183eca517ccd4d63',
]


def _legacy_state(state: dict[str, Any]) -> dict[str, Any]:
    """A state as saved before the compact seen arrays and the batched draws existed."""
    from nasrl.spaces import get_space

    space = get_space("nb201")
    rows = [row for t in state.pop("seen_rows").values() for row in t.tolist()]
    state.pop("sampler")
    for key in ("advantage_shaping", "rank_ref", "elite_halflife"):  # newer than the draws too
        state.pop(key)
    state["seen"] = sorted(rows, key=lambda r: space.from_tokens(r).key)
    return state


def test_a_run_saved_before_the_batched_draws_resumes_with_the_same_asks() -> None:
    from nasrl.spaces import get_space
    from nasrl.strategies.base import Observation
    from nasrl.strategies.reinforce import Reinforce, ReinforceConfig

    def make() -> Reinforce:
        # the old version's defaults, as its run directory records them (resolved config)
        return Reinforce(get_space("nb201"), 3, ReinforceConfig(
            batch_size=4, learning_rate=0.05, baseline="ema", elite_weight=0.02, local_share=0.0))

    strategy = make()
    strategy.load_state_dict(_legacy_state(strategy.state_dict()))
    keys = []
    for round_ in range(8):
        if round_ == 4:  # resumed from a state with seen lists, as the old version wrote it
            state = _legacy_state(strategy.state_dict())
            strategy = make()
            strategy.load_state_dict(state)
        archs = strategy.ask(4)
        keys += [a.key for a in archs]
        strategy.tell([Observation(a, int(a.key[:4], 16) / 65535) for a in archs])
    assert keys == LEGACY_ASKS
    # and a state saved now keeps the batched draws on across a resume
    fresh = make()
    assert fresh.state_dict()["sampler"] == "compiled-rounds-then-adaptive-hot"


@pytest.mark.parametrize("n", [1, 5, 16])
def test_drawing_all_skip_flags_at_once_uses_the_generator_as_drawing_them_one_by_one(n: int) -> None:
    ctrl = Controller(ConvSpace(num_layers=9), ControllerConfig(init_range=1.0), seed=4)
    one_by_one = torch.Generator().manual_seed(n)

    def per_token(pos: int, logp: torch.Tensor) -> torch.Tensor:  # how every token was drawn before
        return torch.multinomial(logp.exp(), 1, generator=one_by_one).squeeze(1)

    with torch.no_grad():
        reference = ctrl.sample_with(n, per_token)
        at_once = ctrl.sample(n, torch.Generator().manual_seed(n))
    assert torch.equal(at_once.tokens, reference.tokens) and at_once.tokens[:, 20:].sum() > 0
    assert torch.allclose(at_once.log_prob, reference.log_prob)
    # the same computation, batched differently: float32 rounding differs by CPU (1.1e-6 at
    # n = 16 on an AMD EPYC), while a wrong state would be off by tenths
    assert torch.allclose(at_once.token_hidden, reference.token_hidden, atol=1e-5)


@pytest.mark.parametrize("cell", ["lstm", "gru"])
@pytest.mark.parametrize("space", [ConvSpace(num_layers=5, predict_strides=True, pooling=True),
                                   get_space("nb201"), get_space("rnn_cell")],
                         ids=["conv", "nb201", "rnn_cell"])
def test_fused_scoring_gives_the_step_by_step_walks_numbers_and_gradients(space, cell) -> None:  # type: ignore[no-untyped-def]
    # score() runs the cells once per anchor segment and the heads and the attention once;
    # _walk with forced tokens is the step-by-step definition (and the sampler)
    c = Controller(space, ControllerConfig(cell=cell, tanh_constant=2.5), seed=3)
    tokens = c.sample(6, torch.Generator().manual_seed(1)).tokens
    fused, walked = c.score(tokens), c._walk(6, tokens, None)
    for name in ("log_prob", "entropy", "token_log_prob", "token_hidden", "token_entropy"):
        torch.testing.assert_close(getattr(fused, name), getattr(walked, name), rtol=1e-5, atol=1e-5)
    params = list(c.parameters())
    grads = [torch.autograd.grad(o.log_prob.mean() + 0.1 * o.entropy.mean(), params, allow_unused=True)
             for o in (fused, walked)]
    for a, b in zip(*grads, strict=True):
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_fused_scoring_of_rows_of_several_depths_matches_each_depths_walk() -> None:
    deep = ConvSpace(num_layers=4)
    shallow = deep.space_of_tokens(ConvSpace(num_layers=2).num_tokens)
    c, gen = Controller(deep, seed=0), torch.Generator().manual_seed(0)
    long_rows = c.sample(2, gen).tokens.tolist()
    c.use_space(shallow)
    short_rows = c.sample(2, gen).tokens.tolist()
    c.use_space(deep)
    mixed = c.score_rows(long_rows + short_rows)
    assert mixed.token_mask is not None
    walked = [c._walk(2, torch.tensor(long_rows), None),
              c._walk(2, torch.tensor(short_rows), None, space=shallow)]
    for name in ("log_prob", "entropy"):
        torch.testing.assert_close(getattr(mixed, name), torch.cat([getattr(w, name) for w in walked]))


# What nasrl asked with the "batched-then-trie" sampler (f39ff3b, one batched round of 2
# per sequence wanted), on a 27-architecture space where most asks reach the trie.
SMALL = SearchSpace([Categorical(f"d{i}", (0, 1, 2), kind="x") for i in range(3)], name="small")
BATCHED_THEN_TRIE_ASKS = [
    '65f2021a70a3284a', '94f8a0bd64d53953', 'c0a57003f957e63d', '52941b5fde1886a6',
    '5e4318c91223f0dd', '14802549e4e5c1dc', 'a64176ec9b240a92', 'f41e582f50feea8d',
    '08a8fcdada562ef1', '5563b928d189dc0b', 'a650545e52ea3ed4', '2b6223c2a25dc8dc',
    '2bf913993f5fd3e9', '8a4fe16855d6ecd0', '7bcf85c1cdd6a36a', '4a60d0770461b723',
    '2898906a4b4b0fd5', '159efb8c68684521', '74b094e09c2ae874', '01c32a19267baca2',
    'f43de0b0ee8bb1bc', '8ffc4d9d2156575b', 'a0829638d138b261', '35de0e75bf9040da',
]


# ... and with "batched-rounds-then-trie" (b9f3bcf: rounds of 2, 16 and 128 per sequence
# wanted, then the trie over every seen sequence).
BATCHED_ROUNDS_THEN_TRIE_ASKS = [
    '65f2021a70a3284a', '94f8a0bd64d53953', 'c0a57003f957e63d', '52941b5fde1886a6',
    '5e4318c91223f0dd', '14802549e4e5c1dc', 'a64176ec9b240a92', 'f41e582f50feea8d',
    '08a8fcdada562ef1', '5563b928d189dc0b', 'a650545e52ea3ed4', '2b6223c2a25dc8dc',
    '2bf913993f5fd3e9', '8a4fe16855d6ecd0', '4a60d0770461b723', '74b094e09c2ae874',
    '7bcf85c1cdd6a36a', '2898906a4b4b0fd5', '159efb8c68684521', '01c32a19267baca2',
    'f43de0b0ee8bb1bc', '8ffc4d9d2156575b', 'a0829638d138b261', '60cd30a344b68476',
]


def _small_asks(sampler: str | None) -> list[str]:
    from nasrl.strategies.reinforce import Reinforce, ReinforceConfig

    def make() -> Reinforce:
        # f39ff3b's defaults, as its run directory records them (resolved config)
        strategy = Reinforce(SMALL, 5, ReinforceConfig(batch_size=4, learning_rate=0.05, baseline="ema",
                                                       elite_weight=0.02, elite_halflife=None,
                                                       local_share=0.0))
        if sampler is not None:  # as if loaded from a state saved with that sampler
            strategy.load_state_dict(strategy.state_dict() | {"sampler": sampler})
        return strategy

    return _asks_resumed_halfway(make, rounds=6, size=4)  # the sampler travels in the state


def test_runs_saved_with_earlier_samplers_resume_with_the_same_asks() -> None:
    assert _small_asks("batched-then-trie") == BATCHED_THEN_TRIE_ASKS
    assert _small_asks("batched-rounds-then-trie") == BATCHED_ROUNDS_THEN_TRIE_ASKS
    # today's default tries the hits trie before the full one: other draws, all distinct
    asks = _small_asks(None)
    assert asks != BATCHED_ROUNDS_THEN_TRIE_ASKS and len(set(asks)) == len(asks) == 24


def _conditional_setup() -> tuple[Controller, list[list[int]], list[float]]:
    """An nb201 controller and its rows by descending probability, with those P."""
    ctrl = Controller(get_space("nb201"), ControllerConfig(init_range=1.0), seed=2)
    with torch.no_grad():
        mode = ctrl.sample(4000, torch.Generator().manual_seed(0)).tokens
    rows, counts = np.unique(mode.numpy(), axis=0, return_counts=True)
    top = [rows[i].tolist() for i in np.argsort(-counts)[:5]]
    with torch.no_grad():
        probs = ctrl.score(torch.tensor(top)).log_prob.exp().tolist()
    return ctrl, top, probs


@pytest.mark.parametrize("sampler", ["batched-rounds-then-hot", "batched-rounds-then-adaptive-hot",
                                     "batched-rounds-then-adaptive-hot-anchorwise"])
def test_the_hot_trie_with_rejection_draws_the_policy_conditioned_on_all_seen(sampler: str) -> None:
    from nasrl.controller.unique import SAMPLERS, SeenIndex, _draw_from_hot

    ctrl, top, probs = _conditional_setup()
    draws = []
    for s in range(300):
        index = SeenIndex(len(top[0]))
        for row in top[:3]:
            index.add(row)
        index.mark_hot([0])  # the trie knows one seen row; the two others are rejected
        drawn = _draw_from_hot(ctrl, index, 1, torch.Generator().manual_seed(s), SAMPLERS[sampler])
        assert len(drawn) == 1 and drawn[0][0] not in top[:3] and drawn[0][0] in index
        draws.append(tuple(drawn[0][0]))
    expected = probs[3] / (1 - sum(probs[:3]))
    freq = draws.count(tuple(top[3])) / 300
    assert abs(freq - expected) < 4 * np.sqrt(expected * (1 - expected) / 300) + 0.01


@pytest.mark.parametrize("flags_at_once", [False, True])
def test_a_trie_walk_draws_every_row_with_the_conditioned_policys_probability(flags_at_once: bool) -> None:
    from nasrl.controller.unique import _Trie

    # a 64-architecture conv space (3 layers: 2 filter heights, 6 skip flags), every
    # row's exact P, the 5 most probable seen: one walk of 20,000 rows must draw each
    # other row with P / (1 - P(seen)) and never a seen one
    space = ConvSpace(num_layers=3, filter_heights=(1, 3), filter_widths=(3,), num_filters=(24,))
    ctrl = Controller(space, ControllerConfig(init_range=1.5), seed=1)
    rows = torch.tensor([space.to_tokens(space.from_tokens(list(r))) for r in itertools.product(
        *[range(k) for k in space.token_arities()])])
    with torch.no_grad():
        probs = ctrl.score(rows).log_prob.double().exp().numpy()
        assert abs(probs.sum() - 1) < 1e-6 and len(rows) == 64
        order = np.argsort(-probs)
        seen = rows[order[:5]].numpy()
        out = _Trie(seen, ctrl).draw(ctrl, torch.Generator().manual_seed(0), 20_000,
                                     flags_at_once=flags_at_once)
    index = {tuple(r): i for i, r in enumerate(rows.tolist())}
    counts = np.bincount([index[tuple(r)] for r in out.tokens.tolist()], minlength=64)
    expected = np.where(np.isin(np.arange(64), order[:5]), 0.0, probs) / (1 - probs[order[:5]].sum())
    assert counts[order[:5]].sum() == 0
    sigma = np.sqrt(20_000 * expected * (1 - expected))
    assert np.all(np.abs(counts - 20_000 * expected) <= 5 * sigma + 1)
    # and the log P the walk reports is the unconditioned policy's, as the gradient needs
    drawn = [index[tuple(r)] for r in out.tokens[:50].tolist()]
    np.testing.assert_allclose(out.log_prob[:50].double().exp().numpy(), probs[drawn], rtol=1e-4)  # float32


def test_the_hot_trie_draws_the_still_wanted_rows_in_one_walk_and_never_twice() -> None:
    from nasrl.controller.unique import SAMPLERS, SeenIndex, _draw_from_hot

    ctrl, top, _ = _conditional_setup()
    index = SeenIndex(len(top[0]))
    for row in top[:3]:
        index.add(row)
    index.mark_hot([0, 1, 2])
    walks = []
    sample_with = ctrl.sample_with
    ctrl.sample_with = lambda m, *pickers: walks.append(m) or sample_with(m, *pickers)  # type: ignore[method-assign]
    drawn = _draw_from_hot(ctrl, index, 40, torch.Generator().manual_seed(0), SAMPLERS["batched-rounds-then-hot"])
    rows = [tuple(r) for r, _ in drawn]
    assert len(rows) == len(set(rows)) == 40 and not set(rows) & {tuple(r) for r in top[:3]}
    assert walks[0] == 160 and len(walks) <= 3  # spares: repeats within a walk cost no walk
    assert len(index) == 43 and set(index.hot) >= {0, 1, 2}


def test_an_ask_past_the_rounds_scores_the_hot_rows_not_every_seen_row(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nasrl.controller import unique

    # a sharp nb201 policy with its 300 most probable cells seen (all but ~1e-4 of its
    # mass: the batched rounds draw only seen cells) and its 300 least probable ones
    ctrl = Controller(get_space("nb201"), ControllerConfig(init_range=2.0), seed=0)
    rows = [list(r) for r in itertools.product(range(5), repeat=6)]
    with torch.no_grad():
        order = torch.argsort(ctrl.score(torch.tensor(rows)).log_prob, descending=True).tolist()
    seen = [rows[i] for i in order[:300] + order[-300:]]
    scored: list[int] = []
    trie_init = unique._Trie.__init__

    def counting(self: Any, seen_rows: np.ndarray, controller: Controller) -> None:
        scored.append(len(seen_rows))
        trie_init(self, seen_rows, controller)

    monkeypatch.setattr(unique._Trie, "__init__", counting)
    index = unique.SeenIndex(6)
    for row in seen:
        index.add(row)
    gen = torch.Generator().manual_seed(0)
    # no hot rows yet: the hot trie holds the rounds' repeats only, misses seen mass, and
    # (in three walks of 4 rows per sequence wanted) gives way to the full trie, which
    # marks hot the rows that carry the seen mass
    sampler = "batched-rounds-then-hot"
    first = unique.draw_unseen(ctrl, index, 2, gen, sampler=sampler)
    assert scored[-1] == 600 and 0 < len(index.hot) < 300
    hot = len(index.hot)
    second = unique.draw_unseen(ctrl, index, 2, gen, sampler=sampler)
    assert scored[-1] == hot  # the hot trie served this ask: it scored the hot rows alone
    drawn = [tuple(r) for r, _ in first + second]
    assert len(set(drawn)) == 4 and not set(drawn) & {tuple(r) for r in seen}


# The "batched-rounds-then-hot" sampler (8b7b8a9: three hot walks of 4 rows per sequence
# wanted, hot rows evicted least recently marked first) on a collapsing nb201 run reaches
# its hot trie and its full trie (10 times on the machine the run was first recorded on, 8
# on an AMD EPYC: sixty REINFORCE steps at lr 0.2 carry float32 rounding, which differs by
# CPU, into the draws, so the asks are compared within one machine, not to a pinned hash).


def _collapsing_asks(sampler: str | None, monkeypatch: pytest.MonkeyPatch,
                     resume: bool = True) -> tuple[list[str], int]:
    """The keys a sharpening nb201 REINFORCE run asks (60 asks of 8), and how many of its
    asks scored every seen row (the full trie)."""
    from nasrl.controller import unique
    from nasrl.strategies.reinforce import Reinforce, ReinforceConfig

    full: list[int] = []
    draw_from_all = unique._draw_from_all
    monkeypatch.setattr(unique, "_draw_from_all",
                        lambda *a, **k: full.append(1) or draw_from_all(*a, **k))

    def make() -> Reinforce:
        # no local asks: every ask is the sampler's (and the runs pinned predate them)
        strategy = Reinforce(get_space("nb201"), 7, ReinforceConfig(batch_size=8, learning_rate=0.2,
                                                                    local_share=0.0))
        if sampler is not None:  # as if loaded from a state saved with that sampler
            strategy.load_state_dict(strategy.state_dict() | {"sampler": sampler})
        return strategy

    # the sampler and the hot rows travel in the state
    return _asks_resumed_halfway(make, rounds=60, size=8, resume=resume), len(full)


def test_a_run_saved_with_the_first_hot_sampler_resumes_with_the_same_asks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys, full = _collapsing_asks("batched-rounds-then-hot", monkeypatch)
    assert len(set(keys)) == 480 and full > 0  # the full-trie path ran, before and after the save
    uninterrupted, _ = _collapsing_asks("batched-rounds-then-hot", monkeypatch, resume=False)
    assert keys == uninterrupted


def test_a_run_saved_with_the_adaptive_hot_sampler_resumes_with_the_same_asks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    keys, _ = _collapsing_asks("batched-rounds-then-adaptive-hot", monkeypatch)
    uninterrupted, _ = _collapsing_asks("batched-rounds-then-adaptive-hot", monkeypatch, resume=False)
    assert keys == uninterrupted and len(set(keys)) == 480
    # the anchorwise sampler differs only in how it draws skip flags, which nb201 has none of
    anchorwise, _ = _collapsing_asks("batched-rounds-then-adaptive-hot-anchorwise", monkeypatch,
                                     resume=False)
    assert anchorwise == keys
    # today's default draws its rounds from uniforms (compiled): other asks, as distinct,
    # and the same across a resume
    todays, _ = _collapsing_asks(None, monkeypatch)
    assert todays != keys and len(set(todays)) == 480
    assert todays == _collapsing_asks(None, monkeypatch, resume=False)[0]


def test_the_adaptive_hot_walks_spare_the_full_trie_where_three_fixed_walks_needed_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the same run: the fixed walks give 5-7 asks to the trie over every seen row (a
    # scoring of all of them); walks sized by the acceptance 0-2 (which rows are drawn
    # shifts with float32 rounding, which the number of torch threads changes), and every
    # architecture asked is still new
    keys, full = _collapsing_asks(None, monkeypatch)
    _, fixed = _collapsing_asks("batched-rounds-then-hot", monkeypatch)
    assert len(set(keys)) == 480 and fixed >= 4 and full < fixed / 2


# sha256 of the 320 keys a conv run with "batched-rounds-then-adaptive-hot-anchorwise"
# (the default before the compiled rounds, 7a68b1b) asked, resumed halfway
ANCHORWISE_CONV_ASKS = "8e8e649422c4b44b"


@pytest.mark.parametrize("sampler", ["batched-rounds-then-adaptive-hot-anchorwise", None])
def test_a_conv_run_whose_asks_reach_the_anchorwise_walks_resumes_with_the_same_asks(
        sampler: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    from nasrl.controller import unique
    from nasrl.strategies.reinforce import Reinforce, ReinforceConfig

    walks: list[bool] = []
    draw = unique._Trie.draw

    def recorded(self: Any, *args: Any, flags_at_once: bool = False) -> Any:
        walks.append(flags_at_once)
        return draw(self, *args, flags_at_once=flags_at_once)

    monkeypatch.setattr(unique._Trie, "draw", recorded)
    # 1,024 architectures, a sharpening policy: 320 asked, the later ones past the rounds
    space = ConvSpace(num_layers=4, filter_heights=(1, 3), filter_widths=(3,), num_filters=(24,))

    def make() -> Reinforce:
        strategy = Reinforce(space, 3, ReinforceConfig(batch_size=8, learning_rate=0.2, local_share=0.0))
        if sampler is not None:  # as if loaded from a state saved with that sampler
            strategy.load_state_dict(strategy.state_dict() | {"sampler": sampler})
        return strategy

    resumed = _asks_resumed_halfway(make, rounds=40, size=8)
    assert walks and all(walks) and len(set(resumed)) == 320
    assert resumed == _asks_resumed_halfway(make, rounds=40, size=8, resume=False)
    digest = hashlib.sha256(" ".join(resumed).encode()).hexdigest()[:16]
    assert (digest == ANCHORWISE_CONV_ASKS) == (sampler is not None)


def test_the_hot_rows_travel_in_the_state_so_a_resumed_run_asks_the_same() -> None:
    from nasrl.strategies.base import Observation
    from nasrl.strategies.reinforce import Reinforce, ReinforceConfig

    def run(resume_at: int | None) -> tuple[list[str], dict[str, Any]]:
        def make() -> Reinforce:
            return Reinforce(SMALL, 5, ReinforceConfig(batch_size=4, learning_rate=0.3))
        strategy, keys, saved = make(), [], {}
        for round_ in range(6):
            if round_ == resume_at:
                saved = strategy.state_dict()
                strategy = make()
                strategy.load_state_dict(saved)
            archs = strategy.ask(4)
            keys += [a.key for a in archs]
            strategy.tell([Observation(a, int(a.key[:4], 16) / 65535) for a in archs])
        return keys, saved

    straight, _ = run(None)
    resumed, saved = run(4)
    assert saved["seen_hot"]  # the state the run resumed from had hot rows
    assert resumed == straight and len(set(straight)) == 24


def test_a_state_with_an_unknown_sampler_is_refused() -> None:
    from nasrl.strategies.reinforce import Reinforce

    strategy = Reinforce(SMALL, 0)
    with pytest.raises(ValueError, match="unknown sampler 'beam'"):
        strategy.load_state_dict(strategy.state_dict() | {"sampler": "beam"})


@pytest.mark.parametrize("space", [ConvSpace(num_layers=5, predict_strides=True), get_space("nb201")],
                         ids=["conv", "nb201"])
def test_the_lean_scores_are_the_full_scores_log_probabilities(space: SearchSpace) -> None:
    ctrl = Controller(space, ControllerConfig(init_range=1.0), seed=3)
    with torch.no_grad():
        tokens = ctrl.sample(16, torch.Generator().manual_seed(0)).tokens
        lean = ctrl.token_log_probs(tokens)
        assert torch.equal(lean, ctrl.score(tokens).token_log_prob)


def test_a_walk_of_many_rows_weighs_each_token_as_a_walk_of_one_does() -> None:
    from nasrl.controller.unique import _Trie, _weights

    ctrl, top, _ = _conditional_setup()
    with torch.no_grad():
        trie = _Trie(np.asarray(top[1:], dtype=np.int16), ctrl)
        out = ctrl.score(torch.tensor([top[0]]))
    trie.add(out, 0)  # a row added during the ask, outside the sorted block
    d = 2
    prefixes = [top[0][:d], top[1][:d], top[2][:d], [4, 4]]  # the last shared by no row
    lo, hi, extra = [], [], []
    for prefix in prefixes:  # each prefix's block of the sorted rows, and the extra rows under it
        inside = np.flatnonzero((trie.rows[:, :d] == prefix).all(1))
        lo.append(int(inside[0]) if len(inside) else 0)
        hi.append(int(inside[-1]) + 1 if len(inside) else 0)
        extra.append([0] if top[0][:d] == prefix else [])
    probs = np.random.default_rng(0).dirichlet(np.ones(5), size=4)
    weights, left, right = trie.pick_many(probs, np.array(lo), np.array(hi), extra, d)
    for i in range(4):
        kids, mass, count = trie.children((lo[i], hi[i]), extra[i], d, 5)
        expected = _weights(probs[i].tolist(), mass, [c < trie.sizes[d + 1] for c in count])
        assert weights[i].tolist() == pytest.approx(expected, abs=0, rel=1e-12)
        assert list(zip(left[i].tolist(), right[i].tolist(), strict=True)) == kids
    assert weights[3].tolist() == pytest.approx(probs[3].tolist(), abs=0, rel=1e-12)
    assert not np.allclose(weights[0], probs[0])  # the seen rows below weigh in


def _asks_resumed_halfway(make: Callable[[], Any], rounds: int, size: int, resume: bool = True) -> list[str]:
    """The keys a strategy from ``make`` asks in ``rounds`` asks of ``size``, told a fixed
    reward per key, and reloaded from its state into a fresh one halfway (unless not
    ``resume``: the uninterrupted run to compare with)."""
    from nasrl.strategies.base import Observation

    strategy, keys = make(), []
    for round_ in range(rounds):
        if resume and round_ == rounds // 2:
            state = strategy.state_dict()
            strategy = make()
            strategy.load_state_dict(state)
        archs = strategy.ask(size)
        keys += [a.key for a in archs]
        strategy.tell([Observation(a, int(a.key[:4], 16) / 65535) for a in archs])
    return keys
