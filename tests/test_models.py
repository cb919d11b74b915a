from __future__ import annotations

import numpy as np
import pytest
import torch

from nasrl.models import ConvNet, build_model, builder_task, has_builder
from nasrl.models.conv import Concat
from nasrl.spaces import ConvSpace, get_space, list_spaces
from nasrl.training.common import count_macs

# Small settings per space so every registered space is exercised quickly.
SPACE_VARIANTS: dict[str, list[dict[str, object]]] = {
    "conv": [{}, {"predict_strides": True}, {"pooling": True, "predict_strides": True},
             {"skip_connections": False, "num_layers": 3}],
    "nb201": [{}],
}
BUILD_OPTIONS: dict[str, dict[str, object]] = {
    "nb201": {"channels": 4, "cells_per_stage": 1},
    "rnn_cell": {"hidden_size": 12, "embedding_size": 12},
}
VOCAB = 7


@pytest.mark.parametrize("name", list_spaces())
def test_every_registered_space_builds_and_trains(name: str) -> None:
    assert has_builder(name), f"space {name!r} has no model builder"
    task = builder_task(name)
    assert task in ("image", "language"), f"add a test input for task {task!r}"
    rng = np.random.default_rng(0)
    for params in SPACE_VARIANTS.get(name, [{}]):
        space = get_space(name, **params)  # type: ignore[arg-type]
        for _ in range(4):
            arch = space.sample(rng)
            shape = (3, 12, 12) if task == "image" else (6,)
            model = build_model(space, arch, input_shape=shape, num_classes=VOCAB, **BUILD_OPTIONS.get(name, {}))
            if task == "image":
                out = model(torch.randn(4, 3, 12, 12))
                assert out.shape == (4, VOCAB)
            else:
                out, state = model(torch.randint(VOCAB, (4, 6)))
                assert out.shape == (4, 6, VOCAB) and len(state) == 2
                out = out.clamp(-1e3, 1e3)  # a random cell may grow; the test is about the graph
            out.square().mean().backward()
            # (an op whose node feeds nothing gets no gradient; that is the architecture)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            assert all(torch.isfinite(g).all() for g in grads)
            head = model.classifier if task == "image" else model.decoder
            assert head.weight.grad is not None
            assert sum(g.abs().sum() > 0 for g in grads) >= 2


def conv_arch(space: ConvSpace, layers: list[tuple[int, int, int, tuple[int, ...]]], strides=None):
    choices: dict[str, object] = {}
    for i, (fh, fw, f, inputs) in enumerate(layers):
        choices.update({f"L{i}.filter_height": fh, f"L{i}.filter_width": fw, f"L{i}.filters": f,
                        f"L{i}.inputs": list(inputs)})
        if space.predict_strides:
            s = strides[i] if strides else 1
            choices.update({f"L{i}.stride_h": s, f"L{i}.stride_w": s})
    return space.make(choices)


def test_removing_a_chosen_input_changes_the_computation_exactly_by_its_channels() -> None:
    space = ConvSpace(num_layers=3)
    with_skip = conv_arch(space, [(3, 3, 24, ()), (3, 3, 36, (0,)), (3, 3, 48, (0, 1))])
    without = conv_arch(space, [(3, 3, 24, ()), (3, 3, 36, (0,)), (3, 3, 48, (1,))])
    a = build_model(space, with_skip, input_shape=(1, 8, 8), num_classes=10).eval()
    b = build_model(space, without, input_shape=(1, 8, 8), num_classes=10).eval()
    assert a.layers[2].conv.in_channels == 24 + 36 and b.layers[2].conv.in_channels == 36
    state = {k: v.clone() for k, v in a.state_dict().items()}
    state["layers.2.conv.weight"] = state["layers.2.conv.weight"][:, 24:]  # layer 1's channels
    b.load_state_dict(state)
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(a(x), b(x), atol=1e-4)  # layer 0 feeds layer 2 in `a` only
        a.layers[2].conv.weight[:, :24] = 0  # silence layer 0's channels: now the same network
        torch.testing.assert_close(a(x), b(x))


def test_layer_without_input_takes_the_image_and_dangling_outputs_reach_the_classifier() -> None:
    space = ConvSpace(num_layers=4)
    arch = conv_arch(space, [(3, 3, 24, ()), (1, 1, 36, ()), (3, 3, 48, (1,)), (5, 5, 64, (2,))])
    model = build_model(space, arch, input_shape=(3, 8, 8), num_classes=10)
    assert isinstance(model, ConvNet)
    assert model.layers[1].conv.in_channels == 3  # no chosen input: the image
    assert model.outputs == [0, 3]  # layer 0 feeds no later layer
    assert model.classifier.in_features == 24 + 64
    # the dangling layer really feeds the logits
    x = torch.randn(2, 3, 8, 8)
    before = model(x)
    with torch.no_grad():
        model.layers[0].conv.weight.mul_(3)
    assert not torch.allclose(before, model(x))


def test_smaller_maps_are_zero_padded_centred_before_concatenation() -> None:
    join = Concat([(1, 4, 4), (2, 2, 2)])
    assert join.out_shape == (3, 4, 4)
    out = join([torch.full((1, 1, 4, 4), 5.0), torch.ones(1, 2, 2, 2)])
    assert out.shape == (1, 3, 4, 4)
    assert (out[0, 0] == 5).all()
    expected = torch.zeros(4, 4)
    expected[1:3, 1:3] = 1
    assert torch.equal(out[0, 1], expected) and torch.equal(out[0, 2], expected)
    # inside a network: layer 2 joins a 8x8 map and a strided 4x4 map
    space = ConvSpace(num_layers=3, predict_strides=True)
    arch = conv_arch(space, [(3, 3, 24, ()), (3, 3, 36, (0,)), (3, 3, 48, (0, 1))], strides=[1, 2, 1])
    model = build_model(space, arch, input_shape=(1, 8, 8), num_classes=10)
    assert model.joins[2].out_shape == (60, 8, 8)
    assert model.layers[1].out_shape == (36, 4, 4)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_with_pooled_joins_larger_maps_are_averaged_down_and_a_skip_keeps_the_reduction() -> None:
    join = Concat([(1, 4, 4), (2, 2, 2)], "pool")
    assert join.out_shape == (3, 2, 2)
    big = torch.arange(16.0).reshape(1, 1, 4, 4)
    out = join([big, torch.ones(1, 2, 2, 2)])
    # each 2x2 quarter of the larger map averaged; the smaller map untouched
    assert torch.equal(out[0, 0], torch.tensor([[2.5, 4.5], [10.5, 12.5]]))
    assert torch.equal(out[0, 1:], torch.ones(2, 2, 2))
    # other ratios (28 -> 10 after a stride 3; 7 -> 5 x 8 -> 3) take adaptive pooling's windows
    for size, target in (((28, 28), (10, 10)), ((7, 8), (5, 3)), ((8, 7), (4, 7))):
        m = torch.randn(2, 3, *size)
        fitted = Concat([(3, *size), (1, *target)], "pool")([m, torch.zeros(2, 1, *target)])
        assert torch.allclose(fitted[:, :3], torch.nn.functional.adaptive_avg_pool2d(m, target), atol=1e-6)
    # inside a network: layer 2 joins the full-size layer 0 and the reduced layer 1, and
    # stays reduced (with padding the same skip puts it back at full size, at 4x the cost)
    spaces = {join: ConvSpace(num_layers=3, reduce_at=[1], join=join) for join in ("pad", "pool")}
    layers = [(3, 3, 24, ()), (3, 3, 36, (0,)), (3, 3, 48, (0, 1))]
    models = {join: build_model(space, conv_arch(space, layers), input_shape=(1, 8, 8), num_classes=10)
              for join, space in spaces.items()}
    assert models["pool"].layers[2].out_shape == (48, 4, 4)
    assert models["pad"].layers[2].out_shape == (48, 8, 8)
    x = torch.randn(2, 1, 8, 8)
    assert models["pool"](x).shape == (2, 10)
    assert count_macs(models["pool"], x[:1]) < count_macs(models["pad"], x[:1])


def test_pooling_and_stride_three_shrink_to_one_pixel_without_error() -> None:
    space = ConvSpace(num_layers=4, predict_strides=True, pooling=True)
    choices = {}
    for i in range(4):
        choices.update({f"L{i}.filter_height": 3, f"L{i}.filter_width": 3, f"L{i}.filters": 24,
                        f"L{i}.stride_h": 3, f"L{i}.stride_w": 3, f"L{i}.pool": "max",
                        f"L{i}.inputs": [i - 1] if i else []})
    model = build_model(space, space.make(choices), input_shape=(1, 8, 8), num_classes=3)
    assert model.layers[-1].out_shape == (24, 1, 1)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)


def test_depth_schedule_gives_deeper_spaces_the_same_controller_can_serve() -> None:
    from nasrl.spaces.conv import DepthSchedule

    paper = DepthSchedule(start=6, step=2, every=1600, maximum=None)
    assert [paper.depth_at(n) for n in (0, 1599, 1600, 3200, 12799)] == [6, 6, 8, 10, 20]
    capped = DepthSchedule(start=6, step=2, every=10, maximum=9)
    assert capped.depth_at(100) == 9
    space = ConvSpace().with_layers(paper.depth_at(1600))
    arch = space.sample(np.random.default_rng(0))
    assert build_model(space, arch, input_shape=(1, 8, 8), num_classes=10)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_nb201_network_matches_the_benchmark_skeleton() -> None:
    space = get_space("nb201")
    zero = space.from_string("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|")
    full = space.from_string("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+"
                             "|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|")

    def millions(arch) -> float:  # type: ignore[no-untyped-def]
        model = build_model(space, arch, input_shape=(3, 32, 32), num_classes=10)
        return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)

    # the benchmark's networks (C=16, N=5, CIFAR-10) range from 0.07 M to 1.53 M parameters
    assert millions(zero) == 0.07 and millions(full) == 1.53
    out = build_model(space, zero, input_shape=(3, 16, 16), num_classes=10, channels=4, cells_per_stage=1)(
        torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 10)


def test_unknown_builder_option_is_a_clear_error() -> None:
    from nasrl.errors import NasrlError

    space = get_space("nb201")
    with pytest.raises(NasrlError, match="width"):
        build_model(space, space.sample(np.random.default_rng(0)), input_shape=(3, 8, 8), num_classes=2, width=3)


def test_width_and_depth_scale_a_found_conv_architecture_for_final_training() -> None:
    from nasrl.errors import NasrlError

    space = ConvSpace(num_layers=3, predict_strides=True, pooling=True)
    arch = space.sample(np.random.default_rng(3))
    shape = (1, 28, 28)
    base = build_model(space, arch, input_shape=shape, num_classes=10)
    same = build_model(space, arch, input_shape=shape, num_classes=10, width=1, depth=1)
    assert list(base.state_dict()) == list(same.state_dict())  # the defaults are the searched child
    wide = build_model(space, arch, input_shape=shape, num_classes=10, width=2)
    deep = build_model(space, arch, input_shape=shape, num_classes=10, depth=3)
    for i in range(space.num_layers):
        filters = space.layer(arch, i)["filters"]
        assert wide.layers[i].conv.out_channels == 2 * filters
        convs = [m for m in deep.layers[i].modules() if isinstance(m, torch.nn.Conv2d)]
        assert len(convs) == 3 and all(c.out_channels == filters for c in convs)
        assert [c.stride for c in convs[1:]] == [(1, 1), (1, 1)]  # only the first strides
    x = torch.randn(4, *shape)
    for model in (wide, deep):
        model.eval()
        assert model(x).shape == (4, 10)
    # the same map sizes: depth adds stride-1 convolutions before the pooling
    assert [lay.out_shape[1:] for lay in deep.layers] == [lay.out_shape[1:] for lay in base.layers]
    for bad in ({"width": 0}, {"width": "2"}, {"depth": 0}, {"depth": 1.5}):
        with pytest.raises(NasrlError, match="conv builder"):
            build_model(space, arch, input_shape=shape, num_classes=10, **bad)


def test_a_pooled_join_of_any_ratio_exports_to_onnx(tmp_path) -> None:
    pytest.importorskip("onnx")
    from nasrl.export import _onnx

    # a stride 3 leaves 28 -> 10: not a whole ratio, which adaptive pooling cannot export
    space = ConvSpace(num_layers=3, predict_strides=True, join="pool")
    arch = conv_arch(space, [(3, 3, 24, ()), (3, 3, 24, (0,)), (3, 3, 24, (0, 1))], strides=[1, 3, 1])
    model = build_model(space, arch, input_shape=(1, 28, 28), num_classes=10).eval()
    assert model.joins[2].out_shape == (48, 10, 10)
    _onnx(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.onnx")
    assert (tmp_path / "m.onnx").stat().st_size > 1000
