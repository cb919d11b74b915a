"""REINFORCE on the LSTM controller (Zoph & Le 2017, section 3.2), top to bottom.

    grad J ~= (1/m) sum_k sum_t grad log P(a_t | a_<t; theta) * (R_k - b)

over m architectures per update, with b by default the mean of the batch's *other*
returns (leave-one-out), or an exponential moving average of earlier rewards, a learned
value of each decision's prefix, or 0; by default the update also raises the
log-likelihood of the best architecture found so far, with a weight that fades
(``elite_*``, priority-queue training); and by default 40% of the asks are *local*,
evolution's one-token mutations of the best architectures so far, which the policy
gradient never learns from (``local_*``). Every trick is a named field of
:class:`ReinforceConfig`; the defaults won the README's selection protocol on
NAS-Bench-201 landscapes (tuning seeds and landscapes; the held-out check is reported
there too), and ``ReinforceConfig.paper()`` gives the paper's own settings.

Metric names are fixed: ``reward/mean`` (of the returns), ``controller/entropy``,
``controller/baseline``, ``controller/loss``, ``controller/grad_norm``,
``controller/advantage_var``, and while ``measure_updates`` lasts
``controller/pg_grad_sqnorm``, ``controller/pg_grad_var``,
``controller/pg_grad_var_no_baseline``.

Across depths (a search's depth schedule, :meth:`use_space`) there is one controller, its
parameters shared by every depth as in the paper: a deeper space only adds decision steps.
A batch may mix depths: its rows are scored together, each masked to its own length
(:meth:`Controller.score_rows`), so an update, the elites' likelihood and PPO's ratio take
every architecture at its own depth. ``seen`` holds rows of every depth (keys differ
across depths); ``avoid_seen`` conditions each ask on the rows of the depth asked, the
only ones it could repeat.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from nasrl.config import ConfigError
from nasrl.controller.lstm import Controller, ControllerConfig, ControllerOutput
from nasrl.controller.unique import DEFAULT_SAMPLER, SAMPLERS, SeenIndex, draw_unseen, policy_draws
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.feasible import FeasiblePrefixes
from nasrl.strategies.base import Observation, Strategy, register_strategy

LOCAL_PARENTS = 5
"""How many of the best architectures evaluated so far local asks edit (best first)."""
LOCAL_DRAWS = 8
"""Policy draws per local ask that propose its edit: enough that the best parent's
unseen neighbours are found while it has some, and cheap (one batched walk)."""


@dataclass
class ReinforceConfig:
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """Controller shape and sampling (paper: 2 layers x 35 units, U(-0.08, 0.08))."""
    learning_rate: float = 0.03
    """Adam step size (paper: 6e-4 for CIFAR-10, 5e-4 for PTB, over 12,800 children; with
    hundreds of children 6e-4 barely moves the policy, see ReinforceConfig.paper())."""
    batch_size: int = 5
    """m: architectures per controller update."""
    baseline: Literal["ema", "none", "critic", "leave_one_out"] = "leave_one_out"
    """b: an exponential moving average of earlier rewards (ema), none (b = 0), the mean
    of the *other* returns of the same batch (leave_one_out, RLOO: no lag behind the
    policy, and not a function of the architecture it scores), or a learned
    value estimate (critic): a linear head on the controller's top hidden state *before*
    each decision, V(a_<t), trained by squared error against the return, so decision t
    gets the advantage R - V(a_<t). Before each decision, not after the last: a baseline
    that has read the architecture it scores depends on the action and biases the
    gradient, while one of the prefix does not. The head reads the hidden state detached,
    so its regression never moves the policy; it starts at 0 (the first batch learns)."""
    critic_learning_rate: float = 0.2
    """Step size of the critic head's plain gradient descent (one step per update). Not
    Adam: Adam moves the weights on the small hidden features as fast as the bias, and the
    value then swings with every change of the policy's features; plain descent moves the
    bias ~2 x lr x (V - R) per step, so V reaches the reward's level (~0.5-0.7 for cubed
    accuracies) within ten updates, and the weights only as far as the features explain.
    Must be below 0.5, where descent on the scaled features stays stable (see value())."""
    baseline_decay: float = 0.8
    """EMA decay of the baseline (paper: not given; ENAS 0.95-0.99). A short memory keeps
    b close to the *current* policy's reward, which won on NAS-Bench-201."""
    first_batch: Literal["leave_one_out", "zero"] = "leave_one_out"
    """With the ema baseline, the b of the first batch, which has no earlier rewards: the
    mean of the batch's *other* rewards for each architecture (leave-one-out: not a
    function of the architecture it scores), or 0. Either way the first batch learns
    (before version 0.3 it only initialised the EMA: a sixth of a 30-child search
    without a gradient). Measured on NAS-Bench-201 in the README's controller study."""
    advantage_shaping: Literal["none", "rank"] = "none"
    """How R becomes the advantage. none: R - b. rank: A = 2 q - 1 with q the share of
    the reference returns below R (ties count half) -- the reference being the last
    ``rank_window`` returns told before this batch (the first batch: the batch's other
    returns) -- so A is in [-1, 1] whatever the reward's scale. The fitness shaping of
    natural evolution strategies (Wierstra et al. 2014): a monotone transform of the
    reward by a reference that does not depend on the architecture scored, so the update
    stays an unbiased gradient of E[u(R)] with u the reference's CDF, and the step of a
    landscape whose rewards differ by 0.001 near the top is that of one whose rewards
    differ by 0.5. Evolution's tournament is scale-free the same way. The reference takes
    the baseline's place (``baseline`` must be ema or leave_one_out, then unused)."""
    rank_window: int = 50
    """With advantage_shaping rank: how many of the latest returns form the reference."""
    advantage_clip: float | None = None
    """If set, the advantage R - b is clipped to [-advantage_clip, advantage_clip] (the
    course project's clipping of accuracy minus moving accuracy, e.g. 0.05 or 0.1): a
    lucky or unlucky architecture moves the policy at most this much. The reward itself
    comes from the search's objective as given (the paper's accuracy cubed by default)."""
    return_mode: Literal["reward", "reward_plus_next"] = "reward"
    """R: the architecture's reward, or the course project's actor-critic return, its
    reward plus the *next* architecture's. "Next" is the next learnable result in the
    order results are told (failed ones skipped), across batch boundaries: the last
    architecture of a batch waits for the first result of the next one, so every update
    still holds batch_size returns and the latest result is held back until its successor
    arrives. The next architecture is drawn independently of this one (given the policy),
    so the added term carries no signal about this decision, only noise; see the study."""
    l2: float = 0.0
    """Weight decay on the loss: loss = pg_loss + l2 * (sum of the controller's squared
    weights). The critic head is not included."""
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
    token sequences), so every ask spends budget on something new.

    This biases the policy gradient, and knowingly so. The samples come from
    q(a) = p(a) [a unseen] / Z while the update differentiates log p, so its expectation is
    (1/Z) sum over *unseen* a of p(a) (R(a) - b) grad log p(a): the gradient of the
    expected advantage of the architectures not yet evaluated, scaled by 1/Z. Seen
    architectures drop out of the objective (their probability is pushed neither up nor
    down, except by the elite term), which is what a budget of distinct evaluations pays
    for. Measured against ``avoid_seen=False`` in the README's controller study."""
    update_epochs: int = 1
    """Gradient steps per batch. 1 is plain REINFORCE; more reuses the batch with PPO's
    clipped importance ratio against the policy that sampled it (Schulman et al. 2017)."""
    ppo_clip: float = 0.2
    """PPO's epsilon: the ratio is clipped to [1 - eps, 1 + eps] when update_epochs > 1.
    PPO's ratio is per architecture, so with the critic its advantage is R - V(start)."""
    constrained_decoding: bool = True
    """When told the feasible set of hard static limits (``restrict``), sample only inside
    it: each decision masks the tokens after which no completion is feasible, and the
    policy gradient differentiates the log-probabilities of that masked distribution, so
    no budget goes to architectures that cannot count and the policy learns only which
    feasible architectures are good (the best ones usually sit on the constraint's
    boundary, which a policy punished for infeasible samples learns to avoid)."""
    front_tiers: int = 0
    """Search the whole (quality, cost) front, not only the best feasible architecture:
    the number of cost tiers (0: off; else at least 2). Used only once the strategy is
    told a feasible set of hard static limits (``restrict``, with the costs kept), so a
    search without a constraint is the same as with 0.

    Each sampled architecture gets a tier, i.e. a tighter limit on ``front_metric``. The
    limits are geometric between the cheapest feasible cost and the dearest, each moved
    down to a cost some feasible architecture has (tiers that meet are merged): geometric
    because a front's hypervolume weighs a point by how far below the limit it lies, so
    most of it sits among the cheap architectures (79% of NAS-Bench-201's under a median
    MACs limit lies in cells of at most a quarter of the limit), where quantiles of the
    costs would put one tier at most. The top tier is the constraint itself. The tier is
    fed to the controller (a learned embedding added to its input at every step) and
    constrained decoding keeps each sample inside its tier's limit, so one policy learns
    the best architecture of every tier; the log-probabilities the update differentiates
    are those of that conditioned, masked distribution. With the ema baseline each tier
    keeps its own EMA (its first batch: leave-one-out over the batch's rows of that tier;
    a lone row takes no step), so a cheap tier's lower rewards are not judged against the
    top tier's. Each tier imitates its own elites: the best architectures evaluated
    within its limit, whichever tier asked them. Tiers are assigned by ask order
    (deterministic, see ``front_top_share``); with avoid_seen a tier whose architectures
    have all been asked passes its asks to the next dearer one. ``nasrl benchmark`` under
    a hard static limit runs with 5 tiers unless told otherwise (README, issue 10)."""
    front_metric: str | None = None
    """The cost the tiers cut (a hard static limit of the feasible set); None: the first."""
    front_top_share: float = 0.5
    """Share of the asks that go to the top tier (the constraint's own limit), which finds
    the best feasible architecture: ask k is a top-tier ask when floor((k + 1) s) >
    floor(k s). The other asks go to the lower tiers in proportion to how many
    architectures each holds (stride scheduling; ties to the cheaper tier): a larger tier
    needs more draws to find its best (on NAS-Bench-201 this beat an even round robin,
    hv ratio 0.914 against 0.906 over tuning seeds 1000-1019, within the noise)."""
    front_projection: float = 0.0
    """In a front search, each lower tier also imitates the *projections* of the next
    dearer tier's best architecture: the architectures of its own tier nearest to it
    (fewest differing decisions), with this weight relative to its own elites' term (0:
    off). A cheaper tier's best is often a dearer best with a few decisions made cheaper,
    which the tier's own few samples would take long to find."""
    front_local_share: float = 0.0
    """In a front search, the share of the asks that are local (as ``local_share`` is
    outside one): the ask keeps its scheduled tier and is a one-token edit (``local_edit``)
    of one of the best ``LOCAL_PARENTS`` architectures evaluated within that tier's limit,
    itself within that limit. Evolution's mutations of its best cells are what reach the
    near-best cheap cells a tier's few policy draws miss (README, issue 10). 0: off; a
    state saved before this field existed resumes without them."""
    elite_size: int = 1
    """k: how many of the best architectures evaluated so far the update also imitates."""
    elite_weight: float = 0.1
    """Weight of the k elites' mean log-likelihood, added to every update's objective
    (priority-queue training, Abolafia et al. 2018; 0 = plain REINFORCE). Together with
    avoid_seen -- the elites themselves are never proposed again -- the policy puts its
    mass next to the best architecture found, as evolution's mutations do, while the
    policy gradient still learns which decisions matter. Scale: the advantages of cubed
    accuracies are ~0.01-0.1, so 0.1 pulls about as hard as the policy gradient at first,
    and with elite_halflife 40 it is 0.05 at 200 evaluations and 0.018 at 500 (nasrl 0.2:
    0.02 throughout). With update_epochs > 1 the term is added, unclipped, in every
    epoch."""
    elite_halflife: float | None = 40.0
    """If set, the elite weight halves every this-many updates: elite_weight * 0.5 **
    (updates / elite_halflife). Early, with few updates behind it, the policy gradient
    knows little and imitating the best so far is evolution's fast local search; later a
    strong pull keeps the policy in the basin of one architecture (measured: weight 0.1
    held throughout finds the best cell by 500 less often than 0.02), and the policy
    gradient, which has learned which decisions matter, should lead."""
    local_share: float = 0.4
    """Share of the asks that are *local*: one-token edits of the best architectures
    evaluated so far, beside the policy's draws (ask k is local when floor((k + 1) s) >
    floor(k s)). Each edit changes one token of a parent (``local_edit``: by default any
    other value at a uniformly drawn position, as evolution mutates; or the token of a
    policy draw where it differs from the parent); parents are tried
    best first (the best ``LOCAL_PARENTS``), and an edit already seen, repeated or outside
    a hard feasible set is skipped (a local ask with no edit left is a policy draw). This
    is evolution's locality -- a quarter of its evaluations sit one edit from the best so
    far, the policy's 6% -- which a landscape whose best architecture mixes decisions the
    policy does not prefer one by one needs (README, issue 12). Local architectures are
    not samples of the policy, so they never enter the policy gradient; they do become
    elites (and parents) by their rewards. A front search (``front_tiers``) has its own
    share, ``front_local_share``.
    A state saved before this field existed resumes without local asks."""
    local_edit: Literal["policy", "uniform"] = "uniform"
    """Where a local ask's new token comes from: a policy draw (policy), or any other value
    of a position drawn uniformly (uniform: evolution's one-decision mutation, which also
    proposes values the policy has learned to avoid)."""

    @classmethod
    def paper(cls) -> ReinforceConfig:
        """Zoph & Le's settings: Adam 6e-4, EMA baseline, plain REINFORCE (the reward, accuracy
        cubed, is the objective's default)."""
        return cls(learning_rate=6e-4, baseline="ema",
                   baseline_decay=0.95, normalize_advantage=False, entropy_weight=0.0,
                   avoid_seen=False, update_epochs=1, elite_weight=0.0, elite_halflife=None,
                   local_share=0.0)

    removed_keys: ClassVar[dict[str, str]] = {
        "reward_clip": "it clipped the reward itself (accuracies 0.80 and 0.95 both became "
                       "0.1); use advantage_clip, which clips R - b"}


@register_strategy("reinforce")
class Reinforce(Strategy):
    config_class = ReinforceConfig

    def __init__(self, space: SearchSpace, seed: int, config: ReinforceConfig | None = None) -> None:
        super().__init__(space, seed, config)
        cfg: ReinforceConfig = self.config
        _check_config(cfg)
        # Every random source comes from the seed: initial weights and sampling.
        self.controller = Controller(space, cfg.controller, seed=seed, num_tiers=cfg.front_tiers)
        self.generator = torch.Generator().manual_seed(seed)
        self.optimizer = torch.optim.Adam(self.controller.parameters(), lr=cfg.learning_rate)
        self.baseline: float | None = None  # EMA of earlier batches' mean return
        self.critic: torch.nn.Linear | None = None
        self.critic_optimizer: torch.optim.SGD | None = None
        if cfg.baseline == "critic":
            self.critic = torch.nn.Linear(cfg.controller.hidden_size, 1)
            torch.nn.init.zeros_(self.critic.weight)  # V = 0 at first, and no random source
            torch.nn.init.zeros_(self.critic.bias)
            self.critic_optimizer = torch.optim.SGD(self.critic.parameters(),
                                                    lr=cfg.critic_learning_rate)
        self.pending: tuple[Architecture, float] | None = None  # waits for the next reward
        self.shaping = cfg.advantage_shaping
        """The shaping this run learns with: the config's, except for a state saved before
        advantage_shaping existed, which resumes unshaped (as it was asked)."""
        self.rank_ref: list[float] = []  # the latest returns, oldest first (rank shaping)
        self.elite_halflife = cfg.elite_halflife
        """Likewise: a state saved before elite_halflife existed resumes without it."""
        self.measure_updates = 0
        """Instrumentation, not config: for the first this-many updates the metrics also
        hold the policy gradient's squared norm and within-batch variance (2m extra backward
        passes per update), see :meth:`_measure`."""
        self.num_updates = 0
        self.adv_var: float | None = None  # EMA of (R - b)^2, for normalize_advantage
        self.buffer: list[tuple[Architecture, float]] = []
        self.seen: dict[str, list[int]] = {}  # key -> tokens, evaluated or in flight
        self.seen_rows: dict[int, SeenIndex] = {}
        """The same tokens by sequence length (one per depth when the depth grows): what
        sampling without replacement avoids, and what the state saves (compact arrays)."""
        self.sampler = DEFAULT_SAMPLER
        """How sampling without replacement draws (:data:`nasrl.controller.unique.SAMPLERS`):
        a run saved with an earlier sampler keeps it, so it re-asks exactly what it asked."""
        self.elites: list[tuple[float, list[int]]] = []  # (reward, tokens), best first
        self.sampled_logp: dict[str, float] = {}  # log P at ask time, for PPO's ratio
        self._metrics: dict[str, float] = {}
        # the front search (front_tiers): tiers cheapest first, the last the constraint's own
        self.tier_sets: list[FeasiblePrefixes] = []
        self.tier_limits: list[float] = []
        self.tier_baselines: dict[int, float] = {}  # EMA of each tier's earlier rewards
        self.tier_of: dict[str, int] = {}  # key -> tier it was asked under, until learned
        self.tier_elites: dict[int, list[tuple[float, list[int]]]] = {}  # lower tiers' elites
        self.asked = 0  # architectures asked so far: the tier schedule's position
        self._projection_cache: dict[tuple[int, tuple[int, ...]], list[list[int]]] = {}
        self.tier_asks: list[int] = []  # asks each lower tier got so far
        self.local_share = cfg.local_share
        """The config's, except for a state saved without local asks, which resumes
        without them (as it was asked)."""
        self.proposed = 0  # architectures asked outside a front search: the local schedule
        self.local_parents: list[tuple[float, list[int]]] = []  # (reward, tokens), best first
        self.local_keys: set[str] = set()  # local asks not yet told
        self.front_local_share = cfg.front_local_share
        """Likewise for the front search's local asks."""
        self.front_proposed = 0  # asks of a front search so far: its local schedule
        self.tier_parents: dict[int, list[tuple[float, list[int]]]] = {}  # best within each tier

    @property
    def batch_size(self) -> int:
        cfg: ReinforceConfig = self.config
        return cfg.batch_size

    def use_space(self, space: SearchSpace) -> None:
        self.controller.use_space(space)  # same kinds, more decision steps
        self.space = space

    def restrict(self, feasible: FeasiblePrefixes) -> None:
        cfg: ReinforceConfig = self.config
        if cfg.constrained_decoding:
            self.controller.feasible = feasible
        if cfg.front_tiers > 0:
            self.tier_limits, self.tier_sets = front_tiers(feasible, cfg.front_tiers, cfg.front_metric)

    @property
    def front_active(self) -> bool:
        return len(self.tier_sets) > 1

    def _tier_schedule(self, n: int) -> list[int]:
        """The tiers of the next ``n`` asks (see ``front_top_share``); advances the count."""
        cfg: ReinforceConfig = self.config
        s, top = cfg.front_top_share, len(self.tier_sets) - 1
        sizes = [len(f) for f in self.tier_sets[:-1]]
        if len(self.tier_asks) != top:
            self.tier_asks = [0] * top
        tiers = []
        for k in range(self.asked, self.asked + n):
            if _every(s, k):
                tiers.append(top)
                continue
            # stride scheduling: the lower tier furthest behind its share of the asks
            tier = min(range(top), key=lambda t: ((self.tier_asks[t] + 1) / sizes[t], t))
            self.tier_asks[tier] += 1
            tiers.append(tier)
        self.asked += n
        return tiers

    def _conditioned(self, tiers: Sequence[int]) -> AbstractContextManager[None]:
        if not self.front_active:
            return nullcontext()
        return self.controller.conditioned(tiers, self.tier_sets)

    # -- ask -----------------------------------------------------------------------------
    @torch.no_grad()
    def ask(self, n: int) -> list[Architecture]:
        if not self.front_active:
            local = self._local_edits(self._local_slots(n), self._parents(self.local_parents),
                                      self.controller.feasible)
            return (self._ask(n - len(local)) if n > len(local) else []) + local
        slots = self._open_tiers(self._tier_schedule(n))
        is_local = self._schedule_local(n)
        picked: list[Architecture | None] = [None] * n
        for tier in sorted(set(slots)):  # one draw per tier, each conditioned and masked
            where = [i for i, t in enumerate(slots) if t == tier]
            local_at = [i for i in where if is_local[i]]
            with self._conditioned([tier]):
                edits = self._local_edits(len(local_at), self._parents(self.tier_parents.get(tier, [])),
                                          self.tier_sets[tier])
                for i, edit in zip(local_at, edits, strict=False):
                    picked[i] = edit  # not learned from: no tier_of
                where = [i for i in where if picked[i] is None]
                for i, arch in zip(where, self._ask(len(where)) if where else [], strict=True):
                    picked[i] = arch
                    self.tier_of[arch.key] = tier
        return [a for a in picked if a is not None]

    def _open_tiers(self, scheduled: list[int]) -> list[int]:
        """Each ask's tier, or the next dearer one once every architecture of it has been
        asked (avoid_seen): a small cheap tier is soon exhausted, and its asks would repeat.
        The tiers are nested, so an ask of one tier uses up one of every dearer tier too."""
        cfg: ReinforceConfig = self.config
        top = len(self.tier_sets) - 1
        if not cfg.avoid_seen:
            return scheduled
        left = [self._unseen_in(t, len(scheduled)) for t in range(top)] + [math.inf]
        tiers = []
        for tier in scheduled:
            while left[tier] <= 0:
                tier += 1
            for t in range(tier, top + 1):
                left[t] -= 1
            tiers.append(tier)
        return tiers

    def _unseen_in(self, tier: int, n: int) -> float:
        """How many of the tier's architectures are still unseen (inf: more than ``n``)."""
        feasible = self.tier_sets[tier]
        rows = self._rows_of(self.space.num_tokens)
        if len(feasible) > len(rows) + n:  # the cheap test first: counting is linear in the seen
            return math.inf
        return len(feasible) - sum(self.space.from_tokens(r.tolist()) in feasible for r in rows.rows)

    def _ask(self, n: int) -> list[Architecture]:
        cfg: ReinforceConfig = self.config
        if cfg.avoid_seen:
            # the rows of the depth asked (the current space's): one index per depth
            drawn = draw_unseen(self.controller, self._rows_of(self.space.num_tokens), n,
                                self.generator, sampler=self.sampler)
            tokens = torch.tensor([row for row, _ in drawn], dtype=torch.long).reshape(n, -1)
            logps = [lp for _, lp in drawn]
        else:
            out = self.controller.sample(n, self.generator)
            tokens, logps = out.tokens, out.log_prob.tolist()
        picked = self.controller.decode(tokens)
        for arch, row, lp in zip(picked, tokens.tolist(), logps, strict=True):
            self.sampled_logp[arch.key] = lp
            if cfg.avoid_seen:
                self.seen[arch.key] = row  # in flight counts as seen (draw_unseen indexed it)
        return picked

    def _local_slots(self, n: int) -> int:
        """How many of the next ``n`` asks are local (see ``local_share``); advances the count."""
        flags = _spread(self.local_share, self.proposed, n)
        if self.local_share > 0:
            self.proposed += n
        return sum(flags)

    def _schedule_local(self, n: int) -> list[bool]:
        """Which of a front search's next ``n`` asks are local (``front_local_share``)."""
        flags = _spread(self.front_local_share, self.front_proposed, n)
        if self.front_local_share > 0:
            self.front_proposed += n
        return flags

    def _parents(self, elites: list[tuple[float, list[int]]]) -> list[list[int]]:
        """The rows of ``elites`` at the depth asked, best first."""
        return [row for _, row in elites if len(row) == self.space.num_tokens]

    def _local_edits(self, k: int, parents: list[list[int]],
                     feasible: FeasiblePrefixes | None) -> list[Architecture]:
        """Up to ``k`` unseen one-token edits of ``parents`` (best first, the depth asked)
        inside ``feasible`` (see ``local_share`` and ``local_edit``)."""
        cfg: ReinforceConfig = self.config
        length = self.space.num_tokens
        if k == 0 or not parents:
            return []
        draws: list[list[int] | None] = [None] * (LOCAL_DRAWS * k)
        if cfg.local_edit == "policy":
            tokens, _ = policy_draws(self.controller, LOCAL_DRAWS * k, self.generator,
                                     SAMPLERS[self.sampler])
            draws = list(tokens.tolist())
        arities = self.space.token_arities()
        picked: list[Architecture] = []
        for parent in parents:
            for draw in draws:
                if len(picked) == k:
                    return picked
                edit = self._edit(parent, draw, arities)
                if edit is None:
                    continue
                child = list(parent)
                child[edit[0]] = edit[1]
                if child in self._rows_of(length):
                    continue  # seen (the same test as the key's below, without decoding the row)
                arch = self.space.from_tokens(child)
                if arch.key in self.seen or arch.key in self.local_keys or (
                        feasible is not None and arch not in feasible):
                    continue
                if cfg.avoid_seen:
                    self.seen[arch.key] = child  # in flight counts as seen
                    self._rows_of(length).add(child)
                self.local_keys.add(arch.key)
                picked.append(arch)
        return picked

    def _edit(self, parent: list[int], draw: list[int] | None, arities: list[int]
              ) -> tuple[int, int] | None:
        """(position, new token): the draw's token at a position where it differs from the
        parent, or without a draw (uniform edits) any other value at any position."""
        def pick(n: int) -> int:
            return int(torch.randint(n, (1,), generator=self.generator))

        if draw is None:
            j = pick(len(parent))
            if arities[j] < 2:
                return None
            token = pick(arities[j] - 1)
            return j, token + (token >= parent[j])  # skip the parent's own value
        differ = [j for j in range(len(parent)) if draw[j] != parent[j]]
        if not differ:
            return None
        j = differ[pick(len(differ))]
        return j, draw[j]

    def _rows_of(self, length: int) -> SeenIndex:
        if length not in self.seen_rows:
            self.seen_rows[length] = SeenIndex(length)
        return self.seen_rows[length]

    def _see(self, arch: Architecture) -> None:
        if arch.key not in self.seen:
            row = self.space.space_of(arch).to_tokens(arch)  # at the architecture's own depth
            self.seen[arch.key] = row
            self._rows_of(len(row)).add(row)

    @torch.no_grad()
    def sample(self, n: int, seed: int) -> list[Architecture]:
        """From the policy itself (constrained decoding included), never avoiding the seen:
        its own generator, ``seen`` and the PPO log-probabilities are left alone."""
        with self._conditioned([len(self.tier_sets) - 1]):  # the constraint's own tier
            out = self.controller.sample(n, torch.Generator().manual_seed(seed))
        return self.controller.decode(out.tokens)

    # -- tell ----------------------------------------------------------------------------
    def tell(self, observations: Sequence[Observation]) -> None:
        cfg: ReinforceConfig = self.config
        for obs in observations:
            self._see(obs.arch)
            if obs.reward is None or not math.isfinite(obs.reward) or not self._can_learn(obs.arch):
                self.sampled_logp.pop(obs.arch.key, None)
                self.tier_of.pop(obs.arch.key, None)
                continue  # failed: counted by the caller's budget, never learned from
            self._remember_elite(obs.arch, float(obs.reward))
            if self.local_share > 0:
                _push_elite(self.local_parents, float(obs.reward), self.seen[obs.arch.key],
                            LOCAL_PARENTS)
            if self.front_local_share > 0 and self.front_active:
                for tier, within in enumerate(self.tier_sets):
                    if obs.arch in within:
                        _push_elite(self.tier_parents.setdefault(tier, []), float(obs.reward),
                                    self.seen[obs.arch.key], LOCAL_PARENTS)
            if obs.arch.key in self.local_keys:
                self.local_keys.discard(obs.arch.key)
                continue  # not a sample of the policy: no policy gradient from it
            if cfg.return_mode == "reward_plus_next":
                # the held-back result gets its return now that its successor is known
                if self.pending is not None:
                    self.buffer.append((self.pending[0], self.pending[1] + float(obs.reward)))
                self.pending = (obs.arch, float(obs.reward))
            else:
                self.buffer.append((obs.arch, float(obs.reward)))
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
        _push_elite(self.elites, reward, row, cfg.elite_size)
        # a lower tier imitates the best architectures *within its limit*, whichever tier
        # asked them: the top tier's samples below a lower limit teach that tier too
        for tier, feasible in enumerate(self.tier_sets[:-1]):
            if arch in feasible:
                _push_elite(self.tier_elites.setdefault(tier, []), reward, row, cfg.elite_size)

    def _update(self, batch: list[tuple[Architecture, float]]) -> None:
        archs = [a for a, _ in batch]
        returns = torch.tensor([r for _, r in batch])
        # one depth or several; tell() has recorded each one's tokens (encoding them again
        # was a tenth of an update)
        rows = [self.seen.get(a.key) or self.space.space_of(a).to_tokens(a) for a in archs]
        # an architecture told without a tier (seeded, or asked before a resume) is
        # scored under the top tier, whose set holds every feasible one
        tiers = [self.tier_of.get(a.key, len(self.tier_sets) - 1) for a in archs]
        with self._conditioned(tiers):
            self._update_rows(archs, returns, rows, tiers)

    def _update_rows(self, archs: list[Architecture],
                     returns: torch.Tensor, rows: list[list[int]], tiers: list[int]) -> None:
        cfg: ReinforceConfig = self.config
        # PPO's denominator; plain REINFORCE (one epoch) needs no second scoring pass
        old_logp = self._old_logp(archs, rows) if cfg.update_epochs > 1 else None
        out, elite_ll = self._score_batch(rows)
        # fixed for all epochs
        advantage, b = self._advantages(returns, out.token_hidden, out.token_mask, tiers)
        loss_value, grad_norm, entropy = 0.0, 0.0, 0.0
        measured: dict[str, float] = {}
        for epoch in range(cfg.update_epochs):
            if epoch > 0:
                out, elite_ll = self._score_batch(rows)
            pg_loss = _pg_loss(out, advantage, old_logp, cfg.ppo_clip)
            if epoch == 0 and self.num_updates < self.measure_updates:
                measured = self._measure(out, advantage, returns)
            loss = pg_loss - cfg.entropy_weight * out.entropy.mean()
            if elite_ll is not None:
                loss = loss - self._elite_weight() * elite_ll
            if cfg.l2 > 0:
                loss = loss + cfg.l2 * sum((p**2).sum() for p in self.controller.parameters())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            grad_norm = self._clip_grads(cfg.grad_clip)
            self.optimizer.step()
            loss_value, entropy = loss.item(), out.entropy.mean().item()
        if self.critic is not None:
            self._fit_critic(out.token_hidden.detach(), returns, out.token_mask)

        mean_return = float(returns.mean())
        if self.shaping == "rank":
            self.rank_ref = (self.rank_ref + returns.tolist())[-cfg.rank_window :]
        elif cfg.baseline == "ema":
            d = cfg.baseline_decay
            # the first batch has no earlier EMA: start it at the batch's mean
            self.baseline = mean_return if self.baseline is None else (
                d * self.baseline + (1 - d) * mean_return)
            if self.front_active:
                self._update_tier_baselines(returns, tiers)
        self.num_updates += 1
        self._forget(archs)
        self._metrics = {
            "reward/mean": mean_return,
            "controller/entropy": entropy,
            "controller/baseline": b,
            "controller/loss": loss_value,
            "controller/grad_norm": grad_norm,
            "controller/advantage_var": _masked_var(advantage, out.token_mask),
            **measured,
        }

    def _clip_grads(self, max_norm: float | None) -> float:
        """The gradient's norm (a metric), clipped to ``max_norm`` if given: what
        clip_grad_norm_ does, without its scaling of every gradient by 1.0 when unclipped."""
        grads = [p.grad for p in self.controller.parameters() if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads)
        if max_norm is not None:
            torch.nn.utils.clip_grads_with_norm_(self.controller.parameters(), max_norm, norm)
        return float(norm)

    def _advantages(self, returns: torch.Tensor, hidden: torch.Tensor,
                    mask: torch.Tensor | None = None,
                    tiers: Sequence[int] = ()) -> tuple[torch.Tensor, float]:
        """Per-token advantages (m, T) -- the same value along a row unless the critic
        scores each prefix -- and the mean baseline used (a metric). ``mask``: which
        positions are a row's own when the batch mixes depths (the rest count nowhere).
        ``tiers``: each row's tier in a front search (each has its own EMA)."""
        cfg: ReinforceConfig = self.config
        m, num_tokens = hidden.shape[:2]
        if self.shaping == "rank":
            # the reward whose advantage is 0 (the reference's median) stands for b
            ref = self.rank_ref or returns.tolist()
            ranked = _rank_advantages(returns, self.rank_ref)
            return self._clipped(ranked[:, None].expand(m, num_tokens).clone(), mask), float(
                torch.tensor(ref).median())
        if cfg.baseline == "ema" and self.front_active:
            base = self._tier_base(returns, tiers)[:, None]
        elif cfg.baseline == "critic":
            assert self.critic is not None
            with torch.no_grad():
                base = self.value(hidden)  # (m, T): V(a_<t)
        elif cfg.baseline == "ema" and self.baseline is not None:
            base = torch.full((m, 1), self.baseline)
        elif m > 1 and (cfg.baseline == "leave_one_out" or (
                cfg.baseline == "ema" and cfg.first_batch == "leave_one_out")):
            # each architecture's b is the mean of the *other* rewards: not its own sample
            base = ((returns.sum() - returns) / (m - 1))[:, None]
        else:
            base = torch.zeros(m, 1)
        advantage = (returns[:, None] - base).expand(m, num_tokens).clone()
        return self._clipped(advantage, mask), float(
            _masked_mean(base.expand(m, num_tokens), mask)
            if mask is not None and base.shape[1] > 1 else base.mean())

    def _clipped(self, advantage: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """advantage_clip, then normalize_advantage, as configured."""
        cfg: ReinforceConfig = self.config
        if cfg.advantage_clip is not None:
            advantage = advantage.clamp(-cfg.advantage_clip, cfg.advantage_clip)
        if cfg.normalize_advantage:
            sq = float(_masked_mean(advantage**2, mask))
            self.adv_var = sq if self.adv_var is None else (
                cfg.baseline_decay * self.adv_var + (1 - cfg.baseline_decay) * sq)
            advantage = advantage / (math.sqrt(self.adv_var) + 1e-8)
        return advantage

    def _tier_base(self, returns: torch.Tensor, tiers: Sequence[int]) -> torch.Tensor:
        """Each row's b from its own tier: the tier's EMA, else (its first batch) the mean
        of the batch's other rows of that tier, else (alone) its own reward: no step."""
        base = returns.clone()
        for tier in set(tiers):
            idx = torch.tensor([i for i, t in enumerate(tiers) if t == tier])
            r = returns[idx]
            if tier in self.tier_baselines:
                base[idx] = self.tier_baselines[tier]
            elif len(idx) > 1:
                base[idx] = (r.sum() - r) / (len(idx) - 1)
        return base

    def _update_tier_baselines(self, returns: torch.Tensor, tiers: Sequence[int]) -> None:
        """Each tier's EMA moves by the mean of its own rows of the batch, and only then."""
        cfg: ReinforceConfig = self.config
        d = cfg.baseline_decay
        for tier in sorted(set(tiers)):
            mean = float(returns[[i for i, t in enumerate(tiers) if t == tier]].mean())
            old = self.tier_baselines.get(tier)
            self.tier_baselines[tier] = mean if old is None else d * old + (1 - d) * mean

    def value(self, hidden: torch.Tensor) -> torch.Tensor:
        """The critic's V(a_<t) (m, T) from the hidden states (m, T, H) before each token.
        Scaled by 1/sqrt(H) so |input|^2 <= 1 (LSTM and GRU states lie in [-1, 1]): the
        squared error's curvature is then at most 4 and plain descent at critic_learning_rate
        < 0.5 cannot diverge, however the policy's features drift."""
        assert self.critic is not None
        values: torch.Tensor = self.critic(hidden / math.sqrt(hidden.shape[-1]))
        return values.squeeze(-1)

    def _fit_critic(self, hidden: torch.Tensor, returns: torch.Tensor,
                    mask: torch.Tensor | None = None) -> None:
        """One gradient step on the squared error of V(a_<t) against R at every position
        (every position of a row's own depth)."""
        assert self.critic is not None and self.critic_optimizer is not None
        loss = _masked_mean((self.value(hidden) - returns[:, None]) ** 2, mask)
        self.critic_optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        self.critic_optimizer.step()

    def _measure(self, out: ControllerOutput, advantage: torch.Tensor,
                 returns: torch.Tensor) -> dict[str, float]:
        """The policy-gradient estimate g = (1/m) sum_k g_k, g_k = -sum_t A_kt grad log
        P(a_kt | a_k,<t): its squared norm, and the variance of the estimate, trace Var(g)
        ~= sum_k |g_k - mean g|^2 / (m (m - 1)), from per-architecture gradients. The same
        variance with A_kt = R_k (no baseline, no clipping or normalization) is computed on
        the same batch and policy, so their ratio is the baseline's reduction, paired."""
        params = [p for p in self.controller.parameters() if p.requires_grad]
        m, num_tokens = advantage.shape
        # Row k of the 2m weightings puts A_k (then R_k) on architecture k's tokens and 0
        # elsewhere: one vmapped backward pass (is_grads_batched) gives all 2m
        # per-architecture gradients, instead of 2m passes over the whole batch's graph.
        weights = torch.zeros(2, m, m, num_tokens)
        eye = torch.arange(m)
        weights[0, eye, eye] = -advantage.detach()
        weights[1, eye, eye] = -returns[:, None].expand(m, num_tokens)
        grads = torch.autograd.grad(out.token_log_prob, params,
                                    grad_outputs=weights.reshape(2 * m, m, num_tokens),
                                    retain_graph=True, is_grads_batched=True,
                                    allow_unused=True, materialize_grads=True)
        per_arch = torch.cat([g.reshape(2 * m, -1) for g in grads], 1).reshape(2, m, -1)
        with_b, without_b = per_arch
        return {
            "controller/pg_grad_sqnorm": float((with_b.mean(0) ** 2).sum()),
            "controller/pg_grad_var": _trace_var(with_b),
            "controller/pg_grad_var_no_baseline": _trace_var(without_b),
        }

    def _score_batch(self, rows: list[list[int]]) -> tuple[ControllerOutput, torch.Tensor | None]:
        """The batch's scores and the elites' mean log-likelihood (None without elites).
        Rows of one depth are scored in one pass with the elites: a pass costs about the
        same for one row as for six (the cells run once per anchor segment). A front
        search scores its elites apart, each under its own tier."""
        if self.front_active:
            has_elites = bool(self.elites or self.tier_elites)
            return (self.controller.score_rows(rows),
                    self._elite_log_likelihood() if has_elites else None)
        elite_rows = [row for _, row in self.elites]
        if not elite_rows:
            return self.controller.score_rows(rows), None
        if all(len(r) == len(rows[0]) for r in rows + elite_rows):
            both = self.controller.score_rows(rows + elite_rows)
            return both.head(len(rows)), both.log_prob[len(rows):].mean()
        return (self.controller.score_rows(rows),
                self.controller.score_rows(elite_rows).log_prob.mean())

    def _elite_weight(self) -> float:
        cfg: ReinforceConfig = self.config
        if self.elite_halflife is None:
            return cfg.elite_weight
        return cfg.elite_weight * math.pow(0.5, self.num_updates / self.elite_halflife)

    def _elite_log_likelihood(self) -> torch.Tensor:
        """The elites' mean log-likelihood; in a front search each tier's elites under
        that tier, summed over the tiers (each tier imitates its own best as a plain
        search imitates its best)."""
        if not self.front_active:
            return self.controller.score_rows([row for _, row in self.elites]).log_prob.mean()
        cfg: ReinforceConfig = self.config
        top = len(self.tier_sets) - 1
        groups = {**self.tier_elites, top: self.elites}
        keys = [t for t, elites in groups.items() for _ in elites]
        rows = [row for t in groups for _, row in groups[t]]
        if cfg.front_projection > 0:
            for t in range(top):  # group -1 - t: tier t's projections
                projected = self._projections(t)
                keys += [-1 - t] * len(projected)
                rows += projected
        tiers = [k if k >= 0 else -1 - k for k in keys]
        with self._conditioned(tiers):
            logp = self.controller.score_rows(rows).log_prob
        index = torch.tensor(keys)
        return sum(((1.0 if k >= 0 else cfg.front_projection) * logp[index == k].mean()
                    for k in set(keys)), torch.zeros(()))

    def _projections(self, tier: int) -> list[list[int]]:
        """The rows of ``tier`` nearest (Hamming) to the next dearer tier's best, none when
        that best is in the tier already; sorted, at most 8, cached per best."""
        top = len(self.tier_sets) - 1
        above = self.elites if tier + 1 == top else self.tier_elites.get(tier + 1, [])
        if not above:
            return []
        best = tuple(above[0][1])
        key = (tier, best)
        if key not in self._projection_cache:
            rows = torch.tensor(self.tier_sets[tier].rows())
            dist = (rows != torch.tensor(best)).sum(1)
            near = rows[dist == dist.min()] if int(dist.min()) > 0 else rows[:0]
            self._projection_cache[key] = near[:8].tolist()
        return self._projection_cache[key]

    def _old_logp(self, archs: list[Architecture], rows: list[list[int]]) -> torch.Tensor:
        """log P under the policy that sampled each architecture (PPO's denominator)."""
        with torch.no_grad():
            current = self.controller.score_rows(rows).log_prob
        values = [self.sampled_logp.get(a.key, float(c)) for a, c in zip(archs, current,
                                                                            strict=True)]
        return torch.tensor(values)

    def _forget(self, archs: list[Architecture]) -> None:
        for a in archs:
            self.sampled_logp.pop(a.key, None)
            self.tier_of.pop(a.key, None)

    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)

    # -- state ---------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        cfg: ReinforceConfig = self.config
        return {
            "controller": self.controller.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "generator": self.generator.get_state(),
            "baseline": self.baseline,
            "adv_var": self.adv_var,
            "pending": None if self.pending is None else (self.pending[0].to_json(), self.pending[1]),
            **({} if self.critic is None or self.critic_optimizer is None else {
                "critic": self.critic.state_dict(),
                "critic_optimizer": self.critic_optimizer.state_dict()}),
            "num_updates": self.num_updates,
            "buffer": [(a.to_json(), r) for a, r in self.buffer],
            # compact arrays, not lists of ints: this state is saved after every round
            "seen_rows": {n: torch.from_numpy(index.rows.copy()) for n, index in self.seen_rows.items()},
            "sampler": self.sampler,
            "seen_hot": {n: torch.tensor(list(index.hot), dtype=torch.long)
                         for n, index in self.seen_rows.items() if index.hot},
            "advantage_shaping": self.shaping,
            "rank_ref": list(self.rank_ref),
            "elite_halflife": self.elite_halflife,
            "elites": [(r, list(row)) for r, row in self.elites],
            "sampled_logp": dict(self.sampled_logp),
            # only with local asks: a state without them stays as it was
            **({} if self.local_share <= 0 else {"local": {
                "share": self.local_share, "proposed": self.proposed,
                "parents": [(r, list(row)) for r, row in self.local_parents],
                "keys": sorted(self.local_keys)}}),
            # only with front_tiers: a state without the front search stays as it was
            **({} if cfg.front_tiers == 0 else {"front": {
                "asked": self.asked, "tier_asks": list(self.tier_asks), "tier_of": dict(self.tier_of),
                # only with front local asks, likewise
                **({} if self.front_local_share <= 0 else {
                    "local_share": self.front_local_share, "proposed": self.front_proposed,
                    "local_keys": sorted(self.local_keys),
                    "parents": {str(t): [(r, list(row)) for r, row in e]
                                for t, e in self.tier_parents.items()}}),
                "tier_baselines": {str(t): b for t, b in self.tier_baselines.items()},
                "tier_limits": list(self.tier_limits),
                "tier_elites": {str(t): [(r, list(row)) for r, row in e]
                                for t, e in self.tier_elites.items()}}}),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])
        self.baseline = state["baseline"]
        self.adv_var = state["adv_var"]
        self.num_updates = int(state["num_updates"])
        self.buffer = [(self._validated(a), float(r)) for a, r in state["buffer"]]
        # "seen" (lists, sorted by key): a state saved before the compact arrays. Rows of
        # every depth asked so far: the row's length names its depth
        rows = state["seen"] if "seen" in state else [
            row for t in state["seen_rows"].values() for row in t.tolist()]
        self.seen, self.seen_rows = {}, {}
        for row in rows:
            self.seen[self.space.space_of_tokens(len(row)).from_tokens(row).key] = list(row)
            self._rows_of(len(row)).add(row)
        for n, positions in state.get("seen_hot", {}).items():  # absent: saved before hot sets
            index = self._rows_of(int(n))
            hot = [int(p) for p in positions.tolist()]
            if any(not 0 <= p < len(index) for p in hot):
                raise ValueError(f"hot seen rows of depth {n} point past its {len(index)} rows")
            index.hot = dict.fromkeys(hot)
        # absent: saved before the batched draws existed, when every draw took the trie
        self.sampler = str(state.get("sampler", "trie"))
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r} (a newer nasrl's state?)")
        # a state saved before advantage_shaping existed learned from R - b
        self.shaping = state.get("advantage_shaping", "none")
        self.rank_ref = [float(r) for r in state.get("rank_ref", [])]
        halflife = state.get("elite_halflife")
        self.elite_halflife = None if halflife is None else float(halflife)
        self.sampled_logp = {str(k): float(v) for k, v in state["sampled_logp"].items()}
        pending = state.get("pending")  # .get: states from before return_mode have none
        self.pending = None if pending is None else (
            self._validated(pending[0]), float(pending[1]))
        if self.critic is not None and self.critic_optimizer is not None and "critic" in state:
            self.critic.load_state_dict(state["critic"])
            self.critic_optimizer.load_state_dict(state["critic_optimizer"])
        # .get: states saved before elites existed resume with an empty queue
        self.elites = [(float(r), [int(t) for t in row]) for r, row in state.get("elites", [])]
        # absent: saved without local asks (or before they existed), and resumed without
        local = state.get("local", {})
        self.local_share = float(local.get("share", 0.0))
        self.proposed = int(local.get("proposed", 0))
        self.local_parents = [(float(r), [int(t) for t in row]) for r, row in local.get("parents", [])]
        self.local_keys = {str(k) for k in local.get("keys", [])}
        front = state.get("front", {})
        self.asked = int(front.get("asked", 0))
        self.tier_asks = [int(c) for c in front.get("tier_asks", [])]
        self.tier_of = {str(k): int(v) for k, v in front.get("tier_of", {}).items()}
        self.tier_baselines = {int(t): float(b) for t, b in front.get("tier_baselines", {}).items()}
        self.tier_elites = {int(t): [(float(r), [int(x) for x in row]) for r, row in e]
                            for t, e in front.get("tier_elites", {}).items()}
        # absent: saved without front local asks (or before they existed), resumed without
        self.front_local_share = float(front.get("local_share", 0.0))
        self.front_proposed = int(front.get("proposed", 0))
        self.local_keys |= {str(k) for k in front.get("local_keys", [])}
        self.tier_parents = {int(t): [(float(r), [int(x) for x in row]) for r, row in e]
                             for t, e in front.get("parents", {}).items()}

    def _validated(self, text: str) -> Architecture:
        arch = Architecture.from_json(text)
        return self.space.space_of(arch).validate(arch)


def _every(share: float, k: int) -> bool:
    """Whether ask ``k`` is one of the ``share`` of asks spread evenly over the count."""
    return math.floor((k + 1) * share) > math.floor(k * share)


def _spread(share: float, first: int, n: int) -> list[bool]:
    """Which of asks ``first .. first + n - 1`` are in a ``share`` spread evenly (none at 0)."""
    return [share > 0 and _every(share, k) for k in range(first, first + n)]


def _push_elite(elites: list[tuple[float, list[int]]], reward: float, row: list[int],
                size: int) -> None:
    if any(r == row for _, r in elites):
        return
    elites.append((reward, row))
    elites.sort(key=lambda e: -e[0])  # stable: on ties the earlier one stays
    del elites[size:]


def front_tiers(feasible: FeasiblePrefixes, count: int, metric: str | None = None
                ) -> tuple[list[float], list[FeasiblePrefixes]]:
    """The tier limits and sets of a front search (see ``ReinforceConfig.front_tiers``),
    cheapest first; the last is ``feasible`` itself."""
    if metric is None:
        if not feasible.limits:
            raise ConfigError("reinforce.front_tiers: the feasible set names no limited cost")
        metric = next(iter(feasible.limits))
    elif metric not in feasible.limits:
        known = ", ".join(feasible.limits) or "none"
        raise ConfigError(f"reinforce.front_metric {metric!r} is not a hard static limit "
                          f"(limited: {known})")
    costs = sorted(set(feasible.cost_values(metric)))
    low, high = costs[0], costs[-1]
    limits: list[float] = []
    for k in range(count):
        point = (low * (high / low) ** (k / (count - 1)) if low > 0
                 else low + (high - low) * k / (count - 1))  # a zero cost: linear
        achieved = max(c for c in costs if c <= point * (1 + 1e-9))  # a cost some cell has
        if achieved not in limits:
            limits.append(achieved)
    sets = [feasible.within(metric, limit) for limit in limits[:-1]] + [feasible]
    return limits, sets


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over a row's own positions (all of them without a mask)."""
    if mask is None:
        return values.mean()
    return values[mask].mean()


def _masked_var(values: torch.Tensor, mask: torch.Tensor | None) -> float:
    return float(values.var(unbiased=False) if mask is None else values[mask].var(unbiased=False))


def _pg_loss(out: ControllerOutput, advantage: torch.Tensor, old_logp: torch.Tensor | None,
             ppo_clip: float) -> torch.Tensor:
    """-(1/m) sum_k sum_t A_kt log P(a_kt | a_k,<t), or PPO's clipped surrogate, whose
    ratio is per architecture and so takes the advantage of the first decision."""
    if old_logp is None:
        return -(advantage * out.token_log_prob).sum(1).mean()
    seq_advantage = advantage[:, 0]
    ratio = torch.exp(out.log_prob - old_logp)
    clipped = ratio.clamp(1 - ppo_clip, 1 + ppo_clip)
    return -torch.min(ratio * seq_advantage, clipped * seq_advantage).mean()


def _rank_advantages(returns: torch.Tensor, reference: Sequence[float]) -> torch.Tensor:
    """2 q - 1 per return, q = the share of the reference below it, ties counting half;
    without a reference (the first batch) each return is ranked among the batch's others."""
    m = len(returns)
    if reference:
        ref = torch.tensor(list(reference), dtype=returns.dtype)
        below = (ref[None, :] < returns[:, None]).sum(1).to(returns.dtype)
        ties = (ref[None, :] == returns[:, None]).sum(1).to(returns.dtype)
        return 2 * (below + 0.5 * ties) / len(ref) - 1
    if m < 2:
        return torch.zeros(m, dtype=returns.dtype)
    below = (returns[None, :] < returns[:, None]).sum(1).to(returns.dtype)
    ties = (returns[None, :] == returns[:, None]).sum(1).to(returns.dtype) - 1  # not itself
    return 2 * (below + 0.5 * ties) / (m - 1) - 1


def _trace_var(rows: torch.Tensor) -> float:
    """trace of the covariance of the mean of m i.i.d. gradient rows (m, P)."""
    m = rows.shape[0]
    if m < 2:
        return math.nan
    return float(((rows - rows.mean(0)) ** 2).sum() / (m * (m - 1)))


def _check_config(cfg: ReinforceConfig) -> None:
    if cfg.batch_size < 1:
        raise ConfigError("reinforce.batch_size must be >= 1")
    if cfg.learning_rate <= 0:
        raise ConfigError("reinforce.learning_rate must be > 0")
    if not 0 <= cfg.baseline_decay < 1:
        raise ConfigError("reinforce.baseline_decay must be in [0, 1)")
    if cfg.update_epochs < 1:
        raise ConfigError("reinforce.update_epochs must be >= 1")
    if not 0 <= cfg.local_share < 1:
        raise ConfigError("reinforce.local_share must be in [0, 1)")
    if not 0 <= cfg.front_local_share < 1:
        raise ConfigError("reinforce.front_local_share must be in [0, 1)")
    if cfg.elite_size < 0:
        raise ConfigError("reinforce.elite_size must be >= 0")
    if cfg.elite_weight < 0:
        raise ConfigError("reinforce.elite_weight must be >= 0")
    if cfg.elite_halflife is not None and not cfg.elite_halflife > 0:
        raise ConfigError("reinforce.elite_halflife must be > 0")
    if cfg.advantage_clip is not None and cfg.advantage_clip <= 0:
        raise ConfigError("reinforce.advantage_clip must be > 0")
    if not 0 < cfg.critic_learning_rate < 0.5:
        raise ConfigError("reinforce.critic_learning_rate must be in (0, 0.5)")
    if cfg.advantage_shaping == "rank" and cfg.baseline in ("critic", "none"):
        raise ConfigError("reinforce.advantage_shaping rank replaces the baseline: "
                          "leave reinforce.baseline at ema or leave_one_out")
    if cfg.rank_window < 1:
        raise ConfigError("reinforce.rank_window must be >= 1")
    if cfg.l2 < 0:
        raise ConfigError("reinforce.l2 must be >= 0")
    if cfg.front_tiers < 0 or cfg.front_tiers == 1:
        raise ConfigError(f"reinforce.front_tiers must be 0 (off) or at least 2, got {cfg.front_tiers}")
    if cfg.front_tiers and not cfg.constrained_decoding:
        raise ConfigError("reinforce.front_tiers needs constrained_decoding (each tier's limit is a mask)")
    if cfg.front_tiers and (cfg.baseline != "ema" or cfg.advantage_shaping != "none"):
        raise ConfigError("reinforce.front_tiers keeps one EMA baseline per tier: set "
                          "reinforce.baseline = 'ema' and reinforce.advantage_shaping = 'none'")
    if not cfg.front_projection >= 0:
        raise ConfigError(f"reinforce.front_projection must be >= 0, got {cfg.front_projection}")
    if not 0 < cfg.front_top_share <= 1:
        raise ConfigError(f"reinforce.front_top_share must be in (0, 1], got {cfg.front_top_share}")
    if cfg.controller.temperature <= 0:
        raise ConfigError("reinforce.controller.temperature must be > 0")
