"""REINFORCE on the LSTM controller (Zoph & Le 2017, section 3.2), top to bottom.

    grad J ~= (1/m) sum_k sum_t grad log P(a_t | a_<t; theta) * (R_k - b)

over m architectures per update, with b an exponential moving average of *earlier*
rewards; by default the update also raises the log-likelihood of the best architecture
found so far (``elite_*``, priority-queue training). Every trick is a named field of
:class:`ReinforceConfig`; the defaults are the settings that won on NAS-Bench-201 (see
the README's benchmark section), and ``ReinforceConfig.paper()`` gives the paper's own
settings.

Metric names are fixed: ``reward/mean``, ``controller/entropy``, ``controller/baseline``,
``controller/loss``, ``controller/grad_norm``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from nasrl.config import ConfigError
from nasrl.controller.lstm import Controller, ControllerConfig
from nasrl.controller.unique import sample_unseen
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.feasible import FeasiblePrefixes
from nasrl.strategies.base import Observation, Strategy, register_strategy


@dataclass
class ReinforceConfig:
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """Controller shape and sampling (paper: 2 layers x 35 units, U(-0.08, 0.08))."""
    learning_rate: float = 0.03
    """Adam step size (paper: 6e-4 for CIFAR-10, 5e-4 for PTB, over 12,800 children; with
    hundreds of children 6e-4 barely moves the policy, see ReinforceConfig.paper())."""
    batch_size: int = 5
    """m: architectures per controller update."""
    baseline: Literal["ema", "none"] = "ema"
    """b: exponential moving average of earlier rewards, or none (b = 0)."""
    baseline_decay: float = 0.8
    """EMA decay of the baseline (paper: not given; ENAS 0.95-0.99). A short memory keeps
    b close to the *current* policy's reward, which won on NAS-Bench-201."""
    reward_clip: float | None = None
    """If set, rewards are clipped to [-reward_clip, reward_clip]. The reward itself comes
    from the search's objective as given (the paper's accuracy cubed by default); the
    strategy never reshapes it again."""
    normalize_advantage: bool = False
    """Divide R - b by a running standard deviation of R - b, so the step size does not
    depend on the scale of the reward (it shrinks as the rewards of a region flatten)."""
    entropy_weight: float = 0.0
    """Bonus on the policy's entropy (ENAS: 1e-4; larger keeps exploring longer)."""
    grad_clip: float | None = None
    """Clip the gradient's global norm to this value."""
    avoid_seen: bool = True
    """Sample from the policy conditioned on *not* proposing an architecture already
    evaluated or in flight (exact sampling without replacement over a trie of the seen
    token sequences), so every ask spends budget on something new."""
    update_epochs: int = 1
    """Gradient steps per batch. 1 is plain REINFORCE; more reuses the batch with PPO's
    clipped importance ratio against the policy that sampled it (Schulman et al. 2017)."""
    ppo_clip: float = 0.2
    """PPO's epsilon: the ratio is clipped to [1 - eps, 1 + eps] when update_epochs > 1."""
    constrained_decoding: bool = True
    """When told the feasible set of hard static limits (``restrict``), sample only inside
    it: each decision masks the tokens after which no completion is feasible, and the
    policy gradient differentiates the log-probabilities of that masked distribution, so
    no budget goes to architectures that cannot count and the policy learns only which
    feasible architectures are good (the best ones usually sit on the constraint's
    boundary, which a policy punished for infeasible samples learns to avoid)."""
    elite_size: int = 1
    """k: how many of the best architectures evaluated so far the update also imitates."""
    elite_weight: float = 0.02
    """Weight of the k elites' mean log-likelihood, added to every update's objective
    (priority-queue training, Abolafia et al. 2018; 0 = plain REINFORCE). Together with
    avoid_seen -- the elites themselves are never proposed again -- the policy puts its
    mass next to the best architecture found, as evolution's mutations do, while the
    policy gradient still learns which decisions matter. Scale: the advantages of cubed
    accuracies are ~0.01-0.1, so 0.02 is a nudge, not a takeover (Adam sees the sum). With
    update_epochs > 1 the term is added, unclipped, in every epoch."""

    @classmethod
    def paper(cls) -> ReinforceConfig:
        """Zoph & Le's settings: Adam 6e-4, EMA baseline, plain REINFORCE (the reward, accuracy
        cubed, is the objective's default)."""
        return cls(learning_rate=6e-4, baseline="ema",
                   baseline_decay=0.95, normalize_advantage=False, entropy_weight=0.0,
                   avoid_seen=False, update_epochs=1, elite_weight=0.0)


@register_strategy("reinforce")
class Reinforce(Strategy):
    config_class = ReinforceConfig

    def __init__(self, space: SearchSpace, seed: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(space, seed, config)
        cfg: ReinforceConfig = self.config
        _check_config(cfg)
        # Every random source comes from the seed: initial weights and sampling.
        self.controller = Controller(space, cfg.controller, seed=seed)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=cfg.learning_rate)
        self.baseline: float | None = None  # EMA of earlier batches' mean reward
        self.num_updates = 0
        self.adv_var: float | None = None  # EMA of (R - b)^2, for normalize_advantage
        self.buffer: list[tuple[Architecture, float]] = []
        self.seen: dict[str, list[int]] = {}  # key -> tokens, evaluated or in flight
        self.elites: list[tuple[float, list[int]]] = []  # (reward, tokens), best first
        self.sampled_logp: dict[str, float] = {}  # log P at ask time, for PPO's ratio
        self._metrics: dict[str, float] = {}

    @property
    def batch_size(self) -> int:
        cfg: ReinforceConfig = self.config
        return cfg.batch_size

    def restrict(self, feasible: FeasiblePrefixes) -> None:
        cfg: ReinforceConfig = self.config
        if cfg.constrained_decoding:
            self.controller.feasible = feasible

    # -- ask -----------------------------------------------------------------------------
    @torch.no_grad()
    def ask(self, n: int) -> list[Architecture]:
        cfg: ReinforceConfig = self.config
        if cfg.avoid_seen:
            drawn = sample_unseen(self.controller, list(self.seen.values()), n, self.generator)
            tokens = torch.tensor([row for row, _ in drawn], dtype=torch.long).reshape(n, -1)
            logps = [lp for _, lp in drawn]
        else:
            out = self.controller.sample(n, self.generator)
            tokens, logps = out.tokens, out.log_prob.tolist()
        picked = self.controller.decode(tokens)
        for arch, row, lp in zip(picked, tokens.tolist(), logps, strict=True):
            self.sampled_logp[arch.key] = lp
            if cfg.avoid_seen:
                self.seen[arch.key] = row  # in flight counts as seen
        return picked

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> list[Architecture]:
        """From the policy itself (constrained decoding included), never avoiding the seen:
        its own generator, ``seen`` and the PPO log-probabilities are left alone."""
        out = self.controller.sample(n, torch.Generator().manual_seed(seed))
        return self.controller.decode(out.tokens)

    # -- tell ----------------------------------------------------------------------------
    def tell(self, observations: Sequence[Observation]) -> None:
        cfg: ReinforceConfig = self.config
        for obs in observations:
            if obs.arch.key not in self.seen:
                self.seen[obs.arch.key] = self.space.to_tokens(obs.arch)
            if obs.reward is None or not math.isfinite(obs.reward) or not self._can_learn(obs.arch):
                self.sampled_logp.pop(obs.arch.key, None)
                continue  # failed: counted by the caller's budget, never learned from
            self.buffer.append((obs.arch, float(obs.reward)))
            self._remember_elite(obs.arch, float(obs.reward))
        while len(self.buffer) >= cfg.batch_size:
            batch, self.buffer = self.buffer[: cfg.batch_size], self.buffer[cfg.batch_size :]
            self._update(batch)

    def _can_learn(self, arch: Architecture) -> bool:
        """Under constrained decoding an infeasible architecture (told from outside, e.g. a
        resumed run) has probability 0: there is no gradient to take from it."""
        feasible = self.controller.feasible
        return feasible is None or arch in feasible

    def _remember_elite(self, arch: Architecture, reward: float) -> None:
        cfg: ReinforceConfig = self.config
        if cfg.elite_size == 0 or cfg.elite_weight == 0:
            return
        row = self.seen[arch.key]  # tell() has just recorded its tokens
        if any(r == row for _, r in self.elites):
            return
        self.elites.append((reward, row))
        self.elites.sort(key=lambda e: -e[0])  # stable: on ties the earlier one stays
        del self.elites[cfg.elite_size :]

    def _transform(self, reward: float) -> float:
        cfg: ReinforceConfig = self.config
        r = reward
        if cfg.reward_clip is not None:
            r = max(-cfg.reward_clip, min(cfg.reward_clip, r))
        return r

    def _update(self, batch: list[tuple[Architecture, float]]) -> None:
        cfg: ReinforceConfig = self.config
        archs = [a for a, _ in batch]
        rewards = torch.tensor([self._transform(r) for _, r in batch])
        mean_reward = float(rewards.mean())

        # Baseline from earlier rewards only; the first batch just initializes it.
        if cfg.baseline == "ema":
            if self.baseline is None:
                self.baseline = mean_reward
                self._metrics = {"reward/mean": mean_reward, "controller/baseline": mean_reward}
                self._forget(archs)
                return
            b = self.baseline
        else:
            b = 0.0
        advantage = rewards - b
        if cfg.normalize_advantage:
            sq = float((advantage**2).mean())
            self.adv_var = sq if self.adv_var is None else (
                cfg.baseline_decay * self.adv_var + (1 - cfg.baseline_decay) * sq)
            advantage = advantage / (math.sqrt(self.adv_var) + 1e-8)

        tokens = self.controller.encode(archs)
        # PPO's denominator; plain REINFORCE (one epoch) needs no second scoring pass
        old_logp = self._old_logp(archs, tokens) if cfg.update_epochs > 1 else None
        loss_value, grad_norm, entropy = 0.0, 0.0, 0.0
        for _ in range(cfg.update_epochs):
            out = self.controller.score(tokens)
            if old_logp is None:
                pg_loss = -(advantage * out.log_prob).mean()
            else:
                ratio = torch.exp(out.log_prob - old_logp)
                clipped = ratio.clamp(1 - cfg.ppo_clip, 1 + cfg.ppo_clip)
                pg_loss = -torch.min(ratio * advantage, clipped * advantage).mean()
            loss = pg_loss - cfg.entropy_weight * out.entropy.mean()
            if self.elites:
                loss = loss - cfg.elite_weight * self._elite_log_likelihood()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            max_norm = cfg.grad_clip if cfg.grad_clip is not None else float("inf")
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.controller.parameters(), max_norm))
            self.optimizer.step()
            loss_value, entropy = loss.item(), out.entropy.mean().item()

        if cfg.baseline == "ema":
            d = cfg.baseline_decay
            self.baseline = d * b + (1 - d) * mean_reward
        self.num_updates += 1
        self._forget(archs)
        self._metrics = {
            "reward/mean": mean_reward,
            "controller/entropy": entropy,
            "controller/baseline": b,
            "controller/loss": loss_value,
            "controller/grad_norm": grad_norm,
        }

    def _elite_log_likelihood(self) -> torch.Tensor:
        tokens = torch.tensor([row for _, row in self.elites], dtype=torch.long)
        return self.controller.score(tokens).log_prob.mean()

    def _old_logp(self, archs: list[Architecture], tokens: torch.Tensor) -> torch.Tensor:
        """log P under the policy that sampled each architecture (PPO's denominator)."""
        with torch.no_grad():
            current = self.controller.score(tokens).log_prob
        values = [self.sampled_logp.get(a.key, float(c)) for a, c in zip(archs, current,
                                                                            strict=True)]
        return torch.tensor(values)

    def _forget(self, archs: list[Architecture]) -> None:
        for a in archs:
            self.sampled_logp.pop(a.key, None)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "adv_var": self.adv_var,
            "num_updates": self.num_updates,
            "buffer": [(a.to_json(), r) for a, r in self.buffer],
            "seen": [self.seen[k] for k in sorted(self.seen)],
            "elites": [(r, list(row)) for r, row in self.elites],
            "sampled_logp": dict(self.sampled_logp),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.adv_var = state["adv_var"]
        self.num_updates = int(state["num_updates"])
        self.buffer = [(self.space.validate(Architecture.from_json(a)), float(r))
                       for a, r in state["buffer"]]
        self.seen = {self.space.from_tokens(row).key: list(row) for row in state["seen"]}
        self.sampled_logp = {str(k): float(v) for k, v in state["sampled_logp"].items()}
        # .get: states saved before elites existed resume with an empty queue
        self.elites = [(float(r), [int(t) for t in row]) for r, row in state.get("elites", [])]


def _check_config(cfg: ReinforceConfig) -> None:
    if cfg.batch_size < 1:
        raise ConfigError("reinforce.batch_size must be >= 1")
    if cfg.learning_rate <= 0:
        raise ConfigError("reinforce.learning_rate must be > 0")
    if not 0 <= cfg.baseline_decay < 1:
        raise ConfigError("reinforce.baseline_decay must be in [0, 1)")
    if cfg.update_epochs < 1:
        raise ConfigError("reinforce.update_epochs must be >= 1")
    if cfg.elite_size < 0:
        raise ConfigError("reinforce.elite_size must be >= 0")
    if cfg.elite_weight < 0:
        raise ConfigError("reinforce.elite_weight must be >= 0")
    if cfg.reward_clip is not None and cfg.reward_clip <= 0:
        raise ConfigError("reinforce.reward_clip must be > 0")
    if cfg.controller.temperature <= 0:
        raise ConfigError("reinforce.controller.temperature must be > 0")
