"""Watching a search: a live progress display and TensorBoard events."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from nasrl.objectives import format_reward
from nasrl.oneshot.enas import OneShotListener
from nasrl.search import RunListener
from nasrl.store.sqlite import Derived, Progress, Trial


def _duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class ProgressDisplay(RunListener):
    """Trials done of the budget, running, failed, best so far and ETA.

    A live bar on a terminal (rich); one line per finished trial elsewhere (logs, CI).
    """

    def __init__(self, budget: int, done: int = 0, stream: TextIO | None = None) -> None:
        self.budget = budget
        self.start_done = done
        self.start = time.monotonic()
        self.stream = stream or sys.stderr
        self.running = 0
        self.failed = 0
        self.best: float | None = None
        self.done = done
        self.trial_seconds: float | None = None
        """A trial's length as the latest epoch report predicts it, until trials finish."""
        self.live: Any = None
        if self.stream.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn

            self.live = Progress(
                TextColumn("search"),
                BarColumn(),
                TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream),
                transient=False,
            )
            self.task = self.live.add_task("search", total=budget, completed=done, status=self._status())
            self.live.start()

    def _eta(self) -> str:
        new = self.done - self.start_done
        left = max(0, self.budget - self.done)
        if new <= 0:
            if self.trial_seconds is None:
                return "?"
            # no trial finished yet: estimate from the first epochs, trials running side by side
            waves = -(-left // max(1, self.running))
            return "~" + _duration(self.trial_seconds * waves)
        rate = (time.monotonic() - self.start) / new
        return _duration(rate * left)

    def _status(self) -> str:
        best = format_reward(self.best)
        return (
            f"{self.done}/{self.budget} done, {self.running} running, {self.failed} failed, "
            f"best {best}, ETA {self._eta()}"
        )

    def on_trial(self, trial: Trial, counts: dict[str, int], best: float | None) -> None:
        self.done, self.failed, self.best = counts["evaluated"], counts["failed"], best
        if self.live is not None:
            self.live.update(self.task, completed=self.done, status=self._status())
            return
        if trial.state == "failed":
            what = f"FAILED ({trial.error})"
        elif trial.state == "pruned":
            epochs = trial.metrics.get("epochs_trained", 0)
            what = f"pruned after {epochs:g} epochs, reward {format_reward(trial.reward)}"
        else:
            what = f"reward {format_reward(trial.reward)}"
            what += "" if trial.feasible else " (infeasible)"
        print(
            f"[{self.done}/{self.budget}] trial {trial.id}: {what}; {self._status()}",
            file=self.stream,
            flush=True,
        )

    def on_epoch(self, progress: Progress) -> None:
        self.trial_seconds = progress.seconds + progress.seconds_left
        if self.live is not None:
            self.live.update(self.task, status=self._status())
            return
        print(f"  {epoch_line(progress)}; {self._status()}", file=self.stream, flush=True)

    def on_running(self, running: int) -> None:
        self.running = running
        if self.live is not None:
            self.live.update(self.task, status=self._status())

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def epoch_line(progress: Progress) -> str:
    """'trial 7: epoch 2/8 in 31s, about 1m33s left'."""
    return (f"trial {progress.trial_id}: epoch {progress.epoch}/{progress.epochs} in "
            f"{_duration(progress.seconds)}, about {_duration(progress.seconds_left)} left")


class TensorBoardLogger(RunListener):
    """Events under RUN_DIR/tensorboard: each trial's reward, the best so far, and the
    strategy's metrics per round. Skipped, with a note, if tensorboard is not installed."""

    def __init__(self, run_dir: Path) -> None:
        self.writer: Any = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("nasrl: tensorboard not installed; no TensorBoard events", file=sys.stderr)
            return
        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def on_trial(self, trial: Trial, counts: dict[str, int], best: float | None) -> None:
        if self.writer is None:
            return
        if trial.reward is not None:
            # a pruned child's reward reads a shorter schedule: kept apart from full ones
            tag = "trial/pruned_reward" if trial.state == "pruned" else "trial/reward"
            self.writer.add_scalar(tag, trial.reward, trial.id)
        if best is not None:
            self.writer.add_scalar("search/best_reward", best, counts["evaluated"])
        for key in ("val_acc", "params", "train_seconds", "epochs_trained"):
            if key in trial.metrics:
                self.writer.add_scalar(f"trial/{key}", trial.metrics[key], trial.id)

    def on_round(self, round_: int, metrics: Mapping[str, float]) -> None:
        if self.writer is None:
            return
        for key, value in metrics.items():
            self.writer.add_scalar(key, value, round_)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class OneShotProgress(OneShotListener):
    """One line per one-shot epoch: loss, reward, entropy, time and ETA (from the mean
    epoch time of this session), then the derived architectures."""

    def __init__(self, space: Any, stream: TextIO | None = None) -> None:
        self.space = space
        self.stream = stream or sys.stderr
        self.seconds: list[float] = []

    def on_epoch(self, epoch: int, epochs: int, metrics: Mapping[str, float], seconds: float) -> None:
        self.seconds.append(seconds)
        eta = sum(self.seconds) / len(self.seconds) * (epochs - epoch)
        parts = [f"shared loss {metrics['shared/loss']:.4f}"]
        if "oneshot/val_acc_mean" in metrics:
            parts.append(f"reward-batch acc {100 * metrics['oneshot/val_acc_mean']:.1f}%")
        if "controller/entropy" in metrics:
            parts.append(f"entropy {metrics['controller/entropy']:.3f}")
        print(f"epoch {epoch}/{epochs}: {', '.join(parts)}; {_duration(seconds)}, ETA {_duration(eta)}",
              file=self.stream, flush=True)

    def on_deriving(self, done: int, total: int) -> None:
        # about five lines whatever the number of candidates
        if done == total or done % max(1, total // 5) == 0:
            print(f"deriving: {done}/{total} candidates scored", file=self.stream, flush=True)

    def on_derived(self, derived: Sequence[Derived]) -> None:
        print(f"derived {len(derived)} architectures (shared-weight validation accuracy):",
              file=self.stream, flush=True)
        for d in derived:
            print(f"  #{d.rank} {100 * d.score:.2f}%  {self.space.describe(d.arch)}", file=self.stream,
                  flush=True)


class OneShotTensorBoard(OneShotListener):
    """Events under RUN_DIR/tensorboard: every controller round's metrics (step = round)
    and each epoch's (step = epoch)."""

    def __init__(self, run_dir: Path) -> None:
        self.logger = TensorBoardLogger(run_dir)

    def on_update(self, round_: int, metrics: Mapping[str, float]) -> None:
        self.logger.on_round(round_, metrics)

    def on_epoch(self, epoch: int, epochs: int, metrics: Mapping[str, float], seconds: float) -> None:
        if self.logger.writer is not None:
            for key, value in metrics.items():
                self.logger.writer.add_scalar(f"epoch/{key}", value, epoch)

    def on_derived(self, derived: Sequence[Derived]) -> None:
        if self.logger.writer is not None:
            for d in derived:
                self.logger.writer.add_scalar("derived/shared_val_acc", d.score, d.rank)

    def close(self) -> None:
        self.logger.close()
