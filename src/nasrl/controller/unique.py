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
concentrated. The trie is not kept as tuple prefixes (memory quadratic in the sequence
length: 1.6 GB at 6,000 twenty-layer architectures) but implied by the seen sequences
sorted lexicographically; M is one batched scoring pass of the seen sequences, recomputed
only when the fallback runs, because the policy changes between asks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import Tensor

from nasrl.controller.lstm import Controller

SAMPLERS: dict[str, tuple[int, ...]] = {
    "trie": (),
    "batched-then-trie": (2,),
    "batched-rounds-then-trie": (2, 16, 128),
}
"""Batched draws per sequence still wanted, round by round, before the exact fallback;
the names are what a strategy state records, so a saved run resumes with the sampler it
used (the rounds consume the generator differently). Each round is one controller pass,
which costs about as much for 128 sequences as for 16 (the per-step overhead dominates at
these sizes), while the fallback scores every seen sequence: ~110 ms at 1,600 six-layer
sequences, ~1 s at 12,800. Once the policy has concentrated, 2 per sequence wanted left a
third of the asks to the fallback (ask time 9-19 ms per architecture at 6 layers); rounds
of 16 and then 128 make it rare (~3.5 ms) until fewer than ~1 in 100 draws is unseen."""
DEFAULT_SAMPLER = "batched-rounds-then-trie"
SCORE_CHUNK = 1024
"""Seen sequences scored per controller pass when the fallback recomputes M: bounds the
memory of a pass (hidden states per token) whatever the number seen."""


class SeenIndex:
    """The token sequences (all of one length) seen so far, in one growable int16 array,
    with a set of their bytes for membership: memory linear in the sequences."""

    def __init__(self, length: int) -> None:
        self.length = length
        self._members: set[bytes] = set()
        self._rows = np.zeros((64, self.length), dtype=np.int16)
        self.n = 0

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
        self._members.add(key)
        if self.n == len(self._rows):  # grow by doubling: amortized constant per row
            self._rows = np.concatenate([self._rows, np.zeros_like(self._rows)])
        self._rows[self.n] = arr
        self.n += 1
        return True


class _Trie:
    """The seen sequences as a trie for one ask of the exact fallback: sorted
    lexicographically, the sequences below any prefix are one contiguous block, found by
    binary search column by column; M of a block is a difference of column-wise cumulative
    sums of the suffix probabilities. Sequences drawn during the ask are kept aside."""

    def __init__(self, index: SeenIndex, controller: Controller) -> None:
        arities = controller.space.token_arities()
        if len(arities) != index.length:
            raise ValueError(f"seen index of {index.length} tokens for a space of {len(arities)}")
        # sizes[d] = number of distinct completions of a prefix of length d
        self.sizes = [math.prod(arities[d:]) for d in range(len(arities) + 1)]
        rows = index.rows
        self.rows = rows[np.lexsort(rows.T[::-1])] if len(rows) else rows  # first column primary
        suffix = np.zeros((len(self.rows), index.length + 1))
        for start in range(0, len(self.rows), SCORE_CHUNK):
            chunk = torch.from_numpy(self.rows[start : start + SCORE_CHUNK].astype(np.int64))
            suffix[start : start + len(chunk)] = _suffix_probs(controller.score(chunk).token_log_prob)
        self.cum = np.concatenate([np.zeros((1, index.length + 1)), suffix.cumsum(0)])
        self.extra: list[tuple[list[int], list[float]]] = []  # (row, suffix probs) drawn now

    def children(self, block: tuple[int, int], prefix: list[int], k: int
                 ) -> tuple[list[tuple[int, int]], list[float], list[int]]:
        """For each next token t of ``prefix`` (whose sequences are rows[block]): the block
        of prefix + t, its mass M and its count of seen sequences."""
        d, (lo, hi) = len(prefix), block
        column = self.rows[lo:hi, d]
        left = lo + np.searchsorted(column, np.arange(k), side="left")
        right = lo + np.searchsorted(column, np.arange(k), side="right")
        blocks = list(zip(left.tolist(), right.tolist(), strict=True))
        mass = (self.cum[right, d + 1] - self.cum[left, d + 1]).tolist()
        count = (right - left).tolist()
        for row, probs in self.extra:
            if row[:d] == prefix:
                mass[row[d]] += probs[d + 1]
                count[row[d]] += 1
        return blocks, mass, count


def _suffix_probs(token_logp: Tensor) -> np.ndarray:
    """(m, T) per-token log P -> (m, T+1) with [:, d] = P(row[d:] | row[:d])."""
    lp = token_logp.double()
    suffix = torch.cat([lp.flip(1).cumsum(1).flip(1), lp.new_zeros(len(lp), 1)], 1)
    return suffix.exp().numpy()


@torch.no_grad()
def draw_unseen(
    controller: Controller, index: SeenIndex, n: int, generator: torch.Generator,
    *, sampler: str = DEFAULT_SAMPLER,
) -> list[tuple[list[int], float]]:
    """Draw ``n`` distinct token sequences not in ``index`` and add them to it; returns
    (tokens, log P) pairs. log P is the *unconditioned* policy's log-probability, which is
    what the policy gradient differentiates. ``sampler`` names the batched rounds tried
    before the exact trie (:data:`SAMPLERS`; "trie" is how runs saved before the batched
    draws existed sampled, so they resume identically)."""
    results: list[tuple[list[int], float]] = []
    for per_wanted in SAMPLERS[sampler]:
        if len(results) >= n:
            break
        out = controller.sample(per_wanted * (n - len(results)), generator, entropy=False)
        for row, lp in zip(out.tokens.tolist(), out.log_prob.tolist(), strict=True):
            if len(results) < n and index.add(row):
                results.append((row, lp))
    if len(results) < n:
        results += _draw_from_trie(controller, index, n - len(results), generator)
    return results


def _draw_from_trie(
    controller: Controller, index: SeenIndex, n: int, generator: torch.Generator
) -> list[tuple[list[int], float]]:
    trie = _Trie(index, controller)
    results: list[tuple[list[int], float]] = []
    for _ in range(n):
        prefix: list[int] = []
        block = [(0, len(trie.rows))]

        def pick(pos: int, logp: Tensor, prefix: list[int] = prefix,
                 block: list[tuple[int, int]] = block) -> Tensor:
            probs = logp[0].double().exp().tolist()
            blocks, mass, count = trie.children(block[0], prefix, len(probs))
            open_ = [c < trie.sizes[pos + 1] for c in count]
            tok = int(torch.multinomial(torch.tensor(_weights(probs, mass, open_), dtype=torch.float64),
                                        1, generator=generator))
            prefix.append(tok)
            block[0] = blocks[tok]
            return torch.tensor([tok])

        out = controller.sample_with(1, pick)
        row = out.tokens[0].tolist()
        if index.add(row):  # a repeat only once everything was seen
            trie.extra.append((row, _suffix_probs(out.token_log_prob)[0].tolist()))
        results.append((row, float(out.log_prob[0])))
    return results


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
