"""The feasible set of a space under hard limits known before training, as token prefixes.

A hard limit on a static cost (parameters, MACs, FLOPs) is known for every architecture
without training it. A sequential sampler can then stay inside the feasible set *by
construction*: at each decision it only offers the tokens after which at least one
completion is feasible (constrained decoding). :class:`FeasiblePrefixes` answers that
question for any space whose feasible architectures can be listed -- a tabular benchmark,
or any space small enough to cost every architecture once -- by keeping, for every
feasible prefix, which next tokens keep it feasible. Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from nasrl.spaces.base import Architecture, SearchSpace, SpaceError


class FeasiblePrefixes:
    """Which tokens may follow each prefix so that a feasible completion remains."""

    def __init__(self, space: SearchSpace, feasible: Iterable[Architecture]) -> None:
        self.space = space
        self.arities = space.token_arities()
        self._next: dict[tuple[int, ...], set[int]] = {}
        self._rows: set[tuple[int, ...]] = set()
        for arch in feasible:
            row = tuple(space.to_tokens(arch))
            self._rows.add(row)
            for d, tok in enumerate(row):
                self._next.setdefault(row[:d], set()).add(tok)
        if not self._rows:
            raise SpaceError(f"space {space.name!r}: no architecture meets the hard limits")

    @classmethod
    def from_costs(
        cls, space: SearchSpace, costs: Iterable[tuple[Architecture, Mapping[str, float]]],
        limits: Mapping[str, float],
    ) -> FeasiblePrefixes:
        """From (architecture, static costs) of every architecture and limits metric -> max.
        An architecture missing a limited cost counts as infeasible (it cannot be vouched for)."""
        return cls(space, (a for a, c in costs if _within(c, limits)))

    @classmethod
    def enumerate(
        cls, space: SearchSpace, cost: Callable[[Architecture], Mapping[str, float]],
        limits: Mapping[str, float], max_size: int = 100_000,
    ) -> FeasiblePrefixes:
        """Cost every architecture of a small space once (refused above ``max_size``)."""
        if space.size() > max_size:
            raise SpaceError(f"space {space.name!r}: {space.size()} architectures are too many "
                             f"to list (at most {max_size})")
        archs = (space.from_tokens(row) for row in _all_rows(space.token_arities()))
        return cls.from_costs(space, ((a, cost(a)) for a in archs), limits)

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, arch: Architecture) -> bool:
        return tuple(self.space.to_tokens(arch)) in self._rows

    def allowed(self, prefix: Sequence[int]) -> list[bool]:
        """For each value of the next token: does some feasible completion start with it?"""
        nxt = self._next.get(tuple(prefix), set())
        return [t in nxt for t in range(self.arities[len(prefix)])]


def _within(costs: Mapping[str, float], limits: Mapping[str, float]) -> bool:
    return all(m in costs and float(costs[m]) <= limit for m, limit in limits.items())


def _all_rows(arities: Sequence[int]) -> Iterable[tuple[int, ...]]:
    import itertools

    return itertools.product(*(range(k) for k in arities))
