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
``--child-seeds N`` trains each architecture N times and ranks by the mean; the first two
seeds' own tau ("seed tau") says how far the short stand-alone schedule agrees with
itself, which bounds what any proxy can reach. ``--reuse PATH`` keeps a --json file's
supernet scores and stand-alone results (same settings), so more seeds cost only the
children they add; ``--reuse-alone PATH`` keeps only its stand-alone results and trains a
new supernet, so supernet variants (``--shared-epochs``, ``--nb201-cell-bn``,
``--calibration-batches``, ``--shared-lr``, ``--shared-train-samples``) are compared on
the same stand-alone side at the supernet's cost alone. Every run scores the architectures
twice: with batch-norm statistics recalibrated on training batches (the "tau" the target
is about) and with the statistics of each validation batch, as ENAS's rewards are
computed ("batch-stat tau").
``--trend-every N`` also scores them every N supernet epochs (recalibrated): tau against
training length in one run, mid-schedule (the learning rate not yet annealed).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from nasrl.benchmark import kendall_tau
from nasrl.data import ImageData, load_images
from nasrl.models.supernet import build_supernet
from nasrl.spaces import ConvSpace, get_space
from nasrl.spaces.base import Architecture, SearchSpace
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
    shared_seconds: float
    alone_seconds: float
    shared: list[float]
    """Shared-weight validation accuracy with recalibrated batch-norm statistics."""
    shared_batch: list[float]
    """The same with each validation batch's own statistics (empty in older files)."""
    alone_seeds: list[list[float]]
    """Each architecture's stand-alone validation accuracy, one per training seed."""
    archs: list[str]
    losses: list[float]
    trend: list[tuple[int, list[float]]] = field(default_factory=list)
    """Recalibrated shared scores after some epochs of supernet training (--trend-every)."""
    shared_test: list[float] = field(default_factory=list)
    """Recalibrated shared-weight accuracy on the test split (--score-test; else empty)."""
    trend_test: list[list[float]] = field(default_factory=list)
    """The same at each --trend-every point (--score-test; else empty)."""

    @property
    def alone(self) -> list[float]:
        return [float(np.mean(a)) for a in self.alone_seeds]

    @property
    def tau(self) -> float:
        return kendall_tau(self.shared, self.alone)

    @property
    def test_tau(self) -> float:
        return kendall_tau(self.shared_test, self.alone) if self.shared_test else float("nan")

    @property
    def batch_tau(self) -> float:
        return kendall_tau(self.shared_batch, self.alone) if self.shared_batch else float("nan")

    @property
    def seed_tau(self) -> float:
        """Kendall tau between the first two seeds' stand-alone accuracies: how well the
        short stand-alone schedule ranks against itself, a ceiling for any proxy's tau
        (NaN with one seed)."""
        if any(len(a) < 2 for a in self.alone_seeds):
            return float("nan")
        return kendall_tau([a[0] for a in self.alone_seeds], [a[1] for a in self.alone_seeds])


# settings that may differ between a --reuse file and this run
_REUSE_FREE = {"json", "reuse", "reuse_alone", "child_seeds", "threads", "spaces", "data_dir"}
# ... and also between a --reuse-alone file and this run: the stand-alone side ignores them
_SUPERNET_ONLY = {"shared_epochs", "shared_lr", "calibration_batches", "nb201_cell_bn", "trend_every",
                  "score_test", "shared_train_samples"}
# settings added since files were first written, with the value those files ran with
_ADDED = {"nb201_cell_bn": "affine", "shared_lr": None, "trend_every": 0, "score_test": False,
          "shared_train_samples": None}


def fail(message: str) -> NoReturn:
    """Bad input: one line on stderr, exit status 2 (as argparse and nasrl answer it)."""
    print(f"enas_ranking.py: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def reused(args: argparse.Namespace, space: str) -> tuple[dict[str, Any] | None, bool]:
    """The ``space`` entry of the --reuse or --reuse-alone file, checked against this
    run's settings, and whether its supernet scores are kept too (--reuse)."""
    if args.reuse is None and args.reuse_alone is None:
        return None, False
    option, path = ("--reuse", args.reuse) if args.reuse is not None else ("--reuse-alone", args.reuse_alone)
    free = _REUSE_FREE if args.reuse is not None else _REUSE_FREE | _SUPERNET_ONLY
    try:
        saved = json.loads(path.read_text())
        theirs = {k: v for k, v in {**_ADDED, **saved["settings"]}.items() if k not in free}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        fail(f"{option} {path}: not a --json output of this benchmark ({exc})")
    mine = {k: v for k, v in vars(args).items() if k not in free}
    if mine != theirs:
        diff = sorted(k for k in mine.keys() | theirs.keys() if mine.get(k) != theirs.get(k))
        fail(f"{option} {path}: other settings ({', '.join(diff)})")
    entry: dict[str, Any] | None = saved["spaces"].get(space)
    return entry, args.reuse is not None


def rank_space(space: SearchSpace, data: ImageData, args: argparse.Namespace) -> Ranking:
    options: dict[str, Any] = {}
    if space.name == "nb201":
        options = {"channels": args.nb201_channels, "cells_per_stage": args.nb201_cells}
    supernet_options = {**options, "cell_affine": args.nb201_cell_bn == "affine"} if options else {}
    shared_lr = args.lr if args.shared_lr is None else args.shared_lr
    shared_samples = args.shared_train_samples
    if shared_samples is None:
        shared_samples = args.max_train_samples  # as the children, as files before the option
    shared_config = TrainConfig(epochs=args.shared_epochs, batch_size=args.batch_size,
                                learning_rate=shared_lr, max_train_samples=shared_samples or None)
    child_config = TrainConfig(epochs=args.child_epochs, batch_size=args.batch_size,
                               learning_rate=args.lr, max_train_samples=args.max_train_samples)
    rng = np.random.default_rng(args.seed + 1)
    archs = [space.sample(rng) for _ in range(args.archs)]
    previous, keep_shared = reused(args, space.name)
    ranking = None if previous is None else _from_saved(previous, space, archs)
    if ranking is None or not keep_shared:
        start = time.perf_counter()
        with seeded(args.seed):
            supernet = build_supernet(space, data.input_shape, data.num_classes, **supernet_options)
        bs = args.batch_size
        calibration = [data.train_x[i:i + bs] for i in range(0, args.calibration_batches * bs, bs)]

        def scores(x: torch.Tensor, y: torch.Tensor) -> list[float]:
            return [shared_accuracy(supernet, a, x, y, shared_config, calibration=calibration)
                    for a in archs]

        def test_scores() -> list[float]:
            return scores(data.test_x, data.test_y) if args.score_test else []

        trend: list[tuple[int, list[float]]] = []
        trend_test: list[list[float]] = []
        scoring = 0.0

        def checkpoint(epoch: int, _seconds: float) -> None:
            nonlocal scoring
            done = epoch + 1
            if args.trend_every and done % args.trend_every == 0 and done < args.shared_epochs:
                t0 = time.perf_counter()
                trend.append((done, scores(data.val_x, data.val_y)))  # leaves the supernet in train mode
                if args.score_test:  # else trend_test stays empty, as Ranking documents
                    trend_test.append(test_scores())
                scoring += time.perf_counter() - t0

        losses = train_shared(supernet, data, shared_config, seed=args.seed, device="cpu",
                              on_epoch=checkpoint)
        shared_seconds = time.perf_counter() - start - scoring
        shared = scores(data.val_x, data.val_y)
        batch = [shared_accuracy(supernet, a, data.val_x, data.val_y, shared_config) for a in archs]
        alone = [[] for _ in archs] if ranking is None else ranking.alone_seeds
        ranking = Ranking(space.name, shared_seconds, 0.0 if ranking is None else ranking.alone_seconds,
                          [float(x) for x in shared], [float(x) for x in batch], alone,
                          [space.describe(a) for a in archs], [float(x) for x in losses], trend,
                          test_scores(), trend_test)
    start = time.perf_counter()
    for k, arch in enumerate(archs):
        seeds = ranking.alone_seeds[k]
        while len(seeds) < args.child_seeds:
            # the first seed is the one every earlier run used, so reused results stay comparable
            seed = args.seed + 100 + k + 1000 * len(seeds)
            result, _ = train_architecture(space, arch, data, child_config, seed=seed,
                                           device="cpu", build_options=options)
            seeds.append(result.val_acc[-1] if result.ok else float("nan"))
        print(f"  {space.name} #{k:2d} shared {ranking.shared[k]:.4f}  stand-alone "
              f"{' '.join(f'{a:.4f}' for a in seeds)}  {space.describe(arch)}", flush=True)
    ranking.alone_seconds += time.perf_counter() - start
    print(f"  {space.name} supernet train loss per epoch: {' '.join(f'{x:.3f}' for x in ranking.losses)}")
    if ranking.trend:
        print(f"  {space.name} tau after supernet epochs: " + "  ".join(
            f"{e}: {kendall_tau(s, ranking.alone):.3f}" for e, s in ranking.trend))
    if ranking.shared_test:
        on_test = zip((e for e, _ in ranking.trend), ranking.trend_test, strict=True)
        print(f"  {space.name} tau of the shared scores on the test split: {ranking.test_tau:.3f}; "
              "after supernet epochs: " + "  ".join(f"{e}: {kendall_tau(s, ranking.alone):.3f}"
                                                    for e, s in on_test))
    return ranking


def _from_saved(entry: dict[str, Any], space: SearchSpace, archs: list[Architecture]) -> Ranking:
    described = [space.describe(a) for a in archs]
    if [a["arch"] for a in entry["archs"]] != described:
        fail(f"--reuse: its {space.name} architectures are not this run's")
    alone = [[x for x in a.get("alone_val_acc_seeds", [a["alone_val_acc"]]) if x is not None]
             for a in entry["archs"]]
    batch = [a.get("shared_batch_val_acc") for a in entry["archs"]]
    test = [a.get("shared_test_acc") for a in entry["archs"]]
    points = entry.get("trend", [])  # files before --trend-every have none
    trend = [(int(p["epoch"]), list(p["shared_val_acc"])) for p in points]
    trend_test = [list(p["shared_test_acc"]) for p in points if "shared_test_acc" in p]
    return Ranking(space.name, entry["supernet_seconds"], entry["alone_seconds"],
                   [a["shared_val_acc"] for a in entry["archs"]],
                   [] if None in batch else batch, alone, described, entry["supernet_loss_per_epoch"],
                   trend, [] if None in test else test,
                   trend_test if len(trend_test) == len(trend) else [])


def _finite(x: float) -> float | None:
    # JSON has no NaN: a failed child or a constant ranking becomes null
    return x if math.isfinite(x) else None


def _or_none(values: list[float], n: int) -> list[float | None]:
    return list(values) if values else [None] * n


def _trend_rows(r: Ranking) -> list[dict[str, Any]]:
    rows = []
    for k, (epoch, shared) in enumerate(r.trend):
        row: dict[str, Any] = {"epoch": epoch, "kendall_tau": _finite(kendall_tau(shared, r.alone)),
                               "shared_val_acc": shared}
        if r.trend_test:
            row |= {"test_scored_tau": _finite(kendall_tau(r.trend_test[k], r.alone)),
                    "shared_test_acc": r.trend_test[k]}
        rows.append(row)
    return rows


def write_json(path: Path, args: argparse.Namespace, rows: list[Ranking]) -> None:
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "json"}
    spaces = {}
    for r in rows:
        n = len(r.archs)
        spaces[r.space] = {
            "kendall_tau": _finite(r.tau), "target": TARGET_TAU, "pass": bool(r.tau >= TARGET_TAU),
            "batch_stat_tau": _finite(r.batch_tau), "seed_tau": _finite(r.seed_tau),
            "test_scored_tau": _finite(r.test_tau),
            "shared_mean": float(np.mean(r.shared)), "alone_mean": _finite(float(np.nanmean(r.alone))),
            "shared_range": [min(r.shared), max(r.shared)],
            "alone_range": [_finite(float(np.nanmin(r.alone))), _finite(float(np.nanmax(r.alone)))],
            "supernet_seconds": round(r.shared_seconds, 1), "alone_seconds": round(r.alone_seconds, 1),
            "supernet_loss_per_epoch": r.losses,
            "trend": _trend_rows(r),
            "archs": [{"arch": a, "shared_val_acc": s, "shared_batch_val_acc": b, "shared_test_acc": st,
                       "alone_val_acc": _finite(t), "alone_val_acc_seeds": [_finite(x) for x in seeds]}
                      for a, s, b, st, t, seeds in zip(r.archs, r.shared, _or_none(r.shared_batch, n),
                                                       _or_none(r.shared_test, n), r.alone,
                                                       r.alone_seeds, strict=True)],
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"settings": settings, "spaces": spaces}, indent=1) + "\n")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _nonnegative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is negative")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
    return value


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
    parser.add_argument("--shared-lr", type=_positive_float, default=None,
                        help="the supernet's learning rate (default: --lr, as the stand-alone children)")
    parser.add_argument("--shared-train-samples", type=_nonnegative, default=None,
                        help="training images the supernet trains on (default: --max-train-samples, "
                             "as the stand-alone children; 0: the whole training split, as a one-shot "
                             "search trains its supernet)")
    parser.add_argument("--calibration-batches", type=int, default=4)
    parser.add_argument("--trend-every", type=_nonnegative, default=0,
                        help="also score the architectures every this many supernet epochs, for "
                             "tau against training length (0: only at the end)")
    parser.add_argument("--score-test", action="store_true",
                        help="also score the supernet on the test split (10,000 Fashion-MNIST "
                             "images, five times the default validation split): tau with less "
                             "scoring noise, reported beside the validation tau the target is about")
    parser.add_argument("--conv-layers", type=int, default=6)
    parser.add_argument("--conv-filters", type=int, nargs="+", default=[24, 36, 48, 64],
                        help="filter-count choices of the conv space (default: the paper's)")
    parser.add_argument("--nb201-channels", type=int, default=16)
    parser.add_argument("--nb201-cells", type=int, default=5)
    parser.add_argument("--nb201-cell-bn", choices=["affine", "plain"], default="affine",
                        help="batch norm of the supernet's cell ops: with affine parameters (as the "
                             "stand-alone cells) or without (NAS-Bench-201's one-shot setting)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child-seeds", type=_positive, default=1,
                        help="train each architecture stand-alone this many times (seeds) and rank "
                             "by the mean; with 2 or more, 'seed tau' is the first two seeds' "
                             "agreement, a ceiling for the supernet's tau")
    parser.add_argument("--reuse", type=Path, default=None,
                        help="a --json file of a run with the same settings: its supernet scores "
                             "and stand-alone results are kept, only missing seeds are trained")
    parser.add_argument("--reuse-alone", type=Path, default=None,
                        help="a --json file whose stand-alone settings match: its stand-alone "
                             "results are kept and a new supernet is trained")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    if args.reuse is not None and args.reuse_alone is not None:
        fail("--reuse and --reuse-alone exclude each other (--reuse keeps the supernet's scores too)")
    for name in args.spaces:
        reused(args, name)  # a bad --reuse file is reported before the data loads, not after
    torch.set_num_threads(args.threads)
    data_dir = args.data_dir or (DEFAULT_DATA if args.dataset == "fashion-mnist" else None)
    data = load_images(args.dataset, data_dir=data_dir, seed=args.seed, val_size=args.val_size,
                       download=False)
    print(f"{args.dataset}: {len(data.train_x)} train, {len(data.val_x)} val; "
          f"{args.archs} archs; shared {args.shared_epochs} ep, stand-alone {args.child_epochs} ep; "
          f"max_train_samples {args.max_train_samples}; threads {args.threads}")
    rows = [rank_space(make_space(name, args.conv_layers, args.conv_filters), data, args)
            for name in args.spaces]
    print(f"\n{'space':8s} {'tau':>6s} {'batch-stat tau':>14s} {'seed tau':>8s} {'shared acc':>10s} "
          f"{'alone acc':>9s} {'supernet s':>10s} {'alone s':>8s}")
    for r in rows:
        print(f"{r.space:8s} {r.tau:6.3f} {r.batch_tau:14.3f} {r.seed_tau:8.3f} {np.mean(r.shared):10.4f} "
              f"{np.nanmean(r.alone):9.4f} {r.shared_seconds:10.1f} {r.alone_seconds:8.1f}")
    for r in rows:
        verdict = "PASS " if r.tau >= TARGET_TAU else "MISS "
        print(verdict + f"{r.space}: Kendall tau {r.tau:.3f} (>= {TARGET_TAU})")
    if args.json is not None:
        write_json(args.json, args, rows)


if __name__ == "__main__":
    main()
