"""``nasrl train --checkpoint``: a training in several sittings ends as the one-sitting
training does, and a checkpoint of another training is refused (one line, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from nasrl.cli import main

ARCH = json.dumps({"space": "conv", "params": {"num_layers": 3, "reduce_at": [1], "join": "pool"},
                   "choices": {"L0.filter_height": 3, "L0.filter_width": 3, "L0.filters": 24, "L0.inputs": [],
                               "L1.filter_height": 3, "L1.filter_width": 1, "L1.filters": 24, "L1.inputs": [0],
                               "L2.filter_height": 1, "L2.filter_width": 3, "L2.filters": 36,
                               "L2.inputs": [0, 1]}})
TRAIN = ["train", "--arch", ARCH, "--dataset", "digits", "--epochs", "4", "--final", "--lr", "0.1",
         "--build", "width=0.5"]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(state["model"], dict)
    return state["model"]


def test_a_training_stopped_and_resumed_ends_as_the_uninterrupted_one(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole, parts = tmp_path / "whole.ckpt", tmp_path / "parts.ckpt"
    assert main([*TRAIN, "--checkpoint", str(whole)]) == 0
    uninterrupted = capsys.readouterr().out
    assert "test accuracy" in uninterrupted
    # a tiny limit: every sitting stops at its first epoch end
    for done in (1, 2, 3):
        assert main([*TRAIN, "--checkpoint", str(parts), "--stop-after", "1e-6"]) == 0
        out = capsys.readouterr().out
        assert f"stopped after epoch {done}/4" in out and "test accuracy" not in out
        if done > 1:
            assert f"resuming from {parts}: {done - 1} of 4 epochs done" in out
    assert main([*TRAIN, "--checkpoint", str(parts)]) == 0
    resumed = capsys.readouterr().out
    assert "epoch   4/4" in resumed and "epoch   3/4" not in resumed
    a, b = _weights(whole), _weights(parts)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    line = next(x for x in uninterrupted.splitlines() if x.startswith("test accuracy"))
    assert line.split("(")[0] in resumed  # the same test accuracy
    curves = [torch.load(p, weights_only=True)["progress"]["train_loss"] for p in (whole, parts)]
    assert curves[0] == curves[1] and len(curves[0]) == 4
    # a finished checkpoint: the same command reports again without training
    assert main([*TRAIN, "--checkpoint", str(parts)]) == 0
    again = capsys.readouterr().out
    assert "4 of 4 epochs done" in again and not any(x.startswith("  epoch ") for x in again.splitlines())
    assert line.split("(")[0] in again


def test_a_checkpoint_of_another_training_or_a_damaged_one_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "c.ckpt"
    assert main([*TRAIN, "--epochs", "1", "--checkpoint", str(ckpt)]) == 0
    capsys.readouterr()
    before = ckpt.read_bytes()
    cases = [
        ([*TRAIN, "--epochs", "1", "--seed", "1", "--checkpoint", str(ckpt)], "a checkpoint of another training"),
        ([*TRAIN, "--epochs", "2", "--checkpoint", str(ckpt)], "a checkpoint of another training"),
        ([*TRAIN, "--stop-after", "5"], "--stop-after needs --checkpoint"),
        ([*TRAIN, "--checkpoint", str(tmp_path / "nowhere" / "c.ckpt")], "does not exist"),
    ]
    (tmp_path / "bad.ckpt").write_text("not a checkpoint")
    cases.append(([*TRAIN, "--checkpoint", str(tmp_path / "bad.ckpt")], "not a training checkpoint nasrl can read"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and message in err, err
    assert ckpt.read_bytes() == before  # nothing already computed is lost
