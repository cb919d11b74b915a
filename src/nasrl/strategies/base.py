"""The strategy contract: ``ask`` for architectures, ``tell`` their results.

Written once here; subclasses document only what differs.

* ``ask(n)`` returns ``n`` architectures of ``self.space``. It may change the strategy's
  random state and bookkeeping, never its learned parameters. A repeat of an architecture
  already evaluated is allowed: the caller answers it from its cache at no budget.
* ``tell(observations)`` reports results, in any order and grouping, for architectures
  the strategy asked for (others are accepted too, e.g. from a resumed run). A ``reward``
  of ``None`` marks a failed evaluation: it is remembered as seen but never used to learn.
  Learning happens here, never in ``ask``.
* ``state_dict()`` returns everything that decides the future -- parameters, optimizer,
  baseline, random generators, buffers -- as tensors and plain Python values only, so that
  ``torch.save`` / ``torch.load(weights_only=True)`` round-trip it. After
  ``load_state_dict(s.state_dict())`` a fresh strategy answers the next ``ask`` exactly as
  ``s`` would have.
* ``restrict(feasible)`` tells the strategy the feasible set of hard static limits known
  before any training (:class:`~nasrl.spaces.feasible.FeasiblePrefixes`). A strategy may
  use it to propose only feasible architectures or ignore it (the default); it is derived
  from the objective, not state, so a resumed strategy is told again.
* ``sample(n, seed)`` draws ``n`` architectures from what the strategy proposes now (a
  policy's distribution, or uniform), with randomness from ``seed`` alone and no change to
  the strategy: no random state used, no bookkeeping. A one-shot search uses it to pick
  the architecture of each shared-weight training batch and to derive its result;
  strategies without a distribution to draw from (evolution) do not offer it.
* ``use_space(space)`` switches to another member of the space's family before an ask
  (the depth schedule's deeper conv space): later asks come from it, while ``tell``, the
  state and the bookkeeping accept architectures of every member (each one's own depth is
  in its choices, ``space.space_of(arch)``). The search sets it before every ask, so it is
  not state.
* A strategy never trains a child network and never touches an executor.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from nasrl.config import ConfigError, build, to_dict
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.feasible import FeasiblePrefixes


@dataclass(frozen=True)
class Observation:
    arch: Architecture
    reward: float | None
    """The evaluator's reward, or None if the evaluation failed."""


class Strategy(abc.ABC):
    name: ClassVar[str]
    config_class: ClassVar[type[Any]]

    def __init__(self, space: SearchSpace, seed: int, config: Any = None) -> None:
        self.space = space
        self.seed = seed
        self.config = config if config is not None else self.config_class()

    @property
    def batch_size(self) -> int:
        """How many architectures the strategy would like to be asked for at a time."""
        return 1

    def use_space(self, space: SearchSpace) -> None:
        """Ask from ``space``, a member of the current space's family, from now on."""
        self.space = space

    def restrict(self, feasible: FeasiblePrefixes) -> None:
        """The feasible set under hard static limits; by default not used."""
        return None

    @abc.abstractmethod
    def ask(self, n: int) -> list[Architecture]: ...

    def sample(self, n: int, seed: int) -> list[Architecture]:
        """``n`` architectures from the current proposal distribution, from ``seed`` alone;
        the strategy is left exactly as it was."""
        raise ConfigError(f"strategy {self.name!r} has no distribution to sample from "
                          "(one-shot search takes reinforce or random)")

    @abc.abstractmethod
    def tell(self, observations: Sequence[Observation]) -> None: ...

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]: ...

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

    def metrics(self) -> dict[str, float]:
        """Scalars describing the latest update (fixed names, e.g. ``controller/entropy``)."""
        return {}

    def resolved_config(self) -> dict[str, Any]:
        return to_dict(self.config)


S = TypeVar("S", bound=type[Strategy])
_STRATEGIES: dict[str, type[Strategy]] = {}


def register_strategy(name: str) -> Callable[[S], S]:
    def decorate(cls: S) -> S:
        if name in _STRATEGIES:
            raise ValueError(f"strategy {name!r} is already registered")
        cls.name = name
        _STRATEGIES[name] = cls
        return cls

    return decorate


def list_strategies() -> list[str]:
    return sorted(_STRATEGIES)


def strategy_class(name: str) -> type[Strategy]:
    try:
        return _STRATEGIES[name]
    except KeyError:
        known = ", ".join(list_strategies())
        raise ConfigError(f"unknown strategy {name!r} (known: {known})") from None


def make_strategy(
    name: str, space: SearchSpace, seed: int, config: Mapping[str, Any] | None = None
) -> Strategy:
    """Build a registered strategy; ``config`` is a (nested) mapping of its config fields."""
    cls = strategy_class(name)
    return cls(space, seed, build(cls.config_class, config or {}, prefix=f"{name}."))
