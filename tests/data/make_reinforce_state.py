"""Writes reinforce-state-0.2.0.pt/.json: a REINFORCE state saved by nasrl 0.2.0 (before the
controller's ``cell`` option and the critic), and the five architectures that state asks
for next. Run once with the 0.2.0 sources on the path (``git archive f598403 src``);
tests/test_strategies.py checks that today's code resumes it to the same asks."""

import json
from pathlib import Path

import torch

from nasrl.spaces import Categorical, SearchSpace
from nasrl.strategies import Observation, make_strategy

HERE = Path(__file__).parent
SPACE = SearchSpace([Categorical(f"d{i}", (0, 1, 2, 3), kind="x") for i in range(4)], name="toy4")
CONFIG = {"batch_size": 3, "controller": {"hidden_size": 8}}

torch.set_num_threads(1)
s = make_strategy("reinforce", SPACE, 7, CONFIG)
for _ in range(4):
    archs = s.ask(3)
    s.tell([Observation(a, sum(v for _, v in a.choices) / 12) for a in archs])
torch.save(s.state_dict(), HERE / "reinforce-state-0.2.0.pt")
info = {"seed": 7, "config": CONFIG, "next_ask": [a.key for a in s.ask(5)]}
(HERE / "reinforce-state-0.2.0.json").write_text(json.dumps(info, indent=1) + "\n")
