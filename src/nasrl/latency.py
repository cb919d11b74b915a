"""Latency of an architecture on the device it is meant for: measured, or predicted.

*Measured*: the model in eval mode, batch ``batch_size``, a fixed number of CPU threads,
``warmup`` passes, then the median of ``repeats`` timed passes (CUDA synchronized).
Latency does not depend on the weights, so a freshly built model times like a trained one.

*Predicted*: the sum of the latencies of the model's leaf modules (convolutions, batch
norms, pools, linear layers) at the input shapes they see, each measured once per machine
and cached in a table (``~/.cache/nasrl/latency/``, or under ``$NASRL_CACHE_DIR``): after
the first few architectures most predictions need no measurement at all. Functional glue (ReLU calls, padding,
concatenation) is not in the table, so predictions are lower than measurements; what a
constraint needs -- the order of architectures -- is kept (see the README's numbers).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nasrl.config import ConfigError
from nasrl.objectives import LatencyConfig


def check_device(name: str) -> torch.device:
    """The latency device, or a one-line error when this machine has no such device."""
    from nasrl.training.common import check_device as check

    if name == "auto":
        raise ConfigError("objective.latency.device must name a device (cpu, cuda, ...), not 'auto'")
    device = check(name, "objective.latency.device")
    if device.type == "mps":
        raise ConfigError(f"objective.latency.device {name!r}: only cpu and cuda are supported")
    return device


@contextmanager
def _threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _forward(model: nn.Module, x: Tensor) -> Any:
    # language models take token ids and a recurrent state (None: start from zeros)
    return model(x, None) if x.dtype == torch.long else model(x)


def _time(fn: nn.Module, x: Tensor, cfg: LatencyConfig, device: torch.device) -> float:
    """Median milliseconds of ``fn(x)`` after warm-up."""
    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    times = []
    with torch.no_grad():
        for i in range(cfg.warmup + cfg.repeats):
            sync()
            t0 = time.perf_counter()
            _forward(fn, x)
            sync()
            if i >= cfg.warmup:
                times.append(time.perf_counter() - t0)
    return 1000.0 * statistics.median(times)


def example_input(input_shape: tuple[int, ...], batch_size: int, language: bool) -> Tensor:
    if language:  # token ids (batch, steps)
        return torch.zeros(batch_size, *input_shape, dtype=torch.long)
    return torch.zeros(batch_size, *input_shape)


def measure_latency(model: nn.Module, example: Tensor, cfg: LatencyConfig) -> float:
    """Median forward latency in milliseconds of ``model`` on ``example`` (a copy of the
    model is timed, so the caller's model keeps its device and mode)."""
    device = check_device(cfg.device)
    model = copy.deepcopy(model).to(device).eval()
    with _threads(cfg.threads):
        return _time(model, example.to(device), cfg, device)


class LatencyTable:
    """Per-op latencies of this machine, measured on demand and cached on disk."""

    def __init__(self, cfg: LatencyConfig, cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.cfg = cfg
        self.device = check_device(cfg.device)
        root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "latency"
        self.path = root / f"{machine_fingerprint(cfg)}.json"
        self.entries: dict[str, float] = self._read()
        self.measured = 0
        """Ops measured by this instance (cache misses)."""

    def _read(self) -> dict[str, float]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # no table yet, or a damaged one: it is rebuilt as ops are met
        return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def _save(self) -> None:
        """Merge with what other processes wrote meanwhile, then replace atomically."""
        merged = {**self._read(), **self.entries}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(merged, sort_keys=True))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only cache only costs re-measuring next time
        self.entries = merged

    def predict(self, model: nn.Module, example: Tensor) -> float:
        """Predicted milliseconds of ``model(example)``: the sum of its leaf ops' latencies."""
        calls: list[tuple[str, nn.Module, tuple[int, ...], torch.dtype]] = []

        def hook(mod: nn.Module, inputs: tuple[Any, ...], _out: Any) -> None:
            if inputs and isinstance(inputs[0], Tensor):
                x = inputs[0]
                key = f"{mod!r}|{tuple(x.shape)}|{x.dtype}|{'cl' if _channels_last(x) else 'c'}"
                calls.append((key, mod, tuple(x.shape), x.dtype))

        leaves = [m for m in model.modules() if not list(m.children()) and _has_cost(m)]
        handles = [m.register_forward_hook(hook) for m in leaves]
        was_training = model.training
        try:
            model.eval()
            with torch.no_grad():
                _forward(model, example)
        finally:
            model.train(was_training)
            for h in handles:
                h.remove()
        missing = {key: (mod, shape, dtype) for key, mod, shape, dtype in calls if key not in self.entries}
        for key, (mod, shape, dtype) in missing.items():
            self.entries[key] = self._measure_op(mod, shape, dtype)
        if missing:
            self.measured += len(missing)
            self._save()
        return sum(self.entries[key] for key, *_ in calls)

    def _measure_op(self, mod: nn.Module, shape: tuple[int, ...], dtype: torch.dtype) -> float:
        op = copy.deepcopy(mod).to(self.device).eval()
        x = torch.zeros(shape, dtype=dtype, device=self.device)
        with _threads(self.cfg.threads):
            return _time(op, x, self.cfg, self.device)


def _has_cost(mod: nn.Module) -> bool:
    return not isinstance(mod, nn.Identity | nn.Dropout)


def _channels_last(x: Tensor) -> bool:
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def default_cache_dir() -> Path:
    """``$NASRL_CACHE_DIR``, else ``$XDG_CACHE_HOME/nasrl``, else ``~/.cache/nasrl``."""
    if os.environ.get("NASRL_CACHE_DIR"):
        return Path(os.environ["NASRL_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nasrl"


def machine_fingerprint(cfg: LatencyConfig) -> str:
    """Which table a measurement belongs to: this processor, this torch, these settings."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(cfg.device) if cfg.device.startswith("cuda") else ""
    text = json.dumps([cpu, gpu, torch.__version__, cfg.device, cfg.threads, cfg.batch_size,
                       cfg.warmup, cfg.repeats])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def architecture_latency(model: nn.Module, example: Tensor, cfg: LatencyConfig,
                         table: LatencyTable | None = None) -> float:
    """``latency_ms`` as the objective's config asks: measured, or predicted from ``table``."""
    if cfg.mode == "table":
        return (table or LatencyTable(cfg)).predict(model, example)
    return measure_latency(model, example, cfg)
