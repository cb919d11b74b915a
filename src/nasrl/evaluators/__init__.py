"""Evaluators: (Architecture, seed) -> EvalResult."""

from nasrl.evaluators.base import EvalResult, Evaluator
from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table
from nasrl.evaluators.training import TrainingEvaluator

__all__ = ["EvalResult", "Evaluator", "TabularEvaluator", "TrainingEvaluator", "find_nb201_table"]
