"""The evaluator contract: ``evaluate(arch, seed) -> EvalResult``, never raising for a bad
child. A child that fails (exception, NaN, out of memory) is a failed result carrying its
error; only bad *input* (a missing table, a wrong space) raises.

An evaluator reports *metrics only* (accuracies, perplexity, parameters, MACs, latency,
seconds). It never computes a reward: :mod:`nasrl.objectives` does, in one place."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Literal

from nasrl.spaces.base import Architecture


@dataclass(frozen=True)
class EvalResult:
    status: Literal["complete", "failed"]
    metrics: dict[str, float] = field(default_factory=dict)
    cost: float = 0.0
    """Seconds the evaluation took (or would have taken, for a table)."""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "complete"


class Evaluator(abc.ABC):
    @abc.abstractmethod
    def evaluate(self, arch: Architecture, seed: int) -> EvalResult: ...
