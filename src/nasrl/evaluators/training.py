"""Real child training as an evaluator: build the architecture, train it, report its metrics.

The dataset is loaded lazily, once per process, so an evaluator pickles small and each
pool or Ray worker reads the data itself.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Literal

import torch
from torch import nn

from nasrl.data.images import ImageData, load_images
from nasrl.data.text import TextData, load_text
from nasrl.errors import NasrlError
from nasrl.evaluators.base import EvalResult, Evaluator, report_epoch
from nasrl.models import builder_task
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.training import TrainConfig, TrainResult, child_costs, train_architecture
from nasrl.training.language import LMTrainConfig, train_cell

if TYPE_CHECKING:
    from nasrl.latency import LatencyTable
    from nasrl.objectives import LatencyConfig


class TrainingEvaluator(Evaluator):
    """Trains image classifiers (``conv``, ``nb201``) or language models (``rnn_cell``),
    whichever the space's builder makes."""

    def __init__(
        self,
        space: SearchSpace,
        dataset: str | None = None,
        *,
        config: TrainConfig | None = None,
        lm_config: LMTrainConfig | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        data_seed: int = 0,
        device: str = "auto",
        build_options: dict[str, Any] | None = None,
        train_on_valid: bool = False,
        latency: LatencyConfig | None = None,
        screen: dict[str, float] | None = None,
    ) -> None:
        self.space = space
        self.task = builder_task(space.name)
        self.dataset = dataset or ("ptb" if self.task == "language" else "digits")
        self.config = config or TrainConfig()
        self.lm_config = lm_config or LMTrainConfig()
        self.train_on_valid = train_on_valid
        self.data_dir = None if data_dir is None else str(data_dir)
        self.data_seed = data_seed
        self.device = device
        self.build_options = dict(build_options or {})
        self.latency = latency
        """Set when the objective needs ``latency_ms``: the trained child is timed too."""
        self.screen = dict(screen or {})
        """Hard limits on params / macs / flops: a child above one is reported untrained."""
        self._data: ImageData | TextData | None = None
        self._table: LatencyTable | None = None

    def data(self) -> ImageData | TextData:
        if self._data is None:
            if self.task == "language":
                self._data = load_text(
                    self.dataset, data_dir=self.data_dir, train_on_valid=self.train_on_valid
                )
            else:
                self._data = load_images(self.dataset, data_dir=self.data_dir, seed=self.data_seed)
        return self._data

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_data"] = None  # workers load their own copy rather than receive it pickled
        state["_table"] = None
        return state

    def evaluate(self, arch: Architecture, seed: int) -> EvalResult:
        data = self.data()
        result: TrainResult
        model: nn.Module | None
        if isinstance(data, TextData):
            reporter = _Reporter(self.lm_config.epochs)
            result, model = train_cell(self.space, arch, data, self.lm_config, seed=seed, device=self.device,
                                       build_options=self.build_options, on_epoch=reporter)
            shape: tuple[int, ...] = (self.lm_config.bptt,)
        else:
            screened = self._screen(arch, data)
            if screened is not None:
                return screened
            reporter = _Reporter(self.config.epochs)
            result, model = train_architecture(self.space, arch, data, self.config, seed=seed,
                                               device=self.device, build_options=self.build_options,
                                               on_epoch=reporter)
            shape = data.input_shape
        metrics = result.metrics()
        if result.ok and model is not None and self.latency is not None:
            metrics["latency_ms"] = self._latency(model, shape, isinstance(data, TextData))
        status: Literal["complete", "failed", "pruned"] = "complete" if result.ok else "failed"
        if result.ok and reporter.stopped_at is not None:
            status, metrics["epochs_trained"] = "pruned", float(reporter.stopped_at)
        return EvalResult(status, metrics, cost=result.wall_time, error=result.error)

    def _screen(self, arch: Architecture, data: ImageData) -> EvalResult | None:
        """The child's static costs, untrained, when they break a hard limit; else None."""
        if not self.screen:
            return None
        start = time.perf_counter()
        try:
            costs = child_costs(self.space, arch, data.input_shape, data.num_classes, self.build_options)
        except NasrlError:
            raise
        except Exception:
            return None  # a child that cannot be built fails in training, with its error
        if all(costs[m] <= limit for m, limit in self.screen.items()):
            return None
        costs["screened"] = 1.0
        return EvalResult("complete", costs, cost=time.perf_counter() - start)

    def _latency(self, model: nn.Module, shape: tuple[int, ...], language: bool) -> float:
        from nasrl.latency import LatencyTable, architecture_latency, example_input

        assert self.latency is not None
        example = example_input(shape, self.latency.batch_size, language)
        if not language and self.config.channels_last:
            example = example.contiguous(memory_format=torch.channels_last)  # as the child ran
        if self.latency.mode == "table" and self._table is None:
            self._table = LatencyTable(self.latency)
        return architecture_latency(model, example, self.latency, self._table)


class _Reporter:
    """The trainer's per-epoch callback: reports the epoch and its validation metric to the
    search, and remembers when the search said stop (the child is then pruned)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.stopped_at: int | None = None

    def __call__(self, epoch: int, result: TrainResult) -> bool:
        metrics: dict[str, float] = {}
        if result.val_acc:
            metrics["val_acc"] = result.val_acc[-1]
        elif "val_ppl" in result.extra:
            metrics["val_ppl"] = result.extra["val_ppl"]
        # the last epoch is never a stop: the child has finished its schedule anyway
        if report_epoch(epoch + 1, self.epochs, result.wall_time, metrics) and epoch + 1 < self.epochs:
            self.stopped_at = epoch + 1
            return True
        return False
