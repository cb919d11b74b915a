"""Training and scoring a shared-weight network (supernet): the ENAS inner loop's pieces.

``train_shared`` trains a supernet with one architecture per batch, drawn by a sampler
(uniform over the space by default, the controller's samples in a one-shot search); it
reuses the child trainer's epoch loop (:func:`nasrl.training.image.train_epoch`: same
augmentation, schedule, optimizer and seeding), so shared and stand-alone training differ
only in the model. ``shared_accuracy`` scores one architecture with the shared weights.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from torch import Tensor, nn

from nasrl.data.images import ImageData
from nasrl.models.supernet import SuperNet, recalibrate_bn
from nasrl.spaces.base import Architecture
from nasrl.training.common import check_finite, resolve_device
from nasrl.training.image import (
    TrainConfig,
    evaluate_accuracy,
    make_optimizer,
    train_epoch,
    training_subset,
)

ArchSampler = Callable[[], Architecture]


class _Sampled(nn.Module):
    """The supernet as a plain model: each call runs a freshly sampled architecture, so
    the child trainer's loop trains it one architecture per batch."""

    def __init__(self, supernet: SuperNet, sample: ArchSampler) -> None:
        super().__init__()
        self.supernet = supernet
        self.sample = sample

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.supernet(x, self.sample()))


class _Fixed(nn.Module):
    """The supernet as the plain model of one architecture (for evaluate_accuracy)."""

    def __init__(self, supernet: SuperNet, arch: Architecture) -> None:
        super().__init__()
        self.supernet = supernet
        self.arch = arch

    def forward(self, x: Tensor) -> Tensor:
        return cast(Tensor, self.supernet(x, self.arch))


def uniform_sampler(supernet: SuperNet, seed: int) -> ArchSampler:
    """Architectures drawn uniformly from the supernet's space, from ``seed`` alone."""
    rng = np.random.default_rng(seed)
    return lambda: supernet.space.sample(rng)


def train_shared(supernet: SuperNet, data: ImageData, config: TrainConfig, *, seed: int,
                 sample: ArchSampler | None = None, device: str | torch.device | None = None,
                 on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``supernet`` in place for ``config.epochs`` epochs, one architecture per batch;
    returns the mean training loss of each epoch.

    Batches, augmentation and (with the default uniform sampler) architectures all come
    from ``seed``. Weight decay reaches a whole shared tensor whenever any slice of it is
    used (as ENAS's L2 term covers every shared weight); tensors a batch leaves unused
    have no gradient and are left alone by SGD, momentum included. Raises on a diverged
    loss: unlike a search child, a failing supernet is the whole run's failure.
    """
    start = time.perf_counter()
    dev = resolve_device(device)
    data = data.to(dev)
    supernet.to(dev)
    if config.channels_last:
        supernet.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    gen = torch.Generator(device=dev if dev.type == "cuda" else "cpu")
    gen.manual_seed(seed)
    model = _Sampled(supernet, sample or uniform_sampler(supernet, seed))
    train_x, train_y = training_subset(data, config, gen, dev)
    opt = make_optimizer(supernet, config)
    supernet.train()
    losses: list[float] = []
    step = 0
    for epoch in range(config.epochs):
        loss, step = train_shared_epoch(model, data, train_x, train_y, opt, config, gen, step)
        losses.append(check_finite(loss, epoch))
        if on_epoch is not None:
            on_epoch(epoch, time.perf_counter() - start)
    return losses


def sampled_model(supernet: SuperNet, sample: ArchSampler) -> nn.Module:
    """The supernet as a plain model that runs a freshly sampled architecture per call."""
    return _Sampled(supernet, sample)


def train_shared_epoch(model: nn.Module, data: ImageData, train_x: Tensor, train_y: Tensor,
                       opt: torch.optim.SGD, config: TrainConfig, gen: torch.Generator,
                       step: int) -> tuple[Tensor, int]:
    """One epoch of shared-weight training (``model`` from :func:`sampled_model`): the child
    trainer's epoch, so a one-shot driver that owns the loop trains exactly as train_shared."""
    return train_epoch(model, data, train_x, train_y, opt, config, gen, step)


def steps_per_epoch(n_train: int, config: TrainConfig) -> int:
    """Optimizer steps (= sampled architectures) per epoch, as train_epoch counts them."""
    return n_train // min(config.batch_size, n_train)


def shared_accuracy(supernet: SuperNet, arch: Architecture, x: Tensor, y: Tensor, config: TrainConfig,
                    *, calibration: list[Tensor] | None = None) -> float:
    """Accuracy of ``arch`` with the shared weights on (``x``, ``y``).

    With ``calibration`` batches, ``arch``'s batch-norm running statistics are first
    re-estimated on them (:func:`recalibrate_bn`) and the evaluation uses those; without,
    it uses batch statistics of each evaluation batch, as ENAS's rewards do (so the result
    then depends on ``config.eval_batch_size``). Leaves the supernet in train mode.
    """
    model = _Fixed(supernet, arch)
    if calibration is not None:
        recalibrate_bn(supernet, arch, calibration)
        return evaluate_accuracy(model, x, y, config)
    supernet.train()  # batch statistics
    with torch.no_grad():
        saved = [(bn, bn.momentum) for bn, _ in supernet.batch_norms(arch)]
        for bn, _ in saved:
            bn.momentum = 0.0  # batch statistics without drifting the shared running ones
        try:
            correct = 0
            for i in range(0, len(x), config.eval_batch_size):
                logits = supernet(x[i:i + config.eval_batch_size], arch)
                correct += int((logits.argmax(dim=1) == y[i:i + config.eval_batch_size]).sum())
        finally:
            for bn, momentum in saved:
                bn.momentum = momentum
    return correct / max(1, len(x))
