"""Architecture -> ``torch.nn.Module``: the only place spaces meet torch.nn."""

from nasrl.models import conv as _conv  # noqa: F401  (registers the builder)
from nasrl.models import nb201 as _nb201  # noqa: F401
from nasrl.models.conv import ConvNet
from nasrl.models.nb201 import NB201Net
from nasrl.models.registry import build_model, builder_task, has_builder, register_builder

__all__ = ["ConvNet", "NB201Net", "build_model", "builder_task", "has_builder", "register_builder"]
