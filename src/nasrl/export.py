"""Export a run's architecture: as a JSON document, or as a model (``torch.export``'s .pt2,
TorchScript, ONNX). A multi-trial run exports a trial (the best by default); a one-shot run
exports a derived architecture (rank 1 by default), trained from scratch like any child.

Model exports train the architecture first on train + validation (as a final model is
trained; the run's training settings, ``epochs`` overridable) unless ``untrained``. The
trained weights are kept in ``export/weights/`` and reused, so one training serves every format.
Exported image models take raw pixels on a 0-255 scale: the training split's mean and std
are inside the model, and also written to a ``.model.json`` beside it with the classes,
input shape and test accuracy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from nasrl import __version__
from nasrl.errors import NasrlError
from nasrl.runs import RunView
from nasrl.search import SearchConfig
from nasrl.spaces.base import Architecture, SearchSpace
from nasrl.spaces.io import trial_document

FORMATS = ("json", "pt2", "torchscript", "onnx")
SUFFIX = {"json": ".json", "pt2": ".pt2", "torchscript": ".pt", "onnx": ".onnx"}


class Normalized(nn.Module):
    """``model((x - mean) / std)``: the exported model takes raw pixels, as a user has them."""

    def __init__(self, model: nn.Module, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, x: Tensor) -> Tensor:
        mean, std = self.get_buffer("mean"), self.get_buffer("std")
        return self.model((x - mean) / std)  # type: ignore[no-any-return]


@dataclass
class Item:
    """What is exported: a trial of a multi-trial run or a derived architecture of a one-shot run."""

    name: str
    """``trial-N`` or ``derived-N``: names the output and the kept weights."""
    arch: Architecture
    document: dict[str, Any]
    """The architecture document written beside the model (``nasrl train --arch`` reads it)."""


@dataclass
class Prepared:
    model: nn.Module
    example: Tensor
    info: dict[str, Any]
    """What a user of the exported model needs: input, normalization, classes, accuracy."""


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
    from nasrl.checks import writable_folder
    from nasrl.runs import open_run

    if fmt not in FORMATS:
        raise NasrlError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})")
    view = open_run(run_dir)
    config, space = view.config, view.space
    item = _pick(view, trial_id, run_dir)
    out = out or run_dir / "export" / f"{item.name}{SUFFIX[fmt]}"
    writable_folder(out.parent, "--out's folder")  # before any training, not after
    if out.is_dir():
        raise NasrlError(f"--out {out}: is a folder; give a file name")
    if fmt == "json":
        out.write_text(json.dumps(item.document, indent=2) + "\n")
        return out
    prepared = _prepare(run_dir, config, space, item, epochs, untrained, log)
    model = prepared.model.eval()
    if fmt == "pt2":
        _pt2(model, prepared.example, out)
    elif fmt == "torchscript":
        with torch.no_grad():
            traced = torch.jit.trace(model, prepared.example)  # type: ignore[no-untyped-call]
        traced.save(str(out))
    else:
        _onnx(model, prepared.example, out)
    meta = out.with_name(out.stem + ".model.json")
    meta.write_text(json.dumps({**prepared.info, "format": fmt, "file": out.name,
                                "architecture": item.document, "version": __version__},
                               indent=2) + "\n")
    log(f"wrote {meta}")
    return out


def _pt2(model: nn.Module, example: Tensor, out: Path) -> None:
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        with torch.no_grad():
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export does not take every model yet
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasrlError(f"torch.export cannot export this model ({first}); try --format onnx") from None
    torch.export.save(program, str(out))


def _onnx(model: nn.Module, example: Tensor, out: Path) -> None:
    try:
        import onnx  # noqa: F401  (the exporter needs it)
    except ImportError:
        raise NasrlError("--format onnx needs the onnx package: pip install 'nasrl[onnx]'") from None
    torch.onnx.export(model, (example,), str(out), dynamo=False, input_names=["images"],
                      output_names=["logits"],
                      dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}})


def _pick(view: RunView, number: int | None, run_dir: Path) -> Item:
    """The trial ``number`` (default: the best) or, in a one-shot run, the derived
    architecture of rank ``number`` (default: 1)."""
    from nasrl.oneshot.enas import is_oneshot

    if is_oneshot(view.info["config"]):
        from nasrl.oneshot.cli import document

        derived = view.store.derived()
        if not derived:
            raise NasrlError(f"{run_dir}: no derived architectures yet (the one-shot run has not "
                             "finished; resume it with: nasrl resume)")
        chosen = [d for d in derived if d.rank == (number or 1)]
        if not chosen:
            raise NasrlError(f"{run_dir}: no derived architecture of rank {number} "
                             f"(a one-shot run's --trial is the rank, 1 to {len(derived)})")
        return Item(f"derived-{chosen[0].rank}", chosen[0].arch, document(view, chosen[0]))
    if number is None:
        best = view.store.best(1)
        if not best:
            raise NasrlError(f"{run_dir}: no completed trial to export")
        trial = best[0]
    else:
        try:
            trial = view.store.trial(number)
        except NasrlError:
            raise NasrlError(f"{run_dir}: no trial {number}") from None
    return Item(f"trial-{trial.id}", trial.arch, trial_document(view.space, trial))


def _prepare(run_dir: Path, config: SearchConfig, space: SearchSpace, item: Item, epochs: int | None,
             untrained: bool, log: Callable[[str], None]) -> Prepared:
    from nasrl.data import load_images
    from nasrl.models import build_model
    from nasrl.training import seeded

    if config.evaluator == "tabular":
        if not untrained:
            raise NasrlError("a tabular run has no training data: export --untrained, or export json and "
                             "train it with nasrl train")
        shape, classes = (3, 32, 32), 10  # NAS-Bench-201's CIFAR-10 networks
        with seeded(config.seed):
            model = build_model(space, item.arch, input_shape=shape, num_classes=classes,
                                **config.build_options)
        untrained_info = {"input_shape": list(shape), "classes": classes, "normalization": None,
                          "trained": False}
        return Prepared(model, torch.zeros(2, *shape), untrained_info)
    if config.space == "rnn_cell" or (config.dataset or "digits") == "ptb":
        raise NasrlError("model export of rnn_cell runs is not supported yet: export json and use "
                         "nasrl train")
    dataset = config.dataset or "digits"
    data = load_images(dataset, data_dir=config.data_dir, seed=config.seed)
    assert data.mean is not None and data.std is not None
    info: dict[str, Any] = {
        "dataset": dataset, "input_shape": list(data.input_shape), "classes": data.num_classes,
        "input": "pixels on a 0-255 scale, float32, N x C x H x W (digits: scikit-learn's 0-16 images "
                 "times 255/16); the model normalizes them itself",
        "normalization": {"mean": data.mean.flatten().tolist(), "std": data.std.flatten().tolist()},
    }
    raw_example = data.test_x[:2] * data.std + data.mean  # 2: a batch of 1 would fix the batch size
    with seeded(config.seed):
        model = build_model(space, item.arch, input_shape=data.input_shape, num_classes=data.num_classes,
                            **config.build_options)
    if untrained:
        return Prepared(Normalized(model, data.mean, data.std), raw_example, {**info, "trained": False})
    training = replace(config.training, epochs=epochs or config.training.epochs)
    weights = run_dir / "export" / "weights" / f"{item.name}-e{training.epochs}.pt"
    record = weights.with_suffix(".json")
    if weights.is_file() and record.is_file():
        log(f"reusing the weights trained for {item.name} ({weights})")
        trained_info = _load_cached(model, weights, record)
    else:
        trained_info = _train(config, space, item, training, data, model, dataset, log)
        try:  # a cache: a run directory we may not write (someone else's) still exports
            weights.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), weights)
            record.write_text(json.dumps(trained_info, indent=2) + "\n")
        except OSError as exc:
            log(f"note: cannot keep the trained weights in {weights.parent} ({exc.strerror or exc})")
    return Prepared(Normalized(model, data.mean, data.std), raw_example, {**info, **trained_info})


def _load_cached(model: nn.Module, weights: Path, record: Path) -> dict[str, Any]:
    """Weights and record kept by an earlier export, or a one-line error naming the file."""
    try:
        info = json.loads(record.read_text())
        model.load_state_dict(_load_weights(weights))
    except (ValueError, RuntimeError) as exc:  # damaged JSON, weights of another shape
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise NasrlError(f"{weights.parent}: kept weights do not fit the architecture ({first}); delete "
                         f"{weights.name} and {record.name} to train again") from None
    if not isinstance(info, dict):
        raise NasrlError(f"{record}: not a training record; delete it to train again")
    return info


def _load_weights(path: Path) -> dict[str, Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file: say which, keep the run
        raise NasrlError(f"{path}: damaged weights file ({exc}); delete it to train again") from None
    if not isinstance(state, dict):
        raise NasrlError(f"{path}: not a state dict; delete it to train again")
    return state


def _train(config: SearchConfig, space: SearchSpace, item: Item, training: Any, data: Any,
           model: nn.Module, dataset: str, log: Callable[[str], None]) -> dict[str, Any]:
    from nasrl.training import train_architecture

    log(f"training {item.name} on {dataset} train + validation for {training.epochs} epochs")
    result, trained = train_architecture(space, item.arch, data.for_final_training(), training,
                                         seed=config.seed, device="cpu", test=True, validate=False,
                                         build_options=config.build_options)
    if not result.ok or trained is None:
        raise NasrlError(f"training {item.name} for export failed: {result.error}")
    log(f"test accuracy {100 * (result.test_acc or 0):.2f}%")
    state = {k: v.detach().cpu().contiguous() for k, v in trained.state_dict().items()}
    model.load_state_dict(state)
    return {"trained": True, "epochs": training.epochs, "seed": config.seed,
            "test_acc": result.test_acc, "trained_on": "train + validation"}
