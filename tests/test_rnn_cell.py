from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from nasrl.data import DataError
from nasrl.data.text import load_text
from nasrl.models import SearchedCell
from nasrl.objectives import Objective, ObjectiveConfig
from nasrl.spaces import RNNCellSpace, get_space
from nasrl.training.language import LMTrainConfig, train_cell

PAPER_EXAMPLE = {  # the paper's base-2 worked example (section 3.4, figure 5)
    "node0.combine": "add", "node0.activation": "tanh",
    "node1.combine": "mul", "node1.activation": "relu",
    "node2.combine": "mul", "node2.activation": "sigmoid",
    "inject.combine": "add", "inject.activation": "relu",
    "cell.inject_node": 0, "cell.output_node": 1,
}
NASCELL_LEAVES = [("add", "sigmoid"), ("add", "relu"), ("add", "sigmoid"), ("mul", "relu"),
                  ("add", "tanh"), ("add", "sigmoid"), ("add", "tanh"), ("add", "sigmoid")]
NASCELL_INNER = [("mul", "tanh"), ("add", "tanh"), ("mul", "tanh"), ("add", "sigmoid"),
                 ("mul", "identity"), ("add", "tanh"), ("mul", "tanh")]


def nascell_choices() -> dict[str, object]:
    """The cell the paper found (TensorFlow's NASCell) as an architecture of the base-8 space."""
    out: dict[str, object] = {}
    for i, (comb, act) in enumerate(NASCELL_LEAVES + NASCELL_INNER):
        out[f"node{i}.combine"], out[f"node{i}.activation"] = comb, act
    out.update({"inject.combine": "add", "inject.activation": "tanh", "cell.inject_node": 8,
                "cell.output_node": 12})
    return out


def projections(cell: SearchedCell, x: torch.Tensor, h: torch.Tensor, n: int) -> tuple[list, list]:
    xs = (x @ cell.wx.weight.T + cell.wx.bias).chunk(n, dim=1)
    hs = (h @ cell.wh.weight.T).chunk(n, dim=1)
    return list(xs), list(hs)


def test_space_size_and_token_order_match_the_paper() -> None:
    space = get_space("rnn_cell")
    assert space.size() == 8 ** 15 * 8 * 15 ** 2  # ~6.3e16, the paper's count
    names = [d.name for d in space.decisions]
    assert names[:4] == ["node0.combine", "node0.activation", "node1.combine", "node1.activation"]
    assert names[-4:] == ["inject.combine", "inject.activation", "cell.inject_node", "cell.output_node"]
    with pytest.raises(Exception, match="power of two"):
        get_space("rnn_cell", base=6)


def test_paper_base2_example_matches_its_formulas() -> None:
    space = RNNCellSpace(base=2)
    torch.manual_seed(0)
    cell = SearchedCell(space, space.make(PAPER_EXAMPLE), input_size=5, hidden_size=4)
    x, h, c = torch.randn(3, 5), torch.randn(3, 4), torch.randn(3, 4)
    (w1x, w3x), (w2h, w4h) = projections(cell, x, h, 2)
    a0 = torch.tanh(w1x + w2h)
    a1 = torch.relu(w3x * w4h)
    a0_injected = torch.relu(a0 + c)
    want_h, want_c = torch.sigmoid(a0_injected * a1), w3x * w4h
    got_h, got_c = cell.step(cell.project_inputs(x), (h, c))
    torch.testing.assert_close(got_h, want_h)
    torch.testing.assert_close(got_c, want_c)


def test_found_cell_matches_a_hand_written_nascell() -> None:
    space = get_space("rnn_cell")
    torch.manual_seed(1)
    cell = SearchedCell(space, space.make(nascell_choices()), input_size=6, hidden_size=5)  # type: ignore[arg-type]
    x, h, c = torch.randn(2, 6), torch.randn(2, 5), torch.randn(2, 5)
    xs, hs = projections(cell, x, h, 8)
    # TensorFlow's NASCell, written out
    l1 = [torch.sigmoid(xs[0] + hs[0]), torch.relu(xs[1] + hs[1]), torch.sigmoid(xs[2] + hs[2]),
          torch.relu(xs[3] * hs[3]), torch.tanh(xs[4] + hs[4]), torch.sigmoid(xs[5] + hs[5]),
          torch.tanh(xs[6] + hs[6]), torch.sigmoid(xs[7] + hs[7])]
    l2 = [torch.tanh(l1[0] * l1[1]), torch.tanh(l1[2] + l1[3]), torch.tanh(l1[4] * l1[5]),
          torch.sigmoid(l1[6] + l1[7])]
    l2[0] = torch.tanh(l2[0] + c)  # inject the cell
    new_c = l2[0] * l2[1]
    l3_1 = torch.tanh(l2[2] + l2[3])
    new_h = torch.tanh(new_c * l3_1)
    got_h, got_c = cell.step(cell.project_inputs(x), (h, c))
    torch.testing.assert_close(got_h, new_h)
    torch.testing.assert_close(got_c, new_c)


@pytest.fixture(scope="module")
def ptb(ptb_dir: Path):  # type: ignore[no-untyped-def]
    return load_text(data_dir=ptb_dir, train_on_valid=True)


def test_ptb_loader_splits_and_says_which_file_is_missing(ptb_dir: Path, tmp_path: Path) -> None:
    data = load_text(data_dir=ptb_dir, train_on_valid=True)
    # the generated corpus (tests/data/make_text.py), one <eos> per line included
    assert len(data.train) + len(data.valid) == 20013 and len(data.train) == int(20013 * 0.9)
    assert len(data.test) == 20004 and data.vocab_size == 225
    assert {"<eos>", "<unk>", "N", "$"} <= set(data.vocab)
    eos = data.vocab.index("<eos>")
    assert int((data.test == eos).sum()) == 1340 and int(data.test[-1]) == eos  # one per line
    with pytest.raises(DataError, match=r"ptb.train.txt not found .*found ptb.valid.txt, ptb.test.txt"):
        load_text(data_dir=ptb_dir)
    (tmp_path / "ptb.valid.txt").write_text((ptb_dir / "ptb.valid.txt").read_text())
    with pytest.raises(DataError, match="ptb.test.txt not found"):
        load_text(data_dir=tmp_path, train_on_valid=True)
    (tmp_path / "ptb.test.txt").write_text((ptb_dir / "ptb.test.txt").read_text())
    (tmp_path / "ptb.train.txt").write_text((ptb_dir / "ptb.test.txt").read_text())
    three = load_text(data_dir=tmp_path)  # with the training file: all of valid validates
    assert len(three.train) == 20004 and len(three.valid) == 20013 and three.vocab == data.vocab
    chars = load_text(data_dir=ptb_dir, train_on_valid=True, char=True)
    assert chars.vocab_size < 60 and "_" in chars.vocab


@pytest.mark.full_data
def test_full_ptb_has_the_standard_counts(full_ptb_dir: Path) -> None:
    data = load_text(data_dir=full_ptb_dir, train_on_valid=True)
    assert len(data.train) + len(data.valid) == 73760  # the standard count, one <eos> per line included
    assert len(data.test) == 82430 and "<eos>" in data.vocab and data.vocab_size <= 10000
    chars = load_text(data_dir=full_ptb_dir, train_on_valid=True, char=True)
    assert chars.vocab_size < 60 and "_" in chars.vocab


def unigram_perplexity(train: torch.Tensor, test: torch.Tensor, vocab_size: int) -> float:
    counts = torch.bincount(train, minlength=vocab_size).float() + 0.5
    return math.exp(-float((counts / counts.sum()).log()[test].mean()))


def bigram_perplexity(train: torch.Tensor, test: torch.Tensor, vocab_size: int) -> float:
    """A bigram model interpolated with the unigram (weight 0.95, about the best on this corpus)."""
    unigram = torch.bincount(train, minlength=vocab_size).double() + 0.5
    unigram /= unigram.sum()
    pairs = torch.bincount(train[:-1] * vocab_size + train[1:], minlength=vocab_size**2).double()
    pairs = pairs.view(vocab_size, vocab_size)
    given = pairs / pairs.sum(1, keepdim=True).clamp_min(1)
    prob = 0.95 * given[test[:-1], test[1:]] + 0.05 * unigram[test[1:]]
    return math.exp(-float(prob.log().mean()))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A 64-unit cell's ops are too small to share: on 2 busy cores a second torch thread
    made these tests 6x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_language_model_learns_the_generated_corpus(ptb) -> None:  # type: ignore[no-untyped-def]
    unigram = unigram_perplexity(ptb.train, ptb.test, ptb.vocab_size)  # about 86
    bigram = bigram_perplexity(ptb.train, ptb.test, ptb.vocab_size)  # about 5.3
    space = get_space("rnn_cell")
    result, _ = train_cell(space, space.make(nascell_choices()), ptb, LMTrainConfig(epochs=5), seed=0,  # type: ignore[arg-type]
                           test=True, build_options={"hidden_size": 64, "embedding_size": 64})
    assert result.ok, result.error
    # the grammar has structure beyond the previous word (agreement, fixed phrases, a topic
    # per sentence): the model must use it to beat a bigram model of the same text
    assert result.extra["test_ppl"] < bigram < 0.1 * unigram, (result.extra, bigram, unigram)
    # the trainer reports metrics only; the default objective turns them into the paper's reward
    objective = Objective(ObjectiveConfig(), task="language")
    value = objective.evaluate({"val_ppl_best": result.extra["val_ppl_best"]})
    assert value.reward == pytest.approx(80 / result.extra["val_ppl_best"] ** 2)


@pytest.mark.full_data
def test_language_model_on_ptb_valid_learns(full_ptb_dir: Path) -> None:
    ptb = load_text(data_dir=full_ptb_dir, train_on_valid=True)
    unigram = unigram_perplexity(ptb.train, ptb.test, ptb.vocab_size)
    space = get_space("rnn_cell")
    result, _ = train_cell(space, space.make(nascell_choices()), ptb, LMTrainConfig(epochs=5), seed=0,  # type: ignore[arg-type]
                           test=True, build_options={"hidden_size": 64, "embedding_size": 64})
    assert result.ok, result.error
    assert result.extra["test_ppl"] < 0.7 * unigram, (result.extra, unigram)
    assert result.extra["val_ppl_best"] == min(result.extra["val_ppl"], result.extra["val_ppl_best"])


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "nasrl", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=600)


def test_cli_train_and_search_a_recurrent_cell(ptb_dir: Path, tmp_path: Path) -> None:
    arch = tmp_path / "cell.json"
    arch.write_text(json.dumps({"space": "rnn_cell", "choices": nascell_choices()}))
    small = ["--set", "max_train_tokens=4000"]
    done = cli("train", "--arch", str(arch), "--data-dir", str(ptb_dir), "--train-on-valid", "--epochs", "1",
               "--build", "hidden_size=32", "--build", "embedding_size=32", *small, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "test perplexity" in done.stdout and "val ppl" in done.stdout
    run = tmp_path / "run"
    done = cli("search", "--space", "rnn_cell", "--dataset", "ptb", "--data-dir", str(ptb_dir),
               "--train-on-valid", "--budget", "3", "--executor", "serial", "--quiet", "--out", str(run),
               "--set", "lm_training.max_train_tokens=3000", "--set", "lm_training.epochs=1",
               "--set", "build_options.hidden_size=16", "--set", "build_options.embedding_size=16",
               cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "validation perplexity" in done.stdout
    # what a search writes about a cell trains again (issue 11: "unknown field 'metrics'")
    (tmp_path / "best.json").write_text(cli("best", str(run), "-n", "2", "--json", cwd=tmp_path).stdout)
    again = cli("train", "--arch", str(tmp_path / "best.json"), "--data-dir", str(ptb_dir), "--train-on-valid",
                "--epochs", "1", "--build", "hidden_size=16", "--build", "embedding_size=16", *small, cwd=tmp_path)
    assert again.returncode == 0 and "test perplexity" in again.stdout, again.stderr
    # rewards of ~1e-3 print with their digits, and the perplexity beside them
    status = cli("status", str(run), cwd=tmp_path).stdout
    best_line = next(line for line in status.splitlines() if line.startswith("best:"))
    assert "val_ppl_best" in best_line and "reward 0.0003," not in best_line, status
    assert cli("report", str(run), cwd=tmp_path).returncode == 0
    page = (run / "report" / "index.html").read_text()
    assert "<th>val perplexity</th>" in page and "<td></td><td>" not in page.split("Leaderboard")[1]
    missing = cli("search", "--space", "rnn_cell", "--data-dir", str(ptb_dir), "--out", str(tmp_path / "r2"),
                  cwd=tmp_path)
    assert missing.returncode == 2 and "ptb.train.txt not found" in missing.stderr
