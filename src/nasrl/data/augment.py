"""Image augmentation as batch tensor operations (no torchvision, no per-sample Python).

Both take an explicit ``torch.Generator`` so a training run is reproducible from its seed,
and work on whatever device the batch lives on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_crop(x: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Zero-pad each image by ``padding`` and cut a random window of the original size."""
    if padding <= 0:
        return x
    n, c, h, w = x.shape
    padded = F.pad(x, (padding, padding, padding, padding))
    span = 2 * padding + 1
    dy = torch.randint(span, (n,), generator=generator, device=generator.device).to(x.device)
    dx = torch.randint(span, (n,), generator=generator, device=generator.device).to(x.device)
    rows = (dy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # n,1,h,1
    cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # n,1,1,w
    batch = torch.arange(n, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_erasing(x: Tensor, p: float, generator: torch.Generator, area: tuple[float, float] = (0.02, 0.4),
                   aspect: float = 0.3) -> Tensor:
    """Random erasing (Zhong et al. 2020): with probability ``p`` each image gets one
    rectangle set to 0 -- the training mean, on normalized images -- of a random share of
    its area in ``area`` and aspect ratio in [``aspect``, 1 / ``aspect``] (log-uniform)."""
    if p <= 0:
        return x
    n, _, h, w = x.shape

    def uniform(lo: float | Tensor, hi: float | Tensor) -> Tensor:
        u = torch.rand(n, generator=generator, device=generator.device).to(x.device)
        return lo + (hi - lo) * u

    erase = uniform(0.0, 1.0) < p
    share = uniform(area[0], area[1]) * (h * w)
    ratio = torch.exp(uniform(math.log(aspect), -math.log(aspect)))
    eh = torch.sqrt(share * ratio).round().clamp(1, h)
    ew = torch.sqrt(share / ratio).round().clamp(1, w)
    top = (uniform(0.0, 1.0) * (h - eh + 1)).floor()
    left = (uniform(0.0, 1.0) * (w - ew + 1)).floor()
    rows = torch.arange(h, device=x.device)[None, :]
    cols = torch.arange(w, device=x.device)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])  # n, h
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])  # n, w
    mask = in_rows[:, :, None] & in_cols[:, None, :] & erase[:, None, None]  # n, h, w
    return x.masked_fill(mask[:, None], 0.0)
