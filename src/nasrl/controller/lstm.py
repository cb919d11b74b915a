"""The autoregressive LSTM (or GRU) controller (Zoph & Le 2017, sections 3.1 and 3.3).

The controller walks the space's decisions in order. At each step the LSTM (or GRU,
``ControllerConfig.cell``) reads the
previous decision's embedding and emits either

* a softmax over a categorical decision's options (one head per decision *kind*), or
* at a layer's anchor point, one independent Bernoulli per earlier layer ``j``::

      P(j -> i) = sigmoid(v^T tanh(W_prev h_j + W_curr h_i))

  where ``h_j`` are the hidden states the LSTM produced at the earlier anchors.

The sampled token is fed back as the next input: its embedding after a categorical
decision, and after an anchor the mean of the chosen anchors' hidden states (the paper
leaves this open; this is ENAS's choice, and the "go" embedding when there is nothing to
choose). Sampling and scoring run through one function, so the log-probability of a
sampled architecture is by construction the score of that architecture.

With a feasible set (``controller.feasible``, hard static limits), every decision is
*constrained decoding*: tokens after which no completion is feasible get probability 0 and
the rest are renormalized, so samples, log-probabilities and entropies are all those of the
policy restricted to the feasible set.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from nasrl.spaces.base import Architecture, Categorical, SearchSpace, SkipSet
from nasrl.spaces.feasible import FeasiblePrefixes


@dataclass
class ControllerConfig:
    """Controller shape and sampling. Defaults are the paper's (2 x 35, U(-0.08, 0.08))."""

    hidden_size: int = 35
    """LSTM units per layer; embeddings and attention use the same width."""
    num_layers: int = 2
    """Stacked LSTM layers."""
    init_range: float = 0.08
    """Every weight starts uniform in [-init_range, init_range]."""
    temperature: float = 1.0
    """Logits are divided by this before sampling and scoring (> 1 explores more)."""
    tanh_constant: float | None = None
    """If set, logits become C * tanh(logits / T) (Bello et al. 2017; ENAS uses 2.5)."""
    cell: Literal["lstm", "gru"] = "lstm"
    """Recurrent cell of every layer: the paper's LSTM or a GRU (a quarter fewer weights,
    no cell state). A config recorded before this field existed has no ``cell`` key and
    builds the LSTM it was trained with."""


@dataclass
class ControllerOutput:
    tokens: Tensor
    """(n, num_tokens) int64, the space's token encoding."""
    log_prob: Tensor
    """(n,) log-probability of each whole architecture."""
    entropy: Tensor
    """(n,) sum over decisions of each decision's entropy (given the earlier ones)."""
    token_log_prob: Tensor
    """(n, num_tokens) log-probability of each token given the ones before it."""
    token_hidden: Tensor
    """(n, num_tokens, hidden) the top layer's hidden state that each token's distribution
    was computed from: it has read only the tokens before it (a critic's input)."""
    token_entropy: Tensor | None = None
    """(n, num_tokens) each token's entropy given the ones before it (a skip flag's own)."""
    token_mask: Tensor | None = None
    """(n, num_tokens) bool, from :meth:`Controller.score_rows` on rows of several depths:
    which positions belong to each row (past a row's end its log-probabilities are 0 and
    count in neither ``log_prob`` nor ``entropy``). None: every position counts."""


Picker = Callable[[int, Tensor], Tensor]
"""pick(token position, log-probabilities (n, k)) -> chosen tokens (n,)."""


class Controller(nn.Module):
    def __init__(
        self, space: SearchSpace, config: ControllerConfig | None = None, seed: int = 0
    ) -> None:
        super().__init__()
        self.config = config or ControllerConfig()
        hidden = self.config.hidden_size
        if hidden < 1 or self.config.num_layers < 1:
            raise ValueError("controller: hidden_size and num_layers must be >= 1")
        if self.config.temperature <= 0:
            raise ValueError("controller: temperature must be > 0")
        self.kinds = _categorical_kinds(space)
        self.space = space
        self.feasible: FeasiblePrefixes | None = None
        """Set to restrict the policy to a feasible set (not a parameter: not saved)."""
        self.go = nn.Parameter(torch.empty(1, hidden))
        self.embeddings = nn.ModuleDict({k: nn.Embedding(n, hidden) for k, n in self.kinds.items()})
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, n) for k, n in self.kinds.items()})
        if self.config.cell not in ("lstm", "gru"):
            raise ValueError(f"controller: cell must be 'lstm' or 'gru', got {self.config.cell!r}")
        cell_class = nn.LSTMCell if self.config.cell == "lstm" else nn.GRUCell
        self.cells = nn.ModuleList(
            [cell_class(hidden, hidden) for _ in range(self.config.num_layers)]
        )
        self.has_anchors = any(isinstance(d, SkipSet) for d in space.decisions)
        if self.has_anchors:
            self.w_prev = nn.Linear(hidden, hidden, bias=False)
            self.w_curr = nn.Linear(hidden, hidden, bias=False)
            self.v = nn.Linear(hidden, 1, bias=False)
        init = torch.Generator().manual_seed(seed)  # weights depend on the seed alone
        for p in self.parameters():
            nn.init.uniform_(p, -self.config.init_range, self.config.init_range, generator=init)

    def use_space(self, space: SearchSpace) -> None:
        """Switch to another space with the same decision kinds (e.g. a deeper conv space)."""
        kinds = _categorical_kinds(space)
        for kind, n in kinds.items():
            if self.kinds.get(kind) != n:
                raise ValueError(f"controller: space {space.name!r} has unknown kind {kind!r}")
        if any(isinstance(d, SkipSet) for d in space.decisions) and not self.has_anchors:
            raise ValueError("controller: this controller was built without anchor attention")
        self.space = space

    # -- public API ----------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator | None = None) -> ControllerOutput:
        """Sample ``n`` architectures (with gradient unless called under ``no_grad``)."""
        return self._walk(n, None, generator)

    def sample_with(self, n: int, pick: Picker) -> ControllerOutput:
        """Sample with a custom token chooser (e.g. sampling without replacement)."""
        return self._walk(n, None, None, pick)

    def score(self, tokens: Tensor) -> ControllerOutput:
        """Log-probabilities and entropies of given token sequences (teacher forcing)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.space.num_tokens:
            raise ValueError(
                f"controller: tokens must be (n, {self.space.num_tokens}), got {tuple(tokens.shape)}"
            )
        return self._walk(tokens.shape[0], tokens.long(), None)

    def score_rows(self, rows: Sequence[Sequence[int]]) -> ControllerOutput:
        """Score token rows of different depths of the space's family in one batch.

        A shallower conv architecture's decisions are the first decisions of a deeper one,
        and the walk is causal, so each row is padded to the longest and scored at that
        depth; the padding's log-probabilities and entropies are masked out. Rows of one
        depth are scored exactly as :meth:`score` scores them.
        """
        lengths = [len(r) for r in rows]
        longest = max(lengths)
        space = self.space.space_of_tokens(longest)
        if all(n == longest for n in lengths):
            return self._walk(len(rows), torch.tensor([list(r) for r in rows],
                                                      dtype=torch.long).reshape(len(rows), longest),
                              None, space=space)
        padded = torch.tensor([list(r) + [0] * (longest - len(r)) for r in rows], dtype=torch.long)
        mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
        out = self._walk(len(rows), padded, None, space=space)
        assert out.token_entropy is not None
        token_logp = torch.where(mask, out.token_log_prob, torch.zeros_like(out.token_log_prob))
        entropy = torch.where(mask, out.token_entropy, torch.zeros_like(out.token_entropy)).sum(1)
        return ControllerOutput(tokens=padded, log_prob=token_logp.sum(1), entropy=entropy,
                                token_log_prob=token_logp, token_hidden=out.token_hidden,
                                token_entropy=out.token_entropy, token_mask=mask)

    def encode(self, archs: Sequence[Architecture]) -> Tensor:
        rows = [self.space.to_tokens(a) for a in archs]
        return torch.tensor(rows, dtype=torch.long).reshape(len(rows), self.space.num_tokens)

    def decode(self, tokens: Tensor) -> list[Architecture]:
        return [self.space.from_tokens(row) for row in tokens.tolist()]

    # -- the walk ------------------------------------------------------------------------
    def _squash(self, logits: Tensor) -> Tensor:
        logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        return logits

    def _step(self, x: Tensor, state: list[tuple[Tensor, Tensor]]) -> Tensor:
        # The cells' own kernels, called directly: what nn.LSTMCell / nn.GRUCell.forward
        # call on batched input, without the module call's Python overhead (a third of a
        # step's time at NB201's sizes); the same arithmetic, so the same samples.
        for layer, cell in enumerate(self.cells):
            if isinstance(cell, nn.GRUCell):
                h = torch.gru_cell(x, state[layer][0], cell.weight_ih, cell.weight_hh,
                                   cell.bias_ih, cell.bias_hh)
                state[layer] = (h, h)  # a GRU has no cell state; the pair keeps one layout
            else:
                assert isinstance(cell, nn.LSTMCell)
                h, c = torch.lstm_cell(x, state[layer], cell.weight_ih, cell.weight_hh,
                                       cell.bias_ih, cell.bias_hh)
                state[layer] = (h, c)
            x = h
        return x

    def _walk(
        self, n: int, forced: Tensor | None, gen: torch.Generator | None,
        pick: Picker | None = None, space: SearchSpace | None = None,
    ) -> ControllerOutput:
        """One pass over the decisions; every token goes through ``choose``.

        ``choose(pos, logp)`` gets the log-probabilities (n, k) of token ``pos``'s k values
        -- a skip flag is a 2-way choice (absent, present) -- and returns the tokens (n,).
        ``space``: a member of the family to walk (default: the controller's own).
        """
        hidden = self.config.hidden_size
        zeros = self.go.new_zeros(n, hidden)
        state = [(zeros, zeros) for _ in self.cells]
        x = self.go.expand(n, hidden)
        entropy = self.go.new_zeros(n)
        token_logp: list[Tensor] = []
        token_h: list[Tensor] = []
        token_ent: list[Tensor] = []  # per token; ``entropy`` keeps its own sum, as before
        current_h = [self.go.new_zeros(n, hidden)]  # the state the next token is drawn from
        anchors: list[Tensor] = []  # hidden state at each earlier anchor
        anchors_w: list[Tensor] = []  # W_prev h_j, computed once per anchor
        out: list[Tensor] = []

        def choose(pos: int, logp: Tensor) -> Tensor:
            if forced is not None:
                tok = forced[:, pos]
            elif pick is not None:
                tok = pick(pos, logp.detach())
            else:
                tok = torch.multinomial(logp.detach().exp(), 1, generator=gen).squeeze(1)
            token_logp.append(logp.gather(1, tok[:, None]).squeeze(1))
            token_h.append(current_h[0])
            out.append(tok)
            return tok

        pos = 0
        for d in (space or self.space).decisions:
            h = self._step(x, state)
            current_h[0] = h
            if isinstance(d, Categorical):
                logp_all = F.log_softmax(self._squash(self.heads[d.kind](h)), dim=-1)
                if self.feasible is not None:
                    logp_all, plogp = self._restrict(logp_all, out, n)
                    entropy = entropy - plogp
                    token_ent.append(-plogp)
                else:
                    plogp = (logp_all.exp() * logp_all).sum(1)
                    entropy = entropy - plogp
                    token_ent.append(-plogp)
                x = self.embeddings[d.kind](choose(pos, logp_all))
            else:
                if d.layer == 0:
                    x = self.go.expand(n, hidden)
                else:
                    query = torch.tanh(torch.stack(anchors_w, 1) + self.w_curr(h)[:, None, :])
                    logit = self._squash(self.v(query).squeeze(-1))  # (n, layer)
                    # one Bernoulli per earlier layer: log P(absent), log P(present)
                    pair = torch.stack([F.logsigmoid(-logit), F.logsigmoid(logit)], -1)
                    if self.feasible is not None:
                        picked = []
                        for j in range(d.layer):  # each flag's mask depends on the ones before
                            flag_logp, plogp = self._restrict(pair[:, j], out, n)
                            entropy = entropy - plogp
                            token_ent.append(-plogp)
                            picked.append(choose(pos + j, flag_logp))
                        flags = torch.stack(picked, 1)
                    else:
                        entropy = entropy - (pair.exp() * pair).sum((1, 2))
                        token_ent.extend((-(pair.exp() * pair).sum(2)).unbind(1))
                        if forced is None and pick is None:
                            flags = self._draw_flags(pair, gen, token_logp, token_h, out, current_h[0])
                        else:
                            flags = torch.stack([choose(pos + j, pair[:, j]) for j in range(d.layer)], 1)
                    chosen = flags.to(logit.dtype)
                    x = (chosen[:, :, None] * torch.stack(anchors, 1)).sum(1)
                    x = x / (1.0 + chosen.sum(1, keepdim=True))
                anchors.append(h)
                anchors_w.append(self.w_prev(h))
            pos += d.num_tokens
        if out:
            tokens, per_token = torch.stack(out, 1), torch.stack(token_logp, 1)
            hiddens, per_token_ent = torch.stack(token_h, 1), torch.stack(token_ent, 1)
        else:
            tokens, per_token = torch.zeros(n, 0, dtype=torch.long), self.go.new_zeros(n, 0)
            hiddens, per_token_ent = self.go.new_zeros(n, 0, hidden), self.go.new_zeros(n, 0)
        return ControllerOutput(tokens=tokens, log_prob=per_token.sum(1), entropy=entropy,
                                token_log_prob=per_token, token_hidden=hiddens,
                                token_entropy=per_token_ent)


    @staticmethod
    def _draw_flags(pair: Tensor, gen: torch.Generator | None, token_logp: list[Tensor],
                    token_h: list[Tensor], out: list[Tensor], h: Tensor) -> Tensor:
        """Draw an anchor's flags (n, layer) in one call instead of one per flag: at 20
        layers that is 190 calls fewer per architecture. multinomial with one sample
        takes one exponential per entry in memory order, so laying the flags out flag
        by flag (layer, n, 2) consumes the generator exactly as the per-flag draws did:
        a run saved before this change resumes with the same architectures (test)."""
        layer, n = pair.shape[1], pair.shape[0]
        probs = pair.detach().exp().transpose(0, 1).reshape(layer * n, 2)
        flags = torch.multinomial(probs, 1, generator=gen).reshape(layer, n).T
        token_logp.extend(pair.gather(2, flags[:, :, None]).squeeze(2).unbind(1))
        token_h.extend([h] * layer)
        out.extend(flags.unbind(1))
        return flags

    def _restrict(self, logp: Tensor, prefix: list[Tensor], n: int) -> tuple[Tensor, Tensor]:
        """Renormalize the next token's log-probabilities (n, k) over the tokens that keep a
        feasible completion; returns them and sum p log p. A prefix that already left the
        feasible set (only a scored, never a sampled row) keeps every token: its log P is
        already -inf."""
        assert self.feasible is not None
        rows = torch.stack(prefix, 1).tolist() if prefix else [[] for _ in range(n)]
        masks = [self.feasible.allowed(r) for r in rows]
        allowed = torch.tensor([m if any(m) else [True] * len(m) for m in masks],
                               dtype=torch.bool, device=logp.device)
        masked = F.log_softmax(logp.masked_fill(~allowed, float("-inf")), dim=-1)
        # p log p with 0 (not 0 * -inf = nan, in value or gradient) for the masked tokens
        plogp = (masked.exp() * masked.masked_fill(~allowed, 0.0)).sum(1)
        return masked, plogp


def _categorical_kinds(space: SearchSpace) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for d in space.decisions:
        if isinstance(d, Categorical):
            kinds[d.kind] = len(d.options)
    return kinds
