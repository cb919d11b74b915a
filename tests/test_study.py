"""``nasrl study``: controller variants side by side on the bundled NAS-Bench-201 table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nasrl.benchmark import run_tabular, summarize
from nasrl.cli import main
from nasrl.evaluators.tabular import TabularEvaluator, find_nb201_table
from nasrl.strategies import make_strategy
from nasrl.study import make_landscape


@pytest.fixture(scope="module")
def table() -> TabularEvaluator:
    return TabularEvaluator(find_nb201_table(None))


def test_study_writes_table_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["study", "nb201", "--variants", "reinforce,no-baseline,evolution", "--budget", "40",
                 "--seeds", "2", "--jobs", "1", "--out", str(tmp_path)])
    assert code == 0
    summary = json.loads((tmp_path / "study.json").read_text())
    assert list(summary["strategies"]) == ["reinforce", "no-baseline", "evolution"]
    assert summary["checkpoints"] == [40]
    rl = summary["strategies"]["reinforce"]
    assert rl["seeds"] == [0, 1] and 80 < rl["checkpoints"]["40"]["val_mean"] < 85
    grad = rl["gradient"]
    # batches of 5 of the policy's own draws, all measured, up to 40 evaluations or the
    # batch that found the best cell (a run stops there); local asks are not learned from
    found = [f if f is not None and f <= 40 else 40 for f in rl["found_best_at"]]
    assert 2 < grad["updates"] < sum(-(-f // 5) for f in found)
    assert 0 < grad["variance_ratio_vs_no_baseline"] < 1  # the baseline lowers the variance
    # without a baseline the paired variances are the same quantity
    assert summary["strategies"]["no-baseline"]["gradient"]["variance_ratio_vs_no_baseline"] == \
        pytest.approx(1.0)
    assert "gradient" not in summary["strategies"]["evolution"]
    markdown = (tmp_path / "study.md").read_text()
    assert markdown.count("\n") == 5 and "| no-baseline |" in markdown
    assert (tmp_path / "study.png").read_bytes()[:4] == b"\x89PNG"
    assert "| reinforce |" in capsys.readouterr().out


@pytest.mark.parametrize(("args", "message"), [
    (["--variants", "reinforce,lstm2"], "unknown variant 'lstm2'"),
    (["--variants", ","], "--variants: give at least one variant"),
    (["--landscape", "noisy:x"], "landscape 'noisy:x'"),
    (["--landscape", "without:conv5x5"], "landscape 'without:conv5x5'"),
    (["--seeds", "0"], "--seeds: '0' must be >= 1"),
    (["--set", "reinforce.reward_clip=0.1"], "reward_clip' was removed.*advantage_clip"),
    (["--set", "evolution.population=3"], "unknown config key 'evolution.population'"),
    (["--table", "/nonexistent/t.csv"], "t.csv"),
])
def test_bad_input_is_one_line_and_exit_2(args: list[str], message: str, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["study", "nb201", "--budget", "5", "--seeds", "1", "--jobs", "1", *args])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    import re

    assert re.search(message, err), err


def test_landscapes(table: TabularEvaluator) -> None:
    test = make_landscape(table, "test")
    assert test.best.val_acc == max(e.test_acc for e in table.entries.values())
    noisy = make_landscape(table, "noisy:0.2:1")
    again = make_landscape(table, "noisy:0.2:1")
    diffs = [noisy.entries[k].val_acc - e.val_acc for k, e in table.entries.items()]
    assert [e.val_acc for e in again.entries.values()] == [e.val_acc for e in noisy.entries.values()]
    assert 0.18 < (sum(d * d for d in diffs) / len(diffs)) ** 0.5 < 0.22
    sub = make_landscape(table, "without:nor_conv_3x3")
    assert "nor_conv_3x3" not in {v for _, v in sub.best.arch.choices}
    assert "nor_conv_3x3" in {v for _, v in table.best.arch.choices}  # a different optimum
    assert table.best.val_acc == max(e.val_acc for e in table.entries.values())  # untouched


def test_stopping_at_the_best_cell_changes_no_summary_number(table: TabularEvaluator) -> None:
    full = run_tabular(make_strategy("evolution", table.space, 0), table, 400)
    short = run_tabular(make_strategy("evolution", table.space, 0), table, 400, stop_when_found=True)
    assert full.found_best_at is not None and len(short.best_val) == full.found_best_at < 400
    a, b = summarize([full], 400, (50, 100, 200, 400)), summarize([short], 400, (50, 100, 200, 400))
    for s in (a, b):
        s["strategies"]["evolution"].pop("proposals")
        s["strategies"]["evolution"].pop("seconds")
    assert a == b
