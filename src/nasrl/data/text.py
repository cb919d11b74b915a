"""Language-modelling text: Penn Treebank in Mikolov's three-file layout.

``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` are found like the image sets:
an explicit directory, ``$NASRL_PTB``, ``/usr/share/datasets/ptb``, ``~/.cache/nasrl/ptb``,
then Mikolov's ``simple-examples.tgz`` downloaded where a network exists. Words are split
on whitespace with ``<eos>`` ending each line (the standard preprocessing); ``char=True``
reads characters instead (a space is the ``_`` token).

Without ``ptb.train.txt`` (some copies carry only valid and test), ``train_on_valid=True``
trains on the first 90% of the validation text and validates on the rest; the test text
is still only for reporting.
"""

from __future__ import annotations

import os
import tarfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from nasrl.data.images import CACHE, DataError, _download_or_fail
from nasrl.errors import NasrlError

SPLITS = ("train", "valid", "test")
PTB_URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
PTB_LOCATIONS = ("/usr/share/datasets/ptb", "/usr/local/share/datasets/ptb", CACHE / "ptb")


@dataclass(frozen=True)
class TextData:
    name: str
    train: Tensor
    """1-D int64 token ids."""
    valid: Tensor
    test: Tensor
    vocab: tuple[str, ...]
    note: str = ""

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def to(self, device: torch.device | str) -> TextData:
        return replace(
            self, train=self.train.to(device), valid=self.valid.to(device), test=self.test.to(device)
        )


def _ptb_folder(data_dir: str | os.PathLike[str] | None, download: bool) -> Path:
    given = data_dir if data_dir is not None else os.environ.get("NASRL_PTB") or None
    if given is not None:
        folder = Path(given).expanduser()
        if not folder.is_dir():
            raise NasrlError(f"ptb: directory {folder} does not exist")
        return folder
    for loc in PTB_LOCATIONS:
        folder = Path(loc).expanduser()
        if any((folder / f"ptb.{s}.txt").is_file() for s in SPLITS):
            return folder
    archive = (
        _download_or_fail("ptb", [PTB_URL], CACHE / "ptb", download, "NASRL_PTB") / "simple-examples.tgz"
    )
    target = archive.parent
    try:
        with tarfile.open(archive, "r:gz") as tar:
            for split in SPLITS:
                member = tar.extractfile(f"./simple-examples/data/ptb.{split}.txt")
                if member is not None:
                    (target / f"ptb.{split}.txt").write_bytes(member.read())
    except (tarfile.TarError, KeyError, OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{archive}: corrupt or truncated archive ({exc})") from None
    return target


def _tokens(path: Path, char: bool) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        out += list(line.replace(" ", "_")) if char else line.split()
        out.append("<eos>")
    if not out:
        raise DataError(f"{path}: empty")
    return out


def load_text(
    name: str = "ptb",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    char: bool = False,
    train_on_valid: bool = False,
    download: bool = True,
) -> TextData:
    if name != "ptb":
        raise NasrlError(f"unknown text dataset {name!r} (known: ptb)")
    folder = _ptb_folder(data_dir, download)
    present = {s: folder / f"ptb.{s}.txt" for s in SPLITS if (folder / f"ptb.{s}.txt").is_file()}
    needed = ["valid", "test"] + ([] if train_on_valid else ["train"])
    for split in needed:
        if split not in present:
            have = ", ".join(p.name for p in present.values()) or "no PTB file"
            hint = (
                "; without it, train on the validation text with train_on_valid (--train-on-valid)"
                if split == "train"
                else ""
            )
            raise DataError(f"ptb: ptb.{split}.txt not found in {folder} (found {have}){hint}")
    words = {s: _tokens(p, char) for s, p in present.items()}
    vocab = tuple(sorted({w for toks in words.values() for w in toks}))
    index = {w: i for i, w in enumerate(vocab)}

    def ids(tokens: list[str]) -> Tensor:
        return torch.tensor([index[w] for w in tokens], dtype=torch.int64)

    test = ids(words["test"])
    if train_on_valid:
        valid = ids(words["valid"])
        cut = int(len(valid) * 0.9)
        return TextData(
            "ptb",
            valid[:cut],
            valid[cut:],
            test,
            vocab,
            note="trained on the first 90% of ptb.valid.txt, validated on the last 10%",
        )
    return TextData("ptb", ids(words["train"]), ids(words["valid"]), test, vocab)
