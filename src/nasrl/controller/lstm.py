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

A controller built with ``num_tiers`` > 0 is also *conditioned*: under
:meth:`Controller.conditioned`, row ``i`` is walked with a learned tier embedding added to
every input (each decision reads its tier directly, not through the LSTM's memory) and
constrained to its own feasible set (a front search's cost tiers,
``ReinforceConfig.front_tiers``), so one policy holds one distribution per tier.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal, cast

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

    def head(self, k: int) -> ControllerOutput:
        """The first ``k`` rows (e.g. a batch scored together with other rows)."""
        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[:k]

        return ControllerOutput(self.tokens[:k], self.log_prob[:k], self.entropy[:k],
                                self.token_log_prob[:k], self.token_hidden[:k],
                                cut(self.token_entropy), cut(self.token_mask))


Picker = Callable[[int, Tensor], Tensor]
"""pick(token position, log-probabilities (n, k)) -> chosen tokens (n,)."""
FlagPicker = Callable[[int, Tensor], Tensor]
"""pick_flags(position of an anchor's first flag, log-probabilities (n, layer, 2) of its
flags, absent / present) -> the flags (n, layer): an anchor's skip flags in one call."""


class Controller(nn.Module):
    def __init__(
        self, space: SearchSpace, config: ControllerConfig | None = None, seed: int = 0,
        num_tiers: int = 0,
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
        self.tier_embedding: nn.Embedding | None = None
        if num_tiers > 0:
            # created and drawn after the others, so every other weight is the same as
            # without tiers (same seed, same draws)
            self.tier_embedding = nn.Embedding(num_tiers, hidden)
            nn.init.uniform_(self.tier_embedding.weight, -self.config.init_range,
                             self.config.init_range, generator=init)
        self._tiers: list[int] | None = None
        self._tier_sets: list[FeasiblePrefixes | None] = []

    @contextmanager
    def conditioned(self, tiers: Sequence[int],
                    sets: Sequence[FeasiblePrefixes | None]) -> Iterator[None]:
        """Walk every row under its tier: ``tiers`` one per row, or a single tier for
        every row; ``sets[t]`` is tier t's feasible set (None: unconstrained)."""
        if self.tier_embedding is None:
            raise ValueError("controller: built without tiers (num_tiers = 0)")
        if any(not 0 <= t < self.tier_embedding.num_embeddings for t in tiers):
            last = self.tier_embedding.num_embeddings - 1
            raise ValueError(f"controller: tiers {list(tiers)} outside 0..{last}")
        saved = self._tiers, self._tier_sets
        self._tiers, self._tier_sets = list(tiers), list(sets)
        try:
            yield
        finally:
            self._tiers, self._tier_sets = saved

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
    def sample(self, n: int, generator: torch.Generator | None = None, *,
               entropy: bool = True) -> ControllerOutput:
        """Sample ``n`` architectures (with gradient unless called under ``no_grad``).
        ``entropy=False`` leaves the entropies out (zeros): an ask needs only the tokens
        and their log P, and the entropies are a sixth of a walk's operations."""
        return self._walk(n, None, generator, with_entropy=entropy)

    def sample_with(self, n: int, pick: Picker, pick_flags: FlagPicker | None = None) -> ControllerOutput:
        """Sample with a custom token chooser (e.g. sampling without replacement);
        ``pick_flags``, if given, chooses each anchor's skip flags in one call (else
        ``pick`` chooses them one by one)."""
        return self._walk(n, None, None, pick, pick_flags=pick_flags)

    def score(self, tokens: Tensor) -> ControllerOutput:
        """Log-probabilities and entropies of given token sequences (teacher forcing)."""
        if tokens.dim() != 2 or tokens.shape[1] != self.space.num_tokens:
            raise ValueError(
                f"controller: tokens must be (n, {self.space.num_tokens}), got {tuple(tokens.shape)}"
            )
        return self._score(tokens.long(), self.space)

    def token_log_probs(self, tokens: Tensor) -> Tensor:
        """(n, num_tokens) each known token's log-probability given the ones before it,
        without the entropies and states :meth:`score` also returns (a third of its time):
        what sampling without replacement scores seen sequences with."""
        if self.feasible is not None or self._tiers is not None or tokens.shape[1] == 0:
            return self.score(tokens).token_log_prob
        return self._score_fused(tokens.long(), self.space, lean=True).token_log_prob

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
            return self._score(torch.tensor([list(r) for r in rows],
                                            dtype=torch.long).reshape(len(rows), longest), space)
        padded = torch.tensor([list(r) + [0] * (longest - len(r)) for r in rows], dtype=torch.long)
        mask = torch.arange(longest)[None, :] < torch.tensor(lengths)[:, None]
        out = self._score(padded, space)
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

    # -- scoring: known tokens ----------------------------------------------------------
    def _score(self, tokens: Tensor, space: SearchSpace) -> ControllerOutput:
        """Teacher-forced scores of ``tokens`` (n, T) at ``space``'s depth. Without a
        feasible set the inputs of every step between two anchors are known in advance,
        so the cells run over them in one fused call (:meth:`_score_fused`); constrained
        decoding masks each step by its prefix, and tiers condition each row: those keep
        the step-by-step walk."""
        if self.feasible is not None or self._tiers is not None or tokens.shape[1] == 0:
            return self._walk(tokens.shape[0], tokens, None, space=space)
        return self._score_fused(tokens, space)

    def _score_fused(self, tokens: Tensor, space: SearchSpace, lean: bool = False) -> ControllerOutput:
        """The same numbers as :meth:`_walk` with ``forced`` tokens (equal to float
        rounding; tested), at a fraction of the cost: the walk records some 15 autograd
        nodes per step and per layer, so a 20-layer ``conv`` update spent most of its time
        in backward. Here the cells run once per segment -- the steps up to and including
        an anchor, after which the next input depends on the anchor's hidden states -- and
        the heads and the anchor attention run once over all steps."""
        n, hidden = tokens.shape[0], self.config.hidden_size
        zeros = self.go.new_zeros(n, hidden)
        state = [(zeros, zeros) for _ in self.cells]
        go = self.go.expand(n, hidden)
        inputs: list[Tensor] = [go]  # the inputs of the current segment's steps
        outputs: list[Tensor] = []  # each segment's top-layer hidden states (n, S, H)
        anchors: list[Tensor] = []
        by_kind: dict[str, tuple[list[int], list[int]]] = {}  # kind -> (steps, token positions)
        anchor_pos: list[int] = []  # each anchor's first flag position
        last = len(space.decisions) - 1
        pos = 0
        for step, d in enumerate(space.decisions):
            if isinstance(d, Categorical):
                steps, positions = by_kind.setdefault(d.kind, ([], []))
                steps.append(step)
                positions.append(pos)
                if step < last:
                    inputs.append(self.embeddings[d.kind](tokens[:, pos]))
            else:
                out, state = self._run_cells(torch.stack(inputs, 1), state)
                outputs.append(out)
                x = go
                if d.layer:
                    chosen = tokens[:, pos : pos + d.layer].to(out.dtype)
                    x = (chosen[:, :, None] * torch.stack(anchors, 1)).sum(1)
                    x = x / (1.0 + chosen.sum(1, keepdim=True))
                anchors.append(out[:, -1])
                anchor_pos.append(pos)
                inputs = [x] if step < last else []
            pos += d.num_tokens
        if inputs:
            outputs.append(self._run_cells(torch.stack(inputs, 1), state)[0])
        steps_h = torch.cat(outputs, 1)  # (n, steps, H): the state each decision is drawn from
        parts = [self._score_kind(kind, steps_h[:, steps], tokens[:, positions], lean)
                 for kind, (steps, positions) in by_kind.items()]
        order = [p for _, positions in by_kind.values() for p in positions]
        if len(anchors) > 1:
            parts.append(self._score_flags(torch.stack(anchors, 1), tokens, anchor_pos, lean))
            order += [anchor_pos[i] + j for i in range(1, len(anchors)) for j in range(i)]
        back = torch.empty(len(order), dtype=torch.long)
        back[torch.tensor(order)] = torch.arange(len(order))  # token position -> column
        if lean:  # log-probabilities only (the parts carry them thrice)
            logp = torch.cat([part[0] for part in parts], 1)[:, back]
            return ControllerOutput(tokens=tokens, log_prob=logp.sum(1), entropy=logp.new_zeros(n),
                                    token_log_prob=logp, token_hidden=logp.new_zeros(n, 0, hidden))
        logp, ent, hid = (torch.cat([part[k] for part in parts], 1) for k in range(3))
        logp, ent, hid = logp[:, back], ent[:, back], hid[:, back]
        return ControllerOutput(tokens=tokens, log_prob=logp.sum(1), entropy=ent.sum(1),
                                token_log_prob=logp, token_hidden=hid, token_entropy=ent)

    def _run_cells(self, inputs: Tensor, state: list[tuple[Tensor, Tensor]]
                   ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
        """The stacked cells over a segment of known inputs (n, S, H), in one fused call
        with the cells' own weights (the gate layouts of LSTMCell/LSTM and GRUCell/GRU
        are the same); returns the top layer's states and the final state per layer."""
        weights = [w for cell in self.cells for w in _weights(cell)]
        layers = len(self.cells)
        h0 = torch.stack([h for h, _ in state])
        if self.config.cell == "gru":
            out, h_n = torch.gru(inputs, h0, weights, True, layers, 0.0, False, False, True)
            return out, [(h, h) for h in h_n.unbind(0)]
        c0 = torch.stack([c for _, c in state])
        out, h_n, c_n = torch.lstm(inputs, (h0, c0), weights, True, layers, 0.0, False, False, True)
        return out, list(zip(h_n.unbind(0), c_n.unbind(0), strict=True))

    def _score_kind(self, kind: str, h: Tensor, tokens: Tensor, lean: bool = False
                    ) -> tuple[Tensor, Tensor, Tensor]:
        """Log-probability and entropy of one kind's tokens (n, k) from their states
        (``lean``: the log-probabilities in every slot)."""
        logp_all = F.log_softmax(self._squash(self.heads[kind](h)), dim=-1)
        logp = logp_all.gather(2, tokens[:, :, None]).squeeze(2)
        if lean:
            return logp, logp, logp
        return logp, -(logp_all.exp() * logp_all).sum(2), h

    def _score_flags(self, anchors: Tensor, tokens: Tensor, anchor_pos: list[int], lean: bool = False
                     ) -> tuple[Tensor, Tensor, Tensor]:
        """Every skip flag at once: the attention of each anchor i (query) over the
        earlier anchors j < i, flags ordered by (i, j) as the tokens are."""
        query = torch.tanh(self.w_prev(anchors)[:, None, :, :] + self.w_curr(anchors)[:, :, None, :])
        logit = self._squash(self.v(query).squeeze(-1))  # (n, i, j)
        i, j = torch.tril_indices(anchors.shape[1], anchors.shape[1], -1)
        logit = logit[:, i, j]
        pair = torch.stack([F.logsigmoid(-logit), F.logsigmoid(logit)], -1)
        positions = torch.tensor(anchor_pos)[i] + j
        logp = pair.gather(2, tokens[:, positions][:, :, None]).squeeze(2)
        if lean:
            return logp, logp, logp
        return logp, -(pair.exp() * pair).sum(2), anchors[:, i]

    # -- the walk ------------------------------------------------------------------------
    def _squash(self, logits: Tensor) -> Tensor:
        if self.config.temperature != 1.0:  # x / 1.0 is x: one operation per step less
            logits = logits / self.config.temperature
        if self.config.tanh_constant is not None:
            logits = self.config.tanh_constant * torch.tanh(logits)
        return logits

    def _step(self, x: Tensor, state: list[tuple[Tensor, Tensor]],
              weights_of: list[tuple[Tensor, Tensor, Tensor, Tensor]]) -> Tensor:
        # the cells' own kernels, called without nn.Module's per-call checks and hooks
        # (a fifth of a 20-layer ask went to them); the same numbers as cell(x, state)
        gru = self.config.cell == "gru"
        for layer, weights in enumerate(weights_of):
            if gru:
                h = torch.gru_cell(x, state[layer][0], *weights)
                state[layer] = (h, h)  # a GRU has no cell state; the pair keeps one layout
            else:
                h, c = torch.lstm_cell(x, state[layer], *weights)
                state[layer] = (h, c)
            x = h
        return x

    def _walk(
        self, n: int, forced: Tensor | None, gen: torch.Generator | None,
        pick: Picker | None = None, space: SearchSpace | None = None,
        with_entropy: bool = True, pick_flags: FlagPicker | None = None,
    ) -> ControllerOutput:
        """One pass over the decisions; every token goes through ``choose``.

        ``choose(pos, logp)`` gets the log-probabilities (n, k) of token ``pos``'s k values
        -- a skip flag is a 2-way choice (absent, present) -- and returns the tokens (n,).
        ``space``: a member of the family to walk (default: the controller's own).
        Modules are called through their functional forms (the same kernels, without
        nn.Module's per-call overhead, which a 20-layer walk pays some 300 times).
        """
        cells = [_weights(cell) for cell in self.cells]
        heads = {k: (cast(Tensor, m.weight), cast(Tensor, m.bias)) for k, m in self.heads.items()}
        embeddings = {k: cast(Tensor, m.weight) for k, m in self.embeddings.items()}
        hidden = self.config.hidden_size
        zeros = self.go.new_zeros(n, hidden)
        state = [(zeros, zeros) for _ in self.cells]
        x = self.go.expand(n, hidden)
        row_sets, row_tiers = self._row_sets(n), self._row_tiers(n)
        condition: Tensor | None = None
        if row_tiers is not None and self.tier_embedding is not None:
            condition = self.tier_embedding(torch.tensor(row_tiers, dtype=torch.long))
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
            # the condition is read with every input: each decision sees its tier directly
            h = self._step(x if condition is None else x + condition, state, cells)
            current_h[0] = h
            if isinstance(d, Categorical):
                logp_all = F.log_softmax(self._squash(F.linear(h, *heads[d.kind])), dim=-1)
                if row_sets is not None:
                    logp_all, plogp = self._restrict(logp_all, out, n, row_sets)
                    entropy = entropy - plogp
                    token_ent.append(-plogp)
                elif with_entropy:
                    plogp = (logp_all.exp() * logp_all).sum(1)
                    entropy = entropy - plogp
                    token_ent.append(-plogp)
                x = F.embedding(choose(pos, logp_all), embeddings[d.kind])
            else:
                if d.layer == 0:
                    x = self.go.expand(n, hidden)
                else:
                    query = torch.tanh(torch.stack(anchors_w, 1)
                                       + F.linear(h, self.w_curr.weight)[:, None, :])
                    logit = self._squash(F.linear(query, self.v.weight).squeeze(-1))  # (n, layer)
                    # one Bernoulli per earlier layer: log P(absent), log P(present)
                    pair = torch.stack([F.logsigmoid(-logit), F.logsigmoid(logit)], -1)
                    if row_sets is not None:
                        picked = []
                        for j in range(d.layer):  # each flag's mask depends on the ones before
                            flag_logp, plogp = self._restrict(pair[:, j], out, n, row_sets)
                            entropy = entropy - plogp
                            token_ent.append(-plogp)
                            picked.append(choose(pos + j, flag_logp))
                        flags = torch.stack(picked, 1)
                    else:
                        if with_entropy:
                            plogp = pair.exp() * pair
                            entropy = entropy - plogp.sum((1, 2))
                            token_ent.extend((-plogp.sum(2)).unbind(1))
                        if forced is None and pick is None:
                            flags = self._draw_flags(pair, gen, token_logp, token_h, out, current_h[0])
                        elif forced is None and pick_flags is not None:
                            flags = self._record_flags(pair, pick_flags(pos, pair.detach()),
                                                       token_logp, token_h, out, current_h[0])
                        else:
                            flags = torch.stack([choose(pos + j, pair[:, j]) for j in range(d.layer)], 1)
                    chosen = flags.to(logit.dtype)
                    x = (chosen[:, :, None] * torch.stack(anchors, 1)).sum(1)
                    x = x / (1.0 + chosen.sum(1, keepdim=True))
                anchors.append(h)
                anchors_w.append(F.linear(h, self.w_prev.weight))
            pos += d.num_tokens
        if out:
            tokens, per_token = torch.stack(out, 1), torch.stack(token_logp, 1)
            hiddens = torch.stack(token_h, 1)
            per_token_ent = torch.stack(token_ent, 1) if token_ent else torch.zeros_like(per_token)
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
        return Controller._record_flags(pair, flags, token_logp, token_h, out, h)

    @staticmethod
    def _record_flags(pair: Tensor, flags: Tensor, token_logp: list[Tensor], token_h: list[Tensor],
                      out: list[Tensor], h: Tensor) -> Tensor:
        """Record an anchor's drawn flags (n, layer) as ``choose`` records each token."""
        layer = pair.shape[1]
        token_logp.extend(pair.gather(2, flags[:, :, None]).squeeze(2).unbind(1))
        token_h.extend([h] * layer)
        out.extend(flags.unbind(1))
        return flags

    def _row_tiers(self, n: int) -> list[int] | None:
        if self._tiers is None or len(self._tiers) == n:
            return self._tiers
        if len(self._tiers) == 1:
            return self._tiers * n
        raise ValueError(f"controller: {len(self._tiers)} tiers for {n} rows")

    def _row_sets(self, n: int) -> list[FeasiblePrefixes | None] | None:
        """Each row's feasible set: its tier's under :meth:`conditioned`, else
        ``self.feasible``; None when no row is constrained."""
        tiers = self._row_tiers(n)
        if tiers is None:
            return None if self.feasible is None else [self.feasible] * n
        sets = [self._tier_sets[t] for t in tiers]
        return None if all(s is None for s in sets) else sets

    def _restrict(self, logp: Tensor, prefix: list[Tensor], n: int,
                  sets: Sequence[FeasiblePrefixes | None]) -> tuple[Tensor, Tensor]:
        """Renormalize the next token's log-probabilities (n, k) over the tokens that keep a
        feasible completion (row i: in ``sets[i]``; None: every token); returns them and
        sum p log p. A prefix that already left the feasible set (only a scored, never a
        sampled row) keeps every token: its log P is already -inf."""
        rows = torch.stack(prefix, 1).tolist() if prefix else [[] for _ in range(n)]
        k = logp.shape[1]
        masks = [[True] * k if f is None else f.allowed(r) for f, r in zip(sets, rows, strict=True)]
        allowed = torch.tensor([m if any(m) else [True] * len(m) for m in masks],
                               dtype=torch.bool, device=logp.device)
        masked = F.log_softmax(logp.masked_fill(~allowed, float("-inf")), dim=-1)
        # p log p with 0 (not 0 * -inf = nan, in value or gradient) for the masked tokens
        plogp = (masked.exp() * masked.masked_fill(~allowed, 0.0)).sum(1)
        return masked, plogp


def _weights(cell: nn.Module) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """An LSTMCell's or GRUCell's (w_ih, w_hh, b_ih, b_hh), the order the fused kernels take."""
    names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
    w_ih, w_hh, b_ih, b_hh = (t for t in (getattr(cell, n) for n in names) if isinstance(t, Tensor))
    return w_ih, w_hh, b_ih, b_hh


def _categorical_kinds(space: SearchSpace) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for d in space.decisions:
        if isinstance(d, Categorical):
            kinds[d.kind] = len(d.options)
    return kinds
