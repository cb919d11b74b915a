"""What every child trainer returns, and the pieces they share (seeding, devices, FLOPs)."""

from __future__ import annotations

import contextlib
import math
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from nasrl.config import ConfigError
from nasrl.errors import NasrlError
from nasrl.spaces.base import Architecture, SearchSpace


class Diverged(RuntimeError):
    """The training loss stopped being finite."""


@dataclass
class TrainResult:
    status: Literal["complete", "failed"]
    val_acc: list[float] = field(default_factory=list)
    """Validation accuracy (fraction) after each epoch."""
    train_loss: list[float] = field(default_factory=list)
    test_acc: float | None = None
    params: int = 0
    macs: int = 0
    """Multiply-accumulates of one forward pass of one example; FLOPs = 2 x MACs."""
    wall_time: float = 0.0
    error: str | None = None
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "complete"

    def metrics(self) -> dict[str, float]:
        """Flat numbers for a trial store or a log."""
        out: dict[str, float] = {"params": float(self.params), "macs": float(self.macs),
                                 "flops": 2.0 * self.macs, "train_seconds": self.wall_time}
        if self.val_acc:
            out["val_acc"] = self.val_acc[-1]
            out["val_acc_best"] = max(self.val_acc)
        if self.train_loss:
            out["train_loss"] = self.train_loss[-1]
        if self.test_acc is not None:
            out["test_acc"] = self.test_acc
        out.update(self.extra)
        return out


def failure(exc: BaseException, partial: TrainResult) -> TrainResult:
    """A failed result carrying the error (and whatever was measured before it)."""
    message = f"{type(exc).__name__}: {exc}".strip()
    if not isinstance(exc, Diverged | torch.OutOfMemoryError):
        # unexpected errors keep where they came from: the last frame is enough to act on
        frames = traceback.extract_tb(exc.__traceback__)
        if frames:
            message += f" (at {frames[-1].filename}:{frames[-1].lineno})"
    partial.status, partial.error = "failed", message
    return partial


def check_finite(loss_sum: Tensor, epoch: int) -> float:
    value = float(loss_sum)
    if not math.isfinite(value):
        raise Diverged(f"loss became {value} in epoch {epoch + 1}")
    return value


def check_device(name: str, what: str = "device") -> torch.device:
    """``name`` as a device of this machine ('auto' resolved), or a one-line error: a search
    must not spend its whole budget on children that cannot run."""
    if str(name) == "auto":
        return resolve_device(name)
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"{what} {name!r} is not a device (auto, cpu, cuda, cuda:1, mps)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"{what} {name!r}: this machine has no CUDA device")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"{what} {name!r}: this machine has {count} CUDA device(s)")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"{what} {name!r}: this machine has no MPS device")
    elif device.type != "cpu":
        raise ConfigError(f"{what} {name!r}: only cpu, cuda and mps are supported")
    return device


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generators for the block only (module initializers use them),
    leaving the caller's random state as it was."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def build_seeded(
    space: SearchSpace, arch: Architecture, seed: int, *, input_shape: tuple[int, ...], num_classes: int,
    build_options: dict[str, Any] | None = None,
) -> nn.Module | TrainResult:
    """Build ``arch`` with weights drawn from ``seed``; a child that cannot be built is a failed
    result, while bad input (an unknown builder option) still raises."""
    from nasrl.models import build_model

    try:
        with seeded(seed):
            return build_model(space, arch, input_shape=input_shape, num_classes=num_classes,
                               **(build_options or {}))
    except NasrlError:
        raise
    except Exception as exc:
        return failure(exc, TrainResult(status="failed"))


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def static_costs(model: nn.Module, input_shape: tuple[int, ...]) -> dict[str, float]:
    """Parameters, MACs and FLOPs (2 x MACs) of an image model, counted on one zero example:
    the costs a hard limit can screen before any training."""
    macs = count_macs(model, torch.zeros(1, *input_shape))
    return {"params": float(count_params(model)), "macs": float(macs), "flops": 2.0 * macs}


def child_costs(space: SearchSpace, arch: Architecture, input_shape: tuple[int, ...], num_classes: int,
                build_options: dict[str, Any] | None = None) -> dict[str, float]:
    """:func:`static_costs` of the stand-alone child ``build_model`` makes for ``arch`` (what
    ``nasrl train`` builds), untrained. Building draws initial weights; the global
    generator is forked for it, so the caller's random stream does not move."""
    from nasrl.models import build_model  # models import nothing of training's

    with torch.random.fork_rng(devices=[]):
        model = build_model(space, arch, input_shape=input_shape, num_classes=num_classes,
                            **(build_options or {}))
    return static_costs(model, input_shape)


def count_macs(model: nn.Module, example: Tensor) -> int:
    """Multiply-accumulates of convolutions and linear layers for one example."""
    total = 0

    def conv_hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Conv2d)
        k = mod.kernel_size[0] * mod.kernel_size[1] * (mod.in_channels // mod.groups)
        total += out[0].numel() * k

    def linear_hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
        nonlocal total
        assert isinstance(mod, nn.Linear)
        total += out[0].numel() * mod.in_features

    handles = []
    for mod in model.modules():
        if isinstance(mod, nn.Conv2d):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(example[:1])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
