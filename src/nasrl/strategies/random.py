"""Uniform random search: the baseline every other strategy has to beat."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.strategies.base import Observation, Strategy, register_strategy


@dataclass
class RandomConfig:
    """Random search has no settings; the class exists so configs stay uniform."""


@register_strategy("random")
class RandomSearch(Strategy):
    config_class = RandomConfig

    def __init__(self, space: SearchSpace, seed: int, config: RandomConfig | None = None) -> None:
        super().__init__(space, seed, config)
        self.rng = np.random.default_rng(seed)

    def ask(self, n: int) -> list[Architecture]:
        return [self.space.sample(self.rng) for _ in range(n)]

    def sample(self, n: int, seed: int) -> list[Architecture]:
        rng = np.random.default_rng(seed)
        return [self.space.sample(rng) for _ in range(n)]

    def tell(self, observations: Sequence[Observation]) -> None:
        """Nothing to learn."""

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state["rng"])
