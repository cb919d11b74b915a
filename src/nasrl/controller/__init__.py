"""The policy (LSTM controller) and how it learns."""

from nasrl.controller.lstm import Controller, ControllerConfig, ControllerOutput

__all__ = ["Controller", "ControllerConfig", "ControllerOutput"]
