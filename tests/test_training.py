from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from nasrl.data import load_images
from nasrl.errors import NasrlError
from nasrl.spaces import get_space
from nasrl.spaces.io import architecture_document, read_architecture
from nasrl.training import TrainConfig, count_macs, max_last, train_architecture, train_model

REPO = Path(__file__).resolve().parents[1]

DIGITS_ARCH = {
    "L0.filter_height": 3, "L0.filter_width": 3, "L0.filters": 36, "L0.inputs": [],
    "L1.filter_height": 3, "L1.filter_width": 3, "L1.filters": 48, "L1.inputs": [0],
    "L2.filter_height": 3, "L2.filter_width": 3, "L2.filters": 48, "L2.inputs": [0, 1],
}


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_images("digits", seed=0)


def test_child_trained_on_digits_reaches_95_percent(digits) -> None:  # type: ignore[no-untyped-def]
    space = get_space("conv", num_layers=3)
    result, _ = train_architecture(space, space.make(DIGITS_ARCH), digits, TrainConfig(epochs=12),
                                   seed=0, test=True)
    assert result.ok, result.error
    assert max(result.val_acc[-5:]) >= 0.95, result.val_acc
    assert result.metrics()["val_acc_max_last"] == max(result.val_acc[-5:])
    assert result.test_acc is not None and result.test_acc >= 0.93
    assert result.params > 0 and result.macs > 0 and result.wall_time > 0


def test_training_is_deterministic_for_a_seed(digits) -> None:  # type: ignore[no-untyped-def]
    space = get_space("conv", num_layers=3)
    arch = space.make(DIGITS_ARCH)
    config = TrainConfig(epochs=2, max_train_samples=400)
    a, _ = train_architecture(space, arch, digits, config, seed=7)
    b, _ = train_architecture(space, arch, digits, config, seed=7)
    c, _ = train_architecture(space, arch, digits, config, seed=8)
    assert a.train_loss == b.train_loss and a.val_acc == b.val_acc
    assert a.train_loss != c.train_loss


def test_erasing_changes_what_the_child_trains_on_and_is_checked(digits) -> None:  # type: ignore[no-untyped-def]
    space = get_space("conv", num_layers=3)
    arch = space.make(DIGITS_ARCH)
    plain, _ = train_architecture(space, arch, digits, TrainConfig(epochs=1, max_train_samples=400), seed=7)
    erased, _ = train_architecture(space, arch, digits, TrainConfig(epochs=1, max_train_samples=400,
                                                                    erasing=1.0), seed=7)
    assert erased.train_loss != plain.train_loss
    with pytest.raises(NasrlError, match=r"training.erasing must be a probability in \[0, 1\], got 1.5"):
        TrainConfig(erasing=1.5)


class Exploding(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1)) * float("nan")


class Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(64, 10)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 3:
            raise RuntimeError("child blew up")
        return self.fc(x.flatten(1))


def test_nan_loss_and_exceptions_are_failed_results(digits) -> None:  # type: ignore[no-untyped-def]
    config = TrainConfig(epochs=2, channels_last=False)
    nan = train_model(Exploding(), digits, config, seed=0)
    assert nan.status == "failed" and "val_acc_max_last" not in nan.metrics()
    assert nan.error is not None and "loss became nan in epoch 1" in nan.error
    broken = train_model(Broken(), digits, config, seed=0)
    assert broken.status == "failed" and "RuntimeError: child blew up" in (broken.error or "")


def test_max_last_is_the_max_of_the_last_five_epochs_by_default() -> None:
    accs = [0.1, 0.9, 0.5, 0.6, 0.7, 0.8, 0.4]
    assert max_last(accs, TrainConfig()) == 0.8
    assert max_last(accs, TrainConfig(max_last_window=1)) == 0.4
    assert max_last(accs, TrainConfig(max_last_window=10)) == 0.9


def test_macs_count_a_known_network() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    assert count_macs(model, torch.zeros(1, 1, 8, 8)) == 8 * 8 * 4 * 9 + 256 * 10


def test_child_costs_count_the_built_child_and_leave_the_global_generator_alone() -> None:
    from nasrl.training import child_costs

    space = get_space("conv", num_layers=1, filter_heights=[3], filter_widths=[3], num_filters=[4])
    arch = space.sample(__import__("numpy").random.default_rng(0))
    torch.manual_seed(5)
    costs = child_costs(space, arch, (1, 8, 8), 10, {"width": 2.0})
    # one 3x3 conv to 8 filters on 8x8, then the classifier; the draw after is the seed's first
    assert costs["macs"] == 8 * 8 * 8 * 9 + 8 * 10 and costs["flops"] == 2 * costs["macs"]
    assert costs["params"] > 8 * 9
    drawn = torch.rand(1)
    torch.manual_seed(5)
    assert torch.equal(drawn, torch.rand(1))


def test_architecture_documents_round_trip_and_infer_the_space(tmp_path: Path) -> None:
    space = get_space("conv", num_layers=3, predict_strides=True)
    arch = space.sample(__import__("numpy").random.default_rng(0))
    path = tmp_path / "a.json"
    path.write_text(json.dumps(architecture_document(space, arch)))
    read_space, read_arch = read_architecture(str(path))
    assert read_arch == arch and read_space.params() == space.params()
    bare = {"space": "conv", "choices": arch.to_dict()["choices"]}  # no params: inferred
    inferred_space, inferred = read_architecture(json.dumps(bare))
    assert inferred == arch and inferred_space.num_layers == 3 and inferred_space.predict_strides
    nb_space, cell = read_architecture("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",
                                       space="nb201")
    assert nb_space.name == "nb201" and cell["edge_1_0"] == "nor_conv_3x3"


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_cli_train_reports_test_accuracy_and_saves_weights(tmp_path: Path) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "conv", "choices": DIGITS_ARCH}))
    done = run_cli("train", "--arch", str(arch), "--epochs", "2", "--save", "--threads", "1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test accuracy" in done.stdout and "epoch   2/2" in done.stdout
    state = torch.load(tmp_path / "arch.pt", weights_only=True)
    assert "classifier.weight" in state
    record = json.loads((tmp_path / "arch.train.json").read_text())
    assert record["architecture"]["params"]["num_layers"] == 3 and 0 <= record["test_acc"] <= 1


@pytest.mark.parametrize("args, message", [
    (["--arch", "missing.json"], "architecture file not found"),
    (["--arch", json.dumps({"space": "conv", "choices": {**DIGITS_ARCH, "L0.filter_height": 4}})],
     "L0.filter_height"),
    (["--arch", "{}", "--epochs", "0"], "must be >= 1"),
    (["--arch", "ARCH", "--dataset", "fashion-mnist", "--data-dir", "nowhere"], "does not exist"),
    (["--arch", "ARCH", "--set", "schedule=linear"], "schedule"),
])
def test_cli_train_bad_input_is_one_line_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps({"space": "conv", "choices": DIGITS_ARCH}))
    args = [str(arch) if a == "ARCH" else a for a in args]
    done = run_cli("train", *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_repository_has_no_test_data_dependency_at_run_time() -> None:
    source = "\n".join(p.read_text() for p in (REPO / "src" / "nasrl").rglob("*.py"))
    assert "shared/data" not in source
