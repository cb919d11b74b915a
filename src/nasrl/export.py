"""Export a run's architecture: as a JSON document, or as a TorchScript / ONNX model.

Model exports train the architecture first on train + validation (as a final model is
trained; the run's training settings, ``epochs`` overridable) unless ``untrained``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from nasrl.errors import NasrlError
from nasrl.search import SearchConfig
from nasrl.spaces.base import SearchSpace
from nasrl.spaces.io import architecture_document
from nasrl.store.sqlite import Trial, TrialStore

FORMATS = ("json", "torchscript", "onnx")
SUFFIX = {"json": ".json", "torchscript": ".pt", "onnx": ".onnx"}


def export_run(
    run_dir: Path,
    fmt: str,
    *,
    trial_id: int | None = None,
    epochs: int | None = None,
    untrained: bool = False,
    out: Path | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> Path:
    from nasrl.runs import open_run

    if fmt not in FORMATS:
        raise NasrlError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    view = open_run(run_dir)
    config, space = view.config, view.space
    trial = _pick(view.store, trial_id, run_dir)
    out = out or run_dir / "export" / f"trial-{trial.id}{SUFFIX[fmt]}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "json":
        doc = {
            **architecture_document(space, trial.arch),
            "trial": trial.id,
            "reward": trial.reward,
            "metrics": trial.metrics,
            "description": space.describe(trial.arch),
        }
        out.write_text(json.dumps(doc, indent=2) + "\n")
        return out
    model, example = _model(config, space, trial, epochs, untrained, log)
    model.eval()
    if fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, example)  # type: ignore[no-untyped-call]
        traced.save(str(out))
    else:
        try:
            import onnx  # noqa: F401  (the exporter needs it)
        except ImportError:
            raise NasrlError("--format onnx needs the onnx package: pip install 'nasrl[onnx]'") from None
        torch.onnx.export(
            model,
            (example,),
            str(out),
            dynamo=False,
            input_names=["images"],
            output_names=["logits"],
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
        )
    return out


def _pick(store: TrialStore, trial_id: int | None, run_dir: Path) -> Trial:
    if trial_id is None:
        best = store.best(1)
        if not best:
            raise NasrlError(f"{run_dir}: no completed trial to export")
        return best[0]
    try:
        return store.trial(trial_id)
    except NasrlError:
        raise NasrlError(f"{run_dir}: no trial {trial_id}") from None


def _model(
    config: SearchConfig,
    space: SearchSpace,
    trial: Trial,
    epochs: int | None,
    untrained: bool,
    log: Callable[[str], None],
) -> tuple[nn.Module, torch.Tensor]:
    from nasrl.data import load_images
    from nasrl.models import build_model
    from nasrl.training import seeded, train_architecture

    if config.evaluator == "tabular":
        if not untrained:
            raise NasrlError(
                "a tabular run has no training data: export --untrained, or export json and "
                "train it with nasrl train"
            )
        shape, classes = (3, 32, 32), 10  # NAS-Bench-201's CIFAR-10 networks
        with seeded(config.seed):
            model = build_model(
                space, trial.arch, input_shape=shape, num_classes=classes, **config.build_options
            )
        return model, torch.zeros(1, *shape)
    if config.space == "rnn_cell" or (config.dataset or "digits") == "ptb":
        raise NasrlError(
            "model export of rnn_cell runs is not supported yet: export json and use nasrl train"
        )
    data = load_images(config.dataset or "digits", data_dir=config.data_dir, seed=config.seed)
    example = data.test_x[:1].clone()
    if untrained:
        with seeded(config.seed):
            model = build_model(
                space,
                trial.arch,
                input_shape=data.input_shape,
                num_classes=data.num_classes,
                **config.build_options,
            )
        return model, example
    training = replace(config.training, epochs=epochs or config.training.epochs)
    log(f"training trial {trial.id} on {config.dataset} train + validation for {training.epochs} epochs")
    result, trained = train_architecture(
        space,
        trial.arch,
        data.for_final_training(),
        training,
        seed=config.seed,
        device="cpu",
        test=True,
        validate=False,
        build_options=config.build_options,
    )
    if not result.ok or trained is None:
        raise NasrlError(f"training trial {trial.id} for export failed: {result.error}")
    log(f"test accuracy {100 * (result.test_acc or 0):.2f}%")
    return trained.to(memory_format=torch.contiguous_format), example  # type: ignore[call-overload]
