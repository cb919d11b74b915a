"""The paper's convolutional child network, built from a ``conv`` architecture.

Rules (Zoph & Le 2017, section 3.3 and appendix):

* each layer is a convolution (filter height x width, filters, stride) followed by batch
  norm and ReLU, optionally followed by 2x2 max pooling;
* a layer's input is the concatenation along channels of the layers chosen at its anchor;
  maps smaller than the largest are zero-padded (centred) to its size (the space's
  ``join = "pad"``), or, with ``join = "pool"``, maps larger than the smallest are
  average-pooled (adaptively, so any size ratio works) down to its size;
* a layer with no chosen input takes the image;
* every layer output that no later layer consumes is concatenated (same join rule) with
  the last layer's output, then global average pooling and a linear classifier.

A found architecture can be scaled up for its final training, as the paper and ENAS do
(``nasrl train --build width=2 --build depth=2``): ``width`` multiplies every layer's
filter count, ``depth`` makes each layer a stack of that many convolutions (the first with
the layer's stride, the rest stride 1, each followed by batch norm and ReLU; pooling after
the last). The defaults (1, 1) build exactly the searched child.

All spatial sizes are worked out once when the model is built, so the forward pass runs
no shape logic of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrl.errors import NasrlError
from nasrl.models.registry import register_builder
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.conv import ConvSpace

Shape = tuple[int, int, int]  # channels, height, width


def conv_out(size: int, kernel: int, stride: int) -> int:
    # "same" padding k // 2: an odd kernel keeps the size at stride 1
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def layer_geometry(settings: dict[str, Any], in_hw: tuple[int, int]
                   ) -> tuple[tuple[int, int] | None, tuple[int, int]]:
    """A layer's max-pool kernel (None without pooling) and its output height and width.

    Shared with the supernet, which must reproduce these sizes exactly."""
    h = conv_out(in_hw[0], settings["filter_height"], settings["stride_h"])
    w = conv_out(in_hw[1], settings["filter_width"], settings["stride_w"])
    if settings["pool"] != "max":
        return None, (h, w)
    # a 1-pixel map cannot be pooled by 2: pool by what is there
    kh, kw = min(2, h), min(2, w)
    return (kh, kw), (-(-h // kh), -(-w // kw))


class ConvLayer(nn.Module):
    """conv -> batch norm -> ReLU [-> max pool]."""

    def __init__(self, in_channels: int, settings: dict[str, Any], in_hw: tuple[int, int],
                 depth: int = 1) -> None:
        super().__init__()
        fh, fw = settings["filter_height"], settings["filter_width"]
        sh, sw = settings["stride_h"], settings["stride_w"]
        filters = settings["filters"]
        self.conv = nn.Conv2d(in_channels, filters, (fh, fw), stride=(sh, sw),
                              padding=(fh // 2, fw // 2), bias=False)
        self.bn = nn.BatchNorm2d(filters)
        # depth scaling: more stride-1 convolutions of the same shape (none by default, so
        # the searched child's parameters and state-dict keys are unchanged)
        self.extra: nn.Module = nn.Identity()
        if depth > 1:
            self.extra = nn.Sequential(*[
                nn.Sequential(nn.Conv2d(filters, filters, (fh, fw), padding=(fh // 2, fw // 2), bias=False),
                              nn.BatchNorm2d(filters), nn.ReLU())
                for _ in range(depth - 1)])
        pool, (h, w) = layer_geometry(settings, in_hw)
        self.pool: nn.Module = nn.Identity()
        if pool is not None:
            self.pool = nn.MaxPool2d(pool, stride=pool, ceil_mode=True)
        self.out_shape: Shape = (settings["filters"], h, w)

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.pool(self.extra(F.relu(self.bn(self.conv(x))))))


def centre_pad(size: tuple[int, int], target: tuple[int, int]) -> tuple[int, int, int, int]:
    """F.pad amounts (left, right, top, bottom) that centre a ``size`` map in ``target``."""
    dh, dw = target[0] - size[0], target[1] - size[1]
    return (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2)


class Concat(nn.Module):
    """Concatenate maps along channels, zero-padding smaller ones to the largest size
    (``join="pad"``) or average-pooling larger ones to the smallest (``join="pool"``)."""

    def __init__(self, shapes: Sequence[Shape], join: str = "pad") -> None:
        super().__init__()
        pick = max if join == "pad" else min
        self.target = (pick(s[1] for s in shapes), pick(s[2] for s in shapes))
        self.pool = join == "pool"
        self.pads = [(0, 0, 0, 0) if self.pool else centre_pad((s[1], s[2]), self.target) for s in shapes]
        # Pooling a map down: adaptive average pooling's windows. A whole ratio is plain
        # average pooling; any other ratio is two averaging matrices (rows, columns) --
        # the same windows, and unlike adaptive pooling the ONNX exporter takes them.
        self.poolers = [_pooler((s[1], s[2]), self.target) if self.pool else None for s in shapes]
        self.out_shape: Shape = (sum(s[0] for s in shapes), *self.target)

    def _fit(self, m: Tensor, pad: tuple[int, int, int, int], pooler: _Pooler) -> Tensor:
        if not self.pool:
            return F.pad(m, pad) if any(pad) else m
        if pooler is None:
            return m
        if isinstance(pooler, tuple):
            return F.avg_pool2d(m, pooler)
        rows, cols = (a.to(m.device, m.dtype) for a in pooler)
        return torch.matmul(torch.matmul(rows, m), cols.T)

    def forward(self, maps: list[Tensor]) -> Tensor:
        fitted = [self._fit(m, p, q) for m, p, q in zip(maps, self.pads, self.poolers, strict=True)]
        return fitted[0] if len(fitted) == 1 else torch.cat(fitted, dim=1)


_Pooler = tuple[int, int] | list[Tensor] | None


def _pooler(size: tuple[int, int], target: tuple[int, int]) -> _Pooler:
    """How ``_fit`` pools a ``size`` map to ``target``: None (same size), a whole-ratio
    kernel, or adaptive pooling's row and column averaging matrices."""
    if size == target:
        return None
    if size[0] % target[0] == 0 and size[1] % target[1] == 0:
        return (size[0] // target[0], size[1] // target[1])
    return [_averaging(size[0], target[0]), _averaging(size[1], target[1])]


def _averaging(n: int, out: int) -> Tensor:
    # adaptive pooling's window i: floor(i * n / out) .. ceil((i + 1) * n / out)
    a = torch.zeros(out, n)
    for i in range(out):
        start, end = i * n // out, -(-(i + 1) * n // out)
        a[i, start:end] = 1.0 / (end - start)
    return a


class ConvNet(nn.Module):
    def __init__(self, space: ConvSpace, arch: Architecture, input_shape: Sequence[int],
                 num_classes: int, width: float = 1.0, depth: int = 1) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"conv builder needs an image shape (C, H, W), got {tuple(input_shape)}")
        image: Shape = (int(input_shape[0]), int(input_shape[1]), int(input_shape[2]))
        self.layers = nn.ModuleList()
        self.joins = nn.ModuleList()
        self.inputs: list[tuple[int, ...]] = []
        shapes: list[Shape] = []
        for i in range(space.num_layers):
            settings = space.layer(arch, i)
            settings["filters"] = max(1, round(settings["filters"] * width))
            inputs = tuple(settings["inputs"])
            join = Concat([shapes[j] for j in inputs] if inputs else [image], space.join)
            layer = ConvLayer(join.out_shape[0], settings, join.out_shape[1:], depth)
            self.inputs.append(inputs)
            self.joins.append(join)
            self.layers.append(layer)
            shapes.append(layer.out_shape)
        consumed = {j for inputs in self.inputs for j in inputs}
        last = space.num_layers - 1
        # dangling outputs first, in layer order, then the last layer
        self.outputs = [j for j in range(last) if j not in consumed] + [last]
        self.final = Concat([shapes[j] for j in self.outputs], space.join)
        self.classifier = nn.Linear(self.final.out_shape[0], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        outs: list[Tensor] = []
        for inputs, join, layer in zip(self.inputs, self.joins, self.layers, strict=True):
            h = join([outs[j] for j in inputs] if inputs else [x])
            outs.append(layer(h))
        h = self.final([outs[j] for j in self.outputs])
        return cast(Tensor, self.classifier(h.mean(dim=(2, 3))))


@register_builder("conv")
def build_conv(space: SearchSpace, arch: Architecture, *, input_shape: tuple[int, ...],
               num_classes: int, width: float = 1.0, depth: int = 1) -> nn.Module:
    assert isinstance(space, ConvSpace)
    if isinstance(width, bool) or not isinstance(width, int | float) or not 0 < width <= 64:
        raise NasrlError(f"conv builder: width must be a number in (0, 64], got {width!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= 16:
        raise NasrlError(f"conv builder: depth must be an integer from 1 to 16, got {depth!r}")
    return ConvNet(space, arch, input_shape, num_classes, float(width), depth)
