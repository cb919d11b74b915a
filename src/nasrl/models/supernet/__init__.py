"""Shared-weight networks (supernets) for one-shot search: ``build_supernet(space, ...)``."""

from nasrl.models.supernet import conv as _conv  # noqa: F401  (registers the supernet)
from nasrl.models.supernet import nb201 as _nb201  # noqa: F401
from nasrl.models.supernet.base import SuperNet, recalibrate_bn
from nasrl.models.supernet.conv import ConvSuperNet
from nasrl.models.supernet.nb201 import NB201SuperNet
from nasrl.models.supernet.registry import build_supernet, has_supernet, register_supernet

__all__ = [
    "ConvSuperNet",
    "NB201SuperNet",
    "SuperNet",
    "build_supernet",
    "has_supernet",
    "recalibrate_bn",
    "register_supernet",
]
