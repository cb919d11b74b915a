"""Shared-weight networks: every architecture's sub-network equals its stand-alone child.

The central check copies ``child_state_dict(arch)`` into the child ``build_model`` makes
and compares outputs on the same batch, in train mode (batch statistics, and the running
statistics that step leaves behind) and in eval mode (running statistics), for many
random architectures of each space.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasrl.errors import NasrlError
from nasrl.models import build_model
from nasrl.models.supernet import SuperNet, build_supernet, recalibrate_bn
from nasrl.spaces import ConvSpace, get_space
from nasrl.spaces.base import Architecture, SearchSpace

torch.set_num_threads(1)

CONV_FULL = ConvSpace(num_layers=6, predict_strides=True, pooling=True, skip_connections=True)


def _randomise(net: nn.Module, seed: int) -> None:
    """Non-default batch-norm affine parameters and running statistics: with weight 1, bias
    0, mean 0 and var 1 everywhere, a wrong slice of them would go unnoticed."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                if m.affine:
                    m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen))
                assert m.running_mean is not None and m.running_var is not None
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


def _assert_equivalent(space: SearchSpace, supernet: SuperNet, arch: Architecture, x: torch.Tensor) -> None:
    child = build_model(space, arch, input_shape=supernet.input_shape, num_classes=supernet.num_classes,
                        **supernet.options)
    child.load_state_dict(supernet.child_state_dict(arch), strict=True)
    desc = space.describe(arch)
    supernet.eval()
    child.eval()
    with torch.no_grad():
        assert torch.allclose(supernet(x, arch), child(x), rtol=1e-5, atol=1e-6), f"eval: {desc}"
    supernet.train()
    child.train()
    with torch.no_grad():
        assert torch.allclose(supernet(x, arch), child(x), rtol=1e-5, atol=1e-6), f"train: {desc}"
    # the train step updated the same running statistics on both sides
    after = supernet.child_state_dict(arch)
    for key, value in child.state_dict().items():
        assert torch.allclose(after[key], value, rtol=1e-5, atol=1e-6), f"{key}: {desc}"


def _archs(space: SearchSpace, n: int, seed: int) -> list[Architecture]:
    rng = np.random.default_rng(seed)
    return [space.sample(rng) for _ in range(n)]


@pytest.mark.parametrize("space", [
    CONV_FULL,
    ConvSpace(num_layers=4),
    ConvSpace(num_layers=3, skip_connections=False, pooling=True),
    ConvSpace(num_layers=4, predict_strides=True, stride_from=2),
    ConvSpace(num_layers=4, reduce_at=[1, 3]),
    ConvSpace(num_layers=5, predict_strides=True, pooling=True, join="pool"),
], ids=["skips+strides+pool", "default", "chain", "stride_from", "reduce_at", "pooled joins"])
def test_conv_supernet_equals_the_stand_alone_child_with_the_same_weights(space: ConvSpace) -> None:
    torch.manual_seed(0)
    supernet = build_supernet(space, (3, 11, 11), 5)
    _randomise(supernet, 1)
    x = torch.randn(6, 3, 11, 11, generator=torch.Generator().manual_seed(2))
    archs = _archs(space, 25, seed=3)
    # the sample must exercise what the equivalence is about, or the test proves little
    if space.join == "pool":  # some joins must pool a larger map down to a smaller one
        nets = [build_model(space, a, input_shape=(3, 11, 11), num_classes=5) for a in archs]
        assert any(pooler is not None for net in nets for join in [*net.joins, net.final]
                   for pooler in join.poolers)
    if space is CONV_FULL:
        layers = [space.layer(a, i) for a in archs for i in range(space.num_layers)]
        assert any(len(lay["inputs"]) >= 2 for lay in layers)
        assert any(lay["inputs"] == () for lay in layers[1:])
        assert any(lay["pool"] == "max" for lay in layers)
        assert any(lay["stride_h"] != lay["stride_w"] for lay in layers)
        assert len({lay["filter_height"] for lay in layers}) == 4
    for arch in archs:
        _assert_equivalent(space, supernet, arch, x)


@pytest.mark.parametrize("cell_affine", [True, False])
def test_nb201_supernet_equals_the_stand_alone_child_with_the_same_weights(cell_affine: bool) -> None:
    space = get_space("nb201")
    torch.manual_seed(0)
    supernet = build_supernet(space, (3, 8, 8), 4, channels=4, cells_per_stage=2, cell_affine=cell_affine)
    cell_bns = [m for name, m in supernet.named_modules() if ".ops." in name and isinstance(m, nn.BatchNorm2d)]
    assert len(cell_bns) == 2 * 3 * 6 * 2  # (2 cells x 3 stages) x 6 edges x 2 parametric ops
    assert all(m.affine == cell_affine for m in cell_bns)
    # the stem, reductions and head keep theirs either way
    assert all(m.affine for name, m in supernet.named_modules()
               if ".ops." not in name and isinstance(m, nn.BatchNorm2d))
    _randomise(supernet, 1)
    x = torch.randn(5, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    ops = {e: "none" for e in ("edge_1_0", "edge_2_0", "edge_2_1", "edge_3_0", "edge_3_1", "edge_3_2")}
    special = [
        space.make(ops),  # an empty cell: zero output
        # node 1 gets nothing but feeds node 2 through a conv: the conv of a zero map
        space.make({**ops, "edge_2_1": "nor_conv_3x3", "edge_3_2": "nor_conv_1x1", "edge_3_0": "skip_connect"}),
    ]
    for arch in special + _archs(space, 20, seed=3):
        _assert_equivalent(space, supernet, arch, x)


def test_a_training_step_touches_only_the_weights_of_the_sampled_architecture() -> None:
    space = CONV_FULL
    supernet = build_supernet(space, (3, 11, 11), 5)
    arch = space.make({**_archs(space, 1, seed=4)[0].as_dict(),
                       "L5.inputs": (1, 3), "L3.inputs": (), "L1.inputs": (0,), "L2.inputs": (1,),
                       "L4.inputs": (2,), "L0.filters": 24})
    x = torch.randn(4, 3, 11, 11, generator=torch.Generator().manual_seed(0))
    supernet(x, arch).sum().backward()
    grads = {name: p.grad for name, p in supernet.named_parameters()}
    used = {"blocks.L0_from_img", "blocks.L1_from_0", "blocks.L2_from_1", "blocks.L3_from_img",
            "blocks.L4_from_2", "blocks.L5_from_1", "blocks.L5_from_3", "heads.4", "heads.5", "head_bias"}
    used |= {f"bns.{i}.{w}" for i in range(6) for w in ("weight", "bias")}
    for name, grad in grads.items():
        nonzero = grad is not None and bool(grad.abs().sum() > 0)
        assert nonzero == (name in used), name
    # within a used block only the child's slice moves: layer 0 used 24 of 64 filters
    g0 = grads["blocks.L0_from_img"]
    assert g0 is not None and g0[24:].abs().sum() == 0 and g0[:24].abs().sum() > 0


def test_children_share_the_centred_kernel_and_each_inputs_weights_whatever_else_is_chosen() -> None:
    space = CONV_FULL
    supernet = build_supernet(space, (3, 11, 11), 5)
    base = _archs(space, 1, seed=8)[0].as_dict()
    small = space.make({**base, "L0.filter_height": 3, "L0.filter_width": 5, "L0.filters": 24,
                        "L1.filters": 36, "L3.filters": 48, "L5.inputs": (1, 3)})
    large = space.make({**base, "L0.filter_height": 7, "L0.filter_width": 7, "L0.filters": 64,
                        "L1.filters": 64, "L3.filters": 48, "L5.inputs": (3,)})
    a, b = supernet.child_state_dict(small), supernet.child_state_dict(large)
    # the 3x5 kernel is the centre of the 7x7 one, over the first 24 filters
    assert torch.equal(a["layers.0.conv.weight"], b["layers.0.conv.weight"][:24, :, 2:5, 1:6])
    # layer 5 reads layer 3 through the same weights with or without layer 1 beside it;
    # layer 1's 36 channels come first in the concatenation (the child's input order)
    f5 = space.layer(small, 5)["filters"]
    assert torch.equal(a["layers.5.conv.weight"][:, 36:], b["layers.5.conv.weight"][:f5])


def test_recalibrated_statistics_are_the_childs_average_over_the_batches() -> None:
    space = CONV_FULL
    torch.manual_seed(0)
    supernet = build_supernet(space, (3, 11, 11), 5)
    _randomise(supernet, 1)
    arch = _archs(space, 1, seed=5)[0]
    gen = torch.Generator().manual_seed(6)
    batches = [torch.randn(8, 3, 11, 11, generator=gen) for _ in range(3)]
    child = supernet.build_child(arch)
    before = {k: v.clone() for k, v in supernet.state_dict().items()}

    assert recalibrate_bn(supernet, arch, batches) == 3
    assert not supernet.training
    # the child computing its own cumulative averages from scratch agrees
    for m in child.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    child.train()
    with torch.no_grad():
        for xb in batches:
            child(xb)
    mine = supernet.child_state_dict(arch)
    for key, value in child.state_dict().items():
        if "running" in key:
            assert torch.allclose(mine[key], value, rtol=1e-5, atol=1e-6), key
    # weights and the statistics of unused channels are untouched
    after = supernet.state_dict()
    for key, value in before.items():
        if "running" not in key and "num_batches" not in key:
            assert torch.equal(after[key], value), key
    filters = space.layer(arch, 0)["filters"]
    assert torch.equal(after["bns.0.running_mean"][filters:], before["bns.0.running_mean"][filters:])
    assert not torch.equal(after["bns.0.running_mean"][:filters], before["bns.0.running_mean"][:filters])


def test_build_child_carries_the_weights_and_mode() -> None:
    space = get_space("nb201")
    supernet = build_supernet(space, (3, 8, 8), 4, channels=4, cells_per_stage=1).eval()
    arch = _archs(space, 1, seed=7)[0]
    child = supernet.build_child(arch)
    assert not child.training
    x = torch.randn(3, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(child(x), supernet(x, arch), rtol=1e-5, atol=1e-6)
    # a copy: training the child later leaves the supernet alone
    with torch.no_grad():
        next(child.parameters()).add_(1.0)
    assert not torch.allclose(child(x), supernet(x, arch))


def test_unknown_space_or_option_is_a_clear_error() -> None:
    with pytest.raises(NasrlError, match="no shared-weight network for space 'rnn_cell'"):
        build_supernet(get_space("rnn_cell"), (3, 8, 8), 2)
    with pytest.raises(NasrlError, match="unexpected keyword argument 'channels'"):
        build_supernet(ConvSpace(), (3, 8, 8), 2, channels=4)
    with pytest.raises(NasrlError, match="unexpected keyword argument 'width'"):
        build_supernet(get_space("nb201"), (3, 8, 8), 2, width=4)
