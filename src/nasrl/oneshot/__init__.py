"""One-shot architecture search with shared weights (ENAS, Pham et al. 2018)."""

from nasrl.oneshot.config import OneShotConfig

__all__ = ["OneShotConfig"]
