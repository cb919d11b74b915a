"""Checks of a job's setup made before any work starts: each mistake is one line naming it
(exit 2), not a budget spent on children that all fail the same way."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from nasrl.config import ConfigError

TEXT_DATASETS = ("ptb",)


def check_dataset(space: str, dataset: str | None, *, train_on_valid: bool = False,
                  data_dir: str | os.PathLike[str] | None = None) -> None:
    """The dataset fits the space's task; ``data_dir`` is a folder; ``train_on_valid`` is for PTB."""
    from nasrl.data.images import DATASETS
    from nasrl.models import builder_task

    task = builder_task(space)
    if task == "language":
        if dataset is not None and dataset not in TEXT_DATASETS:
            raise ConfigError(f"the {space} space builds language models: dataset {dataset!r} is not "
                              f"a text corpus (known: {', '.join(TEXT_DATASETS)})")
    else:
        if dataset in TEXT_DATASETS:
            raise ConfigError(f"the {space} space builds image classifiers: dataset {dataset!r} is a "
                              f"text corpus (image datasets: {', '.join(sorted(DATASETS))}; ptb goes "
                              f"with --space rnn_cell)")
        if train_on_valid:
            raise ConfigError("train_on_valid (--train-on-valid) is for PTB without ptb.train.txt; "
                              f"the {space} space trains on images")
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--data-dir {folder}: not a folder (give the folder that holds the "
                              "dataset's files)")


def check_tabular(space: str) -> None:
    if space != "nb201":
        raise ConfigError(f"the tabular evaluator looks architectures up in the NAS-Bench-201 table: "
                          f"it needs --space nb201, not {space!r}")


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """An explicit ``host:port`` must accept connections before a run directory is made."""
    if address is None or address in ("auto", "local"):
        return
    host_port = address.split("://", 1)[-1]
    host, sep, port = host_port.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"ray_address {address!r}: expected HOST:PORT (or ray://HOST:PORT, or auto)")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise ConfigError(f"ray_address {address!r}: cannot connect ({exc.strerror or exc})") from None


def writable_folder(path: Path, what: str) -> None:
    """Make ``path`` (a folder) and check that files can be written in it."""
    for parent in [path, *path.parents]:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{what} {path}: {parent} is a file, not a folder")
            break
    path.mkdir(parents=True, exist_ok=True)
    if not os.access(path, os.W_OK):
        raise ConfigError(f"{what} {path}: cannot write there")
