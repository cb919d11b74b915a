"""The paper's recurrent-cell space (Zoph & Le 2017, section 3.4).

A cell is a full binary tree with ``base`` leaves (a power of two). Each leaf combines the
input and the previous hidden state, ``act(combine(W x_t, W' h_{t-1}))``; each inner node
combines its two children, ``act(combine(a, b))``. Per node the controller picks the
combination (add, element-wise multiply) and the activation (identity, tanh, sigmoid,
ReLU). Two more blocks carry the memory: the *cell inject* (how c_{t-1} is merged into the
node that receives it: combination and activation, applied to that node's output) and the
*cell indices* (which node receives c_{t-1}; which node's pre-activation value becomes
c_t). The root's output is h_t.

Nodes are numbered leaves first, then level by level up to the root (base 8: leaves 0-7,
8-11, 12-13, root 14), and the tokens come in the paper's order: every node's combination
and activation, then the inject's, then the two cell indices. Base 8 has
8^15 * 8 * 15^2 ~ 6.3e16 cells, the paper's count.
"""

from __future__ import annotations

from typing import Any

from nasrl.spaces.base import Architecture, Categorical, Decision, SearchSpace, SpaceError
from nasrl.spaces.registry import register_space

COMBINES: tuple[str, ...] = ("add", "mul")
ACTIVATIONS: tuple[str, ...] = ("identity", "tanh", "sigmoid", "relu")


def tree_children(base: int) -> list[tuple[int, int] | None]:
    """For every node, its two children (None for a leaf), leaves first, root last."""
    nodes: list[tuple[int, int] | None] = [None] * base
    level = list(range(base))
    while len(level) > 1:
        nxt = []
        for a, b in zip(level[::2], level[1::2], strict=True):
            nodes.append((a, b))
            nxt.append(len(nodes) - 1)
        level = nxt
    return nodes


@register_space("rnn_cell")
class RNNCellSpace(SearchSpace):
    name = "rnn_cell"

    def __init__(self, base: int = 8) -> None:
        if isinstance(base, bool) or not isinstance(base, int) or base < 2 or base & (base - 1):
            raise SpaceError(f"rnn_cell: base must be a power of two >= 2, got {base!r}")
        self.base = base
        self.children = tree_children(base)
        self.num_nodes = len(self.children)
        decisions: list[Decision] = []
        for i in range(self.num_nodes):
            decisions += [
                Categorical(f"node{i}.combine", COMBINES, "combine"),
                Categorical(f"node{i}.activation", ACTIVATIONS, "activation"),
            ]
        nodes = tuple(range(self.num_nodes))
        decisions += [
            Categorical("inject.combine", COMBINES, "combine"),
            Categorical("inject.activation", ACTIVATIONS, "activation"),
            Categorical("cell.inject_node", nodes, "node_index"),
            Categorical("cell.output_node", nodes, "node_index"),
        ]
        super().__init__(decisions)

    def params(self) -> dict[str, Any]:
        return {"base": self.base}

    @classmethod
    def infer_params(cls, choices: dict[str, Any]) -> dict[str, Any]:
        nodes = sum(1 for key in choices if key.endswith(".combine") and key.startswith("node"))
        return {"base": (nodes + 1) // 2}

    def describe(self, arch: Architecture) -> str:
        arch = self.validate(arch)
        parts = []
        for i in range(self.num_nodes):
            op = "+" if arch[f"node{i}.combine"] == "add" else "*"
            parts.append(f"{i}:{arch[f'node{i}.activation']}({op})")
        inject = "+" if arch["inject.combine"] == "add" else "*"
        return (
            " ".join(parts) + f" | c_prev -> node {arch['cell.inject_node']} "
            f"{arch['inject.activation']}({inject}), c_t = node {arch['cell.output_node']}"
        )
