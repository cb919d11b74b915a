"""Training a word-level language model: truncated back-propagation through time,
gradient clipping and perplexity (the paper's reward, 80 / ppl^2, is nasrl.objectives')."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nasrl.data.text import TextData
from nasrl.errors import NasrlError
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.training.common import Diverged, TrainResult, build_seeded, count_params, failure, resolve_device


@dataclass(frozen=True)
class LMTrainConfig:
    """Defaults follow the classic PyTorch word-level example (SGD lr 20, clip 0.25, BPTT 35)."""

    epochs: int = 2
    batch_size: int = 20
    bptt: int = 35
    optimizer: Literal["sgd", "adam"] = "adam"
    """Adam learns far faster in the few epochs a search child gets; "sgd" with
    learning_rate 20 is the classic long-training setting."""
    learning_rate: float = 1e-2
    lr_decay: float = 0.25
    """Multiply the rate by this when validation perplexity stops improving."""
    clip: float = 0.5
    max_train_tokens: int | None = None
    """Train on the first N tokens only: cheaper search children."""
    eval_batch_size: int = 10

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "bptt", "eval_batch_size"):
            if getattr(self, key) < 1:
                raise NasrlError(f"lm_training.{key} must be at least 1, got {getattr(self, key)}")
        positive = [math.isfinite(v) and v > 0 for v in (self.learning_rate, self.clip)]
        if not all(positive):
            raise NasrlError("lm_training.learning_rate and lm_training.clip must be positive")


def batchify(tokens: Tensor, batch: int) -> Tensor:
    """(N,) -> (batch, N // batch): each row a contiguous stream, read left to right."""
    n = tokens.numel() // batch
    return tokens[: n * batch].view(batch, n)


def detach(state: list[tuple[Tensor, Tensor]]) -> list[tuple[Tensor, Tensor]]:
    return [(h.detach(), c.detach()) for h, c in state]


def perplexity(model: nn.Module, stream: Tensor, config: LMTrainConfig) -> float:
    data = batchify(stream, config.eval_batch_size)
    model.eval()
    total, count = 0.0, 0
    state = None
    with torch.no_grad():
        for i in range(0, data.shape[1] - 1, config.bptt):
            seq = min(config.bptt, data.shape[1] - 1 - i)
            logits, state = model(data[:, i : i + seq], state)
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    data[:, i + 1 : i + 1 + seq].reshape(-1),
                    reduction="sum",
                )
            )
            count += data[:, i + 1 : i + 1 + seq].numel()
    model.train()
    loss = total / max(1, count)
    return math.exp(loss) if loss < 50 else float("inf")


def train_epoch(model: nn.Module, data: Tensor, config: LMTrainConfig, opt: torch.optim.Optimizer) -> float:
    model.train()
    state = None
    total, steps = torch.zeros(()), 0
    for i in range(0, data.shape[1] - 1, config.bptt):
        seq = min(config.bptt, data.shape[1] - 1 - i)
        state = None if state is None else detach(state)
        logits, state = model(data[:, i : i + seq], state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), data[:, i + 1 : i + 1 + seq].reshape(-1))
        model.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        opt.step()
        total += loss.detach()
        steps += 1
    mean = float(total) / max(1, steps)
    if not math.isfinite(mean):
        raise Diverged(f"loss became {mean}")
    return mean


def init_output_bias(model: nn.Module, tokens: Tensor, vocab_size: int) -> None:
    """Start the decoder at the unigram distribution (log frequencies as its bias): a short
    search child then spends its steps on context, not on relearning word counts."""
    decoder = getattr(model, "decoder", None)
    if isinstance(decoder, nn.Linear) and decoder.bias is not None:
        counts = torch.bincount(tokens, minlength=vocab_size).float() + 0.1
        with torch.no_grad():
            decoder.bias.copy_((counts / counts.sum()).log())


EpochCallback = Callable[[int, TrainResult], bool | None]
"""Called after each epoch; returning True stops training there (the child was pruned)."""


def train_language_model(
    model: nn.Module,
    data: TextData,
    config: LMTrainConfig,
    *,
    seed: int,
    device: str | torch.device | None = None,
    test: bool = False,
    on_epoch: EpochCallback | None = None,
) -> TrainResult:
    """Train with TBPTT; validation perplexity (last and best so far) in ``extra``."""
    result = TrainResult(status="complete")
    start = time.perf_counter()
    try:
        dev = resolve_device(device)
        data = data.to(dev)
        model = model.to(dev)
        result.params = count_params(model)
        torch.manual_seed(seed)  # dropout masks; the caller's generator state is its own business
        train = data.train if config.max_train_tokens is None else data.train[: config.max_train_tokens]
        init_output_bias(model, train, data.vocab_size)
        stream = batchify(train, config.batch_size)
        opt: torch.optim.Optimizer = (
            torch.optim.Adam(model.parameters(), lr=config.learning_rate)
            if config.optimizer == "adam"
            else torch.optim.SGD(model.parameters(), lr=config.learning_rate)
        )
        best = float("inf")
        for epoch in range(config.epochs):
            result.train_loss.append(train_epoch(model, stream, config, opt))
            ppl = perplexity(model, data.valid, config)
            if ppl < best:
                best = ppl
            else:  # plateau: smaller steps
                for group in opt.param_groups:
                    group["lr"] *= config.lr_decay
            result.extra = {"val_ppl": ppl, "val_ppl_best": best}
            if on_epoch is not None:
                result.wall_time = time.perf_counter() - start
                if on_epoch(epoch, result):
                    break  # pruned: the caller stops this child here, with what it has
        if not math.isfinite(best):
            raise Diverged("validation perplexity is not finite")
        if test:
            result.extra["test_ppl"] = perplexity(model, data.test, config)
    except Exception as exc:
        result = failure(exc, result)
    result.wall_time = time.perf_counter() - start
    return result


def train_cell(
    space: SearchSpace,
    arch: Architecture,
    data: TextData,
    config: LMTrainConfig,
    *,
    seed: int,
    device: str | torch.device | None = None,
    test: bool = False,
    on_epoch: EpochCallback | None = None,
    build_options: dict[str, Any] | None = None,
) -> tuple[TrainResult, nn.Module | None]:
    """Build the language model around ``arch`` with weights from ``seed`` and train it."""
    model = build_seeded(
        space,
        arch,
        seed,
        input_shape=(config.bptt,),
        num_classes=data.vocab_size,
        build_options=build_options,
    )
    if isinstance(model, TrainResult):
        return model, None
    return train_language_model(
        model, data, config, seed=seed, device=device, test=test, on_epoch=on_epoch
    ), model
