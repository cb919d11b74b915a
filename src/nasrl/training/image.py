"""Training an image classifier fast and reproducibly: plain functions over tensors.

The data already lives on the training device; each epoch is one random permutation and
slices of it, augmentation is batch tensor ops, and nothing leaves the device until the
epoch ends (one sync for the loss check). Every random draw comes from a generator seeded
from the run's seed, so the same seed gives the same result.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrl.data.augment import random_crop, random_erasing, random_flip
from nasrl.data.images import ImageData
from nasrl.errors import NasrlError
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.training.checkpoint import TrainCheckpoint
from nasrl.training.common import (
    TrainResult,
    build_seeded,
    check_finite,
    count_macs,
    count_params,
    failure,
    resolve_device,
)


@dataclass(frozen=True)
class TrainConfig:
    """Child training settings. Defaults suit a quick search child on CPU; the paper trained
    each child 50 epochs with lr 0.1, momentum 0.9 (Nesterov) and weight decay 1e-4."""

    epochs: int = 10
    batch_size: int = 128
    learning_rate: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    step_every: int = 30
    """Epochs between learning-rate drops (schedule 'step')."""
    step_gamma: float = 0.1
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: bool = True
    """Use the dataset's augmentation (random crop with padding, flips where they make sense)."""
    erasing: float = 0.0
    """Random erasing's probability per image (with ``augment``; 0: off): one rectangle of
    2-40% of the image set to the training mean, a common final-training regularizer."""
    max_train_samples: int | None = None
    """Train on the first N (shuffled) training examples only: cheaper search children."""
    max_last_window: int = 5
    """Epochs over which ``val_acc_max_last`` takes the maximum (the paper's reward reads
    the max of the last 5; the reward itself is nasrl.objectives' business)."""
    eval_batch_size: int = 1000
    channels_last: bool = True
    """NHWC memory layout; faster for convolutions on CPU."""
    amp: bool = True
    """bfloat16 autocast, on CUDA only."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "max_last_window", "eval_batch_size", "step_every"):
            if getattr(self, name) < 1:
                raise NasrlError(f"training.{name} must be at least 1, got {getattr(self, name)}")
        if not math.isfinite(self.learning_rate) or self.learning_rate <= 0:
            raise NasrlError(f"training.learning_rate must be a positive number, got {self.learning_rate}")
        for name in ("momentum", "weight_decay", "step_gamma", "warmup_epochs", "label_smoothing"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise NasrlError(f"training.{name} must be a number >= 0, got {value}")
        if not 0 <= self.erasing <= 1:
            raise NasrlError(f"training.erasing must be a probability in [0, 1], got {self.erasing}")
        if self.label_smoothing >= 1:
            raise NasrlError(f"training.label_smoothing must be below 1, got {self.label_smoothing}")
        if self.schedule not in ("cosine", "step", "constant"):
            raise NasrlError(f"training.schedule must be cosine, step or constant, got {self.schedule!r}")


def max_last(val_acc: list[float], config: TrainConfig) -> float:
    """The maximum validation accuracy of the last ``max_last_window`` epochs."""
    return max(val_acc[-config.max_last_window:])


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (per-step cosine, warm-up first)."""
    epoch = step / steps_per_epoch
    if config.warmup_epochs > 0 and epoch < config.warmup_epochs:
        return (step + 1) / (config.warmup_epochs * steps_per_epoch)
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        return 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
    if config.schedule == "step":
        return float(config.step_gamma ** int(epoch // config.step_every))
    return 1.0


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.SGD:
    # no weight decay on batch-norm and bias parameters (standard; decaying them only hurts)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.learning_rate, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
    )


def autocast(device: torch.device, config: TrainConfig) -> contextlib.AbstractContextManager[object]:
    if device.type == "cuda" and config.amp:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def evaluate_accuracy(model: nn.Module, x: Tensor, y: Tensor, config: TrainConfig) -> float:
    device = x.device
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    with torch.no_grad(), autocast(device, config):
        for i in range(0, len(x), config.eval_batch_size):
            xb = x[i:i + config.eval_batch_size]
            if config.channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            correct += (model(xb).argmax(dim=1) == y[i:i + config.eval_batch_size]).sum()
    model.train()
    return int(correct) / max(1, len(x))


def train_epoch(model: nn.Module, data: ImageData, train_x: Tensor, train_y: Tensor, opt: torch.optim.SGD,
                config: TrainConfig, gen: torch.Generator, step: int) -> tuple[Tensor, int]:
    """One pass over a fresh permutation; returns the summed loss (on device) and the step count."""
    device = train_x.device
    n = len(train_x)
    bs = min(config.batch_size, n)
    steps = n // bs  # drop the ragged last batch: a batch of 1 breaks batch norm
    perm = torch.randperm(n, generator=gen, device=gen.device).to(device)
    loss_sum = torch.zeros((), device=device)
    base_lr = config.learning_rate
    for b in range(steps):
        idx = perm[b * bs:(b + 1) * bs]
        xb, yb = train_x[idx], train_y[idx]
        if config.augment:
            xb = random_crop(xb, data.augment.crop_padding, gen)
            if data.augment.flip:
                xb = random_flip(xb, gen)
            xb = random_erasing(xb, config.erasing, gen)
        if config.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        factor = lr_factor(config, step, steps)
        for group in opt.param_groups:
            group["lr"] = base_lr * factor
        with autocast(device, config):
            loss = F.cross_entropy(model(xb), yb, label_smoothing=config.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        opt.step()
        loss_sum += loss.detach().float()
        step += 1
    return loss_sum / max(1, steps), step


EpochCallback = Callable[[int, TrainResult], bool | None]
"""Called after each epoch; returning True stops training there (the child was pruned)."""


def train_model(model: nn.Module, data: ImageData, config: TrainConfig, *, seed: int,
                device: str | torch.device | None = None, test: bool = False, validate: bool = True,
                on_epoch: EpochCallback | None = None,
                checkpoint: TrainCheckpoint | None = None) -> TrainResult:
    """Train ``model`` on ``data``'s training split; never raises for a failing child.

    Returns validation accuracy per epoch (and ``val_acc_max_last``), parameters, MACs and
    wall time (and test accuracy when ``test``); no reward -- that is the objective's job.
    ``validate=False`` skips the per-epoch validation (a final model trained on train +
    validation). NaN losses,
    out-of-memory and any other exception give a failed result carrying the error.
    With a ``checkpoint`` the state is saved after every epoch, and a checkpoint that holds
    epochs already is resumed after them (its curves and seconds carried on).
    """
    result = TrainResult(status="complete")
    start = time.perf_counter()
    try:
        dev = resolve_device(device)
        data = data.to(dev)
        model = model.to(dev)
        if config.channels_last:
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        result.params = count_params(model)
        result.macs = count_macs(model, data.val_x[:1])
        gen = torch.Generator(device=dev if dev.type == "cuda" else "cpu")
        gen.manual_seed(seed)
        train_x, train_y = training_subset(data, config, gen, dev)
        opt = make_optimizer(model, config)
        model.train()
        first, step = 0, 0
        if checkpoint is not None and checkpoint.state is not None:
            first, step, progress = checkpoint.restore(model, opt, gen)
            result.train_loss, result.val_acc = list(progress["train_loss"]), list(progress["val_acc"])
            start -= float(progress["seconds"])
        for epoch in range(first, config.epochs):
            loss, step = train_epoch(model, data, train_x, train_y, opt, config, gen, step)
            result.train_loss.append(check_finite(loss, epoch))
            if validate:
                result.val_acc.append(evaluate_accuracy(model, data.val_x, data.val_y, config))
            if checkpoint is not None:
                checkpoint.save(model, opt, gen, epoch + 1, step, {
                    "train_loss": result.train_loss, "val_acc": result.val_acc,
                    "seconds": time.perf_counter() - start})
            if on_epoch is not None:
                result.wall_time = time.perf_counter() - start
                if on_epoch(epoch, result):
                    break  # pruned: the caller stops this child here, with what it has
        if validate:
            result.extra["val_acc_max_last"] = max_last(result.val_acc, config)
        if test:
            result.test_acc = evaluate_accuracy(model, data.test_x, data.test_y, config)
    except Exception as exc:  # a failing child is a result, never a crash of the search
        result = failure(exc, result)
    result.wall_time = time.perf_counter() - start
    return result


def training_subset(data: ImageData, config: TrainConfig, gen: torch.Generator,
                    dev: torch.device) -> tuple[Tensor, Tensor]:
    """The training split, or ``max_train_samples`` of it drawn from ``gen`` (cheaper children)."""
    train_x, train_y = data.train_x, data.train_y
    if config.max_train_samples is not None and config.max_train_samples < len(train_x):
        keep = torch.randperm(len(train_x), generator=gen, device=gen.device)[:config.max_train_samples]
        train_x, train_y = train_x[keep.to(dev)], train_y[keep.to(dev)]
    return train_x, train_y


def train_architecture(space: SearchSpace, arch: Architecture, data: ImageData, config: TrainConfig, *,
                       seed: int, device: str | torch.device | None = None, test: bool = False,
                       validate: bool = True, on_epoch: EpochCallback | None = None,
                       build_options: dict[str, Any] | None = None,
                       checkpoint: TrainCheckpoint | None = None) -> tuple[TrainResult, nn.Module | None]:
    """Build ``arch`` with weights drawn from ``seed`` and train it; a build error is a failed result."""
    model = build_seeded(space, arch, seed, input_shape=data.input_shape, num_classes=data.num_classes,
                         build_options=build_options)
    if isinstance(model, TrainResult):
        return model, None
    result = train_model(model, data, config, seed=seed, device=device, test=test, validate=validate,
                         on_epoch=on_epoch, checkpoint=checkpoint)
    return result, model
