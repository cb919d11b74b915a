"""One-shot search with shared weights (ENAS, Pham et al. 2018): the driver.

Kept apart from :class:`nasrl.search.Search` on purpose: that loop's invariants -- a
result per architecture reused when it comes back, a budget of distinct children,
``avoid_seen`` -- are wrong when every child shares one set of weights that keeps
training (the same architecture scores differently an epoch later, and re-scoring costs
one validation batch). What it shares with the multi-trial search is the strategy (its
``ask`` / ``tell``, so REINFORCE's baseline and update are the one implementation), the
objective that turns an accuracy into a reward, the run store, the writer lock and the
listeners' place in the CLI.

Each epoch:

1. trains the shared weights on the training split, one architecture per batch, drawn
   with :meth:`Strategy.sample` (the controller's policy, or uniform for ``random``, the
   weight-sharing random baseline of Li & Talwalkar 2019);
2. runs ``controller_steps`` strategy rounds: ask a batch, score each architecture with
   the shared weights on one validation batch (batch statistics, as ENAS's rewards),
   turn the accuracy into a reward with the run's objective, tell the strategy;
3. commits a checkpoint -- supernet, optimizer, strategy state, every generator, the
   epoch's metrics and its controller updates -- in one transaction.

After the last epoch it derives the result: ``derive_samples`` architectures from the
final policy, each scored on more validation data with its batch-norm statistics
recalibrated, the ``top_k`` stored. Every random draw comes from the run seed or from a
generator in the checkpoint, so a resumed run (after ``kill -9`` at any moment) redoes at
most the interrupted epoch and ends bit-identical to an uninterrupted one on the same
thread count.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import math
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nasrl import __version__
from nasrl.config import ConfigError, to_dict
from nasrl.data.images import ImageData
from nasrl.errors import NasrlError
from nasrl.lock import RunLock
from nasrl.models.supernet import SuperNet, build_supernet, has_supernet
from nasrl.objectives import ObjectiveValue
from nasrl.search import (
    CONFIG_NAME,
    DB_NAME,
    SearchConfig,
    check_new_run_dir,
    check_setup,
    load_config,
    make_objective,
    make_space,
    resolved_config,
)
from nasrl.signals import check_stop, stop_handled
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.store.sqlite import Derived, StoreError, TrialStore
from nasrl.strategies.base import Observation, Strategy, make_strategy
from nasrl.training.common import check_finite, resolve_device, seeded
from nasrl.training.image import make_optimizer
from nasrl.training.shared import sampled_model, shared_accuracy, steps_per_epoch, train_shared_epoch

ONESHOT_STRATEGIES = ("reinforce", "random")
ONESHOT_REINFORCE: dict[str, Any] = {"avoid_seen": False, "elite_weight": 0.0, "learning_rate": 0.01,
                                     "baseline": "ema", "local_share": 0.0,
                                     "controller": {"tanh_constant": 1.5}}
"""REINFORCE defaults a one-shot run overrides. avoid_seen: re-scoring an architecture
costs one validation batch and its score changes as the shared weights train, so there is
nothing to save by never proposing it again -- and sampling without replacement would
skew the policy gradient away from the policy's own distribution. Elite replay: an elite's
reward is one noisy validation batch at one point of supernet training; imitating it for
the rest of the run would lock in an early, lucky batch (a user may still opt in). Local
asks likewise: edits of one lucky batch's best, and no policy gradient from them.
learning_rate 0.01 and logits bounded by 1.5 * tanh (ENAS's macro-search constant): the
multi-trial default 0.03 with free logits collapsed the policy while the shared weights
were still young (Fashion-MNIST, conv 6 layers: entropy 47.0 -> 36.9 in 3 epochs of 10
updates and still falling; digits: 0.52 nats after 4 epochs), which locks in whatever
trains fastest early -- ENAS's known failure. With the bound, a decision's entropy
cannot fall below about 0.5 nats (4 choices), so the controller keeps sampling
neighbours of its favourite, as a weight-sharing search needs to keep training them.
baseline ema: what the one-shot search was measured with; the multi-trial default
(leave-one-out since 0.3) was chosen on tabular searches, not on shared-weight rewards."""

# streams of the run seed, one per purpose
_SHARED, _REWARD, _DERIVE, _SUBSET, _WINDOWS = 1, 2, 3, 4, 5


def _seed(run_seed: int, purpose: int, index: int = 0) -> int:
    return int(np.random.SeedSequence([run_seed, purpose, index]).generate_state(1)[0] & 0x7FFFFFFF)


def check_oneshot(config: SearchConfig) -> None:
    """What a one-shot run cannot do, named before anything is written."""
    if config.evaluator != "training":
        raise ConfigError("method enas trains shared weights: evaluator must be 'training'")
    if config.strategy not in ONESHOT_STRATEGIES:
        raise ConfigError(f"method enas takes strategy {' or '.join(ONESHOT_STRATEGIES)}, "
                          f"not {config.strategy!r}")
    from nasrl.objectives import STATIC_METRICS, parse_constraint

    for spec in config.objective.constraints:
        if parse_constraint(spec).metric not in STATIC_METRICS:
            raise ConfigError(f"method enas: constraint {spec!r}: one-shot runs take constraints on "
                              f"{', '.join(STATIC_METRICS)} (a latency target needs the multi-trial search)")
    if config.strategy == "reinforce" and config.strategy_config.get("avoid_seen"):
        raise ConfigError("method enas: strategy_config.avoid_seen must be false (an architecture's "
                          "shared-weight score changes as training goes on; re-scoring it is cheap)")


def oneshot_config(config: SearchConfig) -> SearchConfig:
    """``config`` with the strategy defaults a one-shot run uses written in, so the run
    records them and a resume builds the same strategy."""
    if config.strategy != "reinforce":
        return config
    given = config.strategy_config
    merged = {**ONESHOT_REINFORCE, **given}
    if isinstance(given.get("controller"), dict):  # a user's controller keys keep the others
        merged["controller"] = {**ONESHOT_REINFORCE["controller"], **given["controller"]}
    return dataclasses.replace(config, strategy_config=merged)


class OneShotListener:
    """Receives progress from a one-shot run (progress display, TensorBoard)."""

    def on_epoch(self, epoch: int, epochs: int, metrics: Mapping[str, float], seconds: float) -> None: ...

    def on_update(self, round_: int, metrics: Mapping[str, float]) -> None: ...

    def on_deriving(self, done: int, total: int) -> None:
        """``done`` of ``total`` candidates scored while the result is derived."""

    def on_derived(self, derived: Sequence[Derived]) -> None: ...

    def close(self) -> None: ...


@dataclass
class OneShotResult:
    run_dir: Path
    epochs: int
    derived: list[Derived]
    seconds: float


@dataclass
class _Session:
    """Everything that changes while the run trains; what a checkpoint holds."""

    supernet: SuperNet
    optimizer: torch.optim.SGD
    train_gen: torch.Generator
    """Batch order and augmentation of shared-weight training."""
    reward_gen: torch.Generator
    """Which validation examples each controller round is rewarded on."""
    epoch: int = 0
    step: int = 0
    """Optimizer steps so far: where the learning-rate schedule stands."""
    rounds: int = 0
    """Controller rounds so far (the ``updates`` table's round numbers)."""


class OneShotSearch:
    def __init__(self, run_dir: Path, config: SearchConfig, store: TrialStore, space: SearchSpace,
                 strategy: Strategy, lock: RunLock | None = None) -> None:
        self.run_dir = run_dir
        self.config = config
        self.store = store
        self.space = space
        self.strategy = strategy
        self.lock = lock
        self.objective = make_objective(config)
        self.listeners: list[OneShotListener] = []
        self.device = resolve_device(config.device)
        self._data: ImageData | None = None
        self._costs: dict[str, dict[str, float]] = {}

    # -- opening runs ------------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: str | Path, config: SearchConfig) -> OneShotSearch:
        run_dir = check_new_run_dir(run_dir)
        space = make_space(config)  # an unknown space is named first
        if not has_supernet(space.name):
            raise ConfigError(f"method enas: no shared-weight network for space {space.name!r} "
                              "(available: conv, nb201)")
        check_oneshot(config)
        check_setup(config)
        config = oneshot_config(config)
        strategy = make_strategy(config.strategy, space, config.seed, config.strategy_config)
        data = load_data(config)  # missing or damaged data fails now, before the run exists
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
        if (run_dir / DB_NAME).exists():  # created by another process since the check above
            lock.release()
            raise NasrlError(f"{run_dir} already holds a run; continue it with: nasrl resume {run_dir}")
        resolved = resolved_config(config, strategy)
        (run_dir / CONFIG_NAME).write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
        store = TrialStore.create_run(run_dir / DB_NAME, to_dict(config), config.seed, __version__,
                                      strategy.state_dict())
        search = cls(run_dir, config, store, space, strategy, lock)
        search._data = data
        return search

    @classmethod
    def open(cls, run_dir: str | Path) -> OneShotSearch:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise NasrlError(f"{run_dir}: no such run directory")
        store = TrialStore(run_dir / DB_NAME)
        lock = RunLock(run_dir)
        try:
            lock.acquire()  # before anything is written: two writers would train twice
            try:
                config = load_config(store.run_info()["config"])
            except ConfigError as exc:
                raise StoreError(f"{run_dir}: damaged run config ({exc})") from None
            if config.method != "enas":
                raise NasrlError(f"{run_dir}: a {config.method} run, not a one-shot one")
            from nasrl.training.common import check_device

            check_device(config.device, "device")  # the run's device may be missing here
            space = make_space(config)
            strategy = make_strategy(config.strategy, space, config.seed, config.strategy_config)
        except BaseException:
            lock.release()
            store.close()
            raise
        return cls(run_dir, config, store, space, strategy, lock)

    def close(self) -> None:
        """Close the store and release the writer lock (process exit does both too)."""
        self.store.close()
        if self.lock is not None:
            self.lock.release()

    def data(self) -> ImageData:
        if self._data is None:
            self._data = load_data(self.config)
        return self._data.to(self.device)

    # -- running -------------------------------------------------------------------------------
    def run(self, *, max_epochs: int | None = None) -> OneShotResult:
        """Train until ``oneshot.epochs`` epochs are done (or ``max_epochs`` more), then
        derive the result. Ctrl-C or SIGTERM leaves the last committed epoch in the store."""
        try:
            return self._run(max_epochs)
        except KeyboardInterrupt:
            with contextlib.suppress(sqlite3.Error):
                self.store.set_status("interrupted")
            raise
        finally:
            stop_handled()
            for listener in self.listeners:
                listener.close()

    def _run(self, max_epochs: int | None) -> OneShotResult:
        start = time.perf_counter()
        cfg = self.config.oneshot
        self.store.set_status("running")
        data = self.data()
        session = self._restore(data)
        done = 0
        while session.epoch < cfg.epochs and (max_epochs is None or done < max_epochs):
            check_stop()  # an epoch boundary: a dropped stop (nasrl.signals) stops here
            t0 = time.perf_counter()
            loss = self._train_shared(session, data)
            warming = session.epoch < cfg.warmup_epochs
            updates = [] if warming else self._train_controller(session, data)
            session.epoch += 1
            seconds = time.perf_counter() - t0
            metrics = {"shared/loss": loss, "epoch/seconds": seconds, **_epoch_means(updates)}
            self.store.commit_epoch(session.epoch, self._state(session), metrics, updates)
            done += 1
            for listener in self.listeners:
                for round_, values in updates:
                    listener.on_update(round_, values)
                listener.on_epoch(session.epoch, cfg.epochs, metrics, seconds)
        derived = self.store.derived()
        if session.epoch >= cfg.epochs:
            if not derived:
                derived = self._derive(session, data)
            self.store.save_derived(derived, "finished")
            for listener in self.listeners:
                listener.on_derived(derived)
        return OneShotResult(self.run_dir, session.epoch, derived, time.perf_counter() - start)

    def _train_split(self, data: ImageData) -> tuple[Tensor, Tensor]:
        limit = self.config.oneshot.training.max_train_samples
        if limit is None or limit >= len(data.train_x):
            return data.train_x, data.train_y
        # from the run seed alone, not the training generator: a resume needs the same subset
        gen = torch.Generator().manual_seed(_seed(self.config.seed, _SUBSET))
        keep = torch.randperm(len(data.train_x), generator=gen)[:limit].to(data.train_x.device)
        return data.train_x[keep], data.train_y[keep]

    def _epoch_split(self, data: ImageData, epoch: int) -> tuple[Tensor, Tensor]:
        """What epoch ``epoch`` trains the shared weights on: the training split, or with
        ``oneshot.samples_per_epoch`` the epoch's window of a seeded permutation of it --
        successive epochs see different examples, every one once per pass, so short epochs
        (frequent controller updates and checkpoints) still cover the whole split."""
        train_x, train_y = self._train_split(data)
        n = self.config.oneshot.samples_per_epoch
        if n is None or n >= len(train_x):
            return train_x, train_y
        windows = len(train_x) // n
        pass_, window = divmod(epoch, windows)
        gen = torch.Generator().manual_seed(_seed(self.config.seed, _WINDOWS, pass_))
        order = torch.randperm(len(train_x), generator=gen)[window * n:(window + 1) * n]
        keep = order.to(train_x.device)
        return train_x[keep], train_y[keep]

    def _train_shared(self, session: _Session, data: ImageData) -> float:
        config = self.config.oneshot.shared_training()
        train_x, train_y = self._epoch_split(data, session.epoch)
        # the policy is fixed while the shared weights train (ENAS's alternation): one draw
        # of the whole epoch's architectures, from a seed of its own
        n, seed = steps_per_epoch(len(train_x), config), _seed(self.config.seed, _SHARED, session.epoch)
        if session.epoch < self.config.oneshot.warmup_epochs:  # uniform, whatever the strategy
            rng = np.random.default_rng(seed)
            archs = iter([self.space.sample(rng) for _ in range(n)])
        else:
            archs = iter(self.strategy.sample(n, seed))
        model = sampled_model(session.supernet, lambda: next(archs))
        session.supernet.train()
        loss, session.step = train_shared_epoch(model, data, train_x, train_y, session.optimizer, config,
                                                session.train_gen, session.step)
        return check_finite(loss, session.epoch)

    def _train_controller(self, session: _Session, data: ImageData) -> list[tuple[int, dict[str, float]]]:
        cfg = self.config.oneshot
        config = cfg.shared_training()
        n = min(cfg.reward_batch_size, len(data.val_x))
        rows: list[tuple[int, dict[str, float]]] = []
        for _ in range(cfg.controller_steps):
            pick = torch.randperm(len(data.val_x), generator=session.reward_gen)[:n].to(data.val_x.device)
            xb, yb = data.val_x[pick], data.val_y[pick]
            archs = self.strategy.ask(self.strategy.batch_size)
            accs = [shared_accuracy(session.supernet, a, xb, yb, config) for a in archs]
            values = [self._evaluate(a, acc, data) for a, acc in zip(archs, accs, strict=True)]
            rewards = [v.reward for v in values]
            # the multi-trial search's own path: the objective's reward, then the strategy's tell
            self.strategy.tell([Observation(a, r) for a, r in zip(archs, rewards, strict=True)])
            told = [r for r in rewards if r is not None]
            metrics = {**self.strategy.metrics(), "oneshot/val_acc_mean": float(np.mean(accs)),
                       "oneshot/epoch": float(session.epoch + 1)}
            if self.objective.constraints:
                metrics["oneshot/feasible_share"] = float(np.mean([v.feasible for v in values]))
            if told:
                metrics["oneshot/reward_mean"] = float(np.mean(told))
            rows.append((session.rounds, metrics))
            session.rounds += 1
        return rows

    def _evaluate(self, arch: Architecture, acc: float, data: ImageData) -> ObjectiveValue:
        """The objective on a shared-weight accuracy and, when constrained, the child's costs."""
        return self.objective.evaluate({self.objective.metric: acc, **self._arch_costs(arch, data)})

    def _arch_costs(self, arch: Architecture, data: ImageData) -> dict[str, float]:
        """Parameters, MACs and FLOPs of the stand-alone child (what ``nasrl train`` builds),
        computed once per architecture and only when a constraint needs them."""
        if not self.objective.constraints:
            return {}
        costs = self._costs.get(arch.key)
        if costs is None:
            from nasrl.training.common import child_costs

            costs = self._costs[arch.key] = child_costs(self.space, arch, data.input_shape, data.num_classes,
                                                        self.config.build_options)
        return costs

    def _derive(self, session: _Session, data: ImageData) -> list[Derived]:
        """The top architectures of the final policy by shared-weight validation accuracy."""
        cfg = self.config.oneshot
        config = cfg.shared_training()
        drawn = self.strategy.sample(cfg.derive_samples, _seed(self.config.seed, _DERIVE))
        times = Counter(a.key for a in drawn)
        unique = list({a.key: a for a in drawn}.values())  # first-drawn order
        # recalibration rewrites batch-norm statistics: score on a copy, so the stored
        # supernet stays the one training left
        supernet = copy.deepcopy(session.supernet)
        train_x, _ = self._train_split(data)
        bs = min(config.batch_size, len(train_x))
        calibration = [train_x[i * bs:(i + 1) * bs] for i in range(min(cfg.calibration_batches,
                                                                          len(train_x) // bs))]
        n = cfg.derive_val_samples or len(data.val_x)
        x, y = data.val_x[:n], data.val_y[:n]
        # a candidate breaking a hard constraint is never derived (as a multi-trial search
        # never reports one as best); it is not even scored
        feasible = [a for a in unique if not self.objective.violations(self._arch_costs(a, data))]
        if not feasible:
            raise NasrlError(f"none of the {len(unique)} architectures sampled from the final policy meets "
                             f"{', '.join(str(c) for c in self.objective.constraints if c.kind == 'hard')}; "
                             "raise oneshot.derive_samples or loosen the constraint, then nasrl resume")
        finalists = max(cfg.derive_finalists, cfg.top_k)
        screen = n // 4
        screening = cfg.derive_finalists > 0 and len(feasible) > finalists and screen >= 1
        total = len(feasible) + (finalists if screening else 0)
        done = 0

        def score(candidates: list[Architecture], m: int) -> list[tuple[float, float, int, Architecture]]:
            nonlocal done
            out = []
            for a in candidates:
                acc = shared_accuracy(supernet, a, x[:m], y[:m], config, calibration=calibration)
                # ranked by the run's reward, not the accuracy alone: under a soft constraint
                # the objective trades accuracy for cost, and the pick must follow it
                reward = self._evaluate(a, acc, data).reward
                out.append((-math.inf if reward is None else reward, acc, feasible.index(a), a))
                done += 1
                check_stop()  # derivation takes minutes: a dropped stop (nasrl.signals) stops here
                for listener in self.listeners:  # scoring takes minutes on a CPU: say how far it is
                    listener.on_deriving(done, total)
            return sorted(out, key=lambda s: (-s[0], -s[1], s[2]))

        if screening:  # every candidate on a quarter of the data, the best few on all of it
            feasible_top = [s[-1] for s in score(feasible, screen)[:finalists]]
            scored = score(feasible_top, n)
        else:
            scored = score(feasible, n)
        return [Derived(rank, a, acc, reward,
                        {"shared_val_acc": acc, "times_sampled": float(times[a.key]),
                         "candidates": float(len(feasible)), **self._arch_costs(a, data)})
                for rank, (reward, acc, _, a) in enumerate(scored[:cfg.top_k], 1)]

    # -- checkpoints ---------------------------------------------------------------------------
    def _fresh(self, data: ImageData) -> _Session:
        with seeded(self.config.seed):
            supernet = build_supernet(self.space, data.input_shape, data.num_classes,
                                      **self.config.build_options)
        supernet.to(self.device)
        config = self.config.oneshot.shared_training()
        if config.channels_last:
            supernet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        gen_device = self.device if self.device.type == "cuda" else torch.device("cpu")
        return _Session(
            supernet=supernet,
            optimizer=make_optimizer(supernet, config),
            train_gen=torch.Generator(device=gen_device).manual_seed(self.config.seed),
            reward_gen=torch.Generator().manual_seed(_seed(self.config.seed, _REWARD)),
        )

    def _restore(self, data: ImageData) -> _Session:
        session = self._fresh(data)
        saved = self.store.checkpoint()
        try:
            if saved is None:  # no epoch finished yet: the strategy as created
                self.strategy.load_state_dict(self.store.strategy_state()[2])
                return session
            epoch, state = saved
            session.supernet.load_state_dict(state["supernet"])
            session.optimizer.load_state_dict(state["optimizer"])
            self.strategy.load_state_dict(state["strategy"])
            session.train_gen.set_state(state["train_rng"])
            session.reward_gen.set_state(state["reward_rng"])
            session.epoch, session.step, session.rounds = epoch, int(state["step"]), int(state["rounds"])
        except StoreError:
            raise
        except Exception as exc:  # load_state_dict's messages span lines: keep the first
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(f"{self.run_dir}: one-shot checkpoint does not fit this run ({first})") from None
        return session

    def _state(self, session: _Session) -> dict[str, Any]:
        """Tensors and plain values only: read back with torch.load(weights_only=True)."""
        return {
            "supernet": session.supernet.state_dict(),
            "optimizer": session.optimizer.state_dict(),
            "strategy": self.strategy.state_dict(),
            "train_rng": session.train_gen.get_state(),
            "reward_rng": session.reward_gen.get_state(),
            "step": session.step,
            "rounds": session.rounds,
        }


def _epoch_means(updates: list[tuple[int, dict[str, float]]]) -> dict[str, float]:
    """The epoch's controller metrics, averaged over its rounds."""
    keys = ("oneshot/val_acc_mean", "oneshot/reward_mean", "controller/entropy")
    out = {}
    for key in keys:
        values = [m[key] for _, m in updates if key in m]
        if values:
            out[key] = float(np.mean(values))
    return out


def load_data(config: SearchConfig) -> ImageData:
    """The run's image data, split by the run seed (the test split is never used)."""
    from nasrl.data import load_images

    return load_images(config.dataset or "digits", data_dir=config.data_dir, seed=config.seed)


def is_oneshot(recorded: Mapping[str, Any]) -> bool:
    """Whether a run's recorded config is a one-shot run's."""
    return recorded.get("method") == "enas"
