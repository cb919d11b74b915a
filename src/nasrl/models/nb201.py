"""The NAS-Bench-201 network (Dong & Yang, ICLR 2020) for an ``nb201`` cell.

Skeleton as in the benchmark: a 3x3 conv stem with batch norm; three stages of N cells
with C, 2C and 4C channels, separated by residual reduction blocks (stride 2); batch
norm, ReLU, global average pooling and a linear classifier. The benchmark used C = 16,
N = 5. In a cell, node i is the sum over j < i of op(j -> i) applied to node j; the
output is node 3. Ops: none (zero), skip_connect, nor_conv_1x1 / nor_conv_3x3 (ReLU ->
conv -> BN) and avg_pool_3x3 (stride 1, padding not counted).
"""

from __future__ import annotations

from typing import cast

from torch import Tensor, nn

from nasrl.models.registry import register_builder
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.nb201 import EDGES, NUM_NODES, edge_name


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, affine: bool = True) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


def make_op(name: str, channels: int) -> nn.Module | None:
    """The module for an edge; None for 'none', which contributes nothing."""
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(channels, channels, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(channels, channels, 3)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown nb201 op {name!r}")


class Cell(nn.Module):
    def __init__(self, arch: Architecture, channels: int) -> None:
        super().__init__()
        self.ops = nn.ModuleDict()
        self.edges: list[tuple[int, int, str]] = []
        for i, j in EDGES:
            op = make_op(str(arch[edge_name(i, j)]), channels)
            if op is not None:
                key = edge_name(i, j)
                self.ops[key] = op
                self.edges.append((i, j, key))

    def forward(self, x: Tensor) -> Tensor:
        nodes: list[Tensor | None] = [x] + [None] * (NUM_NODES - 1)
        for i, j, key in self.edges:
            src = nodes[j]
            if src is None:  # every edge into node j is 'none': node j is zero
                src = x.new_zeros(x.shape)
            out = self.ops[key](src)
            prev = nodes[i]
            nodes[i] = out if prev is None else prev + out
        result = nodes[-1]
        return x.new_zeros(x.shape) if result is None else result


class ResidualReduction(nn.Module):
    """The benchmark's ResNet basic block between stages: stride 2, channels doubled."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.a = ReLUConvBN(c_in, c_out, 3, stride=2)
        self.b = ReLUConvBN(c_out, c_out, 3)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.shortcut(x) + self.b(self.a(x)))


class NB201Net(nn.Module):
    def __init__(self, arch: Architecture, input_channels: int, num_classes: int,
                 channels: int, cells_per_stage: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.Conv2d(input_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        ]
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers += [Cell(arch, c) for _ in range(cells_per_stage)]
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.classifier(self.features(x).mean(dim=(2, 3))))


@register_builder("nb201")
def build_nb201(space: SearchSpace, arch: Architecture, *, input_shape: tuple[int, ...],
                num_classes: int, channels: int = 16, cells_per_stage: int = 5) -> nn.Module:
    if channels < 1 or cells_per_stage < 1:
        raise ValueError("nb201 builder: channels and cells_per_stage must be positive")
    return NB201Net(arch, input_shape[0], num_classes, channels, cells_per_stage)
