"""Issue 15's ranking check: does the shared-weight accuracy rank architectures the way
training them stand-alone does?

    python benchmarks/enas_ranking.py [--spaces conv nb201] [--dataset fashion-mnist]
        [--data-dir DIR] [--archs 20] [--shared-epochs 10] [--child-epochs 3]
        [--max-train-samples 10000] [--threads 2] [--conv-filters 24 36 48 64] [--json PATH]

For each space: train the supernet (``nasrl.training.shared.train_shared``, one uniformly
sampled architecture per batch), then take ``--archs`` fixed random architectures (drawn
from ``--seed`` alone), score each with the shared weights (batch-norm statistics
recalibrated on training batches) and train each stand-alone from scratch with a short
schedule; report both validation accuracies and Kendall's tau-b between them. Target:
tau >= 0.5 (published NAS-Bench-201 supernets reach 0.2-0.7). The stand-alone runs
dominate the cost: --archs x --child-epochs child epochs per space. ``--json PATH`` writes
the settings and every architecture's pair of accuracies (docs/enas-ranking-fmnist.json).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nasrl.benchmark import kendall_tau
from nasrl.data import ImageData, load_images
from nasrl.models.supernet import build_supernet
from nasrl.spaces import ConvSpace, get_space
from nasrl.spaces.base import SearchSpace
from nasrl.training import TrainConfig, seeded
from nasrl.training.image import train_architecture
from nasrl.training.shared import shared_accuracy, train_shared

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared/data/fashion-mnist"
TARGET_TAU = 0.5


def make_space(name: str, layers: int, filters: list[int]) -> SearchSpace:
    # conv: the paper's v1 space at --conv-layers depth (skips on, no strides or pooling);
    # --conv-filters narrows it because every layer runs at full 28x28 resolution, which
    # makes its children several times dearer per epoch than nb201's on one CPU thread
    return ConvSpace(num_layers=layers, num_filters=filters) if name == "conv" else get_space(name)


@dataclass
class Ranking:
    space: str
    tau: float
    shared_mean: float
    alone_mean: float
    shared_seconds: float
    alone_seconds: float
    shared: list[float]
    alone: list[float]
    archs: list[str]
    losses: list[float]


def rank_space(space: SearchSpace, data: ImageData, args: argparse.Namespace) -> Ranking:
    options = {}
    if space.name == "nb201":
        options = {"channels": args.nb201_channels, "cells_per_stage": args.nb201_cells}
    shared_config = TrainConfig(epochs=args.shared_epochs, batch_size=args.batch_size,
                                learning_rate=args.lr, max_train_samples=args.max_train_samples)
    child_config = TrainConfig(epochs=args.child_epochs, batch_size=args.batch_size,
                               learning_rate=args.lr, max_train_samples=args.max_train_samples)
    start = time.perf_counter()
    with seeded(args.seed):
        supernet = build_supernet(space, data.input_shape, data.num_classes, **options)
    losses = train_shared(supernet, data, shared_config, seed=args.seed, device="cpu")
    shared_seconds = time.perf_counter() - start
    rng = np.random.default_rng(args.seed + 1)
    archs = [space.sample(rng) for _ in range(args.archs)]
    bs = args.batch_size
    calibration = [data.train_x[i:i + bs] for i in range(0, args.calibration_batches * bs, bs)]
    shared = [shared_accuracy(supernet, a, data.val_x, data.val_y, shared_config, calibration=calibration)
              for a in archs]
    start = time.perf_counter()
    alone = []
    for k, arch in enumerate(archs):
        result, _ = train_architecture(space, arch, data, child_config, seed=args.seed + 100 + k,
                                       device="cpu", build_options=options)
        alone.append(result.val_acc[-1] if result.ok else float("nan"))
        print(f"  {space.name} #{k:2d} shared {shared[k]:.4f}  stand-alone {alone[k]:.4f}  "
              f"{space.describe(arch)}", flush=True)
    print(f"  {space.name} supernet train loss per epoch: {' '.join(f'{x:.3f}' for x in losses)}")
    return Ranking(space.name, kendall_tau(shared, alone), float(np.mean(shared)), float(np.nanmean(alone)),
                   shared_seconds, time.perf_counter() - start, [float(x) for x in shared], alone,
                   [space.describe(a) for a in archs], [float(x) for x in losses])


def _finite(x: float) -> float | None:
    # JSON has no NaN: a failed child or a constant ranking becomes null
    return x if math.isfinite(x) else None


def write_json(path: Path, args: argparse.Namespace, rows: list[Ranking]) -> None:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
    spaces = {}
    for r in rows:
        spaces[r.space] = {
            "kendall_tau": _finite(r.tau), "target": TARGET_TAU, "pass": bool(r.tau >= TARGET_TAU),
            "shared_mean": r.shared_mean, "alone_mean": _finite(r.alone_mean),
            "shared_range": [min(r.shared), max(r.shared)],
            "alone_range": [_finite(float(np.nanmin(r.alone))), _finite(float(np.nanmax(r.alone)))],
            "supernet_seconds": round(r.shared_seconds, 1), "alone_seconds": round(r.alone_seconds, 1),
            "supernet_loss_per_epoch": r.losses,
            "archs": [{"arch": a, "shared_val_acc": s, "alone_val_acc": _finite(t)}
                      for a, s, t in zip(r.archs, r.shared, r.alone, strict=True)],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "spaces": spaces}, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spaces", nargs="+", default=["conv", "nb201"], choices=["conv", "nb201"])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help=f"default: {DEFAULT_DATA} for fashion-mnist, bundled for digits")
    parser.add_argument("--val-size", type=int, default=None)
    parser.add_argument("--archs", type=int, default=20)
    parser.add_argument("--shared-epochs", type=int, default=10)
    parser.add_argument("--child-epochs", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, default=10000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--calibration-batches", type=int, default=4)
    parser.add_argument("--conv-layers", type=int, default=6)
    parser.add_argument("--conv-filters", type=int, nargs="+", default=[24, 36, 48, 64],
                        help="filter-count choices of the conv space (default: the paper's)")
    parser.add_argument("--nb201-channels", type=int, default=16)
    parser.add_argument("--nb201-cells", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data_dir = args.data_dir or (DEFAULT_DATA if args.dataset == "fashion-mnist" else None)
    data = load_images(args.dataset, data_dir=data_dir, seed=args.seed, val_size=args.val_size,
                       download=False)
    print(f"{args.dataset}: {len(data.train_x)} train, {len(data.val_x)} val; "
          f"{args.archs} archs; shared {args.shared_epochs} ep, stand-alone {args.child_epochs} ep; "
          f"max_train_samples {args.max_train_samples}; threads {args.threads}")
    rows = [rank_space(make_space(name, args.conv_layers, args.conv_filters), data, args)
            for name in args.spaces]
    print(f"\n{'space':8s} {'tau':>6s} {'shared acc':>10s} {'alone acc':>9s} {'supernet s':>10s} "
          f"{'alone s':>8s}")
    for r in rows:
        print(f"{r.space:8s} {r.tau:6.3f} {r.shared_mean:10.4f} {r.alone_mean:9.4f} "
              f"{r.shared_seconds:10.1f} {r.alone_seconds:8.1f}")
    for r in rows:
        verdict = "PASS " if r.tau >= TARGET_TAU else "MISS "
        print(verdict + f"{r.space}: Kendall tau {r.tau:.3f} (>= {TARGET_TAU})")
    if args.json is not None:
        write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
