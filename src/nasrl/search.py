"""The search loop: ask -> queue -> evaluate -> store -> tell -> commit, round by round.

A round is ``round_size`` architectures (default: the strategy's batch, m for REINFORCE).
Its trials are queued in the store before any runs, each result is written the moment it
arrives, and the strategy hears the round's results in the order it asked for them, then
its new state is committed in the same transaction that marks those trials as told.
Because the strategy state before a round determines what it asks, a resumed run re-asks
the interrupted round and gets the same architectures back: finished trials keep their
results, unfinished ones run again with the same seeds. Results never depend on the order
in which workers finish, so serial, process-pool and Ray runs with one seed give the same
trials -- except with pruning on the process pool, where whether a child is stopped
depends on what the others have reported by then (see :mod:`nasrl.pruning`).

Depth schedule (the paper's growing depth; ``space_params.depth_schedule``, conv only):
the i-th architecture asked (0-based, over the whole run, repeats answered from the cache
included) is sampled at ``DepthSchedule.depth_at(i)``. Before each ask the search hands
the strategy the conv space at that depth (:meth:`Strategy.use_space`); a round that
straddles a change is asked in two parts. The count comes from the trials in the store,
so it is not strategy state and a resumed run asks every round at the depth it had. The
depth is recorded in each trial through its architecture (its layers; keys differ across
depths), and ``nasrl status`` shows the depths asked.

``mode = "async"`` replaces the rounds with :mod:`nasrl.search_async`: no worker waits for a
round to end, at the price of reproducibility.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import sqlite3
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from nasrl import __version__
from nasrl.config import ConfigError, build, check_seed, to_dict
from nasrl.errors import NasrlError
from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.execution import Executor, Task, make_executor
from nasrl.lock import RunLock
from nasrl.objectives import Objective, ObjectiveConfig
from nasrl.oneshot.config import OneShotConfig
from nasrl.pruning import HIGHER_IS_BETTER, PruningConfig, should_prune
from nasrl.signals import check_stop, stop_handled
from nasrl.spaces.base import Architecture, SearchSpace, SpaceError
from nasrl.spaces.conv import ConvSpace, DepthSchedule
from nasrl.spaces.registry import get_space
from nasrl.store.sqlite import Progress, StoreError, Trial, TrialState, TrialStore
from nasrl.strategies.base import Observation, Strategy, make_strategy
from nasrl.training.image import TrainConfig
from nasrl.training.language import LMTrainConfig

DB_NAME = "runs.db"
CONFIG_NAME = "config.json"
# Search children on the built-in digits data: small enough that the default search
# finishes in minutes on 2 cores, long enough that the reward separates architectures.
SEARCH_TRAINING = TrainConfig(epochs=8, batch_size=64, learning_rate=0.05)


@dataclass(frozen=True)
class SearchConfig:
    """Everything that defines a search; recorded resolved in the run directory."""

    method: Literal["multi-trial", "enas"] = "multi-trial"
    """multi-trial: every child trained from scratch (this module). enas: one-shot search
    with shared weights (:mod:`nasrl.oneshot`; settings under ``oneshot``)."""
    oneshot: OneShotConfig = OneShotConfig()  # noqa: RUF009  (frozen, so sharing it is safe)
    space: str = "conv"
    space_params: dict[str, Any] = field(default_factory=dict)
    strategy: str = "reinforce"
    strategy_config: dict[str, Any] = field(default_factory=dict)
    evaluator: Literal["training", "tabular"] = "training"
    dataset: str | None = None
    """Default: digits for image spaces, ptb for rnn_cell."""
    train_on_valid: bool = False
    """PTB without ptb.train.txt: train on 90% of the validation text, validate on the rest."""
    data_dir: str | None = None
    table: str | None = None
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """What the search maximizes (default: the paper's reward, accuracy cubed or 80 / ppl^2)."""
    training: TrainConfig = SEARCH_TRAINING
    lm_training: LMTrainConfig = LMTrainConfig()  # noqa: RUF009  (frozen, so sharing it is safe)
    build_options: dict[str, Any] = field(default_factory=dict)
    budget: int = 30
    """Distinct architectures evaluated (failed ones count; reused results do not)."""
    seed: int = 0
    executor: Literal["serial", "process", "ray"] = "process"
    workers: int | None = None
    """Process-pool workers (default: one per core) or Ray concurrency cap."""
    ray_address: str | None = None
    round_size: int | None = None
    """Architectures per round (default: the strategy's batch). Part of the algorithm, so it
    never depends on the executor: the same seed gives the same trials everywhere."""
    lookahead: int = 1
    """Rounds asked before the current one is told, so workers stay busy while a round's
    last children finish (the paper's controller replicas were asynchronous too). 0 gives
    strictly on-policy rounds; raise it when workers far outnumber the round size."""
    mode: Literal["rounds", "async"] = "rounds"
    """rounds (default): synchronous rounds, reproducible to the bit from the seed. async:
    no rounds; a free worker gets a newly asked architecture at once and the strategy
    learns from results in the order they finish (REINFORCE: every batch_size of them).
    Resumable without losing a finished trial, but not reproducible (see
    :mod:`nasrl.search_async`); round_size is then the least number asked at a time, and
    lookahead does not apply."""
    max_staleness: int | None = None
    """async: a result whose architecture was asked more than this many strategy updates
    before it is told is stored and counts in the budget, but is told as failed (seen, not
    learned from). None learns from every result; the staleness is recorded either way."""
    async_checkpoint_seconds: float = 30.0
    """async: the longest time between two saves of the strategy state (results are stored
    at once regardless; a crash makes the resumed strategy learn again from those after
    the last save). 0 saves after every batch of results."""
    reuse_results: bool = True
    failure_reward: float | None = None
    """Reward told for a failed trial; None leaves it out of the update."""
    pruning: PruningConfig = PruningConfig()  # noqa: RUF009  (frozen, so sharing it is safe)
    """Early stopping of poor children (:mod:`nasrl.pruning`); off by default. A pruned
    child counts as evaluated in the budget."""
    trial_timeout: float | None = None
    max_retries: int = 2
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.budget < 1:
            raise ConfigError(f"budget must be at least 1, got {self.budget}")
        if self.round_size is not None and self.round_size < 1:
            raise ConfigError(f"round_size must be at least 1, got {self.round_size}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.lookahead < 0:
            raise ConfigError(f"lookahead must be >= 0, got {self.lookahead}")
        if self.max_staleness is not None and self.max_staleness < 0:
            raise ConfigError(f"max_staleness must be >= 0, got {self.max_staleness}")
        if not math.isfinite(self.async_checkpoint_seconds) or self.async_checkpoint_seconds < 0:
            raise ConfigError(f"async_checkpoint_seconds must be a number >= 0, "
                              f"got {self.async_checkpoint_seconds}")
        if self.max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {self.max_retries}")
        check_seed(self.seed)
        if "depth_schedule" in self.space_params:
            if self.method != "multi-trial":
                raise ConfigError("space_params.depth_schedule needs method multi-trial (a one-shot "
                                  "supernet has one depth)")
            if self.space != "conv":
                raise ConfigError(f"space_params.depth_schedule: only the conv space has a depth to "
                                  f"grow, not {self.space!r}")
            depth_schedule(self)  # bad keys or values: named now, before anything runs
        if self.trial_timeout is not None:
            if not math.isfinite(self.trial_timeout) or self.trial_timeout <= 0:
                raise ConfigError(f"trial_timeout must be a positive number of seconds, "
                                  f"got {self.trial_timeout}")
            if self.executor == "serial":
                # a serial child runs in the driver's own process: nothing can stop it mid-trial
                raise ConfigError("trial_timeout needs the process or ray executor (a serial trial "
                                  "cannot be stopped)")
        if self.failure_reward is not None and not math.isfinite(self.failure_reward):
            raise ConfigError(f"failure_reward must be a number, got {self.failure_reward}")
        if self.pruning.enabled:
            if self.evaluator == "tabular":
                raise ConfigError("pruning needs trained children (evaluator training): a table "
                                  "has no learning curves")
            if self.executor == "ray":
                # a Ray task reports nothing until it ends, so no decision could reach it
                raise ConfigError("pruning needs the serial or process executor (Ray runs "
                                  "cannot stop a child between epochs)")


def load_config(values: Mapping[str, Any]) -> SearchConfig:
    return build(SearchConfig, values)


LEGACY_RESUME = "it was written by nasrl {version}, whose reward differs; inspect it, but start a new search"


def read_run_config(recorded: Mapping[str, Any]) -> tuple[SearchConfig, str | None]:
    """A run's recorded config, and, for a run written before nasrl 0.2, what reward its
    trials stored and its strategy learned from (None for current runs).

    Before 0.2 the reward was shaped twice: the trainer stored accuracy^3 (training.reward_*)
    or 80 / ppl^2 (lm_training.reward_*), the table val_acc / 100, and REINFORCE's
    reward_transform cubed that again. Those keys are translated into the objective.
    """
    if "objective" in recorded:
        return load_config(recorded), None
    values: dict[str, Any] = json.loads(json.dumps(dict(recorded)))  # a deep copy, edited below
    training = values.setdefault("training", {})
    lm = values.setdefault("lm_training", {})
    power = float(training.pop("reward_power", 3.0))
    summary = training.pop("reward", "max_last")
    if "reward_window" in training:
        training["max_last_window"] = training.pop("reward_window")
    c, ppl_power = float(lm.pop("reward_c", 80.0)), float(lm.pop("reward_power", 2.0))
    strategy_config = values.get("strategy_config") or {}
    transform = strategy_config.pop("reward_transform", "cube" if values.get("strategy", "reinforce")
                                    == "reinforce" else "identity")
    tabular = values.get("evaluator") == "tabular"
    metric = "val_acc" if tabular or summary == "last" else "val_acc_max_last"
    values["objective"] = {"accuracy_power": power, "perplexity_c": c, "perplexity_power": ppl_power}
    if not tabular and values.get("space") != "rnn_cell":
        values["objective"]["metric"] = metric
    config = load_config(values)
    if tabular:
        stored = "val_acc"
    elif config.space == "rnn_cell":
        stored = f"{c:g} / val_ppl_best^{ppl_power:g}"
    else:
        stored = f"{metric}^{power:g}"
    learned = f"({stored})^3" if transform == "cube" else stored
    if transform == "cube" and not tabular:
        learned += ", a defect of nasrl 0.1 (the reward cubed twice)"
    return config, (f"legacy run: trials store the reward {stored}; "
                    f"its {config.strategy} strategy learned from {learned}")


def check_setup(config: SearchConfig) -> None:
    """What would make every trial fail, or the run unstartable, checked before any work."""
    from nasrl.checks import check_dataset, check_ray_address, check_tabular
    from nasrl.training.common import check_device

    if config.evaluator == "tabular":
        check_tabular(config.space)
    else:
        check_dataset(config.space, config.dataset, train_on_valid=config.train_on_valid,
                      data_dir=config.data_dir)
        check_device(config.device, "device")
    if config.executor == "ray":
        check_ray_address(config.ray_address)


def check_new_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` as a place for a new run: not a file, and not holding a run already."""
    run_dir = Path(run_dir)
    if (run_dir / DB_NAME).exists():
        raise NasrlError(f"{run_dir} already holds a run; continue it with: nasrl resume {run_dir}")
    if run_dir.exists() and not run_dir.is_dir():
        raise NasrlError(f"--out {run_dir}: is a file; a run directory is a folder")
    return run_dir


def trial_seed(run_seed: int, index: int) -> int:
    """The seed of the index-th trial: independent streams per trial, fixed by the run seed."""
    return int(np.random.SeedSequence([run_seed, index]).generate_state(1)[0] & 0x7FFFFFFF)


def depth_schedule(config: SearchConfig) -> DepthSchedule | None:
    """The run's depth schedule (``space_params.depth_schedule``), or None."""
    if "depth_schedule" not in config.space_params:
        return None
    try:
        return DepthSchedule.from_config(config.space_params["depth_schedule"],
                                         config.space_params.get("num_layers"))
    except SpaceError as exc:
        raise ConfigError(str(exc)) from None


def make_space(config: SearchConfig) -> SearchSpace:
    """The run's space; with a depth schedule, at its first depth."""
    params = dict(config.space_params)
    schedule = depth_schedule(config)
    if schedule is not None:
        del params["depth_schedule"]
        params["num_layers"] = schedule.start
    return get_space(config.space, **params)


def make_objective(config: SearchConfig) -> Objective:
    from nasrl.models import builder_task

    objective = config.objective
    if config.method == "enas" and objective.metric is None:
        # a one-shot reward is one accuracy with the shared weights: no epochs to take a max over
        objective = dataclasses.replace(objective, metric="val_acc")
    return Objective(objective, task=builder_task(config.space), evaluator=config.evaluator)


def make_evaluator(config: SearchConfig, space: SearchSpace) -> Evaluator:
    objective = make_objective(config)
    latency = config.objective.latency if objective.needs("latency_ms") else None
    if config.evaluator == "tabular":
        from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table

        return TabularEvaluator(find_nb201_table(config.table), space, latency=latency)
    from nasrl.evaluators.training import TrainingEvaluator

    return TrainingEvaluator(
        space,
        config.dataset,
        config=config.training,
        lm_config=config.lm_training,
        train_on_valid=config.train_on_valid,
        data_dir=config.data_dir,
        data_seed=config.seed,
        device=config.device,
        build_options=config.build_options,
        latency=latency,
        screen=objective.static_limits(),
    )


def _restrict_to_table(strategy: Strategy, config: SearchConfig, space: SearchSpace,
                       objective: Objective) -> None:
    """Tell the strategy the feasible set of hard static limits when a table lists every
    architecture's costs (a trained space would have to build every child to know it)."""
    if config.evaluator != "tabular" or not objective.static_limits():
        return
    from nasrl.benchmark import feasible_set
    from nasrl.evaluators.tabular import TabularEvaluator

    table = make_evaluator(config, space)
    assert isinstance(table, TabularEvaluator)
    try:
        feasible = feasible_set(table, objective)
    except SpaceError:
        return  # no cell is feasible: search as without the set (every trial is infeasible)
    if feasible is not None:
        strategy.restrict(feasible)


class RunListener:
    """Receives progress from a running search (progress display, TensorBoard)."""

    def on_trial(self, trial: Trial, counts: dict[str, int], best: float | None) -> None: ...

    def on_round(self, round_: int, metrics: Mapping[str, float]) -> None: ...

    def on_running(self, running: int) -> None: ...

    def on_epoch(self, progress: Progress) -> None: ...

    def close(self) -> None: ...


@dataclass
class SearchResult:
    run_dir: Path
    counts: dict[str, int]
    best: Trial | None
    seconds: float
    overhead_seconds: float
    """Time in the controller and the store (ask, tell, commit), not waiting for children."""


class Search:
    def __init__(
        self,
        run_dir: Path,
        config: SearchConfig,
        store: TrialStore,
        space: SearchSpace,
        strategy: Strategy,
        lock: RunLock | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.lock = lock
        """The run's writer lock, held from create/open until :meth:`close` (or exit)."""
        self.config = config
        self.store = store
        self.space = space
        self.strategy = strategy
        self.objective = make_objective(config)
        self.listeners: list[RunListener] = []
        self.curves: dict[int, list[float]] = {}
        """Learning curves the pruning rule compares against (trial id -> metric per epoch)."""
        self.schedule = depth_schedule(config)
        _restrict_to_table(strategy, config, space, self.objective)

    # -- opening runs ------------------------------------------------------------------------
    @classmethod
    def create(cls, run_dir: str | Path, config: SearchConfig) -> Search:
        run_dir = check_new_run_dir(run_dir)
        if config.method != "multi-trial":
            raise ConfigError(f"method {config.method}: a one-shot run is driven by "
                              "nasrl.oneshot.enas.OneShotSearch, not Search")
        space = make_space(config)  # an unknown space is named first
        check_setup(config)
        strategy = make_strategy(config.strategy, space, config.seed, config.strategy_config)
        objective = make_objective(config)
        if objective.needs("latency_ms"):
            from nasrl.latency import check_device

            check_device(config.objective.latency.device)
        check_data = getattr(make_evaluator(config, space), "data", None)
        if check_data is not None:
            check_data()  # fail now on missing or damaged data, not in every worker later
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = RunLock(run_dir).acquire()
        if (run_dir / DB_NAME).exists():  # created by another process since the check above
            lock.release()
            raise NasrlError(f"{run_dir} already holds a run; continue it with: nasrl resume {run_dir}")
        resolved = resolved_config(config, strategy)
        (run_dir / CONFIG_NAME).write_text(json.dumps(resolved, indent=2, sort_keys=True) + "\n")
        store = TrialStore.create_run(
            run_dir / DB_NAME, to_dict(config), config.seed, __version__, strategy.state_dict()
        )
        return cls(run_dir, config, store, space, strategy, lock)

    @classmethod
    def open(cls, run_dir: str | Path, overrides: Mapping[str, Any] | None = None) -> Search:
        """Reopen a run from its database; ``overrides`` may change how it runs (executor,
        workers, budget), never what it searches."""
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise NasrlError(f"{run_dir}: no such run directory")
        store = TrialStore(run_dir / DB_NAME)
        lock = RunLock(run_dir)
        try:
            # before anything is written: a second writer would re-run every trial
            lock.acquire()
            config = cls._open_config(run_dir, store, overrides or {})
            space = make_space(config)
            strategy = make_strategy(config.strategy, space, config.seed, config.strategy_config)
            return cls(run_dir, config, store, space, strategy, lock)
        except BaseException:
            lock.release()
            store.close()
            raise

    @staticmethod
    def _open_config(run_dir: Path, store: TrialStore, overrides: Mapping[str, Any]) -> SearchConfig:
        info = store.run_info()
        if info["schema"] < 2 or "objective" not in info["config"]:
            raise StoreError(f"{run_dir}: cannot resume: " + LEGACY_RESUME.format(version=info["version"]))
        values = dict(info["config"])
        if info["schema"] < 3 and values.get("strategy", "reinforce") == "reinforce":
            # written before constrained decoding existed: its controller sampled unmasked,
            # and a resumed run must re-ask its rounds exactly as it first asked them
            values["strategy_config"] = {"constrained_decoding": False,
                                         **(values.get("strategy_config") or {})}
        for key, value in overrides.items():
            if key not in RESUME_OVERRIDABLE:
                raise ConfigError(
                    f"cannot change {key!r} when resuming (allowed: {', '.join(RESUME_OVERRIDABLE)})"
                )
            values[key] = value
        try:
            load_config(info["config"])
        except ConfigError as exc:
            raise StoreError(f"{run_dir}: damaged run config ({exc})") from None
        config = load_config(values)  # an override that does not fit is the user's, not damage
        if config.method != "multi-trial":
            raise NasrlError(f"{run_dir}: a one-shot run; resume it with nasrl resume (OneShotSearch.open)")
        if config.evaluator != "tabular":
            from nasrl.training.common import check_device

            check_device(config.device, "device")  # the run's device may be missing on this machine
        if config.executor == "ray":
            from nasrl.checks import check_ray_address

            check_ray_address(config.ray_address)
        if "budget" in overrides and overrides["budget"] != info["config"].get("budget"):
            _record_budget(run_dir, store, {**info["config"], "budget": config.budget})
        return config

    def close(self) -> None:
        """Close the store and release the writer lock (process exit does both too)."""
        self.store.close()
        if self.lock is not None:
            self.lock.release()

    # -- running -------------------------------------------------------------------------------
    def run(
        self,
        executor: Executor | None = None,
        *,
        evaluator: Evaluator | None = None,
        max_rounds: int | None = None,
    ) -> SearchResult:
        """Run rounds until the budget is spent (or ``max_rounds``; rounds mode only).
        ``executor`` and ``evaluator`` default to the ones the config names; ``mode = "async"``
        runs :func:`nasrl.search_async.run_async` instead. Ctrl-C or SIGTERM stops it cleanly: workers
        stopped, the run marked interrupted, every result already in the store."""
        elsewhere = (executor.name if executor is not None else self.config.executor) != "serial"
        try:
            with _driver_threads(elsewhere):
                if self.config.mode == "async":
                    from nasrl.search_async import run_async

                    return run_async(self, executor, evaluator)
                return self._run(executor, evaluator, max_rounds)
        except KeyboardInterrupt:
            with contextlib.suppress(sqlite3.Error):
                self.store.set_status("interrupted")
            raise
        finally:
            stop_handled()

    def _run(
        self, executor: Executor | None, evaluator: Evaluator | None, max_rounds: int | None
    ) -> SearchResult:
        start = time.perf_counter()
        overhead = 0.0
        store = self.store
        store.set_status("running")
        store.requeue_unfinished()
        self._load_curves()
        round_, asked, state = store.strategy_state()
        try:
            self.strategy.load_state_dict(state)
        except Exception as exc:
            raise StoreError(f"{self.run_dir}: strategy state does not fit this run ({exc})") from None
        rounds_done = 0
        started = False
        submitted: set[int] = set()
        try:
            while max_rounds is None or rounds_done < max_rounds:
                check_stop()  # a dropped stop (see nasrl.signals): rounds of reused results wait on nothing
                t0 = time.perf_counter()
                asked = self._ask_ahead(round_, asked)
                overhead += time.perf_counter() - t0
                if round_ >= asked:
                    store.set_status("finished")
                    break
                todo = [t for r in range(round_, asked) for t in self._runnable(store.trials(round_=r))]
                if todo:
                    if executor is None or not started:
                        executor = self._start_executor(executor, evaluator)
                        started = True
                    overhead += self._evaluate(executor, round_, todo, submitted)
                t0 = time.perf_counter()
                trials = self._fill_reused(store.trials(round_=round_))
                self.strategy.tell([self._observation(t) for t in trials])
                metrics = {**self.strategy.metrics(), **_round_stats(trials)}
                store.commit_round(round_, self.strategy.state_dict(), metrics, asked)
                overhead += time.perf_counter() - t0
                for listener in self.listeners:
                    listener.on_round(round_, metrics)
                round_ += 1
                rounds_done += 1
        finally:
            if executor is not None:
                executor.close()
            for listener in self.listeners:
                listener.close()
        best = store.best(1)
        return SearchResult(
            self.run_dir, store.counts(), best[0] if best else None, time.perf_counter() - start, overhead
        )

    def _start_executor(self, executor: Executor | None, evaluator: Evaluator | None) -> Executor:
        """The given executor, or the config's, started with the given evaluator or the config's."""
        cfg = self.config
        if executor is None:
            executor = make_executor(
                cfg.executor,
                workers=cfg.workers,
                ray_address=cfg.ray_address,
                max_retries=cfg.max_retries,
                trial_timeout=cfg.trial_timeout,
            )
        executor.on_progress = self._on_progress
        executor.stoppable = cfg.pruning.enabled
        executor.start(evaluator or make_evaluator(cfg, self.space), self.store.mark_running)
        return executor

    def _ask_ahead(self, round_: int, asked: int) -> int:
        """Ask rounds up to ``round_ + lookahead`` (within the budget); returns rounds asked.

        Which rounds are asked, and when, depends only on the committed state and the
        trials asked so far, never on timing: a resumed run asks exactly what an
        uninterrupted one did.
        """
        cfg = self.config
        round_size = cfg.round_size or self.strategy.batch_size
        while asked <= round_ + cfg.lookahead:
            planned = self.store.planned_before(asked)
            # a round already in the store (asked before a crash) is asked again exactly as
            # it was, even if the budget changed since: the strategy's RNG must replay it
            replay = len(self.store.trials(round_=asked))
            # a strategy that only proposes repeats (a tiny space) must not loop forever
            spent = planned >= cfg.budget or self.store.total_trials_before(asked) >= 50 * cfg.budget
            if spent and not replay:
                break
            self._queue_round(asked, self._ask(asked, replay or min(round_size, cfg.budget - planned)))
            asked += 1
        return asked

    def _ask(self, round_: int, n: int) -> list[Architecture]:
        """``n`` architectures for round ``round_``, each at the depth the schedule gives it."""
        return self.ask_from(self.store.total_trials_before(round_) if self.schedule else 0, n)

    def ask_from(self, first: int, n: int) -> list[Architecture]:
        """``n`` architectures, the first of them the run's ``first``-th (0-based), each at
        the depth the schedule gives its index (the asynchronous loop asks through this too)."""
        if self.schedule is None:
            return self.strategy.ask(n)
        assert isinstance(self.space, ConvSpace)  # the config allows a schedule for conv only
        archs: list[Architecture] = []
        for depth, count in self.schedule.segments(first, n):
            self.strategy.use_space(self.space.with_layers(depth))
            archs += self.strategy.ask(count)
        return archs

    @staticmethod
    def _runnable(trials: list[Trial]) -> list[Trial]:
        return [t for t in trials if t.reused_from is None and not t.finished]

    def _queue_round(self, round_: int, archs: list[Architecture]) -> list[Trial]:
        existing = self.store.trials(round_=round_)
        if existing:
            if [t.arch.key for t in existing] != [a.key for a in archs]:
                raise StoreError(
                    f"{self.run_dir}: round {round_} in the database does not match what the "
                    "saved strategy state asks for (damaged or edited run)"
                )
            return existing
        first = self.store.total_trials_before(round_)
        rows: list[tuple[Architecture, int, int | None]] = []
        for i, arch in enumerate(archs):
            reused: int | None = None
            if self.config.reuse_results:
                # any earlier trial of the same architecture, finished or not: whether it has
                # finished yet depends on timing, and what is reused must not
                prior = self.store.first_by_key(arch.key)
                if prior is not None:
                    reused = prior.id
                else:
                    # a repeat inside this round waits for the first copy's result
                    twin = next((j for j in range(i) if archs[j].key == arch.key), None)
                    reused = None if twin is None else -(twin + 1)
            rows.append((arch, trial_seed(self.config.seed, first + i), reused))
        self.store.add_trials(round_, rows)
        return self.store.trials(round_=round_)

    def _evaluate(self, executor: Executor, round_: int, todo: list[Trial], submitted: set[int]) -> float:
        """Submit what is not yet running, then collect results until round ``round_`` is
        complete (later rounds' trials keep the workers busy meanwhile). Returns the
        seconds spent recording results."""
        overhead = 0.0
        # todo is in round order, and earlier rounds are told first, so they are submitted first
        new = [t for t in todo if t.id not in submitted]
        for t in new:
            executor.submit(Task(t.id, t.arch, t.seed))
            submitted.add(t.id)
        waiting = {t.id for t in todo if t.round == round_}
        for listener in self.listeners:
            listener.on_running(min(executor.capacity, executor.pending()))
        while waiting and executor.pending():
            for trial_id, result in executor.wait():
                t0 = time.perf_counter()
                self._record(trial_id, result)
                waiting.discard(trial_id)
                overhead += time.perf_counter() - t0
            check_stop()  # every result of the batch is stored: a dropped stop (nasrl.signals) stops here
            for listener in self.listeners:
                listener.on_running(min(executor.capacity, executor.pending()))
        if waiting:
            raise NasrlError(f"round {round_}: trials {sorted(waiting)} were never run (executor lost them)")
        return overhead

    def _load_curves(self) -> None:
        """The curves of finished trials: a trial re-queued after a crash starts a fresh one
        when it runs again, so until then its old one is not compared against (as in an
        uninterrupted serial run, where only finished trials have curves when one is judged)."""
        finished = {t.id for t in self.store.trials() if t.finished}
        self.curves = {c.trial_id: c.values for c in self.store.curves() if c.trial_id in finished}

    def _on_progress(self, trial_id: int, epoch: int, epochs: int, seconds: float,
                     metrics: Mapping[str, float]) -> bool:
        """An epoch finished inside a running trial: stored for ``nasrl status`` and the
        learning curves, shown live; returns whether the pruning rule stops the trial."""
        self.store.set_progress(trial_id, epoch, epochs, seconds)
        check_stop()  # between two epochs of a trial, as a delivered stop could come anywhere
        for listener in self.listeners:
            listener.on_epoch(Progress(trial_id, epoch, epochs, seconds))
        metric = next((m for m in HIGHER_IS_BETTER if m in metrics), None)
        if metric is None:
            return False
        value = float(metrics[metric])
        self.store.add_epoch(trial_id, epoch, metric, value, seconds)
        curve = self.curves.setdefault(trial_id, [])
        del curve[epoch - 1:]  # a new attempt of the trial reports from epoch 1 again
        curve.append(value if math.isfinite(value) else math.nan)
        others = (c for t, c in self.curves.items() if t != trial_id)
        return should_prune(self.config.pruning, curve, epochs, others, HIGHER_IS_BETTER[metric])

    def _record(self, trial_id: int, result: EvalResult) -> None:
        """Store a result with the reward the objective gives it (the only reward computed)."""
        state: TrialState = "failed"
        reward, feasible, error = None, True, result.error
        if result.ok or result.status == "pruned":
            value = self.objective.evaluate(result.metrics)
            if value.error is None:
                state, reward, feasible = "complete", value.reward, value.feasible
                if result.status == "pruned":
                    # stored either way (shown, never a best); told only as pruned_reward says
                    state = "pruned"
            error = value.error
        if state == "failed" and error is None:
            error = "the evaluation failed without an error message"
        self.store.finish(trial_id, state, reward, result.metrics, error, result.cost, feasible)
        self._notify(self.store.trial(trial_id))

    def _notify(self, trial: Trial) -> None:
        if not self.listeners:
            return
        counts = self.store.counts()
        best = self.store.best(1)
        for listener in self.listeners:
            listener.on_trial(trial, counts, best[0].reward if best else None)

    def _fill_reused(self, trials: list[Trial]) -> list[Trial]:
        for t in trials:
            if t.reused_from is not None and not t.finished:
                src = self.store.trial(t.reused_from)
                self.store.finish(t.id, src.state, src.reward, src.metrics, src.error, 0.0, src.feasible)
        return self.store.trials(round_=trials[0].round) if trials else trials

    def _observation(self, trial: Trial) -> Observation:
        if trial.state == "pruned":
            told = trial.reward if self.config.pruning.pruned_reward == "last" else None
            return Observation(trial.arch, told)
        reward = trial.reward if trial.state == "complete" else self.config.failure_reward
        return Observation(trial.arch, reward)



RESUME_OVERRIDABLE = (
    "executor",
    "workers",
    "ray_address",
    "budget",
    "trial_timeout",
    "max_retries",
    "device",
)


def _record_budget(run_dir: Path, store: TrialStore, values: dict[str, Any]) -> None:
    """A resume's new budget becomes the run's own: status and report show it, and a later
    resume without --budget keeps it. It may not fall below what is already asked: rounds
    in the store are replayed as they were asked."""
    budget = int(values["budget"])
    planned = store.planned_total()
    if budget < planned:
        raise ConfigError(
            f"{run_dir}: cannot lower the budget to {budget}: {planned} architectures are already "
            f"evaluated or queued (give --budget {planned} or more)"
        )
    store.set_config(values)
    path = run_dir / CONFIG_NAME
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return  # config.json is a copy for people to read; runs.db is the record
    if isinstance(recorded, dict):
        recorded["budget"] = budget
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(recorded, indent=2, sort_keys=True) + "\n")
        tmp.replace(path)  # atomic: a reader sees the old file or the new one


@contextlib.contextmanager
def _driver_threads(children_elsewhere: bool) -> Iterator[None]:
    """One torch thread in the driver while children train in other processes: the
    controller is tiny, and idle OpenMP threads spinning beside busy workers cost more
    than they give (most of the driver's time on a loaded machine)."""
    if not children_elsewhere:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _round_stats(trials: list[Trial]) -> dict[str, float]:
    rewards = [t.reward for t in trials if t.state == "complete" and t.reward is not None]
    out = {
        "round/trials": float(len(trials)),
        "round/failed": float(sum(t.state == "failed" for t in trials)),
        "round/pruned": float(sum(t.state == "pruned" for t in trials)),
    }
    if rewards:
        out["round/reward_mean"] = float(np.mean(rewards))
        out["round/reward_max"] = float(np.max(rewards))
    return out


def resolved_config(config: SearchConfig, strategy: Strategy) -> dict[str, Any]:
    """What the run directory records: every setting resolved, plus seed and version."""
    out = to_dict(config)
    out["strategy_config"] = strategy.resolved_config()
    out["objective"] = make_objective(config).resolved()
    out["version"] = __version__
    return out
