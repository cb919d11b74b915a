"""The objective: metrics in, reward out -- the one place where a reward is shaped.

Evaluators return metrics only (validation accuracy per epoch and its maximum over the last
epochs, perplexity, parameters, MACs, latency, wall time). :class:`Objective` turns them
into the reward a strategy learns from; the multi-trial search, ``nasrl benchmark`` and the
one-shot driver all call it, and no strategy reshapes a reward again.

The quality term is the paper's: ``accuracy ** 3`` (accuracy the maximum validation
accuracy of the last 5 epochs, in [0, 1]) for image spaces and ``80 / perplexity ** 2``
for the recurrent cell. Costs enter in MnasNet's form (Tan et al. 2019)::

    R = f(quality) * prod_i (m_i / T_i) ** w_i,   w_i = w_above if m_i > T_i else w_below

for soft constraints, while a hard constraint (``params <= 50k``) makes a trial that
breaks it *infeasible*: it is stored with all its metrics, never reported as a best
architecture, and the strategy is told ``infeasible_reward``.

Constraints are written the same way in TOML, in ``--set`` and on the command line::

    params<=50k            hard: 50,000 parameters at most
    latency_ms<=2:soft     soft, MnasNet's default weights (w_above -0.07, w_below 0)
    macs<=5M:soft=-0.5     soft, w_above -0.5
    macs<=5M:soft=-0.07/-0.07   soft, w_above and w_below (MnasNet's "Pareto" setting)
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from nasrl.config import ConfigError

COST_METRICS: dict[str, str] = {
    "params": "trainable parameters",
    "macs": "multiply-accumulates of one forward pass of one example",
    "flops": "2 x macs",
    "latency_ms": "median forward latency in milliseconds (measured or predicted, see objective.latency)",
}
"""Metrics a constraint may name; each is smaller-is-better."""
STATIC_METRICS = ("params", "macs", "flops")
"""Costs known from the architecture alone: a child that breaks a hard constraint on one of
them is screened out before any training (see :meth:`Objective.static_limits`)."""

QUALITY_METRIC = {
    # (quality, evaluator) -> metric the quality term reads
    ("accuracy", "training"): "val_acc_max_last",
    ("accuracy", "tabular"): "val_acc",
    ("perplexity", "training"): "val_ppl_best",
}
SUFFIXES = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9}
_SPEC = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*<=\s*(?P<value>[^:\s]+)\s*"
    r"(?::\s*(?P<kind>[A-Za-z]+)(?:\s*=\s*(?P<weights>[^\s]+))?)?\s*$"
)


@dataclass
class LatencyConfig:
    """How ``latency_ms`` is obtained when an objective names it."""

    mode: Literal["measure", "table"] = "measure"
    """measure: time the trained child itself; table: sum of per-op latencies from a
    table built once per machine and cached (no child needs to run whole)."""
    device: str = "cpu"
    """The device the model is meant for (cpu, cuda, cuda:1)."""
    threads: int = 1
    """CPU threads while timing (fixed, so numbers compare across trials)."""
    batch_size: int = 1
    warmup: int = 10
    repeats: int = 30
    """Timed forward passes after warm-up; the median is recorded."""

    def __post_init__(self) -> None:
        for name in ("threads", "batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"objective.latency.{name} must be at least 1, got {getattr(self, name)}")
        if self.warmup < 0:
            raise ConfigError(f"objective.latency.warmup must be >= 0, got {self.warmup}")


@dataclass
class ObjectiveConfig:
    """What the search maximizes. The defaults are the paper's rewards."""

    quality: Literal["auto", "accuracy", "perplexity"] = "auto"
    """accuracy ** accuracy_power, or perplexity_c / perplexity ** perplexity_power; auto
    picks by space (perplexity for rnn_cell)."""
    metric: str | None = None
    """The metric the quality term reads (default: val_acc_max_last for trained image
    children, val_acc for a table, val_ppl_best for language models)."""
    accuracy_power: float = 3.0
    perplexity_c: float = 80.0
    perplexity_power: float = 2.0
    constraints: tuple[str, ...] = ()
    """Cost constraints, e.g. "params<=50k" (hard) or "latency_ms<=2:soft" (see module doc)."""
    infeasible_reward: float | None = 0.0
    """Reward told for a trial that breaks a hard constraint; None: not learned from."""
    latency: LatencyConfig = field(default_factory=LatencyConfig)

    def __post_init__(self) -> None:
        if self.accuracy_power <= 0 or self.perplexity_power <= 0 or self.perplexity_c <= 0:
            raise ConfigError("objective: accuracy_power, perplexity_c and perplexity_power must be > 0")
        if self.infeasible_reward is not None and not math.isfinite(self.infeasible_reward):
            raise ConfigError("objective.infeasible_reward must be a finite number or none")
        self.constraints = tuple(self.constraints)
        seen: set[str] = set()
        for spec in self.constraints:
            metric = parse_constraint(spec).metric
            if metric in seen:
                raise ConfigError(f"objective: two constraints on {metric!r}")
            seen.add(metric)


@dataclass(frozen=True)
class Constraint:
    metric: str
    limit: float
    kind: Literal["hard", "soft"] = "hard"
    weight_above: float = -0.07
    weight_below: float = 0.0

    def factor(self, value: float) -> float:
        """The soft constraint's multiplier (m / T) ** w."""
        w = self.weight_above if value > self.limit else self.weight_below
        return float((value / self.limit) ** w) if value > 0 else 1.0

    def __str__(self) -> str:
        text = f"{self.metric}<={format_number(self.limit)}"
        if self.kind == "soft":
            text += f":soft={self.weight_above:g}/{self.weight_below:g}"
        return text


def format_number(value: float) -> str:
    """Short and readable: 50k, 47.1046M, 2.5 (six significant digits)."""
    for suffix, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.6g}{suffix}"
    return f"{value:.6g}"


def format_reward(value: float | None) -> str:
    """Four significant digits: 80 / ppl^2 rewards are ~1e-3 and would all print as 0.0003."""
    return "-" if value is None else f"{value:.4g}"


def parse_number(text: str, what: str) -> float:
    match = re.fullmatch(r"([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)([kKMG]?)", text.strip())
    if match is None:
        raise ConfigError(f"{what}: {text!r} is not a number (suffixes k, M, G allowed)")
    return float(match.group(1)) * SUFFIXES[match.group(2)]


def parse_constraint(spec: str) -> Constraint:
    """``"params<=50k"`` or ``"latency_ms<=2:soft=-0.07/0"`` -> :class:`Constraint`."""
    if not isinstance(spec, str):
        raise ConfigError(f"constraint {spec!r}: expected text such as 'params<=50k'")
    match = _SPEC.match(spec)
    if match is None:
        raise ConfigError(
            f"constraint {spec!r}: expected METRIC<=VALUE[:soft[=W_ABOVE[/W_BELOW]]], e.g. 'params<=50k'"
        )
    metric = match["metric"]
    if metric not in COST_METRICS:
        known = ", ".join(COST_METRICS)
        raise ConfigError(f"constraint {spec!r}: unknown metric {metric!r} (known: {known})")
    limit = parse_number(match["value"], f"constraint {spec!r}")
    if not math.isfinite(limit) or limit <= 0:
        raise ConfigError(f"constraint {spec!r}: the target must be a positive number")
    kind = (match["kind"] or "hard").lower()
    if kind not in ("hard", "soft"):
        raise ConfigError(f"constraint {spec!r}: {match['kind']!r} is neither 'hard' nor 'soft'")
    if kind == "hard":
        if match["weights"]:
            raise ConfigError(f"constraint {spec!r}: weights belong to soft constraints")
        return Constraint(metric, limit, "hard")
    above, below = -0.07, 0.0
    if match["weights"]:
        parts = match["weights"].split("/")
        if len(parts) > 2:
            raise ConfigError(f"constraint {spec!r}: give at most two weights, W_ABOVE/W_BELOW")
        above = parse_number(parts[0], f"constraint {spec!r}")
        below = parse_number(parts[1], f"constraint {spec!r}") if len(parts) == 2 else 0.0
    if above > 0 or below > 0:
        raise ConfigError(f"constraint {spec!r}: weights must be <= 0 (costs lower the reward)")
    return Constraint(metric, limit, "soft", above, below)


@dataclass(frozen=True)
class ObjectiveValue:
    reward: float | None
    """What the strategy is told; None when the trial cannot be learned from."""
    feasible: bool
    """False when a hard constraint is broken."""
    quality: float | None
    """The raw quality metric (accuracy or perplexity)."""
    error: str | None = None
    """Why no value could be computed (a metric missing or not finite): a failed trial."""
    violations: tuple[str, ...] = ()


class Objective:
    """The objective of one search, resolved for its space and evaluator."""

    def __init__(self, config: ObjectiveConfig, *, task: str = "image", evaluator: str = "training") -> None:
        self.config = config
        quality = config.quality
        if quality == "auto":
            quality = "perplexity" if task == "language" else "accuracy"
        if quality == "perplexity" and evaluator == "tabular":
            raise ConfigError("objective: a perplexity objective needs trained language models, not a table")
        self.quality: Literal["accuracy", "perplexity"] = quality
        self.metric = config.metric or QUALITY_METRIC[(quality, evaluator)]
        self.constraints = [parse_constraint(s) for s in config.constraints]

    @property
    def higher_is_better(self) -> bool:
        return self.quality == "accuracy"

    @property
    def cost_metrics(self) -> list[str]:
        return [c.metric for c in self.constraints]

    def needs(self, metric: str) -> bool:
        return metric in self.cost_metrics

    def describe(self) -> str:
        """One line for people: what the reward is."""
        cfg = self.config
        if self.quality == "accuracy":
            text = f"{self.metric}^{cfg.accuracy_power:g}"
        else:
            text = f"{cfg.perplexity_c:g} / {self.metric}^{cfg.perplexity_power:g}"
        soft = [c for c in self.constraints if c.kind == "soft"]
        hard = [c for c in self.constraints if c.kind == "hard"]
        for c in soft:
            text += (f" * ({c.metric}/{format_number(c.limit)})^w"
                     f" (w {c.weight_above:g} above, {c.weight_below:g} below)")
        if hard:
            told = ("not learned from" if cfg.infeasible_reward is None
                    else f"reward {cfg.infeasible_reward:g}")
            text += "; subject to " + ", ".join(str(c) for c in hard) + f" (infeasible: {told})"
        return text

    def resolved(self) -> dict[str, object]:
        """The config with every default made explicit, as a run records it."""
        from nasrl.config import to_dict

        out = to_dict(self.config)
        out["quality"], out["metric"] = self.quality, self.metric
        out["constraints"] = [str(c) for c in self.constraints]
        return out

    def quality_term(self, value: float) -> float:
        cfg = self.config
        if self.quality == "accuracy":
            return float(max(0.0, value) ** cfg.accuracy_power)
        return float(cfg.perplexity_c / value**cfg.perplexity_power)

    def static_limits(self) -> dict[str, float]:
        """Hard limits on costs known before training (params, MACs, FLOPs): an evaluator
        that meets a child breaking one reports its costs without training it."""
        return {c.metric: c.limit for c in self.constraints
                if c.kind == "hard" and c.metric in STATIC_METRICS}

    def violations(self, metrics: Mapping[str, float]) -> tuple[str, ...]:
        """The hard constraints ``metrics`` break (those whose metric is present)."""
        return tuple(f"{c.metric} {format_number(float(metrics[c.metric]))} > {format_number(c.limit)}"
                     for c in self.constraints
                     if c.kind == "hard" and c.metric in metrics and float(metrics[c.metric]) > c.limit)

    def evaluate(self, metrics: Mapping[str, float]) -> ObjectiveValue:
        """The reward (and feasibility) of one evaluated architecture.

        A hard constraint broken makes the trial infeasible whatever else is known (a
        screened child has costs but no accuracy); otherwise every metric must be there."""
        violations = self.violations(metrics)
        raw = metrics.get(self.metric)
        quality = None if raw is None else float(raw)
        if violations:
            return ObjectiveValue(self.config.infeasible_reward, False, quality, None, violations)
        missing = [m for m in [self.metric, *self.cost_metrics] if m not in metrics]
        if missing or quality is None:
            return ObjectiveValue(None, True, None, f"the evaluator reported no {missing[0]!r} metric")
        if not math.isfinite(quality) or (self.quality == "perplexity" and quality <= 0):
            return ObjectiveValue(None, True, None, f"{self.metric} is {quality!r}")
        reward = self.quality_term(quality)
        for c in self.constraints:
            if c.kind == "soft":
                reward *= c.factor(float(metrics[c.metric]))
        return ObjectiveValue(reward, True, quality, None)

    # -- Pareto fronts ------------------------------------------------------------------
    def front_metrics(self, extra: Sequence[str] = ()) -> list[str]:
        """Cost axes of a Pareto front: the constrained metrics (params when there are none)."""
        metrics = list(dict.fromkeys([*self.cost_metrics, *extra]))
        return metrics or ["params"]


def pareto_front(points: Sequence[tuple[float, Sequence[float]]], higher_is_better: bool = True) -> list[int]:
    """Indices of the non-dominated points, best quality first.

    Each point is (quality, costs); quality is maximized (minimized when
    ``higher_is_better`` is False) and every cost minimized. Exact duplicates are all kept.
    """
    sign = 1.0 if higher_is_better else -1.0
    order = sorted(range(len(points)), key=lambda i: (-sign * points[i][0], *points[i][1]))
    front: list[int] = []
    for i in order:
        q, costs = points[i]
        dominated = False
        for j in front:
            qj, cj = points[j]
            better_or_equal = sign * qj >= sign * q and all(a <= b for a, b in zip(cj, costs, strict=True))
            strictly = sign * qj > sign * q or any(a < b for a, b in zip(cj, costs, strict=True))
            if better_or_equal and strictly:
                dominated = True
                break
        if not dominated:
            front.append(i)
    return front


def hypervolume_2d(points: Sequence[tuple[float, float]], reference: tuple[float, float]) -> float:
    """Area dominated by (quality, cost) points (quality maximized, cost minimized) and
    bounded by ``reference`` = (worst quality, worst cost); points outside it add nothing."""
    ref_q, ref_c = reference
    inside = sorted((c, q) for q, c in points if q > ref_q and c < ref_c)
    area, best_q = 0.0, ref_q
    # sweep from the cheapest point: each step adds a slab from its cost to the reference
    # cost, as high as it improves on the best quality seen at lower cost
    for c, q in inside:
        if q > best_q:
            area += (ref_c - c) * (q - best_q)
            best_q = q
    return area
