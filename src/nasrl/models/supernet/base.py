"""The contract every shared-weight network (supernet) keeps.

A supernet holds the weights of every choice of a space at once; ``supernet(x, arch)``
runs the sub-network of ``arch`` and nothing else, so one training step updates exactly
the weights that architecture uses (ENAS, Pham et al. 2018). Its one invariant, tested
for every space: copying :meth:`SuperNet.child_state_dict` into the stand-alone child that
:func:`nasrl.models.build_model` builds gives a model whose forward equals
``supernet(x, arch)``, in train mode (batch statistics) and in eval mode (running ones).
That is what lets a one-shot search hand a derived architecture over to ordinary
training, warm-started or from scratch.

Batch norm: affine parameters and running statistics are shared and sliced like the conv
weights. Shared running statistics mix many architectures, so they describe no single
child well. ENAS computes controller rewards with batch statistics (its ``build_valid_rl``
runs the shared model with ``is_training=True``); :func:`recalibrate_bn` instead
re-estimates the running statistics for one architecture from a few training batches
(as single-path one-shot NAS does, Guo et al. 2020), which ranks architectures without
depending on the validation batch size. Both are available: the driver chooses.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from nasrl.models import build_model  # the package, so every builder is registered
from nasrl.spaces.base import Architecture, SearchSpace


class SuperNet(nn.Module, ABC):
    """Base class: ``forward(x, arch)`` and the weights of one child.

    Subclasses keep ``space``, ``input_shape``, ``num_classes`` and ``options`` (the
    builder options a stand-alone child needs to have the same shapes).
    """

    def __init__(self, space: SearchSpace, input_shape: tuple[int, ...], num_classes: int,
                 options: dict[str, Any]) -> None:
        super().__init__()
        self.space = space
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.options = dict(options)

    @abstractmethod
    def forward(self, x: Tensor, arch: Architecture) -> Tensor:
        """Logits of ``arch``'s sub-network on ``x``.

        In train mode this updates the running statistics of the batch norms ``arch``
        uses and no others; ``arch`` must belong to ``space`` (not re-validated per call).
        """

    @abstractmethod
    def batch_norms(self, arch: Architecture) -> list[tuple[nn.BatchNorm2d, int]]:
        """Each batch norm ``arch`` uses, with how many of its leading channels it uses."""

    @abstractmethod
    def child_state_dict(self, arch: Architecture) -> dict[str, Tensor]:
        """The state dict of ``build_child(arch)``: every key the stand-alone child has,
        each a detached copy of the supernet's slice (later training of either side leaves
        the other alone)."""

    def build_child(self, arch: Architecture) -> nn.Module:
        """The stand-alone child (``build_model``) carrying this supernet's weights for
        ``arch``; same device and dtype as the supernet, in the supernet's train/eval mode."""
        arch = self.space.validate(arch)
        child = build_model(self.space, arch, input_shape=self.input_shape,
                            num_classes=self.num_classes, **self.options)
        child.load_state_dict(self.child_state_dict(arch), strict=True)
        reference = next(self.parameters())
        child.to(device=reference.device, dtype=reference.dtype)
        return child.train(self.training)


@torch.no_grad()
def recalibrate_bn(supernet: SuperNet, arch: Architecture, batches: Iterable[Tensor]) -> int:
    """Replace the running statistics ``arch`` uses by their plain average over ``batches``
    (inputs only); weights are not touched and the supernet is left in eval mode.

    Returns the number of batches seen. Statistics of choices ``arch`` does not use are
    left as they were, so this never disturbs another architecture's own batch norms.
    """
    used = supernet.batch_norms(arch)
    saved = [bn.momentum for bn, _ in used]
    for bn, channels in used:
        assert bn.running_mean is not None and bn.running_var is not None
        bn.running_mean[:channels].zero_()
        bn.running_var[:channels].fill_(1.0)
    supernet.train()
    seen = 0
    try:
        for xb in batches:
            # momentum 1/(k+1) at batch k makes the running value the mean of all k+1 batches
            for bn, _ in used:
                bn.momentum = 1.0 / (seen + 1)
            supernet(xb, arch)
            seen += 1
    finally:
        for (bn, _), momentum in zip(used, saved, strict=True):
            bn.momentum = momentum
        supernet.eval()
    return seen
