"""Evaluators: (Architecture, seed) -> EvalResult."""

from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table

__all__ = ["EvalResult", "Evaluator", "TabularEvaluator", "find_nb201_table"]
