"""Early stopping of poor children: the rules that decide, after each epoch, whether a
child is worth more training.

Both rules read learning curves only: the validation metric after epochs 1, 2, ... of the
child in question and of every other child that has reported epochs so far (complete,
pruned, failed or still running; a child re-run after a crash starts a fresh curve). A
child's *score at epoch e* is its best validation metric over epochs 1..e (the highest
accuracy, or the lowest perplexity), so one noisy epoch neither saves nor sinks it.

``median``
    Optuna's MedianPruner, on best-so-far scores: after ``warmup_epochs``, a child whose
    score at epoch e is below the median of the scores at epoch e of the other children
    that reached epoch e is stopped, once at least ``min_trials`` of them did. (Optuna
    compares against the others' value *at* e and counts only completed trials; here
    both sides are best-so-far and every child that reported epoch e counts, so a run
    whose children are mostly pruned still has peers to compare with.)
``asha``
    Asynchronous successive halving (Li et al. 2020): rungs at ``min_epochs * eta**k``
    epochs. A child reaching a rung continues only if its score there is among the top
    ``max(1, n // eta)`` of the n children that have reached that rung so far, itself
    included (the first children of a rung continue while they are its best, as in
    Optuna's SuccessiveHalvingPruner).

Neither rule ever stops a child at its last epoch: it has finished its schedule. Ties
continue. A NaN score counts as the worst.

The serial executor asks between two epochs of the one running child, so its decisions,
and a seeded run, are deterministic (a resumed run decides as an uninterrupted one). With
the process pool a child is judged against whatever the others have reported by the time
its epoch ends, which depends on timing: pool runs with pruning are not reproducible
trial for trial. Ray runs cannot prune (its tasks report nothing until they end).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from nasrl.config import ConfigError

HIGHER_IS_BETTER = {"val_acc": True, "val_ppl": False}
"""The metrics children report per epoch, and which way is better."""


@dataclass(frozen=True)
class PruningConfig:
    """The ``pruning`` section of a search config; ``rule = "none"`` (the default) trains
    every child for its full schedule."""

    rule: Literal["none", "median", "asha"] = "none"
    warmup_epochs: int = 1
    """median: epochs every child trains before it can be stopped."""
    min_trials: int = 5
    """median: other children that must have reached an epoch before it is judged."""
    min_epochs: int = 1
    """asha: the first rung, in epochs."""
    eta: int = 3
    """asha: the reduction factor; the top 1/eta of a rung continue, rungs are eta x apart."""
    pruned_reward: Literal["last", "none"] = "last"
    """What the strategy is told for a pruned child: "last", the objective applied to its
    metrics at stopping (over the epochs it trained); "none", nothing (not learned from)."""

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0:
            raise ConfigError(f"pruning.warmup_epochs must be >= 0, got {self.warmup_epochs}")
        if self.min_trials < 1:
            raise ConfigError(f"pruning.min_trials must be at least 1, got {self.min_trials}")
        if self.min_epochs < 1:
            raise ConfigError(f"pruning.min_epochs must be at least 1, got {self.min_epochs}")
        if self.eta < 2:
            raise ConfigError(f"pruning.eta must be at least 2, got {self.eta}")

    @property
    def enabled(self) -> bool:
        return self.rule != "none"


def best_so_far(curve: Sequence[float], higher_is_better: bool) -> float:
    """The best value of ``curve`` as a score where higher is better (NaN: the worst)."""
    finite = [v if higher_is_better else -v for v in curve if not math.isnan(v)]
    return max(finite) if finite else -math.inf


def should_prune(config: PruningConfig, curve: Sequence[float], total_epochs: int,
                 others: Iterable[Sequence[float]], higher_is_better: bool = True) -> bool:
    """Whether a child whose validation metric after each epoch so far is ``curve`` stops
    now, given the curves of the other children (a pure function of its arguments)."""
    epoch = len(curve)
    if not config.enabled or epoch == 0 or epoch >= total_epochs:
        return False
    score = best_so_far(curve, higher_is_better)
    peers = [best_so_far(other[:epoch], higher_is_better) for other in others if len(other) >= epoch]
    if config.rule == "median":
        return median_prunes(config, epoch, score, peers)
    return asha_prunes(config, epoch, score, peers)


def median_prunes(config: PruningConfig, epoch: int, score: float, peers: Sequence[float]) -> bool:
    if epoch <= config.warmup_epochs or len(peers) < config.min_trials:
        return False
    return score < statistics.median(peers)


def is_rung(config: PruningConfig, epoch: int) -> bool:
    rung = config.min_epochs
    while rung < epoch:
        rung *= config.eta
    return rung == epoch


def asha_prunes(config: PruningConfig, epoch: int, score: float, peers: Sequence[float]) -> bool:
    if not is_rung(config, epoch):
        return False
    ranked = sorted([*peers, score], reverse=True)
    keep = max(1, len(ranked) // config.eta)
    return score < ranked[keep - 1]
