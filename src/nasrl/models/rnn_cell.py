"""Recurrent cells from ``rnn_cell`` architectures, and the word-level language model
that holds them (embedding, stacked cells, dropout, optional tied weights).

The leaves' input projections W x_t for every leaf and every step are one matmul over the
whole sequence; their hidden projections W' h_{t-1} one matmul per step. The tree above
them is element-wise work. Batch-first throughout.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrl.models.registry import register_builder
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.rnn_cell import RNNCellSpace

ACTIVATION: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda t: t,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "relu": F.relu,
}
COMBINE: dict[str, Callable[[Tensor, Tensor], Tensor]] = {"add": torch.add, "mul": torch.mul}
State = tuple[Tensor, Tensor]  # (h, c)


class SearchedCell(nn.Module):
    """One recurrent cell: ``step(xp_t, (h, c)) -> (h, c)`` on projected inputs."""

    def __init__(self, space: RNNCellSpace, arch: Architecture, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.base, self.hidden_size = space.base, hidden_size
        self.children_of = space.children
        self.root = space.num_nodes - 1
        self.combine = [str(arch[f"node{i}.combine"]) for i in range(space.num_nodes)]
        self.activation = [str(arch[f"node{i}.activation"]) for i in range(space.num_nodes)]
        self.inject_combine, self.inject_activation = (
            str(arch["inject.combine"]),
            str(arch["inject.activation"]),
        )
        self.inject_node, self.output_node = (
            int(str(arch["cell.inject_node"])),
            int(str(arch["cell.output_node"])),
        )
        self.wx = nn.Linear(input_size, self.base * hidden_size)
        self.wh = nn.Linear(hidden_size, self.base * hidden_size, bias=False)

    def project_inputs(self, x: Tensor) -> Tensor:
        """W x_t for all leaves and all steps: (B, T, input) -> (B, T, base * hidden)."""
        return cast(Tensor, self.wx(x))

    def step(self, xp: Tensor, state: State) -> State:
        h_prev, c_prev = state
        hp = self.wh(h_prev)
        pre: list[Tensor] = []
        out: list[Tensor] = []
        size = self.hidden_size
        for i, kids in enumerate(self.children_of):
            if kids is None:
                a, b = xp[:, i * size : (i + 1) * size], hp[:, i * size : (i + 1) * size]
            else:
                a, b = out[kids[0]], out[kids[1]]
            p = COMBINE[self.combine[i]](a, b)
            o = ACTIVATION[self.activation[i]](p)
            if i == self.inject_node:  # c_{t-1} merged into this node's output
                o = ACTIVATION[self.inject_activation](COMBINE[self.inject_combine](o, c_prev))
            pre.append(p)
            out.append(o)
        return out[self.root], pre[self.output_node]

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        xp = self.project_inputs(x)
        outputs = []
        for t in range(x.shape[1]):
            state = self.step(xp[:, t], state)
            outputs.append(state[0])
        return torch.stack(outputs, dim=1), state


class LSTMCellLayer(nn.Module):
    """The reference: a standard LSTM layer with the same interface (for baselines)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: Tensor, state: State) -> tuple[Tensor, State]:
        out, (h, c) = self.lstm(x, (state[0][None], state[1][None]))
        return out, (h[0], c[0])


class CellLanguageModel(nn.Module):
    """Embedding -> dropout -> stacked cells (dropout between) -> dropout -> decoder."""

    def __init__(
        self,
        layers: list[nn.Module],
        vocab_size: int,
        embedding_size: int,
        hidden_size: int,
        dropout: float,
        tie_weights: bool,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.layers = nn.ModuleList(layers)
        self.hidden_size = hidden_size
        self.drop = nn.Dropout(dropout)
        self.decoder = nn.Linear(hidden_size, vocab_size)
        if tie_weights:
            if embedding_size != hidden_size:
                raise ValueError("tie_weights needs embedding_size == hidden_size")
            self.decoder.weight = self.embedding.weight
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)

    def initial_state(self, batch: int, device: torch.device) -> list[State]:
        zeros = torch.zeros(batch, self.hidden_size, device=device)
        return [(zeros, zeros) for _ in self.layers]

    def forward(self, tokens: Tensor, state: list[State] | None = None) -> tuple[Tensor, list[State]]:
        if state is None:
            state = self.initial_state(tokens.shape[0], tokens.device)
        h = self.drop(self.embedding(tokens))
        new_state = []
        for layer, s in zip(self.layers, state, strict=True):
            h, s = layer(h, s)
            h = self.drop(h)
            new_state.append(s)
        return self.decoder(h), new_state


def language_model(
    cell: Callable[[int, int], nn.Module],
    vocab_size: int,
    *,
    embedding_size: int = 200,
    hidden_size: int = 200,
    num_layers: int = 2,
    dropout: float = 0.2,
    tie_weights: bool = True,
) -> CellLanguageModel:
    sizes = [embedding_size] + [hidden_size] * (num_layers - 1)
    return CellLanguageModel(
        [cell(s, hidden_size) for s in sizes], vocab_size, embedding_size, hidden_size, dropout, tie_weights
    )


def lstm_language_model(vocab_size: int, **options: object) -> CellLanguageModel:
    """The baseline: the same language model with standard LSTM layers."""
    return language_model(LSTMCellLayer, vocab_size, **options)  # type: ignore[arg-type]


@register_builder("rnn_cell", task="language")
def build_rnn_cell(
    space: SearchSpace,
    arch: Architecture,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    embedding_size: int = 200,
    hidden_size: int = 200,
    num_layers: int = 2,
    dropout: float = 0.2,
    tie_weights: bool = True,
) -> nn.Module:
    """``num_classes`` is the vocabulary size; ``input_shape`` (sequence length) is unused."""
    assert isinstance(space, RNNCellSpace)
    return language_model(
        lambda i, h: SearchedCell(space, arch, i, h),
        num_classes,
        embedding_size=embedding_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        dropout=dropout,
        tie_weights=tie_weights,
    )
