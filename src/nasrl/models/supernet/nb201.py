"""Shared weights for the NAS-Bench-201 space (the one-shot setting of Dong & Yang 2020).

The skeleton (stem, three stages of cells, residual reductions, head) is the stand-alone
:class:`nasrl.models.nb201.NB201Net`'s, with the same module names; each cell edge holds
every parametric op (``nor_conv_1x1``, ``nor_conv_3x3``, each ReLU -> conv -> BN with its
own batch norm), and a child runs the one op its architecture puts on the edge
('none' contributes nothing, 'skip_connect' and 'avg_pool_3x3' have no weights). The cell
forward is the stand-alone cell's loop, edge for edge in the same order, so the two agree
to the last bit given the same weights.

``cell_affine=False`` drops the affine parameters of the cell ops' batch norms, as
NAS-Bench-201's own one-shot baselines train their supernets: a shared scale and shift
per op is fitted to the mixture of every context the op is sampled in, and can favour the
ops that look good under that mixture. The stand-alone child keeps its affine batch norm,
handed weight 1 and bias 0, which is the same function.
"""

from __future__ import annotations

from typing import cast

import torch
from torch import Tensor, nn

from nasrl.models.nb201 import ReLUConvBN, ResidualReduction
from nasrl.models.supernet.base import SuperNet
from nasrl.models.supernet.registry import register_supernet
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.nb201 import EDGES, NUM_NODES, edge_name

PARAMETRIC: dict[str, int] = {"nor_conv_1x1": 1, "nor_conv_3x3": 3}  # op -> kernel size


class SuperCell(nn.Module):
    def __init__(self, channels: int, affine: bool = True) -> None:
        super().__init__()
        self.ops = nn.ModuleDict({
            edge_name(i, j): nn.ModuleDict(
                {op: ReLUConvBN(channels, channels, k, affine=affine) for op, k in PARAMETRIC.items()})
            for i, j in EDGES
        })
        self.pool = nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)

    def _op(self, key: str, name: str, x: Tensor) -> Tensor:
        if name == "skip_connect":
            return x
        if name == "avg_pool_3x3":
            return cast(Tensor, self.pool(x))
        edge = cast(nn.ModuleDict, self.ops[key])
        return cast(Tensor, edge[name](x))

    def forward(self, x: Tensor, arch: Architecture) -> Tensor:
        # nasrl.models.nb201.Cell.forward, with the op looked up per call
        nodes: list[Tensor | None] = [x] + [None] * (NUM_NODES - 1)
        for i, j in EDGES:
            key = edge_name(i, j)
            name = str(arch[key])
            if name == "none":
                continue
            src = nodes[j]
            if src is None:
                src = x.new_zeros(x.shape)
            out = self._op(key, name, src)
            prev = nodes[i]
            nodes[i] = out if prev is None else prev + out
        result = nodes[-1]
        return x.new_zeros(x.shape) if result is None else result


class NB201SuperNet(SuperNet):
    def __init__(self, space: SearchSpace, input_shape: tuple[int, ...], num_classes: int,
                 channels: int, cells_per_stage: int, cell_affine: bool = True) -> None:
        super().__init__(space, input_shape, num_classes,
                         {"channels": channels, "cells_per_stage": cells_per_stage})
        layers: list[nn.Module] = [
            nn.Conv2d(input_shape[0], channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
        ]
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResidualReduction(c, 2 * c))
                c *= 2
            layers += [SuperCell(c, cell_affine) for _ in range(cells_per_stage)]
        layers += [nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: Tensor, arch: Architecture) -> Tensor:
        for layer in self.features:
            x = layer(x, arch) if isinstance(layer, SuperCell) else layer(x)
        return cast(Tensor, self.classifier(x.mean(dim=(2, 3))))

    def batch_norms(self, arch: Architecture) -> list[tuple[nn.BatchNorm2d, int]]:
        return [(m, m.num_features) for name, m in self.named_modules()
                if isinstance(m, nn.BatchNorm2d) and _child_name(name, arch) is not None]

    def child_state_dict(self, arch: Architecture) -> dict[str, Tensor]:
        state = {}
        for name, value in self.state_dict().items():
            key = _child_name(name, arch)
            if key is not None:
                state[key] = value.detach().clone()
        for name, m in self.named_modules():
            key = _child_name(name, arch)
            if isinstance(m, nn.BatchNorm2d) and not m.affine and key is not None:
                # the child's affine batch norm as the identity map this one is
                state[f"{key}.weight"] = torch.ones(m.num_features)
                state[f"{key}.bias"] = torch.zeros(m.num_features)
        return state


def _child_name(name: str, arch: Architecture) -> str | None:
    """The stand-alone child's name for supernet entry ``name``; None where ``arch`` does
    not use it. Cell ops are ``features.N.ops.EDGE.OP.rest`` here and ``...ops.EDGE.rest``
    in the child, which holds only the chosen op."""
    parts = name.split(".")
    if len(parts) < 5 or parts[2] != "ops":
        return name
    edge, op = parts[3], parts[4]
    if arch[edge] != op:
        return None
    return ".".join(parts[:4] + parts[5:])


@register_supernet("nb201")
def build_nb201_supernet(space: SearchSpace, *, input_shape: tuple[int, ...], num_classes: int,
                         channels: int = 16, cells_per_stage: int = 5,
                         cell_affine: bool = True) -> SuperNet:
    if channels < 1 or cells_per_stage < 1:
        raise ValueError("nb201 supernet: channels and cells_per_stage must be positive")
    if not isinstance(cell_affine, bool):
        raise ValueError(f"nb201 supernet: cell_affine must be true or false, got {cell_affine!r}")
    return NB201SuperNet(space, input_shape, num_classes, channels, cells_per_stage, cell_affine)
