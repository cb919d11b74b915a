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

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence

from nasrl.spaces.base import Architecture, SearchSpace, SpaceError


class FeasiblePrefixes:
    """Which tokens may follow each prefix so that a feasible completion remains."""

    def __init__(self, space: SearchSpace, feasible: Iterable[Architecture],
                 costs: Mapping[str, Mapping[str, float]] | None = None) -> None:
        """``costs``: static costs by architecture key, kept (for the feasible ones) so the
        set can be cut further at a lower limit (:meth:`within`, a front search's tiers)."""
        self.space = space
        self.arities = space.token_arities()
        self._next: dict[tuple[int, ...], set[int]] = {}
        self._rows: set[tuple[int, ...]] = set()
        self._sorted: list[bytes] | None = None  # the rows as bytes, sorted (completions)
        self.costs: dict[tuple[int, ...], dict[str, float]] | None = None if costs is None else {}
        self.limits: dict[str, float] = {}
        """The hard limits the set was cut at, metric -> max (empty when not known)."""
        for arch in feasible:
            row = tuple(space.to_tokens(arch))
            self._rows.add(row)
            if self.costs is not None and costs is not None:
                self.costs[row] = {m: float(v) for m, v in costs[arch.key].items()}
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
        An architecture missing a limited cost counts as infeasible (it cannot be vouched for).
        The feasible architectures' costs are kept (see :meth:`within`)."""
        # only the limited costs are kept: a table's metrics also hold the accuracies
        kept = {a.key: (a, {m: float(c[m]) for m in limits}) for a, c in costs if _within(c, limits)}
        out = cls(space, (a for a, _ in kept.values()), {k: c for k, (_, c) in kept.items()})
        out.limits = dict(limits)
        return out

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

    def rows(self) -> list[tuple[int, ...]]:
        """The feasible architectures' token rows, sorted (a stable order to pick from)."""
        return sorted(self._rows)

    def __contains__(self, arch: Architecture) -> bool:
        return tuple(self.space.to_tokens(arch)) in self._rows

    def cost_values(self, metric: str) -> list[float]:
        """The ``metric`` cost of every feasible architecture (unordered)."""
        return [c[metric] for c in self._known_costs(metric).values()]

    def within(self, metric: str, limit: float) -> FeasiblePrefixes:
        """The subset whose ``metric`` is at most ``limit`` (a tighter hard limit)."""
        costs = self._known_costs(metric)
        keep = {r: c for r, c in costs.items() if c[metric] <= limit}
        archs = [self.space.from_tokens(list(r)) for r in keep]
        out = FeasiblePrefixes(self.space, archs, {a.key: c for a, c in zip(archs, keep.values(),
                                                                            strict=True)})
        out.limits = {**self.limits, metric: min(limit, self.limits.get(metric, limit))}
        return out

    def _known_costs(self, metric: str) -> dict[tuple[int, ...], dict[str, float]]:
        if self.costs is None:
            raise SpaceError(f"space {self.space.name!r}: the feasible set was built without costs")
        if any(metric not in c for c in self.costs.values()):
            raise SpaceError(f"space {self.space.name!r}: not every feasible architecture has a "
                             f"{metric!r} cost")
        return self.costs

    def completions(self, prefix: Sequence[int]) -> int:
        """How many feasible architectures start with ``prefix``: once that many of them
        are seen, sampling without replacement must close the prefix, however much policy
        mass rounding leaves it (a sharp constrained policy's last unseen ones can be 1e-9
        likely, under float32's rounding of the seen ones' mass). The rows are kept sorted
        as bytes, a prefix's rows found by binary search: memory linear in the rows."""
        if self._sorted is None:
            self._sorted = sorted(_row_bytes(row) for row in self._rows)
        key = _row_bytes(prefix)
        # every row below the prefix sorts before prefix + 0xffff (a token is an option's index)
        return bisect.bisect_left(self._sorted, key + b"\xff\xff") - bisect.bisect_left(self._sorted, key)

    def contains_row(self, row: Sequence[int]) -> bool:
        """Whether this token row is a feasible architecture's."""
        return tuple(row) in self._rows

    def allowed(self, prefix: Sequence[int]) -> list[bool]:
        """For each value of the next token: does some feasible completion start with it?"""
        nxt = self._next.get(tuple(prefix), set())
        return [t in nxt for t in range(self.arities[len(prefix)])]


def _within(costs: Mapping[str, float], limits: Mapping[str, float]) -> bool:
    return all(m in costs and float(costs[m]) <= limit for m, limit in limits.items())


def _row_bytes(row: Sequence[int]) -> bytes:
    # big-endian 16-bit tokens: bytes order as the rows do, token by token
    return b"".join(int(t).to_bytes(2, "big") for t in row)


def _all_rows(arities: Sequence[int]) -> Iterable[tuple[int, ...]]:
    import itertools

    return itertools.product(*(range(k) for k in arities))
