"""Local asks (``ReinforceConfig.local_share``): one-token edits of the best architectures
evaluated so far, beside the policy's draws, and kept out of the policy gradient."""

from __future__ import annotations

import copy

import pytest
import torch

from nasrl.config import ConfigError
from nasrl.spaces import Architecture, Categorical, SearchSpace
from nasrl.strategies import Observation, Reinforce, make_strategy

SPACE = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(5)], name="five")


def reward(arch: Architecture) -> float:
    return 0.1 + 0.05 * sum(SPACE.to_tokens(arch))  # choice v is token v here


def strategy(**config: object) -> Reinforce:
    s = make_strategy("reinforce", SPACE, 7, {"batch_size": 4, **config})
    assert isinstance(s, Reinforce)
    return s


def test_local_asks_follow_the_share_and_edit_one_token_of_the_best() -> None:
    s = strategy(local_share=0.5)
    first = s.ask(4)  # its two local slots have no parent yet: four policy draws
    assert not s.local_keys and len({a.key for a in first}) == 4
    s.tell([Observation(a, reward(a)) for a in first])
    best = max(first, key=reward)
    seen = {a.key for a in first}
    batch = s.ask(4)  # asks 4-7: 5 and 7 are local
    local = [a for a in batch if a.key in s.local_keys]
    assert len(local) == 2 and batch[2:] == local
    parent = SPACE.to_tokens(best)
    for arch in local:
        child = SPACE.to_tokens(arch)
        assert sum(c != p for c, p in zip(child, parent, strict=True)) == 1
        assert arch.key not in seen
    assert len({a.key for a in batch} | seen) == 8


def test_local_results_stay_out_of_the_policy_gradient() -> None:
    s = strategy(local_share=0.5)
    s.tell([Observation(a, reward(a)) for a in s.ask(4)])  # one update
    updates = s.num_updates
    batch = s.ask(4)
    local = {a.key for a in batch if a.key in s.local_keys}
    s.tell([Observation(a, reward(a)) for a in batch])
    assert s.num_updates == updates and len(s.buffer) == 2  # only the two policy draws
    assert not local & {a.key for a, _ in s.buffer} and not s.local_keys


def test_local_asks_survive_a_state_round_trip() -> None:
    old = strategy(local_share=0.3)
    for _ in range(3):
        old.tell([Observation(a, reward(a)) for a in old.ask(4)])
    pending = old.ask(4)  # in flight when saved: still local when told after the resume
    new = strategy(local_share=0.3)
    new.load_state_dict(copy.deepcopy(old.state_dict()))  # as a saved state: no shared tensors
    assert new.local_keys == old.local_keys and new.local_keys
    for s in (old, new):
        s.tell([Observation(a, reward(a)) for a in pending])
    for _ in range(3):
        batch = old.ask(4)
        assert new.ask(4) == batch
        for s in (old, new):
            s.tell([Observation(a, reward(a)) for a in batch])
    assert new.buffer == old.buffer and new.local_parents == old.local_parents


def test_a_state_saved_without_local_asks_resumes_without_them() -> None:
    old = strategy(local_share=0.0)  # as before local asks existed
    for _ in range(2):
        old.tell([Observation(a, reward(a)) for a in old.ask(4)])
    assert "local" not in old.state_dict()
    new = strategy(local_share=0.5)
    new.load_state_dict(copy.deepcopy(old.state_dict()))  # as a saved state: no shared tensors
    assert new.local_share == 0.0
    for _ in range(3):
        batch = old.ask(4)
        assert new.ask(4) == batch and not new.local_keys
        for s in (old, new):
            s.tell([Observation(a, reward(a)) for a in batch])


@pytest.mark.parametrize("share", [-0.1, 1.0])
def test_local_share_outside_its_range_is_a_config_error(share: float) -> None:
    with pytest.raises(ConfigError, match="local_share"):
        strategy(local_share=share)


@pytest.mark.parametrize("edit", ["policy", "uniform"])
def test_uniform_edits_propose_values_the_policy_avoids(edit: str) -> None:
    s = strategy(local_share=0.5, local_edit=edit)
    with torch.no_grad():
        s.controller.heads["x"].bias[3] = -50.0  # the policy never draws the value 3
    proposed: list[list[int]] = []
    for _ in range(6):
        batch = s.ask(4)
        proposed += [SPACE.to_tokens(a) for a in batch if a.key in s.local_keys]
        s.tell([Observation(a, reward(a)) for a in batch])
    assert len(proposed) >= 8
    with_three = sum(3 in row for row in proposed)
    # evolution's mutation reaches what the policy has learned to avoid; a policy edit cannot
    assert with_three > 0 if edit == "uniform" else with_three == 0
