"""The evaluator contract: ``evaluate(arch, seed) -> EvalResult``, never raising for a bad
child. A child that fails (exception, NaN, out of memory) is a failed result carrying its
error; only bad *input* (a missing table, a wrong space) raises.

An evaluator reports *metrics only* (accuracies, perplexity, parameters, MACs, latency,
seconds). It never computes a reward: :mod:`nasrl.objectives` does, in one place."""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from nasrl.spaces.base import Architecture


@dataclass(frozen=True)
class EvalResult:
    status: Literal["complete", "failed", "pruned"]
    """pruned: training stopped early because the search told it to (:func:`report_epoch`
    returned True); ``metrics`` are those at stopping."""
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


EpochReport = Callable[[int, int, float, Mapping[str, float]], bool]
"""(epochs done, epochs in all, seconds since the trial started, the validation metric
after this epoch: {"val_acc": ...} or {"val_ppl": ...}) -> True when the search says stop."""
_epoch_report: EpochReport | None = None


@contextmanager
def epoch_reports(report: EpochReport | None) -> Iterator[None]:
    """Route :func:`report_epoch` calls made during one evaluation to ``report``. Set by the
    executor around each task, so evaluators need no knowledge of where they run."""
    global _epoch_report
    before, _epoch_report = _epoch_report, report
    try:
        yield
    finally:
        _epoch_report = before


def report_epoch(done: int, total: int, seconds: float, metrics: Mapping[str, float] | None = None) -> bool:
    """An evaluator's progress inside a trial (a long trial must not look hung) and the
    point of its learning curve. True: the search pruned the child, stop training it."""
    if _epoch_report is None:
        return False
    return bool(_epoch_report(done, total, seconds, dict(metrics or {})))
