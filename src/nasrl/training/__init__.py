"""Child trainers: plain functions over tensors that return a :class:`TrainResult`."""

from nasrl.training.common import TrainResult, child_costs, count_macs, count_params, seeded, static_costs
from nasrl.training.image import TrainConfig, evaluate_accuracy, max_last, train_architecture, train_model

__all__ = [
    "TrainConfig",
    "TrainResult",
    "child_costs",
    "count_macs",
    "count_params",
    "evaluate_accuracy",
    "max_last",
    "seeded",
    "static_costs",
    "train_architecture",
    "train_model",
]
