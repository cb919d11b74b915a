"""NAS-Bench-201 cell space (Dong & Yang, ICLR 2020).

A cell is a DAG of 4 nodes; each of the 6 edges ``j -> i`` (j < i) carries one of 5
operations, 5^6 = 15,625 cells. Architectures print and parse in the benchmark's own
string format, e.g. ``|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|...|``, where
group ``i`` lists the edges entering node ``i`` as ``op~j``.
"""

from __future__ import annotations

from typing import Any

from nasrl.spaces.base import Architecture, Categorical, SearchSpace, SpaceError
from nasrl.spaces.registry import register_space

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
EDGES: tuple[tuple[int, int], ...] = tuple((i, j) for i in range(1, NUM_NODES) for j in range(i))


def edge_name(i: int, j: int) -> str:
    return f"edge_{i}_{j}"


@register_space("nb201")
class NB201Space(SearchSpace):
    name = "nb201"

    def __init__(self) -> None:
        super().__init__([Categorical(edge_name(i, j), OPS, kind="op") for i, j in EDGES])

    def describe(self, arch: Architecture) -> str:
        return self.to_string(arch)

    def to_string(self, arch: Architecture) -> str:
        arch = self.validate(arch)
        groups = []
        for i in range(1, NUM_NODES):
            groups.append("|".join(f"{arch[edge_name(i, j)]}~{j}" for j in range(i)))
        return "|" + "|+|".join(groups) + "|"

    def from_string(self, text: str) -> Architecture:
        text = text.strip()
        groups = text.split("+")
        if len(groups) != NUM_NODES - 1:
            raise SpaceError(f"nb201: {text!r} must have {NUM_NODES - 1} '+'-separated nodes")
        choices: dict[str, Any] = {}
        for i, group in enumerate(groups, start=1):
            if not (group.startswith("|") and group.endswith("|")):
                raise SpaceError(f"nb201: node {i} group {group!r} must be wrapped in '|'")
            edges = group[1:-1].split("|")
            if len(edges) != i:
                raise SpaceError(f"nb201: node {i} needs {i} incoming edges, got {group!r}")
            for edge in edges:
                op, sep, src = edge.partition("~")
                if not sep or not src.isdigit() or int(src) >= i:
                    raise SpaceError(f"nb201: bad edge {edge!r} into node {i}")
                name = edge_name(i, int(src))
                if name in choices:
                    raise SpaceError(f"nb201: edge {src}->{i} given twice")
                choices[name] = op
        return self.make(choices)

    def parse(self, text: str) -> Architecture:
        if text.lstrip().startswith("{"):
            return super().parse(text)
        return self.from_string(text)
