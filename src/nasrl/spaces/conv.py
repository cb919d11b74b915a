"""The paper's layer-by-layer convolutional space (Zoph & Le 2017, section 3).

Per layer, in the order the controller emits them: filter height, filter width,
[stride height, stride width], number of filters, [pooling], then the layer's anchor
point, where the attention picks which earlier layers feed this one. Strides and pooling
are optional, as in the paper's v1 (none), v2 (predicted strides) and v3 (pooling) spaces.

Where the resolution drops can also be fixed instead of searched. ``stride_from = k`` (with
predicted strides) keeps layers 0..k-1 at full resolution, with no stride decisions; and
``reduce_at`` (without predicted strides) gives the listed layers stride 2, as ENAS's macro
space fixes its reductions. Under shared weights the controller otherwise learns to stride
early -- a young supernet scores small maps best -- and the pick underfits when trained
alone (see the README's one-shot section).

How a layer joins several inputs of different sizes: ``join = "pad"`` is the paper's rule
(smaller maps are zero-padded to the largest), ``join = "pool"`` ENAS's (larger maps are
average-pooled down to the smallest, as its factorized reductions bring earlier outputs
to a reduced layer's size). With padding, one skip from a full-size layer puts every later
layer back at full size (and cost); with pooling a layer runs at the smallest resolution
it is fed, so a skip from an early layer does not undo a later reduction.

The paper grows the depth during the search (6 layers, +2 every 1,600 architectures); a
space has a fixed depth, and :meth:`ConvSpace.with_layers` gives the deeper one: the
spaces of every depth form one family, built once and shared. Layer ``i``'s decisions do
not depend on the depth, so a shallower architecture's tokens are a prefix of a deeper
one's, and :meth:`ConvSpace.space_of` / :meth:`ConvSpace.space_of_tokens` find the member
an architecture or a token row belongs to (its depth is in its choices, so architectures
of different depths never share a key). The controller's parameters are per decision
kind, not per position, so the same controller serves every depth. :class:`DepthSchedule`
says which depth the search asks at (``space_params.depth_schedule``, see
:mod:`nasrl.search`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from nasrl.spaces.base import Architecture, Categorical, Decision, SearchSpace, SkipSet, SpaceError
from nasrl.spaces.registry import register_space

POOL_OPTIONS: tuple[str, ...] = ("none", "max")
JOIN_OPTIONS: tuple[str, ...] = ("pad", "pool")


@register_space("conv")
class ConvSpace(SearchSpace):
    name = "conv"

    def __init__(
        self,
        num_layers: int = 6,
        filter_heights: Sequence[int] = (1, 3, 5, 7),
        filter_widths: Sequence[int] = (1, 3, 5, 7),
        num_filters: Sequence[int] = (24, 36, 48, 64),
        predict_strides: bool = False,
        strides: Sequence[int] = (1, 2, 3),
        pooling: bool = False,
        skip_connections: bool = True,
        stride_from: int = 0,
        reduce_at: Sequence[int] = (),
        join: str = "pad",
    ) -> None:
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise SpaceError(f"conv: num_layers must be a positive integer, got {num_layers!r}")
        for field, values in (
            ("filter_heights", filter_heights),
            ("filter_widths", filter_widths),
            ("num_filters", num_filters),
            ("strides", strides),
        ):
            if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                                 for v in values):
                raise SpaceError(f"conv: {field} must be positive integers, got {values!r}")
        if isinstance(stride_from, bool) or not isinstance(stride_from, int) or stride_from < 0:
            raise SpaceError(f"conv: stride_from must be a non-negative integer, got {stride_from!r}")
        if stride_from and not predict_strides:
            raise SpaceError("conv: stride_from needs predict_strides = true")
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in reduce_at) \
                or len(set(reduce_at)) != len(reduce_at):
            raise SpaceError(f"conv: reduce_at must be distinct layer indices, got {reduce_at!r}")
        if reduce_at and predict_strides:
            raise SpaceError("conv: reduce_at fixes the strides; it excludes predict_strides")
        if join not in JOIN_OPTIONS:
            raise SpaceError(f"conv: join must be one of {', '.join(JOIN_OPTIONS)}, got {join!r}")
        self.num_layers = num_layers
        self.filter_heights = tuple(filter_heights)
        self.filter_widths = tuple(filter_widths)
        self.num_filters = tuple(num_filters)
        self.predict_strides = predict_strides
        self.strides = tuple(strides)
        self.pooling = pooling
        self.skip_connections = skip_connections
        self.stride_from = stride_from
        self.reduce_at = tuple(sorted(reduce_at))
        self.join = join
        # the same space at other depths, built once and shared by every member
        self._family: dict[int, ConvSpace] = {num_layers: self}
        self._by_tokens: dict[int, ConvSpace] = {}
        super().__init__([d for i in range(num_layers) for d in self._layer(i)])

    def _layer(self, i: int) -> list[Decision]:
        p = f"L{i}."
        out: list[Decision] = [
            Categorical(p + "filter_height", self.filter_heights, "filter_height"),
            Categorical(p + "filter_width", self.filter_widths, "filter_width"),
        ]
        # Layers before ``stride_from`` keep the full resolution: no stride decisions at all
        # (not one-option ones), so the controller spends no steps on them.
        if self.predict_strides and i >= self.stride_from:
            out += [
                Categorical(p + "stride_h", self.strides, "stride"),
                Categorical(p + "stride_w", self.strides, "stride"),
            ]
        out.append(Categorical(p + "filters", self.num_filters, "filters"))
        if self.pooling:
            out.append(Categorical(p + "pool", POOL_OPTIONS, "pool"))
        if self.skip_connections:
            out.append(SkipSet(p + "inputs", layer=i))
        return out

    def params(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "filter_heights": list(self.filter_heights),
            "filter_widths": list(self.filter_widths),
            "num_filters": list(self.num_filters),
            "predict_strides": self.predict_strides,
            "strides": list(self.strides),
            "pooling": self.pooling,
            "skip_connections": self.skip_connections,
            "stride_from": self.stride_from,
            "reduce_at": list(self.reduce_at),
            "join": self.join,
        }

    @classmethod
    def infer_params(cls, choices: dict[str, Any]) -> dict[str, Any]:
        """Space parameters implied by a hand-written architecture's choices.

        Depth and the optional decisions come from the keys; option sets stay the paper's
        (other values need explicit space parameters, so a typo is not a new space).
        """
        layers = {key.split(".", 1)[0] for key in choices if key.startswith("L")}
        strided = [int(key[1:].split(".", 1)[0]) for key in choices if key.endswith(".stride_h")]
        return {
            "num_layers": len(layers),
            "predict_strides": bool(strided),
            "stride_from": min(strided, default=0),
            "pooling": "L0.pool" in choices,
            "skip_connections": "L0.inputs" in choices,
        }

    def with_layers(self, num_layers: int) -> ConvSpace:
        """The same space at another depth (the paper's depth schedule)."""
        member = self._family.get(num_layers)
        if member is None:
            member = ConvSpace(**{**self.params(), "num_layers": num_layers})
            member._family = self._family
            self._family[num_layers] = member
        return member

    def space_of(self, arch: Architecture) -> ConvSpace:
        """The same space at ``arch``'s depth: its layers are named L0 .. L{depth-1}, and a
        layer's decisions do not depend on the depth, so a shallower architecture is the
        first layers of a deeper one (and its tokens a prefix of the deeper one's)."""
        depth = sum(1 for name, _ in arch.choices if name.endswith(".filter_height"))
        return self if arch.space != self.name or depth < 1 else self.with_layers(depth)

    def space_of_tokens(self, num_tokens: int) -> ConvSpace:
        # called once per saved row when a state loads: the answers are kept (layers'
        # token counts differ with the anchors and stride_from)
        member = self._by_tokens.get(num_tokens)
        if member is None:
            depth, total = 0, 0
            while total < num_tokens:
                total += sum(d.num_tokens for d in self._layer(depth))
                depth += 1
            if total != num_tokens:
                raise SpaceError(f"conv: no depth has {num_tokens} tokens")
            member = self._by_tokens[num_tokens] = self.with_layers(depth)
        return member

    def layer(self, arch: Architecture, i: int) -> dict[str, Any]:
        """Layer ``i``'s settings with defaults filled in: what a builder needs."""
        p = f"L{i}."
        choices = arch.as_dict()
        fixed = 2 if i in self.reduce_at else 1
        return {
            "filter_height": choices[p + "filter_height"],
            "filter_width": choices[p + "filter_width"],
            "stride_h": choices.get(p + "stride_h", fixed),
            "stride_w": choices.get(p + "stride_w", fixed),
            "filters": choices[p + "filters"],
            "pool": choices.get(p + "pool", "none"),
            # Without predicted skips the paper's network is a plain chain.
            "inputs": choices.get(p + "inputs", (i - 1,) if i else ()),
        }

    def describe(self, arch: Architecture) -> str:
        member = self.space_of(arch)
        if member is not self:  # a run with a depth schedule holds several depths
            return member.describe(arch)
        arch = self.validate(arch)
        parts = []
        for i in range(self.num_layers):
            lay = self.layer(arch, i)
            text = f"{lay['filter_height']}x{lay['filter_width']}x{lay['filters']}"
            if self.predict_strides or i in self.reduce_at:
                text += f"/s{lay['stride_h']}x{lay['stride_w']}"
            if lay["pool"] != "none":
                text += f"+{lay['pool']}pool"
            if self.skip_connections and i:
                text += "<" + ",".join(map(str, lay["inputs"])) if lay["inputs"] else "<img"
            parts.append(text)
        return " | ".join(parts)


@dataclass(frozen=True)
class DepthSchedule:
    """Depth as a function of architectures sampled so far: the paper starts at 6 layers and
    adds 2 every 1,600 (``DepthSchedule(6, 2, 1600)``), optionally capped at ``maximum``.

    A search reads it from ``space_params.depth_schedule`` (:meth:`from_config`); the i-th
    architecture asked (0-based, counting every architecture the strategy proposed,
    repeats answered from the cache included) is sampled at ``depth_at(i)``.
    """

    start: int = 6
    step: int = 2
    every: int = 1600
    maximum: int | None = None

    def __post_init__(self) -> None:
        for name in ("start", "step", "every", "maximum"):
            value = getattr(self, name)
            if value is None and name == "maximum":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SpaceError(f"space_params.depth_schedule.{name} must be a positive integer, "
                                 f"got {value!r}")
        if self.maximum is not None and self.maximum < self.start:
            raise SpaceError(f"space_params.depth_schedule.maximum ({self.maximum}) is below its "
                             f"start ({self.start})")

    @classmethod
    def from_config(cls, values: Any, num_layers: Any = None) -> DepthSchedule:
        """Read ``space_params.depth_schedule``: a table of start, step, every, maximum (the
        paper's 6, 2, 1600, no maximum by default). ``num_layers``, if the space parameters
        give it too, must agree with ``start`` (and is the start when ``start`` is left out)."""
        where = "space_params.depth_schedule"
        if not isinstance(values, dict):
            raise SpaceError(f"{where} must be a table like {{start = 6, step = 2, every = 1600}}, "
                             f"got {values!r}")
        unknown = sorted(set(values) - {"start", "step", "every", "maximum"})
        if unknown:
            raise SpaceError(f"{where}: unknown key {unknown[0]!r} (known: every, maximum, start, step)")
        if num_layers is not None:
            if "start" in values and values["start"] != num_layers:
                raise SpaceError(f"{where}.start ({values['start']!r}) and space_params.num_layers "
                                 f"({num_layers!r}) disagree; give the first depth once")
            values = {"start": num_layers, **values}
        return cls(**values)

    def depth_at(self, sampled: int) -> int:
        depth = self.start + self.step * (sampled // self.every)
        return depth if self.maximum is None else min(depth, self.maximum)

    def segments(self, first: int, n: int) -> list[tuple[int, int]]:
        """(depth, count) runs for the architectures ``first .. first + n - 1``: a round that
        straddles a change of depth is asked in two parts."""
        out: list[tuple[int, int]] = []
        i = first
        while i < first + n:
            count = min(first + n, (i // self.every + 1) * self.every) - i
            depth = self.depth_at(i)
            if out and out[-1][0] == depth:  # capped at the maximum: one run
                out[-1] = (depth, out[-1][1] + count)
            else:
                out.append((depth, count))
            i += count
        return out
