"""nasrl: neural architecture search with reinforcement learning.

Zoph & Le, *Neural Architecture Search with Reinforcement Learning* (ICLR 2017), with
the baselines and tools a practitioner expects around it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nasrl")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from nasrl.errors import NasrlError
from nasrl.spaces import Architecture, SearchSpace, SpaceError, get_space, list_spaces

__all__ = [
    "Architecture",
    "NasrlError",
    "SearchSpace",
    "SpaceError",
    "__version__",
    "get_space",
    "list_spaces",
]
