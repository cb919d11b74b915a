"""Regularized (aging) evolution, Real et al., AAAI 2019.

The population starts with ``population_size`` uniform samples. Afterwards each child is
a one-decision mutation of the best of ``tournament_size`` members drawn at random, and
every evaluated child joins the population while the *oldest* member (not the worst)
leaves: good architectures have to be rediscovered to survive, which regularizes against
lucky evaluations.

Under a depth schedule the population holds members of the depths asked so far. A parent
shallower than the depth now asked is *grown* rather than mutated: its layers are kept and
the new ones drawn uniformly (:meth:`SearchSpace.adapt`), so every child has the depth the
schedule gives, and the best shallow networks seed the deeper ones (the grown child is new,
its key names its depth, so no further mutation is needed).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from nasrl.config import ConfigError
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.strategies.base import Observation, Strategy, register_strategy


@dataclass
class EvolutionConfig:
    population_size: int = 50
    """Members alive at once; the first this many children are uniform samples."""
    tournament_size: int = 10
    """Members drawn (without replacement) to pick each parent; larger = greedier."""


@register_strategy("evolution")
class RegularizedEvolution(Strategy):
    config_class = EvolutionConfig

    def __init__(self, space: SearchSpace, seed: int, config: EvolutionConfig | None = None) -> None:
        super().__init__(space, seed, config)
        cfg: EvolutionConfig = self.config
        if cfg.population_size < 2 or not 1 <= cfg.tournament_size <= cfg.population_size:
            raise ConfigError(
                "evolution: need population_size >= 2 and 1 <= tournament_size <= population_size"
            )
        self.rng = np.random.default_rng(seed)
        self.population: deque[tuple[Architecture, float]] = deque()
        self.asked_random = 0

    def ask(self, n: int) -> list[Architecture]:
        return [self._one() for _ in range(n)]

    def _one(self) -> Architecture:
        cfg: EvolutionConfig = self.config
        # Until the population is full (counting random members still being evaluated),
        # fill it with uniform samples.
        if self.asked_random < cfg.population_size or len(self.population) < cfg.tournament_size:
            self.asked_random += 1
            return self.space.sample(self.rng)
        idx = self.rng.choice(len(self.population), size=cfg.tournament_size, replace=False)
        parent = max((self.population[int(i)] for i in idx), key=lambda m: m[1])[0]
        if self.space.space_of(parent) is not self.space:
            return self.space.adapt(parent, self.rng)
        return self.space.mutate(parent, self.rng)

    def tell(self, observations: Sequence[Observation]) -> None:
        cfg: EvolutionConfig = self.config
        for obs in observations:
            if obs.reward is None:
                continue
            self.population.append((obs.arch, float(obs.reward)))
            if len(self.population) > cfg.population_size:
                self.population.popleft()

    def state_dict(self) -> dict[str, Any]:
        return {
            "rng": self.rng.bit_generator.state,
            "population": [(a.to_json(), r) for a, r in self.population],
            "asked_random": self.asked_random,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.rng.bit_generator.state = dict(state["rng"])
        self.population = deque(
            (_validated(self.space, Architecture.from_json(a)), float(r))
            for a, r in state["population"]
        )
        self.asked_random = int(state["asked_random"])


def _validated(space: SearchSpace, arch: Architecture) -> Architecture:
    """``arch`` checked against its own member of ``space``'s family (its depth)."""
    return space.space_of(arch).validate(arch)
