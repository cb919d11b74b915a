"""Search strategies behind one ask / tell / state_dict interface."""

from nasrl.strategies.base import (
    Observation,
    Strategy,
    list_strategies,
    make_strategy,
    register_strategy,
    strategy_class,
)
from nasrl.strategies.evolution import EvolutionConfig, RegularizedEvolution
from nasrl.strategies.random import RandomConfig, RandomSearch
from nasrl.strategies.reinforce import Reinforce, ReinforceConfig

__all__ = [
    "EvolutionConfig",
    "Observation",
    "RandomConfig",
    "RandomSearch",
    "RegularizedEvolution",
    "Reinforce",
    "ReinforceConfig",
    "Strategy",
    "list_strategies",
    "make_strategy",
    "register_strategy",
    "strategy_class",
]
