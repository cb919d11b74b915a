"""Settings of a one-shot (ENAS) search: ``oneshot.*`` in a search config."""

from __future__ import annotations

from dataclasses import dataclass

from nasrl.config import ConfigError
from nasrl.training.image import TrainConfig


@dataclass(frozen=True)
class SharedTrainConfig(TrainConfig):
    """Shared-weight training: the child trainer's settings with the defaults a supernet
    wants (a class of its own, so ``--set oneshot.training.KEY=...`` keeps the others)."""

    epochs: int = 1
    """Not used (must stay 1): the schedule spans ``oneshot.epochs``."""
    batch_size: int = 64


@dataclass(frozen=True)
class OneShotConfig:
    epochs: int = 10
    """Epochs of the one-shot loop: each trains the shared weights on the training split,
    then the controller on validation batches; a checkpoint is committed after each."""
    training: SharedTrainConfig = SharedTrainConfig()
    """How the shared weights are trained (optimizer, schedule, augmentation, batch size).
    Its ``epochs`` must stay 1: the schedule's length is ``oneshot.epochs``."""
    warmup_epochs: int = 0
    """Epochs at the start that train the shared weights on uniformly drawn architectures,
    with no controller rounds. A policy that learns from young shared weights favours
    what trains fastest under sharing, which then trains more and looks better still
    (the rich get richer); a uniform warm-up gives every choice its weights first."""
    samples_per_epoch: int | None = None
    """Training examples per epoch (None: the whole training split). Each epoch takes the
    next window of a seeded permutation of the split, so short epochs -- more controller
    rounds and checkpoints per pass over the data -- still see every example once per pass."""
    controller_steps: int = 10
    """Strategy rounds per epoch: ask the strategy's batch, reward each architecture with
    its shared-weight accuracy on one validation batch, tell the rewards (one REINFORCE
    update per round for ``reinforce``)."""
    reward_batch_size: int = 128
    """Validation examples per controller round (all of the round's architectures are
    scored on the same batch, so they are compared on equal terms)."""
    derive_samples: int = 100
    """Architectures sampled from the final policy to pick the top ones from."""
    top_k: int = 5
    """Derived architectures kept, best shared-weight validation accuracy first."""
    derive_val_samples: int | None = None
    """Validation examples that score each derived candidate (None: the whole split)."""
    derive_finalists: int = 20
    """Derivation in two stages: every candidate is scored on a quarter of the
    ``derive_val_samples``, then this many of the best (at least ``top_k``) on all of them
    -- about half the cost of scoring all on everything; the price is that the screen's
    noise (a quarter of the samples) can drop a candidate that full scoring would have
    ranked in the top. 0: every candidate on all samples."""
    calibration_batches: int = 4
    """Training batches that re-estimate a candidate's batch-norm statistics before it is
    scored (shared running statistics mix every architecture; see SuperNet)."""

    def __post_init__(self) -> None:
        for name in ("epochs", "controller_steps", "reward_batch_size", "derive_samples", "top_k",
                     "calibration_batches"):
            if getattr(self, name) < 1:
                raise ConfigError(f"oneshot.{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"oneshot.warmup_epochs must be from 0 to oneshot.epochs - 1 "
                              f"({self.epochs - 1}), got {self.warmup_epochs}")
        if self.derive_finalists < 0:
            raise ConfigError(f"oneshot.derive_finalists must be >= 0, got {self.derive_finalists}")
        if self.samples_per_epoch is not None and self.samples_per_epoch < 1:
            raise ConfigError(f"oneshot.samples_per_epoch must be at least 1, got {self.samples_per_epoch}")
        if self.derive_val_samples is not None and self.derive_val_samples < 1:
            raise ConfigError(f"oneshot.derive_val_samples must be at least 1, got {self.derive_val_samples}")
        if self.training.epochs != 1:
            raise ConfigError("oneshot.training.epochs is not used; set oneshot.epochs instead")

    def shared_training(self) -> TrainConfig:  # the one place oneshot.epochs meets the schedule
        """The shared-weight TrainConfig with the schedule spanning every one-shot epoch."""
        from dataclasses import replace

        return replace(self.training, epochs=self.epochs)
