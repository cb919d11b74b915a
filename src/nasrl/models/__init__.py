"""Architecture -> ``torch.nn.Module``: the only place spaces meet torch.nn."""

from nasrl.models import conv as _conv  # noqa: F401  (registers the builder)
from nasrl.models import nb201 as _nb201  # noqa: F401
from nasrl.models import rnn_cell as _rnn_cell  # noqa: F401
from nasrl.models.conv import ConvNet
from nasrl.models.nb201 import NB201Net
from nasrl.models.registry import build_model, builder_task, has_builder, register_builder
from nasrl.models.rnn_cell import CellLanguageModel, SearchedCell, lstm_language_model

__all__ = [
    "CellLanguageModel",
    "ConvNet",
    "NB201Net",
    "SearchedCell",
    "build_model",
    "builder_task",
    "has_builder",
    "lstm_language_model",
    "register_builder",
]
