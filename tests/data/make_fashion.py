"""Cut the Fashion-MNIST test fixture out of the full data set.

    python tests/data/make_fashion.py ../shared/data/fashion-mnist tests/data/fashion-mnist

Takes the same number of images of each class, drawn with a fixed seed and kept in their
original order, from the official training and test files, and writes the four IDX
``.gz`` files under their standard names (gzip without a timestamp, so the output is
byte-for-byte reproducible).
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

TRAIN_PER_CLASS = 300
TEST_PER_CLASS = 100
SEED = 20170101
FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
         "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    path.write_bytes(gzip.compress(header + array.tobytes(), compresslevel=9, mtime=0))


def balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    picks = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return np.sort(np.concatenate(picks))


def make(source: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    for split, per_class in (("train", TRAIN_PER_CLASS), ("test", TEST_PER_CLASS)):
        images_name, labels_name = FILES[split]
        images = read_idx(source / f"{images_name}.gz")
        labels = read_idx(source / f"{labels_name}.gz")
        keep = balanced(labels, per_class, rng)
        write_idx(dest / f"{images_name}.gz", images[keep])
        write_idx(dest / f"{labels_name}.gz", labels[keep])
        print(f"{split}: {len(keep)} of {len(labels)} images")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder with the full Fashion-MNIST IDX .gz files")
    parser.add_argument("dest", type=Path, help="folder for the fixture")
    args = parser.parse_args()
    make(args.source, args.dest)


if __name__ == "__main__":
    main()
