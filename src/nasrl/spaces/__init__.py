"""Search spaces: what can be searched. No torch.nn here."""

from nasrl.spaces.base import (
    Architecture,
    Categorical,
    Choice,
    Decision,
    SearchSpace,
    SkipSet,
    SpaceError,
)
from nasrl.spaces.conv import ConvSpace
from nasrl.spaces.nb201 import NB201Space
from nasrl.spaces.registry import get_space, list_spaces, register_space
from nasrl.spaces.rnn_cell import RNNCellSpace

__all__ = [
    "Architecture",
    "Categorical",
    "Choice",
    "ConvSpace",
    "Decision",
    "NB201Space",
    "RNNCellSpace",
    "SearchSpace",
    "SkipSet",
    "SpaceError",
    "get_space",
    "list_spaces",
    "register_space",
]
