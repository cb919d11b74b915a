"""Image augmentation as batch tensor operations (no torchvision, no per-sample Python).

Both take an explicit ``torch.Generator`` so a training run is reproducible from its seed,
and work on whatever device the batch lives on.
"""

from __future__ import annotations

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
