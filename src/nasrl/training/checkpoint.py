"""A training that stops and resumes: ``nasrl train --checkpoint FILE``.

After every epoch :func:`nasrl.training.image.train_model` writes the model, the
optimizer, the data generator's state, the step count and the curves so far to one file
(written beside and renamed over, so a crash mid-write leaves the previous epoch's). The
same command run again continues after the last finished epoch and ends as the
uninterrupted training would (bit-identical on the same thread count: the shuffles and
augmentations come from the restored generator). That turns a final training longer than
a sitting into several commands, and a crash into the loss of one epoch at most.

The file records what training it belongs to (architecture, dataset, recipe, seed, build
options): resuming it into another is refused, since the weights and the schedule would
silently mix two runs. It is read with ``weights_only=True``: only tensors and plain
values, never pickled code.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nasrl.errors import NasrlError

_FORMAT = 1


@dataclass
class TrainCheckpoint:
    path: Path
    fingerprint: str
    """What the training is (a canonical JSON text): a checkpoint of another is refused."""
    state: dict[str, Any] | None = None
    """What :meth:`open` found, restored by the training; None for a fresh start."""

    @classmethod
    def open(cls, path: Path, fingerprint: str) -> TrainCheckpoint:
        """The checkpoint at ``path``, checked against ``fingerprint`` (absent: a fresh start)."""
        checkpoint = cls(path, fingerprint)
        if not path.exists():
            return checkpoint
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable, truncated, or not a torch file at all
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise NasrlError(f"{path}: not a training checkpoint nasrl can read ({first[:200]})") from None
        if not isinstance(state, dict) or state.get("format") != _FORMAT:
            raise NasrlError(f"{path}: not a training checkpoint of this nasrl")
        if state.get("fingerprint") != fingerprint:
            raise NasrlError(f"{path}: a checkpoint of another training (the architecture, data, recipe, "
                             f"seed or build options differ); give another --checkpoint or remove it")
        checkpoint.state = state
        return checkpoint

    @property
    def epochs_done(self) -> int:
        return int(self.state["epochs_done"]) if self.state else 0

    def restore(self, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator
                ) -> tuple[int, int, dict[str, Any]]:
        """Load the saved state into ``model``, ``opt`` and ``gen``; returns (epochs done,
        optimizer steps, the curves and seconds so far)."""
        assert self.state is not None
        model.load_state_dict(self.state["model"])
        opt.load_state_dict(self.state["optimizer"])
        gen.set_state(self.state["generator"])
        return self.epochs_done, int(self.state["step"]), self.state["progress"]

    def save(self, model: nn.Module, opt: torch.optim.Optimizer, gen: torch.Generator, epochs_done: int,
             step: int, progress: dict[str, Any]) -> None:
        self.state = {
            "format": _FORMAT, "fingerprint": self.fingerprint, "epochs_done": epochs_done, "step": step,
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "optimizer": opt.state_dict(), "generator": gen.get_state(), "progress": progress,
            "saved_at": time.time(),
        }
        partial = self.path.with_name(self.path.name + ".partial")
        torch.save(self.state, partial)
        os.replace(partial, self.path)
