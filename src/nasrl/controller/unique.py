"""Sampling without replacement from the controller, in time and memory linear in the
architectures seen.

Rejection sampling ("draw, throw away what was seen, draw again") fails exactly when it
matters: once the policy concentrates, nearly every draw is a repeat, and the unseen
neighbours of the mode have probabilities too small to ever be hit. So when a few batched
draws do not give enough unseen sequences, we sample from the policy *conditioned on not
being seen*, exactly, token by token: the seen sequences form a trie, and at each step a
token's probability is multiplied by the share of its subtree that is still unseen,

    P'(t | prefix) ~ P(t | prefix) * (1 - M(prefix + t)),

where M(node) is the probability, under the current policy, of completing ``node`` into
a seen sequence (Shi et al. 2020, "Incremental sampling without replacement for sequence
models"). Fully explored subtrees are also tracked by count, so float rounding can never
send the sampler into one.

Both stages draw from the same distribution: the first unseen sequence among independent
draws from P is distributed as P conditioned on unseen, and so is each next one given the
ones accepted before it. The batched draws are the cheap path (one controller pass,
independent of how much was seen); the trie is the exact fallback once the policy has
concentrated. Between them, a trie over only the *hot* seen sequences -- those that
carried the policy's seen mass at the last full trie, or were drawn again since -- with the
rare draw that lands on another seen one rejected, draws from the same distribution at a
cost independent of how much was seen (:func:`_draw_from_hot`).
The trie is not kept as tuple prefixes (memory quadratic in the sequence
length: 1.6 GB at 6,000 twenty-layer architectures) but implied by the seen sequences
sorted lexicographically; M is one batched scoring pass of the seen sequences, recomputed
only when the fallback runs, because the policy changes between asks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from nasrl.controller.compiled import sample_by_uniforms
from nasrl.controller.lstm import Controller, ControllerOutput


class Sampler(NamedTuple):
    rounds: tuple[int, ...]
    """Batched draws per sequence still wanted, round by round, before any trie."""
    hot: bool = False
    """Before the trie over every seen sequence, a trie over the hot ones only, with
    rejection (:func:`_draw_from_hot`)."""
    adaptive: bool = False
    """Keep the hot set the most probable seen sequences: evict the least probable under
    the policy of the latest hot trie (not the least recently marked), and mark hot the
    sequences the tries draw (see :data:`DEFAULT_SAMPLER`)."""
    flags_at_once: bool = False
    """The tries' walks draw each anchor's skip flags in one call (:meth:`_Trie.draw`)."""
    compiled: bool = False
    """The batched rounds draw by inverse CDF from one uniform per token, in the compiled
    walk (:mod:`nasrl.controller.compiled`; the PyTorch walk draws the same rows where
    Numba is missing, or under a feasible set or tiers)."""


SAMPLERS: dict[str, Sampler] = {
    "trie": Sampler(()),
    "batched-then-trie": Sampler((2,)),
    "batched-rounds-then-trie": Sampler((2, 16, 128)),
    "batched-rounds-then-hot": Sampler((2, 16), hot=True),
    "batched-rounds-then-adaptive-hot": Sampler((2, 16), hot=True, adaptive=True),
    "batched-rounds-then-adaptive-hot-anchorwise": Sampler((2, 16), hot=True, adaptive=True,
                                                           flags_at_once=True),
    "compiled-rounds-then-adaptive-hot": Sampler((2, 16), hot=True, adaptive=True,
                                                 flags_at_once=True, compiled=True),
}
"""How an ask draws; the names are what a strategy state records, so a saved run resumes
with the sampler it used (each consumes the generator differently). Each batched round is
one controller pass, which costs about as much for 128 sequences as for 16 (the per-step
overhead dominates at these sizes). The exact trie scores every seen sequence of the
depth: ~110 ms at 1,600 six-layer sequences, ~1 s at 12,800 or at 4,000 twenty-layer
ones, and once a policy has collapsed nearly every ask needs it. The hot trie scores at
most :data:`HOT_MAX` sequences -- those that carried the policy's seen mass at the last
full trie, or were drawn again since -- and rejects the draws that land on another seen
sequence: the same distribution, at a cost bounded by the hot set's size (paired on the
states of a paper-scale run with the default step, 8-20 layers: 1.4-2.7x less CPU per
architecture than "batched-rounds-then-trie" once the policy has collapsed, the same
before). Rounds of 128 cost more than a hot trie and are left out.
"batched-rounds-then-adaptive-hot" (the default since) keeps the hot set the most probable
seen sequences and sizes its walks by the acceptance met: with the fixed three walks of 4
rows per sequence wanted, a policy whose seen mass outgrew the hot set gave 10-20% of its
asks to the full trie, whose scoring of all seen sequences was most of the driver's time
at 512 simulated workers (10.9 ms per trial; 7.7 ms adaptive, no full trie in 12,800).
"compiled-rounds-then-adaptive-hot" (the default since) draws its batched rounds in one
compiled loop (:mod:`nasrl.controller.compiled`): the same rows for the tries after them,
a fraction of the time for the rounds themselves at 12-20 layers."""
DEFAULT_SAMPLER = "compiled-rounds-then-adaptive-hot"
HOT_WALKS = 3
"""Walks the hot trie may take per ask before the trie over every seen sequence takes over
(and marks the hot set again): bounds an ask's cost at that of the exact trie plus a few
walks."""
WALK_ROWS = 4
"""Rows drawn per walk for each sequence still wanted: a walk costs per step, hardly per
row, so drawing spares makes a rejected row or a repeat within the walk nearly free."""
HOT_MAX = 128
"""At most this many hot sequences: the hot trie scores them all on every ask it serves
(~30 ms at 20 layers per 100). A collapsed 16-20 layer policy spreads its seen mass over a
few hundred, so the full trie still serves 25-65% of the asks there; 512 made those asks
3x cheaper instead of 2x, but asynchronous asks of 1-5 architectures paid the larger
scoring each time (simulation, 512 workers: 26.5 ms per trial against 12.1)."""
WALK_COST_ROWS = 400
"""A walk costs about as much as scoring this many seen sequences (conv, 6 layers: ~20 ms
a walk of 20 rows, ~40 us a scored sequence); the adaptive sampler's walk budget."""
WALK_MAX_ROWS = 256
"""At most this many rows per adaptive walk (~2x a 20-row walk's time at 6 layers)."""
HOT_TAIL = 0.05
"""The full trie marks hot the most probable seen sequences, as many as leave out at most
this share of the unseen mass: right after, under 5% of the hot trie's draws are rejected."""
SCORE_CHUNK = 1024
"""Seen sequences scored per controller pass when the fallback recomputes M: bounds the
memory of a pass (hidden states per token) whatever the number seen."""


class SeenIndex:
    """The token sequences (all of one length) seen so far, in one growable int16 array,
    with a set of their bytes for membership: memory linear in the sequences."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._members: dict[bytes, int] = {}  # row bytes -> position
        self._rows = np.zeros((64, self.length), dtype=np.int16)
        self.n = 0
        self.hot: dict[int, None] = {}
        """Positions of the seen sequences that carried the policy's seen mass lately, least
        recently marked first (:func:`_draw_from_hot` scores only these); part of a
        strategy's state, since which they are changes what an ask draws."""

    def position(self, row: Sequence[int]) -> int | None:
        return self._members.get(np.asarray(row, dtype=np.int16).tobytes())

    def mark_hot(self, positions: Iterable[int]) -> None:
        for p in positions:
            self.hot.pop(p, None)
            self.hot[p] = None
        while len(self.hot) > HOT_MAX:
            del self.hot[next(iter(self.hot))]

    def __len__(self) -> int:
        return self.n

    def __contains__(self, row: Sequence[int]) -> bool:
        return np.asarray(row, dtype=np.int16).tobytes() in self._members

    @property
    def rows(self) -> np.ndarray:
        """(n, length) the sequences, in the order they were added (a view)."""
        return self._rows[: self.n]

    def add(self, row: Sequence[int]) -> bool:
        """Add one sequence; False (and nothing changes) if it was already there."""
        arr = np.asarray(row, dtype=np.int16)
        if arr.shape != (self.length,):
            raise ValueError(f"seen index: a row of {len(row)} tokens in an index of {self.length}")
        key = arr.tobytes()
        if key in self._members:
            return False
        self._members[key] = self.n
        if self.n == len(self._rows):  # grow by doubling: amortized constant per row
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
        self._rows[self.n] = arr
        self.n += 1
        return True


class _Trie:
    """Seen sequences as a trie for one ask: sorted lexicographically, the sequences below
    any prefix are one contiguous block, found by binary search column by column; M of a
    block is a difference of column-wise cumulative sums of the suffix probabilities.
    Sequences added during the ask (drawn, or rejected by the hot trie) are kept aside."""

    def __init__(self, rows: np.ndarray, controller: Controller) -> None:
        arities = controller.space.token_arities()
        if rows.shape[1] != len(arities):
            raise ValueError(f"seen rows of {rows.shape[1]} tokens for a space of {len(arities)}")
        length = len(arities)
        # sizes[d] = number of distinct completions of a prefix of length d
        self.sizes = [math.prod(arities[d:]) for d in range(length + 1)]
        order = np.lexsort(rows.T[::-1]) if len(rows) else np.arange(0)  # first column primary
        self.rows = rows[order]
        suffix = np.zeros((len(self.rows), length + 1))
        for start in range(0, len(self.rows), SCORE_CHUNK):
            chunk = torch.from_numpy(self.rows[start : start + SCORE_CHUNK].astype(np.int64))
            suffix[start : start + len(chunk)] = _suffix_probs(controller.token_log_probs(chunk))
        self.cum = np.concatenate([np.zeros((1, length + 1)), suffix.cumsum(0)])
        self.probs = np.empty(len(rows))  # P of each given row, in the order given
        self.probs[order] = suffix[:, 0]
        self.extra: list[tuple[list[int], list[float]]] = []  # (row, suffix probs) added now
        self._below: dict[int, np.ndarray] = {}
        tiers = controller._tiers
        self.feasible = (controller.feasible if tiers is None
                         else controller._tier_sets[tiers[0]] if len(set(tiers)) == 1 else None)
        """The set every draw of this ask keeps to (None: the whole space): a prefix closes
        once as many of its feasible completions are seen as it has."""
        self.feasible_cum = np.zeros(1, np.int64)  # [j] = feasible rows among the first j
        if self.feasible is not None:  # seen rows outside the set (another tier's) count not
            inside = [self.feasible.contains_row(r) for r in self.rows.tolist()]
            self.feasible_cum = np.concatenate([[0], np.cumsum(inside, dtype=np.int64)])
        self.extra_feasible: list[bool] = []

    def _close_exhausted(self, open_: np.ndarray, left: np.ndarray, right: np.ndarray,
                         extra: list[int], prefix: list[int] | None, d: int) -> None:
        """Under a feasible set, close the next tokens (k,) below ``prefix`` (None: no seen
        row shares it; the next tokens' blocks rows[left:right]) whose feasible completions
        are all seen."""
        if self.feasible is None or prefix is None:
            return
        seen = self.feasible_cum[right] - self.feasible_cum[left]
        for e in extra:
            if self.extra_feasible[e]:
                seen[self.extra[e][0][d]] += 1
        capacity = [self.feasible.completions([*prefix, t]) for t in range(len(open_))]
        open_ &= seen < np.asarray(capacity)

    def _prefix(self, lo: int, hi: int, extra: list[int], d: int) -> list[int] | None:
        """The first ``d`` tokens the rows[lo:hi] and ``extra`` rows share (None if none)."""
        if hi > lo:
            return [int(t) for t in self.rows[lo, :d]]
        return self.extra[extra[0]][0][:d] if extra else None

    def _less(self, d: int, k: int) -> np.ndarray:
        """(k + 1, N + 1): [t, j] = how many of the first j rows have a token < t at ``d``
        (computed once per column): within a block, where token t's sub-block starts."""
        if d not in self._below:
            less = self.rows[:, d][None, :] < np.arange(k + 1)[:, None]
            self._below[d] = np.concatenate([np.zeros((k + 1, 1), np.int64), less.cumsum(1)], 1)
        return self._below[d]

    def pick_many(self, probs: np.ndarray, lo: np.ndarray, hi: np.ndarray, extra: list[list[int]],
                  d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`children` and :func:`_weights` for m rows at once (a walk of many rows
        spends its time here otherwise): probs (m, k), each row's block rows[lo:hi] ->
        the weights (m, k) and the sub-blocks' bounds (m, k) of each next token."""
        k = probs.shape[1]
        less = self._less(d, k)
        edges = lo[:, None] + less[:, hi].T - less[:, lo].T  # (m, k + 1)
        left, right = edges[:, :k], edges[:, 1:]
        mass = self.cum[right, d + 1] - self.cum[left, d + 1]
        count = right - left
        for i, rows in enumerate(extra if self.extra else ()):
            for e in rows:
                row, suffix = self.extra[e]
                mass[i, row[d]] += suffix[d + 1]
                count[i, row[d]] += 1
        open_ = count < self.sizes[d + 1]
        if self.feasible is not None:
            for i in range(len(probs)):
                self._close_exhausted(open_[i], left[i], right[i], extra[i],
                                      self._prefix(lo[i], hi[i], extra[i], d), d)
        weights = np.where(open_, probs * np.maximum(0.0, 1.0 - mass), 0.0)
        for j in np.flatnonzero(weights.sum(1) <= 0):  # as _weights falls back
            policy = np.where(open_[j], probs[j], 0.0)
            weights[j] = policy if policy.sum() > 0 else probs[j]
        return weights, left, right

    def children(self, block: tuple[int, int], extra: list[int], d: int, k: int
                 ) -> tuple[list[tuple[int, int]], list[float], list[int]]:
        """For each next token t of a prefix of length ``d`` (whose sequences are
        rows[block] and the ``extra`` rows listed): the block of prefix + t, its mass M and
        its count of seen sequences."""
        lo, hi = block
        column = self.rows[lo:hi, d]
        left = lo + np.searchsorted(column, np.arange(k), side="left")
        right = lo + np.searchsorted(column, np.arange(k), side="right")
        blocks = list(zip(left.tolist(), right.tolist(), strict=True))
        mass = (self.cum[right, d + 1] - self.cum[left, d + 1]).tolist()
        count = (right - left).tolist()
        for e in extra:
            row, probs = self.extra[e]
            mass[row[d]] += probs[d + 1]
            count[row[d]] += 1
        if self.feasible is not None:  # an exhausted feasible subtree counts as full
            full = np.ones(k, bool)
            self._close_exhausted(full, left, right, extra, self._prefix(lo, hi, extra, d), d)
            count = [c if o else self.sizes[d + 1] for c, o in zip(count, full.tolist(), strict=True)]
        return blocks, mass, count

    def draw(self, controller: Controller, generator: torch.Generator, m: int = 1,
             flags_at_once: bool = False) -> ControllerOutput:
        """``m`` sequences, each from the policy conditioned on not being one of this
        trie's (independently: they may repeat each other). ``flags_at_once``: each
        anchor's skip flags are drawn in one call, from one uniform per flag, instead of
        one ``multinomial`` per flag (the same distribution, another use of the generator:
        at 16-20 layers, 120-190 of a walk's 168-250 tokens are flags, and the per-flag
        calls were most of a walk's time)."""
        if m == 1:
            return self._draw_one(controller, generator)
        lo, hi = np.zeros(m, np.int64), np.full(m, len(self.rows), np.int64)
        extra = [list(range(len(self.extra))) for _ in range(m)]  # the extra rows sharing the prefix
        rows_m = np.arange(m)

        def advance(pos: int, t: np.ndarray, left: np.ndarray, right: np.ndarray) -> None:
            lo[:], hi[:] = left[rows_m, t], right[rows_m, t]
            for i, rows in enumerate(extra if self.extra else ()):  # none: skip m empty lists
                if rows:
                    extra[i] = [e for e in rows if self.extra[e][0][pos] == t[i]]

        def outside() -> bool:
            # every row's prefix left the seen sequences: the weights are the policy's own
            # (what pick_many would compute, to the bit), so the trie has nothing to add
            return not (hi > lo).any() and not any(extra)

        def pick(pos: int, logp: Tensor) -> Tensor:
            probs = logp.double().exp().numpy()
            if outside():
                return torch.multinomial(torch.from_numpy(probs), 1, generator=generator)[:, 0]
            weights, left, right = self.pick_many(probs, lo, hi, extra, pos)
            toks = torch.multinomial(torch.from_numpy(weights), 1, generator=generator)[:, 0]
            advance(pos, toks.numpy(), left, right)
            return toks

        def pick_flags(pos: int, pair: Tensor) -> Tensor:
            probs = pair.double().exp().numpy()  # (m, layer, 2)
            uniform = torch.rand(m, probs.shape[1], generator=generator, dtype=torch.float64).numpy()
            # present iff u falls past absent's share: P(present) = w1 / (w0 + w1)
            flags = uniform * probs.sum(2) >= probs[:, :, 0]
            for j in range(probs.shape[1]):
                if outside():
                    break  # the rest are the policy's draws above
                weights, left, right = self.pick_many(probs[:, j], lo, hi, extra, pos + j)
                flags[:, j] = uniform[:, j] * weights.sum(1) >= weights[:, 0]
                advance(pos + j, flags[:, j].astype(np.int64), left, right)
            return torch.from_numpy(flags.astype(np.int64))

        return controller.sample_with(m, pick, pick_flags if flags_at_once else None)

    def _draw_one(self, controller: Controller, generator: torch.Generator) -> ControllerOutput:
        """One sequence, token by token as the samplers before batched trie walks drew (a
        1-D draw per token; a prefix no seen sequence shares is drawn from the policy)."""
        block = [(0, len(self.rows))]
        extra = [list(range(len(self.extra)))]

        def pick(pos: int, logp: Tensor) -> Tensor:
            w = logp[0].double().exp().tolist()
            below: list[tuple[int, int]] | None = None
            if block[0][0] < block[0][1] or extra[0]:  # else nothing seen below: P as it is
                below, mass, count = self.children(block[0], extra[0], pos, len(w))
                w = _weights(w, mass, [c < self.sizes[pos + 1] for c in count])
            tok = int(torch.multinomial(torch.tensor(w, dtype=torch.float64), 1, generator=generator))
            if below is not None:
                block[0] = below[tok]
            extra[0] = [e for e in extra[0] if self.extra[e][0][pos] == tok]
            return torch.tensor([tok])

        return controller.sample_with(1, pick)

    def add(self, out: ControllerOutput, i: int) -> None:
        """Row ``i`` of a draw joins the trie for the rest of the ask."""
        row = out.tokens[i].tolist()
        self.extra.append((row, _suffix_probs(out.token_log_prob[i : i + 1])[0].tolist()))
        self.extra_feasible.append(self.feasible is None or self.feasible.contains_row(row))


def _suffix_probs(token_logp: Tensor) -> np.ndarray:
    """(m, T) per-token log P -> (m, T+1) with [:, d] = P(row[d:] | row[:d])."""
    lp = token_logp.detach().double()
    suffix = torch.cat([lp.flip(1).cumsum(1).flip(1), lp.new_zeros(len(lp), 1)], 1)
    return suffix.exp().numpy()


@torch.no_grad()
def draw_unseen(
    controller: Controller, index: SeenIndex, n: int, generator: torch.Generator,
    *, sampler: str = DEFAULT_SAMPLER,
) -> list[tuple[list[int], float]]:
    """Draw ``n`` distinct token sequences not in ``index`` and add them to it; returns
    (tokens, log P) pairs. log P is the *unconditioned* policy's log-probability, which is
    what the policy gradient differentiates. ``sampler`` names the stages tried before the
    exact trie (:data:`SAMPLERS`; "trie" is how runs saved before the batched draws
    existed sampled, so they resume identically)."""
    spec = SAMPLERS[sampler]
    results: list[tuple[list[int], float]] = []
    hits: list[int] = []  # positions of the seen sequences the rounds drew again
    for per_wanted in spec.rounds:
        if len(results) >= n:
            break
        tokens, logp = policy_draws(controller, per_wanted * (n - len(results)), generator, spec)
        for row, lp in zip(tokens.tolist(), logp.tolist(), strict=True):
            if len(results) < n and index.add(row):
                results.append((row, lp))
            elif spec.hot and (pos := index.position(row)) is not None:
                hits.append(pos)
    if not spec.hot:
        if len(results) < n:
            results += _draw_from_trie(controller, index, n - len(results), generator)
        return results
    index.mark_hot(hits)  # drawn again just now: where the seen mass is
    if len(results) < n:
        results += _draw_from_hot(controller, index, n - len(results), generator, spec)
    if len(results) < n:
        results += _draw_from_all(controller, index, n - len(results), generator, spec)
    return results


def policy_draws(controller: Controller, n: int, generator: torch.Generator, spec: Sampler
                 ) -> tuple[Tensor, Tensor]:
    """``n`` independent draws from the policy: tokens (n, T) and log P (n,), as ``spec``
    draws them (the compiled walk, or ``multinomial`` in the PyTorch walk)."""
    if spec.compiled:
        return sample_by_uniforms(controller, n, generator)
    out = controller.sample(n, generator, entropy=False)
    return out.tokens, out.log_prob


@torch.no_grad()
def _draw_from_all(
    controller: Controller, index: SeenIndex, n: int, generator: torch.Generator, spec: Sampler,
) -> list[tuple[list[int], float]]:
    """The exact trie over every seen sequence, in batched walks; it also marks hot the
    sequences that carry the seen mass now (:func:`_carriers`)."""
    trie = _Trie(index.rows, controller)
    index.hot = {}
    index.mark_hot(_carriers(trie.probs))
    results: list[tuple[list[int], float]] = []
    while len(results) < n:
        results += _draw_batched(controller, trie, index, n - len(results), generator, spec, full=True)
    return results


@torch.no_grad()
def _draw_from_hot(
    controller: Controller, index: SeenIndex, n: int, generator: torch.Generator, spec: Sampler,
) -> list[tuple[list[int], float]]:
    """Up to ``n`` draws from the policy conditioned on not being seen, with a trie over
    the hot sequences (a subset H of the seen set S) and rejection: each attempt draws
    exactly from P conditioned on not in H and is kept iff it is not in S, so what is kept
    is P conditioned on not in S -- the exact trie's distribution, whatever H is; H only
    sets how often an attempt is rejected. A rejected sequence, which carries seen mass H
    missed, joins H. Stops after :data:`HOT_WALKS` walks, leaving the rest to the trie over
    all of S."""
    hot = list(index.hot)
    trie = _Trie(index.rows[hot], controller)
    if spec.adaptive:
        # evicted first: the least probable now. Least recently marked first evicted rows
        # that still carried mass (a collapsed policy keeps re-drawing only its mode), and
        # each eviction of a carrier makes later walks reject more
        index.hot = dict.fromkeys(hot[i] for i in np.argsort(trie.probs, kind="stable"))
    return _draw_batched(controller, trie, index, n, generator, spec, full=False)


def _draw_batched(
    controller: Controller, trie: _Trie, index: SeenIndex, n: int, generator: torch.Generator,
    spec: Sampler, *, full: bool,
) -> list[tuple[list[int], float]]:
    """The still-wanted sequences drawn :data:`WALK_ROWS` times over in one walk at a time
    (a 20-layer walk pays per step, not per row), each row from the trie's conditional
    policy, independently. They are taken in order: an unseen row not taken yet is kept;
    a seen row outside the trie is rejected and joins it (and the hot set: it carried seen
    mass the trie missed); a repeat of a row kept in this walk is skipped -- rejection
    again, so each kept row is distributed as if drawn after the ones before it. Rows past
    the last one wanted are dropped unread. ``full``: the trie holds every seen sequence
    (no rejections; once everything is seen, repeats are let through)."""
    results: list[tuple[list[int], float]] = []
    in_trie = set(range(len(index))) if full else set(index.hot)
    read = 0  # rows read so far (adaptive: the acceptance so far sizes the next walk)
    adaptive = spec.adaptive
    for _ in range(_walks(len(index), adaptive)):
        rows = _walk_rows(n - len(results), read, len(results), adaptive)
        out = trie.draw(controller, generator, rows, flags_at_once=spec.flags_at_once)
        before = set(in_trie)
        for i, row in enumerate(out.tokens.tolist()):
            if len(results) == n:
                break
            read += 1
            known = index.position(row)
            if known is not None and known in before:  # only once its whole subtree is seen
                if not full:
                    return results  # the full trie takes over
                results.append((row, float(out.log_prob[i])))  # everything is seen
            elif known is None:
                index.add(row)
                results.append((row, float(out.log_prob[i])))
                in_trie.add(index.n - 1)
                trie.add(out, i)
                if adaptive:  # a trie's draw is the most probable unseen: seen mass next ask
                    index.mark_hot([index.n - 1])
            elif known not in in_trie:  # seen, not in the trie: its mass was missed
                index.mark_hot([known])
                in_trie.add(known)
                trie.add(out, i)
        if len(results) == n:
            break
    return results


def _walks(seen: int, adaptive: bool) -> int:
    """Hot walks allowed before the trie over every seen sequence takes over: adaptive, as
    many as cost what that trie's scoring would (a ski rental: never more than twice the
    cheaper of the two), at least :data:`HOT_WALKS`."""
    return max(HOT_WALKS, seen // WALK_COST_ROWS) if adaptive else HOT_WALKS


def _walk_rows(wanted: int, read: int, kept: int, adaptive: bool) -> int:
    """Rows of the next walk: :data:`WALK_ROWS` per sequence wanted; adaptive, enough for
    the wanted ones at the acceptance seen so far in this ask, with half again to spare
    (a walk costs per step, hardly per row: one larger walk beats several small ones)."""
    rows = WALK_ROWS * wanted
    if adaptive and read:
        rows = max(rows, math.ceil(1.5 * wanted * read / max(kept, 1)))
    return min(rows, max(WALK_ROWS * wanted, WALK_MAX_ROWS))


@torch.no_grad()
def _draw_from_trie(
    controller: Controller, index: SeenIndex, n: int, generator: torch.Generator
) -> list[tuple[list[int], float]]:
    """The exact trie, one draw per walk: how the samplers before the hot trie drew."""
    trie = _Trie(index.rows, controller)
    results: list[tuple[list[int], float]] = []
    for _ in range(n):
        out = trie.draw(controller, generator)
        row = out.tokens[0].tolist()
        if index.add(row):  # a repeat only once everything was seen
            trie.add(out, 0)
        results.append((row, float(out.log_prob[0])))
    return results


def _carriers(probs: np.ndarray) -> list[int]:
    """Positions of the most probable sequences, as many as hold all the seen mass but
    HOT_TAIL of the unseen mass (at most HOT_MAX), least probable first (evicted first)."""
    order = np.argsort(-probs, kind="stable")
    seen = float(probs.sum())
    unseen = max(1.0 - seen, 1e-12)
    held = np.cumsum(probs[order])
    k = int(np.searchsorted(held, seen - HOT_TAIL * unseen)) + 1
    return [int(p) for p in order[: min(k, HOT_MAX)][::-1]]


def _weights(probs: list[float], mass: list[float], open_: list[bool]) -> list[float]:
    w = [p * max(0.0, 1.0 - m) if o else 0.0 for p, m, o in zip(probs, mass, open_, strict=True)]
    if sum(w) > 0:
        return w
    # rounding ate the remaining mass: fall back to the policy over open subtrees
    w = [p if o else 0.0 for p, o in zip(probs, open_, strict=True)]
    return w if sum(w) > 0 else probs  # everything seen: repeats are unavoidable


def sample_unseen(
    controller: Controller, seen: Iterable[Sequence[int]], n: int, generator: torch.Generator,
    *, sampler: str = DEFAULT_SAMPLER,
) -> list[tuple[list[int], float]]:
    """:func:`draw_unseen` from a plain list of seen sequences (the index is built here)."""
    index = SeenIndex(controller.space.num_tokens)
    for row in seen:
        index.add(row)
    return draw_unseen(controller, index, n, generator, sampler=sampler)
