"""What a new user hit at the edges of the command line (issue 11): documents that did not
train, paths with URI characters, operating-system errors, seeds, checks made too late,
output that said too little, and exports without their input normalization."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from nasrl.cli import main
from nasrl.report import choice_panels, plot_choices, plot_rewards
from nasrl.spaces import get_space
from nasrl.spaces.io import architecture_document, read_architecture, trial_document

TABULAR = ["--space", "nb201", "--evaluator", "tabular", "--executor", "serial", "--quiet"]


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def one_line_exit_2(done: subprocess.CompletedProcess[str], message: str) -> None:
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert message in done.stderr, done.stderr


@pytest.fixture(scope="module")
def tabular_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tabular search in a folder whose name needs escaping in a URI."""
    root = tmp_path_factory.mktemp("runs")
    run = root / "a?b#c%20d"
    done = cli("search", *TABULAR, "--budget", "8", "--out", str(run), cwd=root)
    assert done.returncode == 0, done.stderr
    return run


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("digits")
    run = root / "run"
    done = cli("search", "--budget", "2", "--executor", "serial", "--quiet", "--out", str(run),
               "--set", "training.epochs=1", "--set", "space_params.num_layers=2",
               "--set", "strategy_config.batch_size=2", cwd=root)
    assert done.returncode == 0, done.stderr
    return run


# -- defect 2: every document nasrl writes about an architecture trains again ------------------
@pytest.mark.parametrize("space_name", ["conv", "nb201", "rnn_cell"])
def test_every_document_nasrl_writes_reads_back_as_the_architecture(space_name: str, tmp_path: Path) -> None:
    space = get_space(space_name)
    arch = space.sample(np.random.default_rng(1))
    trial = SimpleNamespace(id=7, arch=arch, reward=0.5, feasible=True, metrics={"val_acc": 0.7, "params": 1e3})
    written = {
        "best --json": trial_document(space, trial),
        "best -n 2 --json": [trial_document(space, trial), trial_document(space, trial)],
        "export --format json": trial_document(space, trial),
        "train --save record": {"architecture": architecture_document(space, arch), "test_acc": 0.9},
    }
    for what, doc in written.items():
        path = tmp_path / "doc.json"
        path.write_text(json.dumps(doc))
        read_space, read_arch = read_architecture(str(path))
        assert read_space.name == space_name and read_arch == arch, what


def test_best_json_trains_and_a_typo_is_still_an_error(digits_run: Path, tmp_path: Path) -> None:
    (tmp_path / "b.json").write_text(cli("best", str(digits_run), "--json").stdout)
    done = cli("train", "--arch", "b.json", "--epochs", "1", cwd=tmp_path)
    assert done.returncode == 0 and "test accuracy" in done.stdout, done.stderr
    doc = json.loads((tmp_path / "b.json").read_text())
    doc["choicez"] = doc.pop("choices")
    (tmp_path / "typo.json").write_text(json.dumps(doc))
    one_line_exit_2(cli("train", "--arch", "typo.json", cwd=tmp_path), "field 'choices' must be an object")


# -- defect 3: '?', '#' and '%' in a run directory ---------------------------------------------------
def test_run_directory_with_uri_characters_opens_read_only(tabular_run: Path) -> None:
    status = cli("status", str(tabular_run))
    assert status.returncode == 0 and "8/8 evaluated" in status.stdout, status.stderr
    best = cli("best", str(tabular_run), "-n", "2")
    assert best.returncode == 0 and "#2 trial" in best.stdout, best.stderr
    assert not (tabular_run.parent / "a").exists()  # sqlite read 'a?b...' as file 'a' plus a query


# -- defect 4: what the operating system refuses is one line, exit 2 ---------------------------------
def test_os_errors_are_one_line(tabular_run: Path, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    one_line_exit_2(cli("search", "--config", str(tmp_path), "--out", "r", cwd=tmp_path), "Is a directory")
    one_line_exit_2(cli("search", *TABULAR, "--out", "afile", cwd=tmp_path), "is a file")
    one_line_exit_2(cli("export", str(tabular_run), "--out", "afile/x.json", cwd=tmp_path),
                    "afile is a file, not a folder")
    bench = cli("benchmark", "nb201", "--budget", "5", "--seeds", "1", "--out", "afile", cwd=tmp_path)
    one_line_exit_2(bench, "is a file")
    assert "reinforce" not in bench.stdout  # refused before computing, not after
    one_line_exit_2(cli("search", *TABULAR, "--out", "x" * 300, cwd=tmp_path), "File name too long")


@pytest.mark.parametrize("command", [
    ["search", "--space", "nb201", "--evaluator", "tabular", "--executor", "serial", "--quiet", "--out", "r"],
    ["report", "RUN"],
    ["export", "RUN", "--out", "new/x.json"],
])
def test_a_read_only_file_system_is_one_line(command: list[str], tabular_run: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def refuse(self: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main([str(tabular_run) if a == "RUN" else a for a in command]) == 2
    err = capsys.readouterr().err
    assert "Read-only file system" in err and len(err.strip().splitlines()) == 1, err


def test_a_closed_pipe_exits_quietly(tabular_run: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "nasrl", "best", str(tabular_run), "-n", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader is gone before nasrl writes (as with `| head -0`)
    assert proc.wait(timeout=120) == 0
    assert proc.stderr.read() == ""


# -- defects 5 and 9: seeds, and what is checked before any work ---------------------------------------
@pytest.mark.parametrize("args, message", [
    (["search", "--seed", "-1"], "seed must be between 0 and 4294967295"),
    (["search", "--seed", "99999999999999999999999"], "seed must be between 0 and 4294967295"),
    (["search", "--set", "trial_timeout=0"], "trial_timeout must be a positive number"),
    (["search", "--set", "trial_timeout=30", "--executor", "serial"], "trial_timeout needs the process or ray"),
    (["search", "--set", "device=cuda:7"], "device 'cuda:7': this machine has"),
    (["search", "--dataset", "ptb"], "dataset 'ptb' is a text corpus"),
    (["search", "--space", "rnn_cell", "--dataset", "digits"], "dataset 'digits' is not a text corpus"),
    (["search", "--evaluator", "tabular"], "it needs --space nb201, not 'conv'"),
    (["search", "--data-dir", "afile"], "not a folder"),
    (["search", "--train-on-valid"], "train_on_valid (--train-on-valid) is for PTB"),
    (["search", "--executor", "ray", "--ray-address", "127.0.0.1:9"], "cannot connect"),
    (["search", "--set", "training.learning_rate=nan"], "'nan' is not a valid float"),
])
def test_bad_search_setups_fail_before_the_run_directory_exists(args: list[str], message: str,
                                                                tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    one_line_exit_2(cli(*args, "--out", "run", cwd=tmp_path), message)
    assert not (tmp_path / "run").exists()  # so a corrected retry does not find "already holds a run"


@pytest.mark.parametrize("args, message", [
    (["--seed", "-1"], "--seed must be between 0 and 4294967295"),
    (["--seed", "99999999999999999999999"], "--seed must be between 0 and 4294967295"),
    (["--device", "bogus"], "--device 'bogus' is not a device"),
    (["--lr", "nan"], "training.learning_rate must be a positive number"),
    (["--dataset", "ptb"], "dataset 'ptb' is a text corpus"),
    (["--train-on-valid"], "is for PTB"),
    (["--data-dir", "afile"], "not a folder"),
])
def test_bad_train_arguments(args: list[str], message: str, tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"
    one_line_exit_2(cli("train", "--space", "nb201", "--arch", arch, *args, cwd=tmp_path), message)


# -- defect 10: what the user reads ----------------------------------------------------------------
def test_search_help_example_key_is_accepted(tmp_path: Path) -> None:
    text = cli("search", "--help").stdout
    assert "strategy_config.learning_rate=0.01" in text and "strategy_config.lr=" not in text
    done = cli("search", *TABULAR, "--budget", "3", "--set", "strategy_config.learning_rate=0.01", "--out", "r",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_choice_plot_shows_every_decision_and_skips(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    space = get_space("conv", num_layers=6)
    rng = np.random.default_rng(0)
    trials = [SimpleNamespace(arch=space.sample(rng), reused_from=None) for _ in range(12)]
    panels = choice_panels(trials, space)  # type: ignore[arg-type]
    names = [d.name for d, _, _ in panels]
    # 6 layers x (height, width, filters) and the skip sets of layers 1-5 (layer 0 has no choice)
    assert len(names) == 6 * 3 + 5 and "L5.inputs" in names and "L0.inputs" not in names  # was 12
    _, labels, indicators = panels[names.index("L3.inputs")]
    assert labels == ["from 0", "from 1", "from 2"]
    assert indicators[1] == [float(1 in t.arch["L3.inputs"]) for t in trials]
    assert plot_choices(trials, space, tmp_path / "choices.png")  # type: ignore[arg-type]


def test_rewards_plot_of_a_run_where_every_trial_failed_warns_nothing(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    failed = [SimpleNamespace(reused_from=None, state="failed", reward=None) for _ in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_rewards(failed, tmp_path / "rewards.png")  # type: ignore[arg-type]
    assert (tmp_path / "rewards.png").stat().st_size > 1000


# -- defect 13: exports carry their normalization, train once, and use torch.export ------------------
def test_exports_take_raw_pixels_reuse_one_training_and_load(digits_run: Path) -> None:
    first = cli("export", str(digits_run), "--format", "pt2", "--epochs", "1")
    assert first.returncode == 0, first.stderr
    assert "on digits train + validation" in first.stdout and "reusing" not in first.stdout
    second = cli("export", str(digits_run), "--format", "torchscript", "--epochs", "1")
    assert second.returncode == 0 and "reusing the weights" in second.stdout, second.stderr
    pt2 = next((digits_run / "export").glob("trial-*.pt2"))
    meta = json.loads(pt2.with_name(pt2.stem + ".model.json").read_text())
    mean, std = meta["normalization"]["mean"], meta["normalization"]["std"]
    assert meta["trained"] and meta["input_shape"] == [1, 8, 8] and 50 < mean[0] < 110 and std[0] > 10
    model = torch.export.load(str(pt2)).module()
    raw = torch.rand(5, 1, 8, 8) * 255
    logits = model(raw)
    assert logits.shape == (5, 10)
    # the normalization is inside: the inner network on (raw - mean) / std gives the same logits
    scripted = torch.jit.load(str(pt2.with_suffix(".pt")))
    assert torch.allclose(scripted(raw), logits, atol=1e-4)
    inner = scripted.model
    assert torch.allclose(inner((raw - mean[0]) / std[0]), logits, atol=1e-4)


# -- defect 14: the shipped examples are documents nasrl reads -----------------------------------------
def test_shipped_example_architectures_and_preset_read(tmp_path: Path) -> None:
    examples = Path(__file__).resolve().parents[1] / "examples"
    cell_space, cell = read_architecture(str(examples / "nascell.json"))
    assert cell_space.name == "rnn_cell" and cell["cell.output_node"] == 12 and cell["node3.combine"] == "mul"
    conv_space, _ = read_architecture(str(examples / "fashion_mnist_conv.json"))
    assert conv_space.name == "conv"
    import tomllib

    from nasrl.search import load_config

    preset = load_config(tomllib.loads((examples / "fashion_mnist_fast.toml").read_text()))
    assert preset.dataset == "fashion-mnist" and preset.training.max_train_samples == 10000
    from nasrl.spaces import get_space

    for name in ("enas_fashion_mnist.toml", "enas_fashion_mnist_reduce.toml"):
        oneshot = load_config(tomllib.loads((examples / name).read_text()))
        space = get_space(oneshot.space, **oneshot.space_params)
        assert oneshot.method == "multi-trial" and space.name == "conv" and space.num_layers == 6
    assert space.params()["join"] == "pool" and oneshot.objective.constraints == ("macs<=25M",)


# -- the sweep: every subcommand fed bad input, in-process (an escaping exception fails it) -----------
SWEEP = [
    [], ["bogus"], ["--version"], ["search", "--budget", "0"], ["search", "--budget", "x"],
    ["search", "--workers", "0"], ["search", "--executor", "gpu"], ["search", "--strategy", "annealing"],
    ["search", "--space", "transformer"], ["search", "--set", "budget"], ["search", "--set", "budget=-3"],
    ["search", "--set", "training=3"], ["search", "--set", "objective.accuracy_power=abc"],
    ["search", "--constraint", "params<="], ["search", "--constraint", "speed<=3"],
    ["search", "--constraint", "params<=-5"], ["search", "--latency-device", "cuda:3", "--constraint",
                                                "latency_ms<=2"],
    ["search", "--config", "afile"], ["search", "--config", "nothing.toml"], ["search", "--seed", "-5"],
    ["search", "--set", "trial_timeout=-1"], ["search", "--set", "round_size=0"],
    ["search", "--set", "lookahead=-1"], ["search", "--set", "space_params.num_layers=0"],
    ["search", "--set", "device=tpu"], ["search", "--space", "nb201", "--evaluator", "tabular", "--table", "afile"],
    ["resume", "nowhere"], ["resume", "afile"], ["resume", "RUN", "--budget", "0"],
    ["resume", "RUN", "--executor", "serial", "--workers", "0"], ["status", "nowhere"], ["status", "afile"],
    ["best", "RUN", "-n", "0"], ["best", "RUN", "--metrics", "params"], ["best", "RUN", "--pareto", "--metrics", "x"],
    ["best", "nowhere"], ["export", "RUN", "--format", "gif"], ["export", "RUN", "--trial", "999"],
    ["export", "RUN", "--format", "onnx"], ["export", "RUN", "--out", "afile/m.json"], ["report", "nowhere"],
    ["train"], ["train", "--arch", "nothing.json"], ["train", "--arch", "{not json"], ["train", "--arch", "afile"],
    ["train", "--arch", "[]"], ["train", "--arch", '{"space": "conv", "choices": {"L0.filters": 5}}'],
    ["train", "--space", "nb201", "--arch", "|bogus~0|"], ["train", "--space", "nb201", "--arch", "NB", "--epochs", "0"],
    ["train", "--space", "nb201", "--arch", "NB", "--build", "channels"],
    ["train", "--space", "nb201", "--arch", "NB", "--set", "schedule=weird"],
    ["benchmark", "nb301"], ["benchmark", "nb201", "--strategies", ","], ["benchmark", "nb201", "--seeds", "0"],
    ["benchmark", "nb201", "--set", "reinforce.bogus=1"], ["benchmark", "nb201", "--constraint", "latency_ms<=2"],
    ["benchmark", "nb201", "--table", "afile"],
]
NB = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|"


@pytest.mark.parametrize("argv", SWEEP, ids=lambda a: " ".join(a)[:60] or "(none)")
def test_bad_input_sweep_is_one_line_exit_2(argv: list[str], tabular_run: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("not what anything expects\n")
    argv = [str(tabular_run) if a == "RUN" else NB if a == "NB" else a for a in argv]
    try:
        status = main(argv)
    except SystemExit as exc:  # --version and --help exit through argparse
        status = int(exc.code or 0)
    err = capsys.readouterr().err
    if argv == ["--version"]:
        assert status == 0
        return
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("nasrl"), err
    assert not (tmp_path / "runs").exists()  # nothing half-made


def test_benchmark_budget_above_the_table_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", "nb201", "--strategies", "random", "--budget", "15700", "--seeds", "1",
                 "--jobs", "1"]) == 0
    assert "note: the table has 15625 architectures" in capsys.readouterr().out


def test_damaged_kept_export_weights_are_one_line(digits_run: Path, tmp_path: Path) -> None:
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(digits_run, run, ignore=shutil.ignore_patterns("writer.lock"))
    best = json.loads(cli("best", str(run), "--json").stdout)["trial"]
    kept = run / "export" / "weights"
    kept.mkdir(parents=True, exist_ok=True)
    torch.save({"not": torch.zeros(1)}, kept / f"trial-{best}-e1.pt")  # loads, but fits no model
    (kept / f"trial-{best}-e1.json").write_text('{"trained": true}')
    one_line_exit_2(cli("export", str(run), "--format", "onnx", "--epochs", "1"), "to train again")
