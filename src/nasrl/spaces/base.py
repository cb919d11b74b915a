"""Search-space model: decisions, architectures and spaces.

Nothing here imports torch: an :class:`Architecture` is a plain, frozen value that can be
stored, hashed, sent between processes and compared, and only ``nasrl.models`` turns it
into a network.

A space is an ordered list of decisions. The controller walks that list in order, so the
order of the decisions is also the order in which tokens are emitted.

* :class:`Categorical` -- pick one option; one token (the option's index).
* :class:`SkipSet` -- at layer ``i``'s anchor point, pick any subset of the earlier layers
  ``0 .. i-1`` as inputs; ``i`` tokens, one 0/1 flag per earlier layer.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import numpy as np

from nasrl.errors import NasrlError

Option: TypeAlias = int | float | str
Choice: TypeAlias = Option | tuple[int, ...]


class SpaceError(NasrlError):
    """A space definition, an architecture or its serialized form is invalid.

    The message always names the offending field, so it can be shown to users as is.
    """


@dataclass(frozen=True)
class Categorical:
    """Pick exactly one of ``options``.

    ``kind`` groups decisions that mean the same thing at different positions (all filter
    heights, all NAS-Bench-201 edges): the controller gives each kind one embedding table
    and one softmax head, so a controller is independent of the depth of the space.
    """

    name: str
    options: tuple[Option, ...]
    kind: str

    @property
    def num_tokens(self) -> int:
        return 1

    @property
    def size(self) -> int:
        return len(self.options)

    def validate(self, value: Any) -> Option:
        # bool is an int subclass: True must not silently match the option 1.
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise SpaceError(f"{self.name}: expected one of {list(self.options)}, got {value!r}")
        for option in self.options:
            if type(option) is type(value) and option == value:
                return option
            # JSON has one number type: accept 3.0 for the int option 3 and vice versa.
            if isinstance(option, int | float) and not isinstance(value, str) and option == value:
                return option
        raise SpaceError(f"{self.name}: {value!r} is not one of {list(self.options)}")

    def encode(self, value: Choice) -> list[int]:
        return [self.options.index(self.validate(value))]

    def decode(self, tokens: Sequence[int]) -> Option:
        (token,) = tokens
        if not 0 <= token < len(self.options):
            raise SpaceError(f"{self.name}: token {token} outside 0..{len(self.options) - 1}")
        return self.options[token]

    def sample(self, rng: np.random.Generator) -> Option:
        return self.options[int(rng.integers(len(self.options)))]

    def mutate(self, value: Choice, rng: np.random.Generator) -> Option:
        others = [o for o in self.options if o != value]
        return others[int(rng.integers(len(others)))]

    def to_json_value(self, value: Choice) -> Any:
        return value


@dataclass(frozen=True)
class SkipSet:
    """At the anchor point of layer ``layer``, choose which earlier layers feed it.

    The value is a sorted tuple of layer indices in ``0 .. layer-1``; the empty tuple means
    "no skip input" (the builder then feeds the image, as in the paper). Layer 0 has an
    anchor too -- its hidden state is what later layers attend to -- but nothing to choose.
    """

    name: str
    layer: int
    kind: str = "anchor"

    @property
    def num_tokens(self) -> int:
        return self.layer

    @property
    def size(self) -> int:
        return int(2**self.layer)

    def validate(self, value: Any) -> tuple[int, ...]:
        if isinstance(value, str | bytes) or not isinstance(value, Iterable):
            raise SpaceError(f"{self.name}: expected a list of earlier layer indices, got {value!r}")
        items = list(value)
        for j in items:
            if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < self.layer:
                raise SpaceError(
                    f"{self.name}: input {j!r} is not an earlier layer (0..{self.layer - 1})"
                )
        if len(set(items)) != len(items):
            raise SpaceError(f"{self.name}: repeated input in {items}")
        return tuple(sorted(items))

    def encode(self, value: Choice) -> list[int]:
        chosen = set(self.validate(value))
        return [int(j in chosen) for j in range(self.layer)]

    def decode(self, tokens: Sequence[int]) -> tuple[int, ...]:
        if any(t not in (0, 1) for t in tokens):
            raise SpaceError(f"{self.name}: skip tokens must be 0 or 1, got {list(tokens)}")
        return tuple(j for j, t in enumerate(tokens) if t)

    def sample(self, rng: np.random.Generator) -> tuple[int, ...]:
        flags = rng.integers(0, 2, size=self.layer)
        return tuple(int(j) for j in np.flatnonzero(flags))

    def mutate(self, value: Choice, rng: np.random.Generator) -> tuple[int, ...]:
        flipped = int(rng.integers(self.layer))
        chosen = set(self.validate(value)) ^ {flipped}
        return tuple(sorted(chosen))

    def to_json_value(self, value: Choice) -> Any:
        return list(self.validate(value))


Decision: TypeAlias = Categorical | SkipSet


@dataclass(frozen=True)
class Architecture:
    """A point of a search space: the space's name and one value per decision.

    Frozen and canonical: choices are kept sorted by decision name, so two architectures
    with the same choices are equal and hash alike however they were made. ``key`` is a
    SHA-256 of the canonical JSON -- stable across processes and Python versions, unlike
    ``hash()`` -- and is what stores and caches use to recognise a repeat.
    """

    space: str
    choices: tuple[tuple[str, Choice], ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(sorted(self.choices, key=lambda kv: kv[0])))

    def __getitem__(self, name: str) -> Choice:
        for key, value in self.choices:
            if key == name:
                return value
        raise KeyError(name)

    def as_dict(self) -> dict[str, Choice]:
        return dict(self.choices)

    def to_dict(self) -> dict[str, Any]:
        return {
            "space": self.space,
            "choices": {k: list(v) if isinstance(v, tuple) else v for k, v in self.choices},
        }

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace. Equal architectures give equal text."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @functools.cached_property
    def key(self) -> str:
        # cached: a search reads it many times per architecture (seen sets, tables,
        # stores), and the architecture is frozen
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        """Read the form written by :meth:`to_dict` (not yet checked against a space)."""
        if not isinstance(data, Mapping):
            raise SpaceError(f"architecture: expected a JSON object, got {type(data).__name__}")
        space, choices = data.get("space"), data.get("choices")
        if not isinstance(space, str):
            raise SpaceError("architecture: field 'space' must be a space name")
        if not isinstance(choices, Mapping):
            raise SpaceError("architecture: field 'choices' must be an object")
        extra = set(data) - {"space", "choices"}
        if extra:
            raise SpaceError(f"architecture: unknown field {sorted(extra)[0]!r}")
        return cls(space, tuple((str(k), _from_json_value(v)) for k, v in choices.items()))

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpaceError(f"architecture: not valid JSON ({err.msg} at char {err.pos})") from None
        return cls.from_dict(data)


def _from_json_value(value: Any) -> Choice:
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, int | float | str):
        return value
    raise SpaceError(f"architecture: unsupported value {value!r}")


class SearchSpace:
    """An ordered list of decisions with validation and conversions.

    Contract for subclasses: set ``name`` and pass the decisions to ``__init__``; override
    :meth:`describe` and :meth:`parse` for a friendlier text form and :meth:`params` so the
    space can be rebuilt from a run record. Everything else is generic.
    """

    name: str = "space"

    def __init__(self, decisions: Sequence[Decision], name: str | None = None) -> None:
        if name is not None:
            self.name = name
        if not decisions:
            raise SpaceError(f"space {self.name!r}: no decisions")
        self.decisions: tuple[Decision, ...] = tuple(decisions)
        self._by_name: dict[str, Decision] = {}
        kinds: dict[str, tuple[Option, ...]] = {}
        for d in self.decisions:
            if d.name in self._by_name:
                raise SpaceError(f"space {self.name!r}: decision {d.name!r} appears twice")
            self._by_name[d.name] = d
            if isinstance(d, Categorical):
                if len(d.options) < 1 or len(set(d.options)) != len(d.options):
                    raise SpaceError(f"{d.name}: options must be distinct and non-empty")
                # One kind = one softmax head, so its option list must be the same everywhere.
                if kinds.setdefault(d.kind, d.options) != d.options:
                    raise SpaceError(f"{d.name}: kind {d.kind!r} has other options elsewhere")

    # -- introspection -------------------------------------------------------------------
    def __iter__(self) -> Iterator[Decision]:
        return iter(self.decisions)

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({params})"

    def decision(self, name: str) -> Decision:
        try:
            return self._by_name[name]
        except KeyError:
            raise SpaceError(f"space {self.name!r}: no decision named {name!r}") from None

    @property
    def num_tokens(self) -> int:
        return sum(d.num_tokens for d in self.decisions)

    def token_arities(self) -> list[int]:
        """How many values each token position can take (a skip flag: 2)."""
        out: list[int] = []
        for d in self.decisions:
            out += [d.size] if isinstance(d, Categorical) else [2] * d.layer
        return out

    def size(self) -> int:
        """Number of distinct architectures (exact integer)."""
        total = 1
        for d in self.decisions:
            total *= d.size
        return total

    def params(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this space through the registry."""
        return {}

    # -- a family of spaces (the conv space's depths) ---------------------------------------
    def space_of(self, arch: Architecture) -> SearchSpace:
        """The member of this space's family that ``arch`` belongs to. A space without a
        family (every space but ``conv``, whose depth can grow) is its own only member."""
        return self

    def space_of_tokens(self, num_tokens: int) -> SearchSpace:
        """The member of the family whose token rows have ``num_tokens`` tokens."""
        if num_tokens != self.num_tokens:
            raise SpaceError(f"space {self.name!r}: expected {self.num_tokens} tokens, got {num_tokens}")
        return self

    def adapt(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        """``arch`` carried into this space: decisions this space shares with it keep their
        values, the others (a deeper space's new layers) are drawn uniformly from ``rng``."""
        old = arch.as_dict()
        choices = [(d.name, _kept(d, old[d.name]) if d.name in old else None) for d in self]
        return Architecture(self.name, tuple((name, value if value is not None else
                                              self.decision(name).sample(rng))
                                             for name, value in choices))

    # -- making and checking architectures ----------------------------------------------
    def make(self, choices: Mapping[str, Any]) -> Architecture:
        """Validate ``choices`` (decision name -> value) and return the canonical Architecture."""
        missing = [d.name for d in self.decisions if d.name not in choices]
        if missing:
            raise SpaceError(f"space {self.name!r}: missing decision {missing[0]!r}")
        extra = [k for k in choices if k not in self._by_name]
        if extra:
            raise SpaceError(f"space {self.name!r}: unknown decision {extra[0]!r}")
        return Architecture(self.name, tuple((d.name, d.validate(choices[d.name])) for d in self))

    def validate(self, arch: Architecture) -> Architecture:
        if arch.space != self.name:
            raise SpaceError(f"architecture is from space {arch.space!r}, not {self.name!r}")
        return self.make(arch.as_dict())

    def parse(self, text: str) -> Architecture:
        """Read an architecture from its JSON form (subclasses add their own formats)."""
        return self.validate(Architecture.from_json(text))

    def describe(self, arch: Architecture) -> str:
        """A short human-readable form."""
        parts = []
        for d in self.decisions:
            value = arch[d.name]
            parts.append(f"{d.name}={list(value) if isinstance(value, tuple) else value}")
        return " ".join(parts)

    def sample(self, rng: np.random.Generator) -> Architecture:
        """Uniform sample: every architecture of the space is equally likely."""
        return Architecture(self.name, tuple((d.name, d.sample(rng)) for d in self))

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        """Change exactly one decision to a different value (regularized evolution's move)."""
        mutable = [d for d in self.decisions if d.size > 1]
        if not mutable:
            raise SpaceError(f"space {self.name!r} has a single architecture; nothing to mutate")
        target = mutable[int(rng.integers(len(mutable)))]
        choices = arch.as_dict()
        choices[target.name] = target.mutate(choices[target.name], rng)
        return Architecture(self.name, tuple(choices.items()))

    # -- controller tokens ---------------------------------------------------------------
    def to_tokens(self, arch: Architecture) -> list[int]:
        arch = self.validate(arch)
        tokens: list[int] = []
        for d in self.decisions:
            tokens.extend(d.encode(arch[d.name]))
        return tokens

    def from_tokens(self, tokens: Sequence[int]) -> Architecture:
        if len(tokens) != self.num_tokens:
            raise SpaceError(
                f"space {self.name!r}: expected {self.num_tokens} tokens, got {len(tokens)}"
            )
        choices: list[tuple[str, Choice]] = []
        pos = 0
        for d in self.decisions:
            choices.append((d.name, d.decode([int(t) for t in tokens[pos : pos + d.num_tokens]])))
            pos += d.num_tokens
        return Architecture(self.name, tuple(choices))


def _kept(decision: Decision, value: Choice) -> Choice | None:
    """``value`` if ``decision`` accepts it, else None (drawn afresh by :meth:`adapt`)."""
    try:
        return decision.validate(value)
    except SpaceError:
        return None
