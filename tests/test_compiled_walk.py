"""The compiled sampling walk (nasrl.controller.compiled): the same rows as the PyTorch walk
from the same uniforms, the policy's distribution, and the generator used as documented."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from nasrl.controller import Controller, ControllerConfig, compiled
from nasrl.spaces import Categorical, ConvSpace, SearchSpace, get_space
from nasrl.spaces.feasible import FeasiblePrefixes

TINY_CONV = ConvSpace(num_layers=3, filter_heights=(1, 3), filter_widths=(3, 5), num_filters=(8,))

CASES = [
    ("conv8-strides-pool", ConvSpace(num_layers=8, predict_strides=True, pooling=True), ControllerConfig()),
    ("conv6-gru-temperature-tanh", ConvSpace(num_layers=6),
     ControllerConfig(cell="gru", temperature=2.0, tanh_constant=2.5, init_range=0.5)),
    ("nb201", get_space("nb201"), ControllerConfig(init_range=0.5)),
    ("rnn_cell-3layers", get_space("rnn_cell"), ControllerConfig(num_layers=3, hidden_size=20)),
]


@pytest.mark.parametrize(("name", "space", "cfg"), CASES, ids=[c[0] for c in CASES])
def test_the_compiled_walk_draws_what_the_pytorch_walk_draws_from_the_same_uniforms(
        name: str, space: SearchSpace, cfg: ControllerConfig) -> None:
    ctrl = Controller(space, cfg, seed=3)
    uniforms = compiled.draw_uniforms(64, space.num_tokens, torch.Generator().manual_seed(1))
    tokens, logp = compiled.compiled_walk(ctrl, uniforms)
    reference, ref_logp = compiled.torch_walk(ctrl, uniforms)
    # the PyTorch walk computes in float32, the compiled one in float64: a uniform within
    # ~1e-7 of a boundary may fall either side (none here; one row allowed on other CPUs)
    assert int((tokens != reference).any(1).sum()) <= 1 and tokens[:, :].sum() > 0
    with torch.no_grad():
        scored = ctrl.score(tokens).log_prob.double()
    torch.testing.assert_close(logp, scored, atol=1e-4, rtol=0)
    torch.testing.assert_close(logp, ref_logp, atol=1e-4, rtol=0)
    for arch in ctrl.decode(tokens):
        assert space.validate(arch) == arch


def test_compiled_draws_follow_the_policy_on_every_architecture_of_a_small_space() -> None:
    # 512 architectures, skip flags included; a sharp policy (init_range 1.0)
    ctrl = Controller(TINY_CONV, ControllerConfig(init_range=1.0), seed=5)
    n = 20_000
    tokens, _ = compiled.sample_by_uniforms(ctrl, n, torch.Generator().manual_seed(0))
    arities = TINY_CONV.token_arities()
    every = torch.tensor(list(itertools.product(*[range(a) for a in arities])))
    assert len(every) == 512
    with torch.no_grad():
        probs = ctrl.score(every).log_prob.double().exp().numpy()
    assert abs(probs.sum() - 1) < 1e-5
    index = {tuple(r): i for i, r in enumerate(every.tolist())}
    counts = np.bincount([index[tuple(r)] for r in tokens.tolist()], minlength=len(every))
    expected = n * probs
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 511 + 5 * 32  # 511 degrees of freedom: mean 511, sd 32
    # a walk that drew every token by the wrong tail of the CDF fails this by far
    assert counts.argmax() == probs.argmax()


def test_a_draw_uses_the_generator_as_one_uniform_per_token() -> None:
    ctrl = Controller(ConvSpace(num_layers=4), seed=0)
    used, twin = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    compiled.sample_by_uniforms(ctrl, 5, used)
    torch.rand(5, ctrl.space.num_tokens, generator=twin, dtype=torch.float64)
    assert torch.equal(used.get_state(), twin.get_state())


def test_without_numba_the_pytorch_walk_draws_the_same_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    ctrl = Controller(ConvSpace(num_layers=5), ControllerConfig(init_range=0.5), seed=1)
    fast, _ = compiled.sample_by_uniforms(ctrl, 32, torch.Generator().manual_seed(4))
    monkeypatch.setattr(compiled, "available", lambda: False)
    slow, _ = compiled.sample_by_uniforms(ctrl, 32, torch.Generator().manual_seed(4))
    assert int((fast != slow).any(1).sum()) <= 1


def test_a_feasible_set_keeps_the_pytorch_walk_and_its_constraint() -> None:
    space = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(3)], name="small")
    feasible = [a for a in (space.from_tokens(list(r)) for r in itertools.product(range(4), repeat=3))
                if sum(space.to_tokens(a)) <= 3]
    ctrl = Controller(space, ControllerConfig(init_range=0.5), seed=2)
    ctrl.feasible = FeasiblePrefixes(space, feasible)
    tokens, logp = compiled.sample_by_uniforms(ctrl, 200, torch.Generator().manual_seed(0))
    assert all(sum(row) <= 3 for row in tokens.tolist())
    with torch.no_grad():  # log P of the policy restricted to the set
        torch.testing.assert_close(logp, ctrl.score(tokens).log_prob.double(), atol=1e-5, rtol=0)


def test_the_batched_exp_is_libm_s_to_a_few_ulp() -> None:
    compiled._kernel()  # compiles _exp too
    z = np.concatenate([np.random.default_rng(0).uniform(-700, 700, 10_000),
                        np.linspace(-1, 1, 1001), [-800.0, 0.0, 1e-300, 709.0, 800.0]])
    out, scale = np.zeros_like(z), np.zeros_like(z)
    compiled._exp(z, out, scale, len(z))
    expected = np.exp(np.clip(z, -708, 709))
    assert np.max(np.abs(out - expected) / expected) < 1e-15



def test_a_kernel_that_cannot_compile_leaves_the_pytorch_walk_with_a_warning(
        monkeypatch: pytest.MonkeyPatch) -> None:
    ctrl = Controller(ConvSpace(num_layers=4), ControllerConfig(init_range=0.5), seed=2)
    fast, _ = compiled.sample_by_uniforms(ctrl, 16, torch.Generator().manual_seed(3))

    def broken() -> None:
        raise RuntimeError("LLVM says no")

    monkeypatch.setattr(compiled, "_KERNEL", None)
    monkeypatch.setattr(compiled, "_MISSING", False)
    monkeypatch.setattr(compiled, "_build", broken)
    with pytest.warns(UserWarning, match="LLVM says no"):
        slow, _ = compiled.sample_by_uniforms(ctrl, 16, torch.Generator().manual_seed(3))
    assert int((fast != slow).any(1).sum()) <= 1
    assert not compiled.available()  # remembered: no second attempt, no second warning


def test_tiers_keep_the_pytorch_walk(monkeypatch: pytest.MonkeyPatch) -> None:
    ctrl = Controller(ConvSpace(num_layers=3), ControllerConfig(init_range=0.5), seed=2, num_tiers=2)

    def refuse(*_: object) -> None:
        raise AssertionError("the compiled walk knows no tiers")

    monkeypatch.setattr(compiled, "compiled_walk", refuse)
    with ctrl.conditioned([1], [None, None]):
        tokens, logp = compiled.sample_by_uniforms(ctrl, 8, torch.Generator().manual_seed(0))
        with torch.no_grad():
            torch.testing.assert_close(logp, ctrl.score(tokens).log_prob.double(), atol=1e-5, rtol=0)
