"""Image datasets as tensors: the built-in ``digits``, ``fashion-mnist`` and ``cifar10``.

Each loader returns uint8 images; :func:`load_images` splits a validation set off the
training set with an explicit seed (the test set never feeds a reward), normalizes every
split with the training split's per-channel mean and std, and records the augmentation
that suits the data. Files are found by :func:`nasrl.data.paths.find_data_dir`: an explicit
directory, an environment variable, standard install locations (Debian's
``dataset-fashion-mnist`` installs to ``/usr/share/datasets/fashion-mnist``), and only then a
download into ``~/.cache/nasrl`` when a network exists.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import tarfile
import urllib.request
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from nasrl.data.paths import find_data_dir, pick
from nasrl.errors import NasrlError

CACHE = Path("~/.cache/nasrl")
Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]  # train x, y, test x, y (x: N,C,H,W uint8)


class DataError(NasrlError):
    """A data file is missing, truncated or corrupt."""


@dataclass(frozen=True)
class AugmentSpec:
    crop_padding: int = 0
    flip: bool = False


@dataclass(frozen=True)
class ImageData:
    """Normalized float32 tensors (N, C, H, W) and int64 labels for each split."""

    name: str
    train_x: Tensor
    train_y: Tensor
    val_x: Tensor
    val_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    augment: AugmentSpec
    mean: Tensor | None = None
    """Per-channel mean (1, C, 1, 1) of the training split's raw pixels, used to normalize."""
    std: Tensor | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train_x.shape[1:]
        return (int(c), int(h), int(w))

    def to(self, device: torch.device | str) -> ImageData:
        """The whole dataset on ``device`` (on CUDA, batches never cross the bus)."""
        tensors = {k: getattr(self, k).to(device) for k in
                   ("train_x", "train_y", "val_x", "val_y", "test_x", "test_y")}
        return replace(self, **tensors)

    def for_final_training(self) -> ImageData:
        """Train on train + validation and validate on the test set (for a found model)."""
        return replace(self, train_x=torch.cat([self.train_x, self.val_x]),
                       train_y=torch.cat([self.train_y, self.val_y]),
                       val_x=self.test_x, val_y=self.test_y)


@dataclass(frozen=True)
class DatasetInfo:
    loader: Callable[[str | os.PathLike[str] | None, bool], Raw]
    val_size: int
    num_classes: int
    augment: AugmentSpec


def load_images(name: str, *, data_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                val_size: int | None = None, download: bool = True) -> ImageData:
    """Load ``name`` with a validation split drawn from ``seed``."""
    try:
        info = DATASETS[name]
    except KeyError:
        raise NasrlError(f"unknown dataset {name!r} (known: {', '.join(sorted(DATASETS))})") from None
    train_x, train_y, test_x, test_y = info.loader(data_dir, download)
    n_val = info.val_size if val_size is None else val_size
    if not 0 < n_val < len(train_x):
        raise NasrlError(f"{name}: validation size must be between 1 and {len(train_x) - 1}, got {n_val}")
    order = np.random.default_rng(seed).permutation(len(train_x))
    val, train = order[:n_val], np.sort(order[n_val:])
    mean, std = _channel_stats(train_x[train])

    def norm(x: np.ndarray) -> Tensor:
        return (torch.from_numpy(x).float() - mean) / std

    def labels(y: np.ndarray) -> Tensor:
        return torch.from_numpy(y.astype(np.int64))

    return ImageData(name, norm(train_x[train]), labels(train_y[train]), norm(train_x[val]),
                     labels(train_y[val]), norm(test_x), labels(test_y), info.num_classes, info.augment,
                     mean, std)


def _channel_stats(x: np.ndarray) -> tuple[Tensor, Tensor]:
    flat = torch.from_numpy(x).float().transpose(0, 1).reshape(x.shape[1], -1)
    mean, std = flat.mean(dim=1), flat.std(dim=1).clamp_min(1e-6)
    return mean[None, :, None, None], std[None, :, None, None]


# -- digits: scikit-learn's bundled 8x8 handwritten digits --------------------------------------
DIGITS_TEST = 360
DIGITS_SPLIT_SEED = 20170101  # the test split is fixed, whatever the run's seed


def load_digits_raw(data_dir: str | os.PathLike[str] | None = None, download: bool = False) -> Raw:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, never downloaded

    digits = load_digits()
    x = np.round(digits.images * (255 / 16)).astype(np.uint8)[:, None, :, :]
    y = digits.target.astype(np.uint8)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(x))
    test, train = np.sort(order[:DIGITS_TEST]), np.sort(order[DIGITS_TEST:])
    return x[train], y[train], x[test], y[test]


# -- Fashion-MNIST: IDX files ---------------------------------------------------------------
FASHION_FILES = {
    "train_x": "train-images-idx3-ubyte", "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte", "test_y": "t10k-labels-idx1-ubyte",
}
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_LOCATIONS = ("/usr/share/datasets/fashion-mnist", "/usr/local/share/datasets/fashion-mnist",
                     CACHE / "fashion-mnist")


def load_fashion_mnist_raw(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Raw:
    required = [(f + ".gz", f) for f in FASHION_FILES.values()]
    folder = find_data_dir("fashion-mnist", required, data_dir, "NASRL_FASHION_MNIST", FASHION_LOCATIONS)
    if folder is None:
        folder = _download_or_fail("fashion-mnist", [FASHION_URL + f + ".gz" for f in FASHION_FILES.values()],
                                   CACHE / "fashion-mnist", download, "NASRL_FASHION_MNIST")
    arrays = {key: read_idx(pick(folder, (f + ".gz", f))) for key, f in FASHION_FILES.items()}
    for split in ("train", "test"):
        x, y = arrays[split + "_x"], arrays[split + "_y"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise DataError(f"fashion-mnist: {split} images {x.shape} and labels {y.shape} do not match")
        if y.max(initial=0) > 9:
            raise DataError(f"fashion-mnist: {split} labels go beyond 9")
    return (arrays["train_x"][:, None], arrays["train_y"], arrays["test_x"][:, None], arrays["test_y"])


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzip or plain) of unsigned bytes, checking its header and length."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or not 1 <= raw[3] <= 4:
        raise DataError(f"{path}: not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise DataError(f"{path}: IDX file has {len(raw)} bytes, its header says {expected} (truncated?)")
    return np.frombuffer(bytearray(raw), dtype=np.uint8, offset=header).reshape(dims)  # writable copy


# -- CIFAR-10: the python-format archive or its extracted folder ------------------------------
CIFAR_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_URL = "https://www.cs.toronto.edu/~kriz/" + CIFAR_ARCHIVE
CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
CIFAR_LOCATIONS = ("/usr/share/datasets/cifar10", "/usr/local/share/datasets/cifar10", CACHE / "cifar10")


def load_cifar10_raw(data_dir: str | os.PathLike[str] | None = None, download: bool = True) -> Raw:
    folder = _cifar_folder(data_dir)
    if folder is None:
        folder = _download_or_fail("cifar10", [CIFAR_URL], CACHE / "cifar10", download, "NASRL_CIFAR10")
    batches = _read_cifar_batches(folder)
    xs, ys = [], []
    for name in CIFAR_BATCHES:
        data, labels = _cifar_arrays(batches[name], name)
        xs.append(data)
        ys.append(labels)
    return np.concatenate(xs[:5]), np.concatenate(ys[:5]), xs[5], ys[5]


def _cifar_folder(data_dir: str | os.PathLike[str] | None) -> Path | None:
    """A folder holding the archive, the extracted ``cifar-10-batches-py`` or its batches."""

    def complete(folder: Path) -> bool:
        return ((folder / CIFAR_ARCHIVE).is_file()
                or all((folder / CIFAR_FOLDER / b).is_file() for b in CIFAR_BATCHES)
                or all((folder / b).is_file() for b in CIFAR_BATCHES))

    given = data_dir if data_dir is not None else os.environ.get("NASRL_CIFAR10") or None
    if given is not None:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise NasrlError(f"cifar10: directory {folder} does not exist")
        if not complete(folder):
            raise NasrlError(f"cifar10: neither {CIFAR_ARCHIVE} nor {CIFAR_FOLDER}/ found in {folder}")
        return folder
    return next((Path(loc).expanduser() for loc in CIFAR_LOCATIONS
                 if complete(Path(loc).expanduser())), None)


def _read_cifar_batches(folder: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if (folder / CIFAR_ARCHIVE).is_file():
        path = folder / CIFAR_ARCHIVE
        try:
            with tarfile.open(path, "r:gz") as tar:
                for name in CIFAR_BATCHES:
                    member = tar.extractfile(f"{CIFAR_FOLDER}/{name}")
                    if member is None:
                        raise DataError(f"{path}: {name} is not a file in the archive")
                    out[name] = _safe_unpickle(member.read(), f"{path}:{name}")
        except KeyError as exc:
            raise DataError(f"{path}: archive lacks {exc}") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated archive ({exc})") from None
        return out
    base = folder / CIFAR_FOLDER if (folder / CIFAR_FOLDER).is_dir() else folder
    for name in CIFAR_BATCHES:
        out[name] = _safe_unpickle((base / name).read_bytes(), str(base / name))
    return out


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """CIFAR batches are pickles; allow only what a dict of numpy arrays needs, so a
    tampered file cannot run code."""

    ALLOWED: frozenset[tuple[str, str]] = frozenset({
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    })

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _safe_unpickle(data: bytes, where: str) -> Any:
    try:
        return _ArrayOnlyUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as exc:  # any failure to parse is a damaged file, reported as such
        raise DataError(f"{where}: corrupt CIFAR-10 batch ({type(exc).__name__}: {exc})") from None


def _cifar_arrays(batch: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise DataError(f"cifar10: {name} is not a CIFAR-10 batch (no data/labels)")
    data = np.asarray(batch[b"data"], dtype=np.uint8)
    labels = np.asarray(batch[b"labels"], dtype=np.int64)
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise DataError(f"cifar10: {name} has data {data.shape} and {len(labels)} labels")
    if labels.min(initial=0) < 0 or labels.max(initial=0) > 9:
        raise DataError(f"cifar10: {name} labels outside 0..9")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.uint8)


# -- download, only as a last resort --------------------------------------------------------------
def _download_or_fail(what: str, urls: list[str], dest: Path, download: bool, env: str) -> Path:
    hint = f"pass --data-dir or set ${env}"
    if not download:
        raise NasrlError(f"{what}: data not found ({hint})")
    dest = dest.expanduser()
    dest.mkdir(parents=True, exist_ok=True)
    for url in urls:
        target = dest / url.rsplit("/", 1)[1]
        if target.is_file():
            continue
        partial = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response, partial.open("wb") as out:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise NasrlError(f"{what}: data not found and download from {url} failed ({exc}); "
                             f"{hint}") from None
        partial.rename(target)  # only a complete file gets the real name
    return dest


DATASETS: dict[str, DatasetInfo] = {
    "digits": DatasetInfo(load_digits_raw, 300, 10, AugmentSpec(crop_padding=1, flip=False)),
    "fashion-mnist": DatasetInfo(load_fashion_mnist_raw, 5000, 10, AugmentSpec(crop_padding=2, flip=True)),
    "cifar10": DatasetInfo(load_cifar10_raw, 5000, 10, AugmentSpec(crop_padding=4, flip=True)),
}


def list_datasets() -> list[str]:
    return sorted(DATASETS)
