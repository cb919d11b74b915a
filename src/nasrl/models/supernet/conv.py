"""Shared weights for the paper's ``conv`` space (ENAS macro search, Pham et al. 2018).

Every layer keeps the largest kernel (max height x max width) and the largest filter
count; a child's layer uses the centred ``fh x fw`` slice of the kernel and the first
``F`` output filters. A layer's input is a concatenation of the chosen earlier layers,
and a convolution over a concatenation is the sum of one convolution per input over its
channel slice, so the weights are stored as one block per (layer, input source) pair
(the image counts as a source). That way an input contributes through the same weights
whichever other inputs the anchor picks, which is what lets the skips share weights;
slicing one big weight along input channels instead would tie a source's weights to its
position in the concatenation, which changes with the other choices. The forward pass
concatenates the chosen blocks along input channels and runs one convolution over the
child's own concatenated input: the same arithmetic as the stand-alone child, in the same
order, and one kernel launch per layer instead of one per input. The classifier is shared
the same way: one block per layer whose output may reach it, plus one bias.

Batch norm: one per layer at full width, its first ``F`` channels used (see
:mod:`nasrl.models.supernet.base` for running statistics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrl.models.conv import Concat, Shape, layer_geometry
from nasrl.models.supernet.base import SuperNet
from nasrl.models.supernet.registry import register_supernet
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.conv import ConvSpace

IMAGE = -1
"""Source index of the image in a layer's input list."""

_MAX_PLANS = 4096  # plans are small; the bound only stops unbounded growth in long searches


class SlicedBatchNorm2d(nn.BatchNorm2d):
    """Batch norm over the first ``x.shape[1]`` of its channels; the rest are untouched."""

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        assert self.running_mean is not None and self.running_var is not None
        assert self.num_batches_tracked is not None
        if self.training:
            self.num_batches_tracked.add_(1)
        # nn.BatchNorm2d's rule: momentum None means a cumulative average
        factor = self.momentum
        if factor is None:
            factor = 1.0 / max(1, int(self.num_batches_tracked))
        # slices of 1-D buffers are views: batch_norm updates the shared statistics in place
        return F.batch_norm(
            x, self.running_mean[:c], self.running_var[:c], self.weight[:c], self.bias[:c],
            self.training, factor, self.eps,
        )


@dataclass(frozen=True)
class _LayerPlan:
    sources: tuple[int, ...]  # earlier layers, or (IMAGE,)
    join: Concat
    kernel: tuple[int, int]
    stride: tuple[int, int]
    filters: int
    pool: tuple[int, int] | None


@dataclass(frozen=True)
class _Plan:
    layers: tuple[_LayerPlan, ...]
    outputs: tuple[int, ...]
    final: Concat


def _source_key(layer: int, source: int) -> str:
    return f"L{layer}_from_" + ("img" if source == IMAGE else str(source))


class ConvSuperNet(SuperNet):
    def __init__(self, space: ConvSpace, input_shape: tuple[int, ...], num_classes: int) -> None:
        if len(input_shape) != 3:
            raise ValueError(f"conv supernet needs an image shape (C, H, W), got {tuple(input_shape)}")
        super().__init__(space, input_shape, num_classes, {})
        self.conv_space = space
        self.kernel = (max(space.filter_heights), max(space.filter_widths))
        self.width = max(space.num_filters)
        self.blocks = nn.ParameterDict()
        for i in range(space.num_layers):
            for source in self._possible_sources(i):
                c_in = self.input_shape[0] if source == IMAGE else self.width
                self.blocks[_source_key(i, source)] = nn.Parameter(_conv_init(self.width, c_in, self.kernel))
        self.bns = nn.ModuleList(SlicedBatchNorm2d(self.width) for _ in range(space.num_layers))
        heads = range(space.num_layers) if space.skip_connections else [space.num_layers - 1]
        self.heads = nn.ParameterDict(
            {str(j): nn.Parameter(_linear_init(num_classes, self.width)) for j in heads})
        # nn.Linear's bias bound for its fan-in; the child's fan-in varies, use the widest
        bound = 1 / math.sqrt(self.width)
        self.head_bias = nn.Parameter(torch.empty(num_classes).uniform_(-bound, bound))
        self._plans: dict[Architecture, _Plan] = {}

    def _possible_sources(self, layer: int) -> list[int]:
        if self.conv_space.skip_connections:
            return [IMAGE, *range(layer)]
        return [layer - 1] if layer else [IMAGE]

    def _plan(self, arch: Architecture) -> _Plan:
        plan = self._plans.get(arch)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[arch] = self._make_plan(arch)
        return plan

    def _make_plan(self, arch: Architecture) -> _Plan:
        # the same shape rules as nasrl.models.conv.ConvNet, worked out once per architecture
        c, h, w = self.input_shape
        image: Shape = (c, h, w)
        shapes: list[Shape] = []
        layers: list[_LayerPlan] = []
        for i in range(self.conv_space.num_layers):
            s = self.conv_space.layer(arch, i)
            inputs = tuple(s["inputs"])
            join = Concat([shapes[j] for j in inputs] if inputs else [image], self.conv_space.join)
            pool, out_hw = layer_geometry(s, join.out_shape[1:])
            layers.append(_LayerPlan(inputs or (IMAGE,), join, (s["filter_height"], s["filter_width"]),
                                     (s["stride_h"], s["stride_w"]), s["filters"], pool))
            shapes.append((s["filters"], *out_hw))
        consumed = {j for lp in layers for j in lp.sources}
        last = len(layers) - 1
        outputs = (*(j for j in range(last) if j not in consumed), last)
        return _Plan(tuple(layers), outputs, Concat([shapes[j] for j in outputs], self.conv_space.join))

    def _layer_weight(self, i: int, plan: _Plan) -> Tensor:
        lp = plan.layers[i]
        (kh, kw), (fh, fw) = self.kernel, lp.kernel
        top, left = (kh - fh) // 2, (kw - fw) // 2
        parts = []
        for source in lp.sources:
            c_in = self.input_shape[0] if source == IMAGE else plan.layers[source].filters
            block = self.blocks[_source_key(i, source)]
            parts.append(block[:lp.filters, :c_in, top:top + fh, left:left + fw])
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def _head_weight(self, plan: _Plan) -> Tensor:
        parts = [self.heads[str(j)][:, :plan.layers[j].filters] for j in plan.outputs]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def forward(self, x: Tensor, arch: Architecture) -> Tensor:
        plan = self._plan(arch)
        outs: list[Tensor] = []
        for i, lp in enumerate(plan.layers):
            h = lp.join([x] if lp.sources == (IMAGE,) else [outs[j] for j in lp.sources])
            h = F.conv2d(h, self._layer_weight(i, plan), None, lp.stride,
                         (lp.kernel[0] // 2, lp.kernel[1] // 2))
            h = F.relu(self._bn(i)(h))
            if lp.pool is not None:
                h = F.max_pool2d(h, lp.pool, lp.pool, ceil_mode=True)
            outs.append(h)
        h = plan.final([outs[j] for j in plan.outputs])
        return F.linear(h.mean(dim=(2, 3)), self._head_weight(plan), self.head_bias)

    def _bn(self, i: int) -> SlicedBatchNorm2d:
        return cast(SlicedBatchNorm2d, self.bns[i])

    def batch_norms(self, arch: Architecture) -> list[tuple[nn.BatchNorm2d, int]]:
        plan = self._plan(arch)
        return [(self._bn(i), lp.filters) for i, lp in enumerate(plan.layers)]

    def child_state_dict(self, arch: Architecture) -> dict[str, Tensor]:
        plan = self._plan(arch)
        state: dict[str, Tensor] = {}
        for i, lp in enumerate(plan.layers):
            bn, c = self._bn(i), lp.filters
            assert bn.running_mean is not None and bn.running_var is not None
            assert bn.num_batches_tracked is not None
            state[f"layers.{i}.conv.weight"] = self._layer_weight(i, plan)
            state[f"layers.{i}.bn.weight"] = bn.weight[:c]
            state[f"layers.{i}.bn.bias"] = bn.bias[:c]
            state[f"layers.{i}.bn.running_mean"] = bn.running_mean[:c]
            state[f"layers.{i}.bn.running_var"] = bn.running_var[:c]
            state[f"layers.{i}.bn.num_batches_tracked"] = bn.num_batches_tracked
        state["classifier.weight"] = self._head_weight(plan)
        state["classifier.bias"] = self.head_bias
        return {k: v.detach().clone() for k, v in state.items()}


def _conv_init(c_out: int, c_in: int, kernel: tuple[int, int]) -> Tensor:
    # nn.Conv2d's default init for the full block: every slice starts on the same scale
    weight = torch.empty(c_out, c_in, *kernel)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return weight


def _linear_init(out_features: int, in_features: int) -> Tensor:
    weight = torch.empty(out_features, in_features)
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    return weight


@register_supernet("conv")
def build_conv_supernet(space: SearchSpace, *, input_shape: tuple[int, ...], num_classes: int,
                        **options: Any) -> SuperNet:
    assert isinstance(space, ConvSpace)
    if options:
        raise TypeError(f"build_conv_supernet() got an unexpected keyword argument {next(iter(options))!r}")
    return ConvSuperNet(space, input_shape, num_classes)
