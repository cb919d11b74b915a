"""Sampling without replacement from the controller.

Rejection sampling ("draw, throw away what was seen, draw again") fails exactly when it
matters: once the policy concentrates, nearly every draw is a repeat, and the unseen
neighbours of the mode have probabilities too small to ever be hit. Instead we sample
from the policy *conditioned on not being seen*, exactly, token by token: the seen
sequences form a trie, and at each step a token's probability is multiplied by the share
of its subtree that is still unseen,

    P'(t | prefix) ~ P(t | prefix) * (1 - M(prefix + t)),

where M(node) is the probability, under the current policy, of completing ``node`` into
a seen sequence (Shi et al. 2020, "Incremental sampling without replacement for sequence
models"). M is recomputed from one batched scoring pass of the seen sequences, because the
policy changes between asks. Fully explored subtrees are also tracked by count, so float
rounding can never send the sampler into one.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import torch
from torch import Tensor

from nasrl.controller.lstm import Controller


class _Trie:
    def __init__(self, arities: Sequence[int]) -> None:
        # sizes[d] = number of distinct completions of a prefix of length d
        self.sizes = [math.prod(arities[d:]) for d in range(len(arities) + 1)]
        self.mass: defaultdict[tuple[int, ...], float] = defaultdict(float)
        self.count: defaultdict[tuple[int, ...], int] = defaultdict(int)

    def add(self, rows: Sequence[Sequence[int]], token_logp: Tensor) -> None:
        """Add sequences (m, T) with their per-token log-probabilities (m, T)."""
        # suffix[:, d] = P(row[d:] | row[:d]), all rows at once
        lp = token_logp.double()
        suffix = torch.cat([lp.flip(1).cumsum(1).flip(1), lp.new_zeros(len(rows), 1)], 1)
        for row, probs in zip(rows, suffix.exp().tolist(), strict=True):
            for d, p in enumerate(probs):
                prefix = tuple(row[:d])
                self.mass[prefix] += p
                self.count[prefix] += 1

    def weights(self, prefix: tuple[int, ...], probs: list[float]) -> list[float]:
        depth = len(prefix) + 1
        open_ = [self.count.get((*prefix, t), 0) < self.sizes[depth] for t in range(len(probs))]
        w = [p * max(0.0, 1.0 - self.mass.get((*prefix, t), 0.0)) if o else 0.0
             for t, (p, o) in enumerate(zip(probs, open_, strict=True))]
        if sum(w) > 0:
            return w
        # rounding ate the remaining mass: fall back to the policy over open subtrees
        w = [p if o else 0.0 for p, o in zip(probs, open_, strict=True)]
        return w if sum(w) > 0 else probs  # everything seen: repeats are unavoidable


@torch.no_grad()
def sample_unseen(
    controller: Controller, seen: Sequence[Sequence[int]], n: int, generator: torch.Generator
) -> list[tuple[list[int], float]]:
    """Draw ``n`` distinct token sequences not in ``seen``; returns (tokens, log P) pairs.

    log P is the *unconditioned* policy's log-probability, which is what the policy
    gradient differentiates.
    """
    trie = _Trie(controller.space.token_arities())
    unique = sorted({tuple(r) for r in seen})
    if unique:
        trie.add(unique, controller.score(torch.tensor(unique, dtype=torch.long)).token_log_prob)
    results: list[tuple[list[int], float]] = []
    for _ in range(n):
        prefix: list[int] = []

        def pick(pos: int, logp: Tensor, prefix: list[int] = prefix) -> Tensor:
            w = trie.weights(tuple(prefix), logp[0].double().exp().tolist())
            tok = int(torch.multinomial(torch.tensor(w, dtype=torch.float64), 1,
                                        generator=generator))
            prefix.append(tok)
            return torch.tensor([tok])

        out = controller.sample_with(1, pick)
        row = out.tokens[0].tolist()
        trie.add([row], out.token_log_prob)
        results.append((row, float(out.log_prob[0])))
    return results
